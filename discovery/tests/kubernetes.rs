//! The `kubernetes` source against a scripted API server: a
//! `tower_test::mock::pair` behind a `kube::Client` (as in kube-rs'
//! `mock_tests.rs` and controller-rs' `fixtures.rs`). Each test plays a
//! scenario of [`Reply`]s, one per request the watcher makes, with real
//! EndpointSlice JSON, and checks the published sets and status in between.
//! Every wait has a deadline.

use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::time::Duration;
use tern_discovery::kubernetes::KubernetesSource;
use tern_discovery::{spawn, Discovery, OwnIdentity, Peer, PeerSet, SourceStatus};
use tokio_util::sync::CancellationToken;

const NAMESPACE: &str = "messaging";
const SERVICE: &str = "tern-headless";
/// The configured mesh port; slices with a port named `mesh` override it.
const MESH_PORT: u16 = 9000;
const SLICE_PATH: &str = "/apis/discovery.k8s.io/v1/namespaces/messaging/endpointslices";
/// Longer than the watcher's first backoff delays (0.8 s, then 1.6 s, jittered).
const DEADLINE: Duration = Duration::from_secs(10);

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One scripted answer of the API server.
enum Reply {
    /// A list response at a resourceVersion.
    List { rv: &'static str, items: Vec<Value> },
    /// A watch response: these `(type, object)` events, then the stream
    /// ends (as when the API server restarts or the watch times out).
    Watch(Vec<(&'static str, Value)>),
    /// An HTTP error with a `Status` body.
    Fail {
        code: u16,
        reason: &'static str,
        message: &'static str,
    },
}

/// The API server side of the mock pair.
struct ApiServer {
    handle: Handle,
}

impl ApiServer {
    /// Answers the next request with `reply`; returns its URI. Panics if no
    /// request comes in time or it is not the kind `reply` answers.
    async fn answer(&mut self, reply: Reply) -> String {
        let next = tokio::time::timeout(DEADLINE, self.handle.next_request()).await;
        let Ok(Some((request, send))) = next else {
            panic!("no request from the watcher within {DEADLINE:?}");
        };
        let uri = request.uri().to_string();
        assert!(uri.starts_with(SLICE_PATH), "unexpected request {uri}");
        assert!(
            uri.contains("labelSelector=kubernetes.io%2Fservice-name%3Dtern-headless"),
            "no service label selector in {uri}"
        );
        let is_watch = uri.contains("watch=true");
        let (code, body) = match reply {
            Reply::List { rv, items } => {
                assert!(!is_watch, "expected a list, got {uri}");
                let list = json!({
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSliceList",
                    "metadata": { "resourceVersion": rv },
                    "items": items,
                });
                (200, list.to_string())
            }
            Reply::Watch(events) => {
                assert!(is_watch, "expected a watch, got {uri}");
                let lines: Vec<String> = events
                    .into_iter()
                    .map(|(kind, object)| json!({ "type": kind, "object": object }).to_string())
                    .collect();
                (200, lines.join("\n"))
            }
            Reply::Fail {
                code,
                reason,
                message,
            } => (code, status(code, reason, message).to_string()),
        };
        let response = Response::builder()
            .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header("content-type", "application/json")
            .body(Body::from(body.into_bytes()));
        match response {
            Ok(response) => send.send_response(response),
            Err(e) => panic!("building the scripted response: {e}"),
        }
        uri
    }

    /// Plays a scenario: answers the next requests in order.
    async fn run(&mut self, scenario: Vec<Reply>) {
        for reply in scenario {
            self.answer(reply).await;
        }
    }
}

/// Starts a source for tern-0 (10.0.0.10) on a scripted API server.
fn start() -> (ApiServer, Discovery, CancellationToken) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NAMESPACE);
    let own = OwnIdentity::for_tests("tern-0", Some(IpAddr::from([10, 0, 0, 10])));
    let source =
        KubernetesSource::new(NAMESPACE.into(), SERVICE, MESH_PORT, own).with_client(client);
    let shutdown = CancellationToken::new();
    let discovery = spawn(Box::new(source), shutdown.clone());
    (ApiServer { handle }, discovery, shutdown)
}

async fn stop(d: Discovery, shutdown: CancellationToken) {
    shutdown.cancel();
    let stopped = tokio::time::timeout(DEADLINE, d.task).await;
    assert!(matches!(stopped, Ok(Ok(()))), "source did not stop cleanly");
}

/// A `Status` object as the API server sends it.
fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

/// An endpoint of pod `pod`; `terminating` as Kubernetes marks a pod
/// being deleted.
fn endpoint(ip: &str, pod: &str, ready: bool, terminating: bool) -> Value {
    json!({
        "addresses": [ip],
        "conditions": { "ready": ready, "serving": ready || terminating, "terminating": terminating },
        "targetRef": { "kind": "Pod", "name": pod, "namespace": NAMESPACE, "uid": format!("uid-{pod}") },
        "nodeName": "node-a",
    })
}

/// An EndpointSlice of the service with a `mesh` port of 4370.
fn slice(name: &str, rv: &str, endpoints: Vec<Value>) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name, "namespace": NAMESPACE, "resourceVersion": rv,
            "labels": { "kubernetes.io/service-name": SERVICE },
        },
        "addressType": "IPv4",
        "ports": [
            { "name": "mqtt", "port": 1883, "protocol": "TCP" },
            { "name": "mesh", "port": 4370, "protocol": "TCP" },
        ],
        "endpoints": endpoints,
    })
}

fn peer(addr: &str, name: &str) -> Peer {
    Peer {
        addr: addr.into(),
        name: Some(name.into()),
    }
}

/// A ready pod `tern-N` at 10.0.0.N:4370, as endpoint and as expected peer.
fn pod(n: u8) -> (Value, Peer) {
    let ip = format!("10.0.0.{n}");
    let name = format!("tern-{n}");
    let e = endpoint(&ip, &name, true, false);
    (e, peer(&format!("{ip}:4370"), &name))
}

async fn wait_set(d: &mut Discovery, want: &[Peer]) {
    let want: PeerSet = want.iter().cloned().collect();
    let reached = matches!(
        tokio::time::timeout(DEADLINE, d.peers.wait_for(|s| *s == want)).await,
        Ok(Ok(_))
    );
    assert!(
        reached,
        "peer set never became {want:?}; last {:?}",
        *d.peers.borrow()
    );
}

#[tokio::test]
async fn initial_list_keeps_not_ready_drops_terminating_and_self() {
    let (mut api, mut d, shutdown) = start();
    assert_eq!(d.status.get(), SourceStatus::Pending);
    let main = slice(
        "tern-headless-abc12",
        "7",
        vec![
            endpoint("10.0.0.10", "tern-0", true, false), // this node
            endpoint("10.0.0.11", "tern-1", true, false),
            endpoint("10.0.0.12", "tern-2", false, false), // not ready yet: still a peer
            endpoint("10.0.0.13", "tern-3", false, true),  // terminating: gone
        ],
    );
    // A second slice with no ports and an endpoint known only by hostname.
    let other = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": "tern-headless-def34", "namespace": NAMESPACE, "resourceVersion": "8" },
        "addressType": "IPv4",
        "endpoints": [ { "addresses": ["10.0.1.14"], "hostname": "tern-4" } ],
    });
    api.answer(Reply::List {
        rv: "8",
        items: vec![main, other],
    })
    .await;
    wait_set(
        &mut d,
        &[
            peer("10.0.0.11:4370", "tern-1"),
            peer("10.0.0.12:4370", "tern-2"),
            peer("10.0.1.14:9000", "tern-4"),
        ],
    )
    .await;
    assert_eq!(d.status.get(), SourceStatus::Ok);
    // Then the watcher watches from the list's resourceVersion.
    let uri = api.answer(Reply::Watch(vec![])).await;
    assert!(uri.contains("resourceVersion=8"), "{uri}");
    stop(d, shutdown).await;
}

#[tokio::test]
async fn watch_events_added_modified_deleted_update_the_set() {
    let (mut api, mut d, shutdown) = start();
    let ((e1, p1), (e2, p2), (e5, p5)) = (pod(1), pod(2), pod(5));
    api.answer(Reply::List {
        rv: "1",
        items: vec![slice("a", "1", vec![e1.clone()])],
    })
    .await;
    wait_set(&mut d, std::slice::from_ref(&p1)).await;

    api.answer(Reply::Watch(vec![("ADDED", slice("b", "2", vec![e2]))]))
        .await;
    wait_set(&mut d, &[p1.clone(), p2.clone()]).await;

    // tern-1 starts terminating and tern-5 joins slice a.
    let uri = api
        .answer(Reply::Watch(vec![(
            "MODIFIED",
            slice(
                "a",
                "3",
                vec![endpoint("10.0.0.1", "tern-1", false, true), e5],
            ),
        )]))
        .await;
    assert!(
        uri.contains("resourceVersion=2"),
        "resumes after ADDED: {uri}"
    );
    wait_set(&mut d, &[p2.clone(), p5.clone()]).await;

    let uri = api
        .answer(Reply::Watch(vec![("DELETED", slice("b", "4", vec![]))]))
        .await;
    assert!(
        uri.contains("resourceVersion=3"),
        "resumes after MODIFIED: {uri}"
    );
    wait_set(&mut d, &[p5]).await;
    assert_eq!(d.status.get(), SourceStatus::Ok);
    stop(d, shutdown).await;
}

#[tokio::test]
async fn gone_after_an_api_server_restart_relists_and_converges() {
    let (mut api, mut d, shutdown) = start();
    let ((e1, p1), (e2, p2), (e3, p3)) = (pod(1), pod(2), pod(3));
    api.answer(Reply::List {
        rv: "10",
        items: vec![slice("a", "10", vec![e1.clone()])],
    })
    .await;
    wait_set(&mut d, std::slice::from_ref(&p1)).await;

    // An event, then the connection drops (the API server restarts).
    api.answer(Reply::Watch(vec![("ADDED", slice("b", "11", vec![e2]))]))
        .await;
    wait_set(&mut d, &[p1.clone(), p2]).await;

    // The restarted server has compacted: resourceVersion 11 is too old.
    let uri = api
        .answer(Reply::Watch(vec![(
            "ERROR",
            status(410, "Expired", "too old resource version: 11 (40)"),
        )]))
        .await;
    assert!(uri.contains("resourceVersion=11"), "{uri}");

    // The watcher re-lists; slice b disappeared meanwhile, tern-3 joined.
    let uri = api
        .answer(Reply::List {
            rv: "40",
            items: vec![slice("a", "39", vec![e1, e3])],
        })
        .await;
    assert!(
        !uri.contains("resourceVersion=11"),
        "re-list is fresh: {uri}"
    );
    wait_set(&mut d, &[p1, p3]).await;
    // An expired watch is routine: readiness never saw an error.
    assert_eq!(d.status.get(), SourceStatus::Ok);
    api.run(vec![Reply::Watch(vec![])]).await;
    stop(d, shutdown).await;
}

#[tokio::test]
async fn forbidden_list_reports_rbac_keeps_readiness_false_then_recovers() {
    let (mut api, mut d, shutdown) = start();
    let mut status = d.status.subscribe();
    api.answer(Reply::Fail {
        code: 403,
        reason: "Forbidden",
        message: "endpointslices.discovery.k8s.io is forbidden: User \
                  \"system:serviceaccount:messaging:tern\" cannot list resource \
                  \"endpointslices\" in API group \"discovery.k8s.io\" in the namespace \
                  \"messaging\"",
    })
    .await;
    let became_error = matches!(
        tokio::time::timeout(
            DEADLINE,
            status.wait_for(|s| matches!(s, SourceStatus::Error(_))),
        )
        .await,
        Ok(Ok(_))
    );
    assert!(became_error, "no error status in time");
    let SourceStatus::Error(message) = d.status.get() else {
        panic!("status is {:?}", d.status.get());
    };
    assert!(
        message.starts_with("RBAC: endpointslices is forbidden"),
        "{message}"
    );
    assert!(message.contains("namespace messaging"), "{message}");
    assert!(
        message.contains("system:serviceaccount:messaging:tern"),
        "{message}"
    );
    assert!(!d.status.is_ready());
    assert!(d.peers.borrow().is_empty());
    assert!(
        !d.peers.has_changed().unwrap_or(true),
        "nothing was published"
    );

    // The watcher retries with backoff; the same 403 again keeps the error.
    api.answer(Reply::Fail {
        code: 403,
        reason: "Forbidden",
        message: "still forbidden",
    })
    .await;
    // The Role is fixed: the next list succeeds and the source recovers.
    let (e1, p1) = pod(1);
    api.answer(Reply::List {
        rv: "5",
        items: vec![slice("a", "5", vec![e1])],
    })
    .await;
    wait_set(&mut d, &[p1]).await;
    let recovered = matches!(
        tokio::time::timeout(DEADLINE, status.wait_for(|s| *s == SourceStatus::Ok)).await,
        Ok(Ok(_))
    );
    assert!(recovered, "status did not recover");
    assert!(d.status.is_ready());
    stop(d, shutdown).await;
}
