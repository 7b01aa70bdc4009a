//! Durable state across `kill -9` of the real binary: acknowledged QoS 1
//! messages queued for an offline persistent session are all delivered,
//! in order, after a restart; and an inbound QoS 2 exchange interrupted
//! between PUBREC and PUBREL completes exactly once.
mod common;

use common::node::Node;
use common::raw::{ack, kind};
use common::{Connect, Packet, Publish, Raw};
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
