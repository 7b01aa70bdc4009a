//! The partition of `cluster_partition.rs`, made with network namespaces
//! instead of relays: each node in its own namespace, all joined by a
//! bridge; node 1's bridge port goes down (packets dropped, whatever
//! address a node dials) and comes back up. Needs root and `ip`
//! (iproute2); otherwise prints `SKIPPED:` and passes, unless
//! `CLUSTER_NETNS_REQUIRED=1`.

mod cluster_support;

use cluster_support::mqtt::{Client, Msg, Opts};
use cluster_support::netns::{self, NetnsCluster};
use cluster_support::{await_route, uid, DOWN_DEADLINE, UP_DEADLINE};
use std::time::Duration;

/// Not a test: the in-namespace forwarder the netns cluster re-executes
/// this binary as (a no-op when `CLUSTER_NETNS_FORWARD` is unset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_forwarder_helper() {
    if let Ok(spec) = std::env::var(netns::FORWARD_ENV) {
        netns::run_forwarder(&spec).await;
    }
}

async fn round_trip(publ: &mut Client, sub: &mut Client, topic: &str, payload: &str, d: Duration) {
    let target = publ.acked(1) + 1;
    publ.publish(topic, payload.as_bytes(), 1).await;
    if let Err(e) = publ.wait_acked(1, target, d).await {
        panic!("round trip {} -> {}: {e}", publ.node, sub.node);
    }
    let (got, ok) = sub
        .collect_until(d, |ms: &[Msg]| {
            ms.iter().any(|m| m.payload == payload.as_bytes())
        })
        .await;
    let sub_state = sub.gone();
    assert!(
        ok,
        "round trip {} -> {}: {payload:?} on {topic} not delivered within {d:?} (got {:?}, \
         subscriber connection: {sub_state:?})",
        publ.node,
        sub.node,
        got.iter().map(Msg::text).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_by_network_namespaces_both_sides_serve_and_converge() {
    if let Some(why) = netns::unavailable() {
        if std::env::var("CLUSTER_NETNS_REQUIRED").as_deref() == Ok("1") {
            panic!("CLUSTER_NETNS_REQUIRED=1 but the netns test cannot run: {why}");
        }
        eprintln!("SKIPPED: cluster netns partition test: {why}");
        return;
    }
    let mut c = NetnsCluster::start("ns", 3).await;
    c.wait_all_up(UP_DEADLINE).await;
    let base = uid("ns");
    let client = |c: &NetnsCluster, i: usize, id: String| {
        let (addr, name) = (c.mqtt(i), c.name(i).to_string());
        async move { Client::connect(addr, &name, &id, &Opts::v5()).await }
    };
    let mut pub3 = client(&c, 2, uid("ns-pub3")).await;

    // Split: node 1 | nodes 2, 3 (packets dropped, not refused).
    c.isolate(0);
    c.wait_states(
        &[
            (0, 1, "down"),
            (0, 2, "down"),
            (1, 0, "down"),
            (2, 0, "down"),
        ],
        DOWN_DEADLINE,
    )
    .await;
    c.wait_states(&[(1, 2, "up"), (2, 1, "up")], Duration::from_secs(5))
        .await;

    // Side A serves.
    let mut a_sub = client(&c, 0, uid("ns-a-sub")).await;
    a_sub.subscribe(&format!("{base}/a/#"), 1).await;
    let mut a_pub = client(&c, 0, uid("ns-a-pub")).await;
    round_trip(
        &mut a_pub,
        &mut a_sub,
        &format!("{base}/a/t"),
        "side-a",
        Duration::from_secs(10),
    )
    .await;

    // Side B serves across its two nodes.
    let mut b_sub = client(&c, 1, uid("ns-b-sub")).await;
    b_sub.subscribe(&format!("{base}/b/#"), 1).await;
    await_route(
        &mut pub3,
        &mut b_sub,
        &format!("{base}/b/probe"),
        Duration::from_secs(15),
    )
    .await;
    round_trip(
        &mut pub3,
        &mut b_sub,
        &format!("{base}/b/t"),
        "side-b",
        Duration::from_secs(10),
    )
    .await;

    // A subscription on node 1 during the split.
    let mut s = client(&c, 0, uid("ns-s")).await;
    s.subscribe(&format!("{base}/s/#"), 1).await;

    // One client id on both sides, node 3 last.
    let x = uid("ns-x");
    let mut x_old = client(&c, 0, x.clone()).await;
    let mut x_new = client(&c, 2, x.clone()).await;

    // Heal.
    c.reconnect(0);
    c.wait_all_up(UP_DEADLINE).await;

    await_route(
        &mut pub3,
        &mut s,
        &format!("{base}/s/probe"),
        Duration::from_secs(20),
    )
    .await;
    round_trip(
        &mut pub3,
        &mut s,
        &format!("{base}/s/t"),
        "after-heal",
        Duration::from_secs(10),
    )
    .await;

    let old_gone = x_old.wait_gone(Duration::from_secs(20)).await;
    assert!(
        old_gone.is_some(),
        "client id {x} is still connected on node 1 20 s after the heal, although it connected \
         on node 3 later"
    );
    x_new.subscribe(&format!("{base}/x/#"), 1).await;
    await_route(
        &mut a_pub,
        &mut x_new,
        &format!("{base}/x/probe"),
        Duration::from_secs(15),
    )
    .await;
    round_trip(
        &mut a_pub,
        &mut x_new,
        &format!("{base}/x/echo"),
        "x-new-alive",
        Duration::from_secs(10),
    )
    .await;
    let new_state = x_new.gone();
    assert!(
        new_state.is_none(),
        "the newest connection of {x} (node 3) was closed after the heal: {new_state:?} (old \
         one: {old_gone:?})"
    );
}
