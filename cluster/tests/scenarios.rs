//! Multi-node scenarios over the in-memory mesh with real MQTT clients.

mod harness;

use anyhow::Result;
use harness::{within, Harness, Mqtt, Settings, Step, DEADLINE};
use rumqttc::QoS;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routes_converge_and_every_qos_is_forwarded() -> Result<()> {
    let mut h = Harness::new();
    h.run(vec![Step::Add("a"), Step::Add("b"), Step::Add("c")])
        .await?;
    h.converged().await?;
    let mut sb = Mqtt::connect(h.node("b").mqtt(), "sub-b", true).await?;
    sb.subscribe("t/#", QoS::ExactlyOnce).await?;
    let mut sc = Mqtt::connect(h.node("c").mqtt(), "sub-c", true).await?;
    sc.subscribe("t/+", QoS::ExactlyOnce).await?;
    sc.subscribe("t/x", QoS::AtLeastOnce).await?;
    h.routes("a", "b", &["t/#"]).await?;
    h.routes("a", "c", &["t/+", "t/x"]).await?;
    h.routes("b", "c", &["t/+", "t/x"]).await?;

    let mut pa = Mqtt::connect(h.node("a").mqtt(), "pub-a", true).await?;
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let payload = format!("m{i}");
        pa.publish("t/x", qos, false, &payload).await?;
        for sub in [&mut sb, &mut sc] {
            let m = sub.message().await?;
            assert_eq!(m.payload, payload.as_bytes(), "one copy per node, in order");
            assert_eq!(m.qos, qos);
        }
    }
    // Unsubscribing the last local subscriber removes the route everywhere.
    sb.client.unsubscribe("t/#").await?;
    h.routes("a", "b", &[]).await?;
    let show = h.node("a").cluster.show();
    assert_eq!(show.node, "a");
    assert_eq!(show.peers.len(), 2);
    assert!(show
        .peers
        .iter()
        .all(|p| p.state == "up" && p.incarnation != 0));
    Ok(())
}

/// The publishers' node keeps a topic's last routes per thread while its
/// remote table is unchanged: a route added or removed between two
/// messages on one topic must change where the next goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarding_follows_route_changes_between_messages_on_one_topic() -> Result<()> {
    let mut h = Harness::new();
    h.run(vec![Step::Add("a"), Step::Add("b"), Step::Add("c")])
        .await?;
    h.converged().await?;
    let mut sb = Mqtt::connect(h.node("b").mqtt(), "sub-b", true).await?;
    sb.subscribe("r/1", QoS::AtLeastOnce).await?;
    h.routes("a", "b", &["r/1"]).await?;
    let mut pa = Mqtt::connect(h.node("a").mqtt(), "pub-a", true).await?;
    let forwarded = || h.node("a").forwarded();
    // Bursts: the publisher's connection moves between worker threads, so
    // several threads hold the topic's routes by the time they change.
    const BURST: usize = 20;
    let burst = |tag: &'static str| (0..BURST).map(move |i| format!("{tag}{i:02}"));
    for p in burst("m") {
        pa.publish("r/1", QoS::AtLeastOnce, false, &p).await?;
    }
    for p in burst("m") {
        assert_eq!(sb.message().await?.payload, p.as_bytes());
    }
    let mut sc = Mqtt::connect(h.node("c").mqtt(), "sub-c", true).await?;
    sc.subscribe("r/+", QoS::AtLeastOnce).await?;
    h.routes("a", "c", &["r/+"]).await?;
    for p in burst("n") {
        pa.publish("r/1", QoS::AtLeastOnce, false, &p).await?;
    }
    for p in burst("n") {
        assert_eq!(sb.message().await?.payload, p.as_bytes(), "b still");
        assert_eq!(sc.message().await?.payload, p.as_bytes(), "c, added");
    }
    sb.client.unsubscribe("r/1").await?;
    h.routes("a", "b", &[]).await?;
    let before = forwarded();
    for p in burst("o") {
        pa.publish("r/1", QoS::AtLeastOnce, false, &p).await?;
    }
    for p in burst("o") {
        assert_eq!(sc.message().await?.payload, p.as_bytes());
    }
    assert_eq!(
        forwarded() - before,
        BURST as u64,
        "one copy each, to c only: b's route is gone"
    );
    Ok(())
}

/// The forwards of one read from a publisher are staged and pushed into
/// the peers' outboxes together when the read is handled: a burst that
/// arrives in one write, alternating between two nodes' subscribers,
/// reaches each in order, and every QoS 1 PUBACK comes, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_read_of_publishes_to_two_nodes_arrives_in_order_with_every_puback() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut h = Harness::new();
    h.run(vec![Step::Add("a"), Step::Add("b"), Step::Add("c")])
        .await?;
    h.converged().await?;
    let mut sb = Mqtt::connect(h.node("b").mqtt(), "sub-b", true).await?;
    sb.subscribe("s/b", QoS::AtLeastOnce).await?;
    let mut sc = Mqtt::connect(h.node("c").mqtt(), "sub-c", true).await?;
    sc.subscribe("s/c", QoS::AtLeastOnce).await?;
    h.routes("a", "b", &["s/b"]).await?;
    h.routes("a", "c", &["s/c"]).await?;
    let forwarded = || h.node("a").forwarded();
    let before = forwarded();

    // A 3.1.1 CONNECT and N QoS 1 PUBLISHes, written at once.
    const N: u16 = 300;
    let mut out = vec![0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, 4];
    out.extend_from_slice(b"burs");
    for id in 1..=N {
        let (topic, payload) = match id % 2 {
            0 => ("s/b", format!("b{id}")),
            _ => ("s/c", format!("c{id}")),
        };
        let len = 2 + topic.len() + 2 + payload.len();
        out.extend_from_slice(&[0x32, len as u8, 0, topic.len() as u8]);
        out.extend_from_slice(topic.as_bytes());
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(payload.as_bytes());
    }
    let mut tcp = tokio::net::TcpStream::connect(h.node("a").mqtt()).await?;
    tcp.write_all(&out).await?;
    let mut connack = [0u8; 4];
    tokio::time::timeout(DEADLINE, tcp.read_exact(&mut connack)).await??;
    assert_eq!(connack, [0x20, 2, 0, 0]);
    for id in 1..=N {
        let mut ack = [0u8; 4];
        tokio::time::timeout(DEADLINE, tcp.read_exact(&mut ack)).await??;
        let [hi, lo] = id.to_be_bytes();
        assert_eq!(ack, [0x40, 2, hi, lo], "PUBACKs in PUBLISH order");
    }
    for id in (1..=N).filter(|i| i % 2 == 0) {
        assert_eq!(sb.message().await?.payload, format!("b{id}").as_bytes());
    }
    for id in (1..=N).filter(|i| i % 2 == 1) {
        assert_eq!(sc.message().await?.payload, format!("c{id}").as_bytes());
    }
    assert_eq!(forwarded() - before, u64::from(N), "one copy each");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn takeover_moves_the_session_with_its_queue() -> Result<()> {
    let mut h = Harness::new();
    h.run(vec![Step::Add("a"), Step::Add("b")]).await?;
    h.converged().await?;
    let mut m = Mqtt::connect(h.node("a").mqtt(), "mover", false).await?;
    m.subscribe("q/1", QoS::AtLeastOnce).await?;
    m.disconnect().await?;
    // Until a has seen the DISCONNECT, its connection is live and would
    // take (and the old client acknowledge) what is published next.
    within("mover offline on a", DEADLINE, || {
        !h.node("a")
            .server
            .broker()
            .connected_clients()
            .iter()
            .any(|(c, _)| &**c == "mover")
    })
    .await?;
    h.routes("b", "a", &["q/1"]).await?;
    let mut p = Mqtt::connect(h.node("b").mqtt(), "pub", true).await?;
    for i in 0..3 {
        p.publish("q/1", QoS::AtLeastOnce, false, &format!("queued-{i}"))
            .await?;
    }
    let mut m = Mqtt::connect(h.node("b").mqtt(), "mover", false).await?;
    assert!(m.session_present, "the session moved from a to b");
    for i in 0..3 {
        assert_eq!(m.message().await?.payload, format!("queued-{i}").as_bytes());
    }
    // The subscription moved too: a drops the route, b serves it locally.
    h.routes("a", "b", &["q/1"]).await?;
    h.routes("b", "a", &[]).await?;
    p.publish("q/1", QoS::AtLeastOnce, false, "after").await?;
    assert_eq!(m.message().await?.payload, &b"after"[..]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn takeover_kicks_the_live_connection_elsewhere() -> Result<()> {
    let mut h = Harness::new();
    h.run(vec![Step::Add("a"), Step::Add("b")]).await?;
    h.converged().await?;
    let mut old = Mqtt::connect(h.node("a").mqtt(), "same", true).await?;
    let new = Mqtt::connect(h.node("b").mqtt(), "same", true).await?;
    assert!(!new.session_present);
    old.closed().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retained_is_visible_on_another_node_right_after_puback() -> Result<()> {
    let mut h = Harness::new();
    h.run(vec![Step::Add("a"), Step::Add("b")]).await?;
    h.converged().await?;
    let mut p = Mqtt::connect(h.node("a").mqtt(), "pub", true).await?;
    p.publish("r/1", QoS::AtLeastOnce, true, "kept").await?;
    let mut s = Mqtt::connect(h.node("b").mqtt(), "sub", true).await?;
    s.subscribe("r/#", QoS::AtLeastOnce).await?;
    let m = s.message().await?;
    assert_eq!(m.payload, &b"kept"[..]);
    assert!(m.retain);
    // A node joining later gets the retained snapshot on link up.
    h.step(Step::Add("c")).await?;
    h.converged().await?;
    within("c has the retained message", DEADLINE, || {
        h.node("c").server.broker().retained_count() == 1
    })
    .await?;
    // Deletion replicates too.
    p.publish("r/1", QoS::AtLeastOnce, true, "").await?;
    within("retained deleted everywhere", DEADLINE, || {
        ["b", "c"]
            .iter()
            .all(|n| h.node(n).server.broker().retained_count() == 0)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn back_to_back_retained_writes_converge_on_the_last() -> Result<()> {
    let mut h = Harness::new();
    h.run(vec![Step::Add("a"), Step::Add("b")]).await?;
    h.converged().await?;
    let mut p = Mqtt::connect(h.node("a").mqtt(), "pub", true).await?;
    // Many writes within one millisecond: other nodes must keep the last one
    // as the origin does, not the first of those with the same clock reading.
    for i in 0..200 {
        p.publish("r/fast", QoS::AtMostOnce, true, &format!("v{i}"))
            .await?;
    }
    p.publish("r/fast", QoS::AtLeastOnce, true, "last").await?;
    let value = |n: &str| {
        h.node(n)
            .server
            .broker()
            .retained_for("r/fast")
            .first()
            .map(|(_, m)| m.payload.clone())
    };
    assert_eq!(value("a").as_deref(), Some(&b"last"[..]));
    within("b keeps the last retained write", DEADLINE, || {
        value("b").as_deref() == Some(&b"last"[..])
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_of_large_messages_crosses_the_mesh() -> Result<()> {
    let mut h = Harness::new();
    h.run(vec![Step::Add("a"), Step::Add("b")]).await?;
    h.converged().await?;
    let mut sb = Mqtt::connect(h.node("b").mqtt(), "sub-b", true).await?;
    sb.subscribe("big/1", QoS::AtLeastOnce).await?;
    h.routes("a", "b", &["big/1"]).await?;
    h.step(Step::Cut("a", "b")).await?;
    within("a sees b down", DEADLINE, || {
        !h.node("a").cluster.is_up("b")
    })
    .await?;
    // Messages near the default maximum packet size, buffered for b: more
    // bytes together than one mesh frame may carry.
    const N: usize = 80;
    let mut pa = Mqtt::connect(h.node("a").mqtt(), "pub-a", true).await?;
    let filler = "x".repeat(1_000_000);
    for i in 0..N {
        pa.publish("big/1", QoS::AtLeastOnce, false, &format!("{i:03}{filler}"))
            .await?;
    }
    within("a buffers the backlog", DEADLINE, || {
        h.node("a").server.metrics().cluster.buffered_messages.get() == N as i64
    })
    .await?;
    h.step(Step::Heal("a", "b")).await?;
    for i in 0..N {
        let m = sb.message().await?;
        assert_eq!(
            &m.payload[..3],
            format!("{i:03}").as_bytes(),
            "in order, once"
        );
        assert_eq!(m.payload.len(), 1_000_003);
    }
    // Retained messages of that size reach a node that joins later, in
    // snapshot frames each peer accepts.
    for i in 0..6 {
        pa.publish(&format!("big/r{i}"), QoS::AtLeastOnce, true, &filler)
            .await?;
    }
    h.step(Step::Add("c")).await?;
    h.converged().await?;
    within("c has the large retained messages", DEADLINE, || {
        h.node("c").server.broker().retained_count() == 6
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partition_buffers_then_heals() -> Result<()> {
    let mut h = Harness::new();
    h.run(vec![Step::Add("a"), Step::Add("b")]).await?;
    h.converged().await?;
    let mut sb = Mqtt::connect(h.node("b").mqtt(), "sub-b", true).await?;
    sb.subscribe("p/1", QoS::AtLeastOnce).await?;
    h.routes("a", "b", &["p/1"]).await?;

    h.step(Step::Cut("a", "b")).await?;
    within("a sees b down", DEADLINE, || {
        !h.node("a").cluster.is_up("b")
    })
    .await?;
    within("b sees a down", DEADLINE, || {
        !h.node("b").cluster.is_up("a")
    })
    .await?;
    // Both sides keep serving; a buffers for b.
    let mut pa = Mqtt::connect(h.node("a").mqtt(), "pub-a", true).await?;
    for i in 0..5 {
        pa.publish("p/1", QoS::AtLeastOnce, false, &format!("split-{i}"))
            .await?;
    }
    let mut sb2 = Mqtt::connect(h.node("b").mqtt(), "sub-b2", true).await?;
    sb2.subscribe("during/split", QoS::AtLeastOnce).await?;
    let mut pb = Mqtt::connect(h.node("b").mqtt(), "pub-b", true).await?;
    pb.publish("p/1", QoS::AtLeastOnce, false, "local-b")
        .await?;
    assert_eq!(sb.message().await?.payload, &b"local-b"[..]);
    within("a buffers what b cannot get", DEADLINE, || {
        h.node("a").server.metrics().cluster.buffered_messages.get() == 5
    })
    .await?;

    h.step(Step::Heal("a", "b")).await?;
    h.converged().await?;
    for i in 0..5 {
        assert_eq!(
            sb.message().await?.payload,
            format!("split-{i}").as_bytes(),
            "resent in order, once"
        );
    }
    h.routes("a", "b", &["during/split", "p/1"]).await?;
    pa.publish("during/split", QoS::AtLeastOnce, false, "after-heal")
        .await?;
    assert_eq!(sb2.message().await?.payload, &b"after-heal"[..]);
    within("buffer drained", DEADLINE, || {
        h.node("a").server.metrics().cluster.buffered_messages.get() == 0
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_client_after_heal_newest_wins() -> Result<()> {
    let mut h = Harness::new();
    h.run(vec![Step::Add("a"), Step::Add("b")]).await?;
    h.converged().await?;
    h.step(Step::Cut("a", "b")).await?;
    within("split", DEADLINE, || {
        !h.node("a").cluster.is_up("b") && !h.node("b").cluster.is_up("a")
    })
    .await?;
    let mut older = Mqtt::connect(h.node("a").mqtt(), "dup", true).await?;
    tokio::time::sleep(Duration::from_millis(5)).await; // distinct connect times
    let _newer = Mqtt::connect(h.node("b").mqtt(), "dup", true).await?;
    h.step(Step::Heal("a", "b")).await?;
    older.closed().await?;
    within("only b has dup", DEADLINE, || {
        let on = |n: &str| {
            h.node(n)
                .server
                .broker()
                .connected_clients()
                .iter()
                .any(|(c, _)| &**c == "dup")
        };
        !on("a") && on("b")
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_node_replaces_its_routes() -> Result<()> {
    let mut h = Harness::new();
    h.run(vec![Step::Add("a"), Step::Add("b")]).await?;
    h.converged().await?;
    let mut s = Mqtt::connect(h.node("b").mqtt(), "s", true).await?;
    s.subscribe("old/topic", QoS::AtLeastOnce).await?;
    h.routes("a", "b", &["old/topic"]).await?;
    let first = h.node("a").cluster.route_incarnation("b");
    drop(s);
    h.step(Step::Kill("b")).await?;
    within("a sees b down", DEADLINE, || {
        !h.node("a").cluster.is_up("b")
    })
    .await?;
    h.routes("a", "b", &["old/topic"]).await?; // kept through the grace
    h.step(Step::Restart("b")).await?;
    h.converged().await?;
    h.routes("a", "b", &[]).await?;
    let mut s = Mqtt::connect(h.node("b").mqtt(), "s", true).await?;
    s.subscribe("new/topic", QoS::AtLeastOnce).await?;
    h.routes("a", "b", &["new/topic"]).await?;
    assert_ne!(h.node("a").cluster.route_incarnation("b"), first);
    assert_eq!(
        h.node("a").cluster.route_incarnation("b"),
        Some(h.node("b").cluster.incarnation())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routes_of_a_peer_gone_past_grace_are_dropped_and_leave_is_immediate() -> Result<()> {
    let mut h = Harness::with(Settings {
        route_grace_secs: 1,
        ..Settings::default()
    });
    h.run(vec![Step::Add("a"), Step::Add("b"), Step::Add("c")])
        .await?;
    h.converged().await?;
    let _sb = {
        let mut s = Mqtt::connect(h.node("b").mqtt(), "sb", true).await?;
        s.subscribe("g/1", QoS::AtLeastOnce).await?;
        s
    };
    let mut sc = Mqtt::connect(h.node("c").mqtt(), "sc", true).await?;
    sc.subscribe("g/2", QoS::AtLeastOnce).await?;
    h.routes("a", "b", &["g/1"]).await?;
    h.routes("a", "c", &["g/2"]).await?;
    h.step(Step::Kill("b")).await?;
    h.routes("a", "b", &[]).await?;
    let c = h.nodes.remove("c").expect("c");
    c.cluster.leave(Duration::from_secs(1)).await;
    h.routes("a", "c", &[]).await?;
    c.server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_secret_is_refused_both_ways() -> Result<()> {
    let mut h = Harness::new();
    h.per_node.insert(
        "intruder".into(),
        Settings {
            secret: "wrong".into(),
            ..Settings::default()
        },
    );
    h.run(vec![Step::Add("a"), Step::Add("intruder")]).await?;
    let (a, x) = (&h.node("a").cluster, &h.node("intruder").cluster);
    within("both sides refused", DEADLINE, || {
        a.auth_refusals() >= 1 && x.auth_refusals() >= 1
    })
    .await?;
    assert!(!a.is_up("intruder") && !x.is_up("a"));
    assert!(a.routes_of("intruder").is_empty());
    assert!(
        a.show().peers.is_empty(),
        "the intruder never became a peer"
    );
    Ok(())
}
