//! The `kubernetes` source against a scripted API server (see
//! `scripted_api`): initial list, watch events, 410 re-list, failed and
//! denied watches, RBAC 403 on list, each checked on the published sets and
//! the status.

mod scripted_api;

use scripted_api::*;
use serde_json::json;
use tern_discovery::SourceStatus;

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
    let status = d.status.subscribe();

    // An event, then the connection drops (the API server restarts).
    api.answer(Reply::Watch(vec![("ADDED", slice("b", "11", vec![e2]))]))
        .await;
    wait_set(&mut d, &[p1.clone(), p2]).await;

    // The restarted server has compacted: resourceVersion 11 is too old.
    let uri = api
        .answer(Reply::Watch(vec![(
            "ERROR",
            status_json(410, "Expired", "too old resource version: 11 (40)"),
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
    assert!(!status.has_changed().unwrap_or(true), "status flapped");
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

#[tokio::test]
async fn a_failed_watch_keeps_the_set_and_readiness() {
    let (mut api, mut d, shutdown) = start();
    let ((e1, p1), (e2, p2)) = (pod(1), pod(2));
    api.answer(Reply::List {
        rv: "3",
        items: vec![slice("a", "3", vec![e1.clone()])],
    })
    .await;
    wait_set(&mut d, std::slice::from_ref(&p1)).await;
    let status = d.status.subscribe();

    // The API server is restarting: the watch request fails.
    api.answer(Reply::Fail {
        code: 503,
        reason: "ServiceUnavailable",
        message: "restarting",
    })
    .await;
    // After the backoff the watcher resumes from the same resourceVersion;
    // meanwhile the last set was kept and readiness never dropped.
    let uri = api
        .answer(Reply::Watch(vec![(
            "MODIFIED",
            slice("a", "4", vec![e1, e2]),
        )]))
        .await;
    assert!(
        uri.contains("resourceVersion=3"),
        "resumed, not re-listed: {uri}"
    );
    wait_set(&mut d, &[p1, p2]).await;
    assert_eq!(d.status.get(), SourceStatus::Ok);
    assert!(!status.has_changed().unwrap_or(true), "status flapped");
    stop(d, shutdown).await;
}

#[tokio::test]
async fn a_denied_watch_is_an_error_until_a_relist_succeeds() {
    let (mut api, mut d, shutdown) = start();
    let ((e1, p1), (e2, p2)) = (pod(1), pod(2));
    api.answer(Reply::List {
        rv: "3",
        items: vec![slice("a", "3", vec![e1.clone()])],
    })
    .await;
    wait_set(&mut d, std::slice::from_ref(&p1)).await;

    // The Role lost `watch`: readiness drops with an RBAC message.
    let mut status = d.status.subscribe();
    api.answer(Reply::Fail {
        code: 403,
        reason: "Forbidden",
        message: "cannot watch",
    })
    .await;
    let denied = matches!(
        tokio::time::timeout(
            DEADLINE,
            status.wait_for(|s| matches!(s, SourceStatus::Error(m) if m.starts_with("RBAC:"))),
        )
        .await,
        Ok(Ok(_))
    );
    assert!(denied, "no RBAC error; status {:?}", d.status.get());
    assert_eq!(*d.peers.borrow(), [p1].into_iter().collect());

    // Access is back: the source starts over with a list, which clears it.
    let uri = api
        .answer(Reply::List {
            rv: "9",
            items: vec![slice("a", "9", vec![e2])],
        })
        .await;
    assert!(!uri.contains("watch=true"), "{uri}");
    wait_set(&mut d, &[p2]).await;
    let ready = matches!(
        tokio::time::timeout(DEADLINE, status.wait_for(|s| *s == SourceStatus::Ok)).await,
        Ok(Ok(_))
    );
    assert!(ready, "status did not recover");
    stop(d, shutdown).await;
}
