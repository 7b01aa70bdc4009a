//! A scripted Kubernetes API server: a `tower_test::mock::pair` behind a
//! `kube::Client` (as in kube-rs' `mock_tests.rs` and controller-rs'
//! `fixtures.rs`). A test plays [`Reply`]s, one per request the watcher
//! makes, with real EndpointSlice JSON; every wait has a deadline.

use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::time::Duration;
use tern_discovery::kubernetes::KubernetesSource;
use tern_discovery::{spawn, Discovery, OwnIdentity, Peer, PeerSet};
use tokio_util::sync::CancellationToken;

pub const NAMESPACE: &str = "messaging";
pub const SERVICE: &str = "tern-headless";
/// The configured mesh port; slices with a port named `mesh` override it.
pub const MESH_PORT: u16 = 9000;
pub const SLICE_PATH: &str = "/apis/discovery.k8s.io/v1/namespaces/messaging/endpointslices";
/// Longer than the watcher's first backoff delays (0.8 s, then 1.6 s, jittered).
pub const DEADLINE: Duration = Duration::from_secs(10);

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One scripted answer of the API server.
pub enum Reply {
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
pub struct ApiServer {
    handle: Handle,
}

impl ApiServer {
    /// Answers the next request with `reply`; returns its URI. Panics if no
    /// request comes in time or it is not the kind `reply` answers.
    pub async fn answer(&mut self, reply: Reply) -> String {
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
            } => (code, status_json(code, reason, message).to_string()),
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
    pub async fn run(&mut self, scenario: Vec<Reply>) {
        for reply in scenario {
            self.answer(reply).await;
        }
    }
}

/// Starts a source for tern-0 (10.0.0.10) on a scripted API server.
pub fn start() -> (ApiServer, Discovery, CancellationToken) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NAMESPACE);
    let own = OwnIdentity::for_tests("tern-0", Some(IpAddr::from([10, 0, 0, 10])));
    let source =
        KubernetesSource::new(NAMESPACE.into(), SERVICE, MESH_PORT, own).with_client(client);
    let shutdown = CancellationToken::new();
    let discovery = spawn(Box::new(source), shutdown.clone());
    (ApiServer { handle }, discovery, shutdown)
}

pub async fn stop(d: Discovery, shutdown: CancellationToken) {
    shutdown.cancel();
    let stopped = tokio::time::timeout(DEADLINE, d.task).await;
    assert!(matches!(stopped, Ok(Ok(()))), "source did not stop cleanly");
}

/// A `Status` object as the API server sends it.
pub fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

/// An endpoint of pod `pod`; `terminating` as Kubernetes marks a pod
/// being deleted.
pub fn endpoint(ip: &str, pod: &str, ready: bool, terminating: bool) -> Value {
    json!({
        "addresses": [ip],
        "conditions": { "ready": ready, "serving": ready || terminating, "terminating": terminating },
        "targetRef": { "kind": "Pod", "name": pod, "namespace": NAMESPACE, "uid": format!("uid-{pod}") },
        "nodeName": "node-a",
    })
}

/// An EndpointSlice of the service with a `mesh` port of 4370.
pub fn slice(name: &str, rv: &str, endpoints: Vec<Value>) -> Value {
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

pub fn peer(addr: &str, name: &str) -> Peer {
    Peer {
        addr: addr.into(),
        name: Some(name.into()),
    }
}

/// A ready pod `tern-N` at 10.0.0.N:4370, as endpoint and as expected peer.
pub fn pod(n: u8) -> (Value, Peer) {
    let ip = format!("10.0.0.{n}");
    let name = format!("tern-{n}");
    let e = endpoint(&ip, &name, true, false);
    (e, peer(&format!("{ip}:4370"), &name))
}

pub async fn wait_set(d: &mut Discovery, want: &[Peer]) {
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
