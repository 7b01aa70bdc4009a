//! `/ready` on real processes: a single node, the first node of a cluster
//! (bounded wait), a node that is 503 until its peer appears and synced,
//! and static discovery feeding the mesh.

mod k8s_support;

use k8s_support::{free_port, spawn};
use std::time::{Duration, Instant};

#[tokio::test]
async fn single_node_is_ready_once_listening() {
    let port = free_port();
    let n = spawn("solo", port, &[], &[("TERN_CLUSTER__ENABLED", "false")]);
    n.wait_ready(Duration::from_secs(5)).await;
    let (status, body) = n.get("/ready").await;
    assert_eq!((status, body.as_str()), (200, r#"{"ready":true}"#));
}

#[tokio::test]
async fn first_node_is_ready_after_the_bounded_wait() {
    let (a, absent) = (free_port(), free_port());
    let started = Instant::now();
    let n = spawn("first", a, &[absent], &[]);
    let (status, body) = n.get("/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("\"ready\":false") && body.contains("waiting"),
        "{body}"
    );
    n.wait_ready(Duration::from_secs(10)).await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "ready before cluster.ready_wait_secs"
    );
}

#[tokio::test]
async fn not_ready_until_the_mesh_is_synced() {
    let (a, b) = (free_port(), free_port());
    // A long bounded wait: only the sync with b can make a ready.
    let na = spawn("ra", a, &[b], &[("TERN_CLUSTER__READY_WAIT_SECS", "120")]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (status, body) = na.get("/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("cluster: "),
        "names the missing latch: {body}"
    );
    let nb = spawn("rb", b, &[a], &[("TERN_CLUSTER__READY_WAIT_SECS", "120")]);
    nb.wait_ready(Duration::from_secs(15)).await;
    na.wait_ready(Duration::from_secs(15)).await;
    na.wait_peers_up(&["rb"], Duration::from_secs(5)).await;
}

#[tokio::test]
async fn static_discovery_peers_join_the_mesh() {
    let (a, b) = (free_port(), free_port());
    let na = spawn("da", a, &[], &[]);
    let peers = format!("127.0.0.1:{a},127.0.0.1:{b}");
    let nb = spawn(
        "db",
        b,
        &[],
        &[
            ("TERN_DISCOVERY__MODE", "static"),
            ("TERN_DISCOVERY__PEERS", peers.as_str()),
        ],
    );
    nb.wait_peers_up(&["da"], Duration::from_secs(10)).await;
    na.wait_peers_up(&["db"], Duration::from_secs(10)).await;
    nb.wait_ready(Duration::from_secs(10)).await;
}
