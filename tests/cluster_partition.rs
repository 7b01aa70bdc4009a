//! A network partition between real `tern` processes, made by cutting the
//! in-test relays every mesh link goes through: node 1 is cut off from
//! nodes 2 and 3. Both sides keep serving; a subscription made on node 1
//! during the split is routed from node 3 after the heal; and a client id
//! connected on both sides during the split stays connected only on the
//! side where it connected last.

mod cluster_support;

use cluster_support::mqtt::{Client, Msg, Opts};
use cluster_support::{await_route, is_probe, uid, Cluster, DOWN_DEADLINE, UP_DEADLINE};
use std::time::Duration;

/// One QoS 1 publish must be PUBACKed and reach `sub` within `d`.
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
async fn both_sides_serve_during_a_partition_and_state_converges_after_heal() {
    // Nodes must reach each other only through the relays: no dialing back
    // at the advertised (direct) mesh address.
    let mut c = Cluster::builder("partition", 3)
        .relayed()
        .env("TERN_CLUSTER__DIAL_BACK", "false")
        .start()
        .await;
    let base = uid("part");

    // Sanity: every link goes through the relays, and traffic crosses them.
    c.assert_links_through_relays().await;
    let mut s_pre = c.v5(0, &uid("part-pre")).await;
    s_pre.subscribe(&format!("{base}/pre/#"), 1).await;
    let mut pub3 = c.v5(2, &uid("part-pub3")).await;
    await_route(
        &mut pub3,
        &mut s_pre,
        &format!("{base}/pre/probe"),
        Duration::from_secs(15),
    )
    .await;

    // Split: node 1 | nodes 2, 3.
    c.isolate(0);
    c.wait_peer_state(&[0], 1, "down", DOWN_DEADLINE).await;
    c.wait_peer_state(&[0], 2, "down", DOWN_DEADLINE).await;
    c.wait_peer_state(&[1, 2], 0, "down", DOWN_DEADLINE).await;
    c.wait_peer_state(&[1], 2, "up", Duration::from_secs(5))
        .await;
    c.wait_peer_state(&[2], 1, "up", Duration::from_secs(5))
        .await;

    // Side A (node 1 alone) serves.
    let mut a_sub = c.v5(0, &uid("part-a-sub")).await;
    a_sub.subscribe(&format!("{base}/a/#"), 1).await;
    let mut a_pub = c.v5(0, &uid("part-a-pub")).await;
    round_trip(
        &mut a_pub,
        &mut a_sub,
        &format!("{base}/a/t"),
        "side-a",
        Duration::from_secs(10),
    )
    .await;

    // Side B (nodes 2 and 3) serves, across its two nodes, with a
    // subscription made during the split.
    let mut b_sub = c.v5(1, &uid("part-b-sub")).await;
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

    // During the split a subscriber subscribes on node 1.
    let mut s = c.v5(0, &uid("part-s")).await;
    s.subscribe(&format!("{base}/s/#"), 1).await;

    // The split is real: node 3's publishes do not reach node 1 now.
    pub3.publish_acked(&format!("{base}/pre/t"), b"during-split", 1)
        .await;
    let leaked = s_pre.recv(Duration::from_secs(1)).await;
    assert!(
        leaked.as_ref().is_none_or(is_probe),
        "a message crossed the cut (the partition is not effective, e.g. nodes dial each \
         other around the relays): {leaked:?}"
    );

    // One client id on both sides: node 1 first, node 3 last (newest).
    let x = uid("part-x");
    let mut x_old = c.client(0, &x, &Opts::v5()).await;
    let mut x_new = c.client(2, &x, &Opts::v5()).await;

    // Heal.
    c.heal_all();
    c.wait_all_up(UP_DEADLINE).await;

    // The subscription made on node 1 during the split is routed from node 3.
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

    // The duplicate client id: only the newest connection (node 3) survives.
    let old_gone = x_old.wait_gone(Duration::from_secs(20)).await;
    assert!(
        old_gone.is_some(),
        "client id {x} is still connected on node 1 20 s after the heal, although it \
         connected on node 3 later"
    );
    let echo = format!("{base}/x/echo");
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
        &echo,
        "x-new-alive",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        x_new.gone().is_none(),
        "the newest connection of {x} (node 3) was closed after the heal: {:?} (old one: {old_gone:?})",
        x_new.gone()
    );
}
