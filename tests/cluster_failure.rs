//! Node failure: after `kill -9` of one node the other two keep serving
//! (routing between them, new connections, new subscriptions), notice the
//! dead peer, and take the node back when it restarts with the same name
//! and ports. A SIGTERM'd node leaves cleanly and rejoins the same way.

mod cluster_support;

use cluster_support::mqtt::{Client, Msg, Opts};
use cluster_support::{await_route, uid, Cluster, DOWN_DEADLINE, UP_DEADLINE};
use serde_json::Value;
use std::time::Duration;

/// One QoS 1 publish from `publ` must be PUBACKed and reach `sub` within
/// `within`.
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
         subscriber connection: {:?})",
        publ.node,
        sub.node,
        got.iter().map(Msg::text).collect::<Vec<_>>(),
        sub_state
    );
}

/// The incarnation node `viewer` reports for `peer`.
async fn incarnation(c: &Cluster, viewer: usize, peer: usize) -> Option<Value> {
    let v = c.show(viewer).await.ok()?;
    v["peers"]
        .as_array()?
        .iter()
        .find(|p| p["node"].as_str() == Some(c.name(peer)))
        .map(|p| p["incarnation"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survivors_keep_serving_after_kill9_and_the_node_rejoins() {
    let mut c = Cluster::start("failure", 3).await;
    let base = uid("fail");
    let inc_before = incarnation(&c, 0, 1).await;

    let mut sub3 = c.v5(2, &uid("fail-sub3")).await;
    sub3.subscribe(&format!("{base}/#"), 1).await;
    let mut pub1 = c.v5(0, &uid("fail-pub1")).await;
    await_route(
        &mut pub1,
        &mut sub3,
        &format!("{base}/probe"),
        Duration::from_secs(15),
    )
    .await;
    let mut on2 = c.v5(1, &uid("fail-on2")).await;

    c.kill9(1);
    assert!(
        on2.wait_gone(Duration::from_secs(5)).await.is_some(),
        "a client of the killed node is still connected"
    );

    // Node 1 -> node 3 keeps working, and new connections are accepted.
    round_trip(
        &mut pub1,
        &mut sub3,
        &format!("{base}/t"),
        "after-kill-1",
        Duration::from_secs(10),
    )
    .await;
    for i in [0, 2] {
        let fresh = Client::try_connect(c.mqtt(i), c.name(i), &uid("fail-fresh"), &Opts::v5())
            .await
            .unwrap_or_else(|e| panic!("CONNECT to {} after node 2 died: {e}", c.name(i)));
        fresh.disconnect().await;
    }
    // A subscription made after the failure is routed too.
    let base2 = uid("fail-new");
    let mut late3 = c.v5(2, &uid("fail-late3")).await;
    late3.subscribe(&format!("{base2}/#"), 1).await;
    await_route(
        &mut pub1,
        &mut late3,
        &format!("{base2}/probe"),
        Duration::from_secs(15),
    )
    .await;
    round_trip(
        &mut pub1,
        &mut late3,
        &format!("{base2}/t"),
        "after-kill-2",
        Duration::from_secs(10),
    )
    .await;

    // The survivors notice.
    c.wait_peer_state(&[0, 2], 1, "down", DOWN_DEADLINE).await;
    round_trip(
        &mut pub1,
        &mut sub3,
        &format!("{base}/t"),
        "while-down",
        Duration::from_secs(10),
    )
    .await;

    // Restart with the same name and ports: it rejoins.
    c.restart(1).await;
    c.wait_all_up(UP_DEADLINE).await;
    let inc_after = incarnation(&c, 0, 1).await;
    assert!(
        inc_before.is_some() && inc_after.is_some() && inc_before != inc_after,
        "the restarted node should show up with a new incarnation (before {inc_before:?}, \
         after {inc_after:?})"
    );

    // Routes through the restarted node work again, both ways.
    let base3 = uid("fail-back");
    let mut sub2 = c.v5(1, &uid("fail-sub2")).await;
    sub2.subscribe(&format!("{base3}/#"), 1).await;
    await_route(
        &mut pub1,
        &mut sub2,
        &format!("{base3}/probe"),
        Duration::from_secs(15),
    )
    .await;
    round_trip(
        &mut pub1,
        &mut sub2,
        &format!("{base3}/t"),
        "1-to-restarted-2",
        Duration::from_secs(10),
    )
    .await;
    let mut pub3 = c.v5(2, &uid("fail-pub3")).await;
    await_route(
        &mut pub3,
        &mut sub2,
        &format!("{base3}/probe"),
        Duration::from_secs(15),
    )
    .await;
    let mut pub2 = c.v5(1, &uid("fail-pub2")).await;
    await_route(
        &mut pub2,
        &mut sub3,
        &format!("{base}/probe"),
        Duration::from_secs(15),
    )
    .await;
    round_trip(
        &mut pub2,
        &mut sub3,
        &format!("{base}/t"),
        "restarted-2-to-3",
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_cleanly_and_the_node_rejoins() {
    let mut c = Cluster::start("sigterm", 3).await;
    let base = uid("term");
    let mut sub2 = c.v5(1, &uid("term-sub2")).await;
    sub2.subscribe(&format!("{base}/#"), 1).await;
    let mut pub1 = c.v5(0, &uid("term-pub1")).await;
    await_route(
        &mut pub1,
        &mut sub2,
        &format!("{base}/probe"),
        Duration::from_secs(15),
    )
    .await;

    let st = c.sigterm(2, Duration::from_secs(15)).await;
    assert!(st.success(), "SIGTERM'd node should exit 0, got {st}");
    // A node that leaves (SIGTERM: drain, then Leave) is forgotten at once,
    // not kept as a "down" ghost member.
    let gone = c.nodes[2].name.clone();
    c.wait_views(
        &[0, 1],
        DOWN_DEADLINE,
        &format!("{gone} is gone"),
        |_, v| {
            v["peers"]
                .as_array()
                .is_some_and(|ps| ps.iter().all(|p| p["node"] != gone.as_str()))
        },
    )
    .await;
    round_trip(
        &mut pub1,
        &mut sub2,
        &format!("{base}/t"),
        "after-term",
        Duration::from_secs(10),
    )
    .await;

    c.restart(2).await;
    c.wait_all_up(UP_DEADLINE).await;
    let mut pub3 = c.v5(2, &uid("term-pub3")).await;
    await_route(
        &mut pub3,
        &mut sub2,
        &format!("{base}/probe"),
        Duration::from_secs(15),
    )
    .await;
    round_trip(
        &mut pub3,
        &mut sub2,
        &format!("{base}/t"),
        "restarted-3-to-2",
        Duration::from_secs(10),
    )
    .await;
}
