//! Durable state across `kill -9` of the real binary: acknowledged QoS 1
//! messages queued for an offline persistent session are all delivered,
//! in order, after a restart; messages in flight to a subscriber at the
//! crash are sent again first, with DUP and their packet ids (PUBREL for
//! a QoS 2 message already PUBREC'd); and an inbound QoS 2 exchange
//! interrupted between PUBREC and PUBREL completes exactly once.
mod common;

use common::node::Node;
use common::raw::{ack, kind};
use common::{Connect, Packet, Props, Publish, Raw, RxPublish};
use std::time::Duration;

const N: usize = 10_000;
const ENV: &[(&str, &str)] = &[("TERN_MQTT__MAX_OFFLINE_MESSAGES", "20000")];

async fn persistent(node: &Node, id: &str) -> (Raw, bool) {
    let (raw, ack) =
        Raw::connect_ok(node.tcp, Connect::v5(id).clean(false).session_expiry(3600)).await;
    (raw, ack.session_present)
}

/// Sends `N` QoS 1 messages in pipelined batches; asserts every PUBACK is a success.
async fn publish_all(publ: &mut Raw) {
    const BATCH: usize = 50;
    for start in (0..N).step_by(BATCH) {
        for i in start..start + BATCH {
            let mut p = Publish::new("crash/t", i.to_string().as_bytes()).qos(1);
            p.pkid = publ.pkid();
            publ.send(&p.encode(true)).await;
        }
        for _ in 0..BATCH {
            match publ.recv().await {
                Packet::Ack {
                    kind: kind::PUBACK,
                    reason,
                    ..
                } => assert_eq!(reason, 0, "PUBACK should report matching subscribers"),
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_qos1_survive_kill_9_in_order() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let data = tempfile::tempdir().expect("temp dir");
        let node = Node::start(data.path(), ENV).await;
        let (mut sub, _) = persistent(&node, "crash-sub").await;
        sub.subscribe("crash/#", 1).await;
        sub.disconnect().await;
        let mut publ = Raw::v5(node.tcp, "crash-pub").await;
        publish_all(&mut publ).await;
        node.kill9().await;

        let node = Node::start(data.path(), ENV).await;
        let (mut sub, present) = persistent(&node, "crash-sub").await;
        assert!(present, "the session survives the crash");
        for i in 0..N {
            let p = sub.next_publish().await;
            assert_eq!(
                String::from_utf8_lossy(&p.payload),
                i.to_string(),
                "message {i} in order"
            );
        }
        assert!(
            sub.next_publish_within(Duration::from_millis(300))
                .await
                .is_none(),
            "nothing beyond the {N} messages"
        );
        node.kill9().await;
    })
    .await
    .expect("test deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_qos2_is_exactly_once_across_kill_9() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let data = tempfile::tempdir().expect("temp dir");
        let node = Node::start(data.path(), &[]).await;
        let (mut sub, _) = persistent(&node, "q2-sub").await;
        sub.subscribe("q2/t", 2).await;
        sub.disconnect().await;
        let (mut publ, _) = persistent(&node, "q2-pub").await;
        let mut p = Publish::new("q2/t", b"once").qos(2);
        p.pkid = 7;
        publ.send(&p.encode(true)).await;
        match publ.recv().await {
            Packet::Ack {
                kind: kind::PUBREC,
                pkid: 7,
                reason,
            } => assert_eq!(reason, 0),
            other => panic!("expected PUBREC 7, got {other:?}"),
        }
        // Crash between PUBREC and PUBREL.
        node.kill9().await;

        let node = Node::start(data.path(), &[]).await;
        let (mut publ, present) = persistent(&node, "q2-pub").await;
        assert!(present, "the publisher's session survives");
        p.dup = true;
        publ.send(&p.encode(true)).await;
        match publ.recv().await {
            Packet::Ack {
                kind: kind::PUBREC,
                pkid: 7,
                ..
            } => {}
            other => panic!("expected PUBREC 7 for the DUP, got {other:?}"),
        }
        publ.send(&ack(kind::PUBREL, 7)).await;
        match publ.recv().await {
            Packet::Ack {
                kind: kind::PUBCOMP,
                pkid: 7,
                reason,
            } => assert_eq!(reason, 0, "packet id 7 is still known after the restart"),
            other => panic!("expected PUBCOMP 7, got {other:?}"),
        }
        let (mut sub, present) = persistent(&node, "q2-sub").await;
        assert!(present);
        let got = sub.next_publish().await;
        assert_eq!(got.payload, b"once");
        assert!(
            sub.next_publish_within(Duration::from_millis(500))
                .await
                .is_none(),
            "the resent PUBLISH was not delivered a second time"
        );
        node.kill9().await;
    })
    .await
    .expect("test deadline");
}

/// A persistent 5.0 session taking at most 3 messages in flight, acking by hand.
async fn windowed(node: &Node, id: &str) -> (Raw, bool) {
    let c = Connect::v5(id)
        .clean(false)
        .props(Props::new().u16(0x21, 3))
        .session_expiry(3600);
    let (mut raw, ack) = Raw::connect_ok(node.tcp, c).await;
    raw.auto_ack = false;
    (raw, ack.session_present)
}

fn publish_of(p: Packet) -> RxPublish {
    match p {
        Packet::Publish(p) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_messages_are_resent_first_with_dup_after_kill_9() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let data = tempfile::tempdir().expect("temp dir");
        let node = Node::start(data.path(), &[]).await;
        let (mut sub, _) = windowed(&node, "inf-sub").await;
        sub.subscribe("inf/#", 2).await;
        let mut publ = Raw::v5(node.tcp, "inf-pub").await;
        for (payload, qos) in [("a", 1), ("b", 1), ("c", 2), ("d", 1), ("e", 2)] {
            let code = publ
                .publish_msg(Publish::new("inf/t", payload.as_bytes()).qos(qos))
                .await;
            assert_eq!(code, 0);
        }
        // a, b, c fill the window of 3; d and e stay queued.
        let a = publish_of(sub.recv().await);
        let b = publish_of(sub.recv().await);
        let c = publish_of(sub.recv().await);
        let got: Vec<_> = [&a, &b, &c]
            .iter()
            .map(|p| (p.payload.clone(), p.qos, p.dup))
            .collect();
        assert_eq!(
            got,
            vec![
                (b"a".to_vec(), 1, false),
                (b"b".to_vec(), 1, false),
                (b"c".to_vec(), 2, false)
            ]
        );
        sub.send(&ack(kind::PUBREC, c.pkid)).await;
        let (pkid, _) = sub.expect_ack(kind::PUBREL).await;
        assert_eq!(pkid, c.pkid);
        // A QoS 1 PUBACK waits for the commit of everything written before
        // it: the in-flight state above is on disk once this returns.
        assert_eq!(
            publ.publish_msg(Publish::new("barrier", b"x").qos(1)).await,
            0x10
        );
        node.kill9().await;

        let node = Node::start(data.path(), &[]).await;
        let (mut sub, present) = windowed(&node, "inf-sub").await;
        assert!(present, "the session survives the crash");
        let mut resent = Vec::new();
        let mut released = None;
        while resent.len() < 2 || released.is_none() {
            match sub.recv().await {
                Packet::Publish(p) => resent.push(p),
                Packet::Ack {
                    kind: kind::PUBREL,
                    pkid,
                    ..
                } => released = Some(pkid),
                other => panic!("expected the in-flight messages again, got {other:?}"),
            }
        }
        let again: Vec<_> = resent
            .iter()
            .map(|p| (p.payload.clone(), p.qos, p.dup, p.pkid))
            .collect();
        assert_eq!(
            again,
            vec![
                (b"a".to_vec(), 1, true, a.pkid),
                (b"b".to_vec(), 1, true, b.pkid)
            ],
            "in-flight QoS 1 messages again, in order, with DUP and their packet ids"
        );
        assert_eq!(
            released,
            Some(c.pkid),
            "the PUBREC'd QoS 2 message resumes with PUBREL"
        );
        assert!(
            sub.next_publish_within(Duration::from_millis(300))
                .await
                .is_none(),
            "queued messages wait for the window"
        );
        sub.send(&ack(kind::PUBACK, a.pkid)).await;
        sub.send(&ack(kind::PUBACK, b.pkid)).await;
        sub.send(&ack(kind::PUBCOMP, c.pkid)).await;
        let d = publish_of(sub.recv().await);
        let e = publish_of(sub.recv().await);
        let rest: Vec<_> = [&d, &e]
            .iter()
            .map(|p| (p.payload.clone(), p.qos, p.dup))
            .collect();
        assert_eq!(
            rest,
            vec![(b"d".to_vec(), 1, false), (b"e".to_vec(), 2, false)],
            "then the queue, in order"
        );
        sub.auto_ack = true;
        sub.send(&ack(kind::PUBACK, d.pkid)).await;
        sub.send(&ack(kind::PUBREC, e.pkid)).await;
        assert!(
            sub.next_publish_within(Duration::from_millis(300))
                .await
                .is_none(),
            "nothing else"
        );
        node.kill9().await;
    })
    .await
    .expect("test deadline");
}

/// With a slow group commit, a publisher that sends many QoS 1/2 messages
/// at once gets their PUBACKs/PUBRECs in order and all within a few
/// commits, not one commit per message; each acknowledged message
/// survives `kill -9`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_acks_keep_order_and_durability() {
    const COMMIT_MS: u64 = 200;
    const MSGS: u16 = 40;
    let env = &[("TERN_STORAGE__GROUP_COMMIT_MS", "200")];
    tokio::time::timeout(Duration::from_secs(60), async {
        let data = tempfile::tempdir().expect("temp dir");
        let node = Node::start(data.path(), env).await;
        let (mut sub, _) = persistent(&node, "pipe-sub").await;
        sub.subscribe("pipe/#", 1).await;
        sub.disconnect().await;
        let mut publ = Raw::v5(node.tcp, "pipe-pub").await;
        let mut burst = Vec::new();
        for pkid in 1..=MSGS {
            let qos = if pkid % 2 == 0 { 2 } else { 1 };
            let mut p = Publish::new("pipe/t", pkid.to_string().as_bytes()).qos(qos);
            p.pkid = pkid;
            burst.extend_from_slice(&p.encode(true));
        }
        let started = tokio::time::Instant::now();
        publ.send(&burst).await;
        for pkid in 1..=MSGS {
            let want = if pkid % 2 == 0 {
                kind::PUBREC
            } else {
                kind::PUBACK
            };
            match publ.recv().await {
                Packet::Ack {
                    kind,
                    pkid: id,
                    reason,
                } => {
                    assert_eq!(
                        (kind, id, reason),
                        (want, pkid, 0),
                        "acknowledgements in PUBLISH order"
                    );
                }
                other => panic!("expected the acknowledgement of {pkid}, got {other:?}"),
            }
        }
        let took = started.elapsed();
        // One commit per message would take MSGS × COMMIT_MS (8 s).
        assert!(
            took < Duration::from_millis(COMMIT_MS * u64::from(MSGS) / 4),
            "{MSGS} acknowledgements took {took:?}: not pipelined across group commits"
        );
        node.kill9().await;

        let node = Node::start(data.path(), env).await;
        let (mut sub, present) = persistent(&node, "pipe-sub").await;
        assert!(present, "the session survives the crash");
        let mut got: Vec<u16> = Vec::new();
        for _ in 0..MSGS {
            let p = sub.next_publish().await;
            got.push(
                String::from_utf8_lossy(&p.payload)
                    .parse()
                    .expect("payload"),
            );
        }
        assert_eq!(
            got,
            (1..=MSGS).collect::<Vec<_>>(),
            "every acknowledged message, in order"
        );
        node.kill9().await;
    })
    .await
    .expect("test deadline");
}
