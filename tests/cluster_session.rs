//! Sessions are cluster-wide: a persistent client that disconnects from one
//! node and reconnects to another finds its session (session present = 1)
//! and every QoS 1 message queued for it meanwhile; and a client id that
//! connects on a second node takes the connection over from the first.

mod cluster_support;

use cluster_support::mqtt::{Client, Opts, Proto};
use cluster_support::raw5::RawV5;
use cluster_support::{await_route, is_probe, uid, Cluster};
use std::collections::BTreeMap;
use std::time::Duration;

const QUEUED: usize = 1000;

/// Node 1: subscribe (QoS 1) and disconnect; node 3: publish `QUEUED`
/// messages, each PUBACKed; node 2: reconnect with clean = false and
/// collect them all.
async fn session_follows_client(c: &Cluster, proto: Proto) {
    let tag = match proto {
        Proto::V5 => "v5",
        Proto::V4 => "v311",
    };
    let id = uid(&format!("sess-{tag}"));
    let base = uid(&format!("sess-{tag}"));
    let opts = match proto {
        Proto::V5 => Opts::v5(),
        Proto::V4 => Opts::v4(),
    }
    .persistent();

    let mut first = c.client(0, &id, &opts).await;
    assert!(
        !first.session_present,
        "{tag}: a brand-new client id should get session present = 0"
    );
    first.subscribe(&format!("{base}/#"), 1).await;
    let mut publ = c
        .client(2, &uid(&format!("sess-pub-{tag}")), &opts_like(proto))
        .await;
    await_route(
        &mut publ,
        &mut first,
        &format!("{base}/probe"),
        Duration::from_secs(15),
    )
    .await;
    first.disconnect().await;

    // 1,000 QoS 1 messages for the offline session, each acknowledged.
    let topic = format!("{base}/data");
    for k in 0..QUEUED {
        publ.publish(&topic, format!("m-{k:04}").as_bytes(), 1)
            .await;
    }
    if let Err(e) = publ
        .wait_acked(1, QUEUED as u64, Duration::from_secs(30))
        .await
    {
        panic!("{tag}: publisher on node 3: {e}");
    }

    // Reconnect on node 2.
    let mut second = c.client(1, &id, &opts).await;
    assert!(
        second.session_present,
        "{tag}: reconnecting {id} on node 2 with clean = false should resume the session \
         created on node 1 (CONNACK session present = 1)"
    );
    let (got, _) = second
        .collect_until(Duration::from_secs(30), |ms| {
            let mut seen = std::collections::HashSet::new();
            ms.iter().filter(|m| !is_probe(m)).for_each(|m| {
                seen.insert(m.payload.clone());
            });
            seen.len() >= QUEUED
        })
        .await;
    // Trailing duplicates, if any, arrive right behind.
    let mut got = got;
    while let Some(m) = second.recv(Duration::from_millis(300)).await {
        got.push(m);
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut foreign = Vec::new();
    let mut probes = 0;
    for m in &got {
        if is_probe(m) {
            probes += 1;
        } else if m.topic == topic {
            *counts.entry(m.text()).or_default() += 1;
        } else {
            foreign.push(m.clone());
        }
    }
    let missing: Vec<String> = (0..QUEUED)
        .map(|k| format!("m-{k:04}"))
        .filter(|p| !counts.contains_key(p))
        .collect();
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    let unexpected: Vec<&String> = counts
        .keys()
        .filter(|p| {
            !(p.len() == 6
                && p.starts_with("m-")
                && p[2..].parse::<usize>().is_ok_and(|k| k < QUEUED))
        })
        .collect();
    eprintln!(
        "{tag}: {} of {QUEUED} queued messages delivered on node 2; {duplicates} duplicates \
         (allowed at QoS 1), {probes} late probes, {} missing",
        counts.len(),
        missing.len()
    );
    assert!(
        foreign.is_empty() && unexpected.is_empty(),
        "{tag}: unexpected messages: {foreign:?} {unexpected:?}"
    );
    assert!(
        missing.is_empty(),
        "{tag}: {} of {QUEUED} messages queued while offline were lost after moving to node 2 \
         (first missing: {:?}; {duplicates} duplicates)",
        missing.len(),
        &missing[..missing.len().min(20)]
    );

    // The subscription moved with the session: live traffic from node 3
    // now reaches the client on node 2.
    await_route(
        &mut publ,
        &mut second,
        &format!("{base}/probe"),
        Duration::from_secs(15),
    )
    .await;
    publ.publish_acked(&topic, b"live-after-move", 1).await;
    let (live, ok) = second
        .collect_until(Duration::from_secs(10), |ms| {
            ms.iter().any(|m| m.payload == b"live-after-move")
        })
        .await;
    assert!(
        ok,
        "{tag}: live message after the move not delivered on node 2: {live:?}"
    );
    second.disconnect().await;
    publ.disconnect().await;
}

fn opts_like(proto: Proto) -> Opts {
    match proto {
        Proto::V5 => Opts::v5(),
        Proto::V4 => Opts::v4(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_and_its_queue_follow_the_client_to_another_node() {
    let c = Cluster::start("session", 3).await;
    session_follows_client(&c, Proto::V5).await;
    session_follows_client(&c, Proto::V4).await;
}

/// Connects `id` on node 1, then on node 2: the node-1 connection must be
/// closed (5.0: DISCONNECT 0x8E Session taken over) and the node-2 one
/// must keep working.
async fn takeover(c: &Cluster, proto: Proto) {
    let tag = match proto {
        Proto::V5 => "v5",
        Proto::V4 => "v311",
    };
    let id = uid(&format!("take-{tag}"));
    let opts = opts_like(proto).persistent();
    if proto == Proto::V5 {
        // Read off the wire: rumqttc 0.24 does not report the reason code
        // of a DISCONNECT that is followed by the close.
        let (mut old, _, code) = RawV5::connect(c.mqtt(0), &id, false, 600).await;
        assert_eq!(code, 0, "{tag}: CONNACK on node 1");
        let mut new = Client::connect(c.mqtt(1), c.name(1), &id, &opts).await;
        match old.wait_closed(Duration::from_secs(10)).await {
            None => panic!(
                "{tag}: {id} connected on node 2, but its connection on node 1 is still open \
                 after 10 s"
            ),
            Some(reason) => assert_eq!(
                reason,
                Some(0x8E),
                "{tag}: node 1 should end the old connection with DISCONNECT 0x8E (Session \
                 taken over); got {reason:?} (None = closed without DISCONNECT)"
            ),
        }
        return new_still_works(&mut new, tag).await;
    }
    let mut old = c.client(0, &id, &opts).await;
    let mut new = Client::connect(c.mqtt(1), c.name(1), &id, &opts).await;
    if old.wait_gone(Duration::from_secs(10)).await.is_none() {
        panic!(
            "{tag}: {id} connected on node 2, but its connection on node 1 is still open \
             after 10 s"
        );
    }
    new_still_works(&mut new, tag).await;
}

/// The taking-over connection works and stays (no ping-pong between nodes).
async fn new_still_works(new: &mut Client, tag: &str) {
    let topic = uid(&format!("take-{tag}-echo"));
    new.subscribe(&topic, 1).await;
    new.publish_acked(&topic, b"still-here", 1).await;
    let got = new.recv(Duration::from_secs(10)).await;
    assert_eq!(
        got.map(|m| m.payload),
        Some(b"still-here".to_vec()),
        "{tag}: the taking-over connection on node 2 should work (gone: {:?})",
        new.gone()
    );
    assert!(
        new.gone().is_none(),
        "{tag}: the taking-over connection on node 2 was closed: {:?}",
        new.gone()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_client_id_on_another_node_takes_the_connection_over() {
    let c = Cluster::start("takeover", 3).await;
    takeover(&c, Proto::V5).await;
    takeover(&c, Proto::V4).await;
}
