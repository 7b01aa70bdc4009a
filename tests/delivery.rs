//! Delivery: QoS 0/1/2 both ways, exactly-once, receive maximum, redelivery,
//! ordering, QoS downgrade, offline queue limits, message expiry, topic
//! aliases, maximum packet size, property pass-through.
mod common;

use common::raw::{ack, kind, prop};
use common::*;
use std::collections::HashMap;
use std::time::Duration;

async fn qos_matrix(version: u8) {
    let s = start().await;
    let (mut sub, _) = Raw::connect_ok(s.addr, Connect::new(version, &uid("sub"))).await;
    let (mut p, _) = Raw::connect_ok(s.addr, Connect::new(version, &uid("pub"))).await;
    assert_eq!(sub.subscribe("qm/t", 2).await, 2, "QoS 2 granted");
    for qos in 0..=2u8 {
        let payload = format!("qos{qos}");
        // publish() asserts the full inbound handshake (PUBACK / PUBREC+PUBCOMP).
        p.publish("qm/t", payload.as_bytes(), qos).await;
        let got = sub.next_publish().await;
        assert_eq!(got.payload, payload.as_bytes());
        assert_eq!(got.qos, qos, "delivered at min(publish QoS, granted QoS)");
        if qos > 0 {
            assert_ne!(got.pkid, 0, "QoS > 0 needs a packet identifier");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_qos_0_1_2_both_directions() {
    qos_matrix(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_qos_0_1_2_both_directions() {
    qos_matrix(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v31_qos_0_1_2_both_directions() {
    qos_matrix(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_outbound_handshake() {
    let s = start().await;
    let mut sub = Raw::v5(s.addr, &uid("sub")).await;
    sub.auto_ack = false;
    sub.subscribe("q2o/t", 2).await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    p.publish("q2o/t", b"x", 2).await;
    let got = sub.next_publish().await;
    assert_eq!(got.qos, 2);
    sub.send(&ack(kind::PUBREC, got.pkid)).await;
    let (pkid, reason) = sub.expect_ack(kind::PUBREL).await;
    assert_eq!(pkid, got.pkid, "PUBREL for the same packet id");
    assert_eq!(reason, 0);
    sub.send(&ack(kind::PUBCOMP, got.pkid)).await;
    // The flow is complete: the next message comes normally.
    p.publish("q2o/t", b"y", 2).await;
    let next = sub.next_publish().await;
    assert_eq!((next.payload.as_slice(), next.dup), (&b"y"[..], false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_inbound_exactly_once_despite_dup_resend() {
    for version in [5u8, 4] {
        let s = start().await;
        let (mut sub, _) = Raw::connect_ok(s.addr, Connect::new(version, &uid("sub"))).await;
        sub.subscribe("eo/t", 2).await;
        let (mut p, _) = Raw::connect_ok(s.addr, Connect::new(version, &uid("pub"))).await;
        let v5 = version == 5;
        let mut msg = Publish::new("eo/t", b"once").qos(2);
        msg.pkid = 7;
        p.send(&msg.encode(v5)).await;
        match p.recv().await {
            Packet::Ack {
                kind: kind::PUBREC,
                pkid: 7,
                reason,
            } => assert!(reason < 0x80),
            other => panic!("expected PUBREC 7, got {other:?}"),
        }
        // The PUBREC "got lost": resend with DUP before PUBREL.
        msg.dup = true;
        p.send(&msg.encode(v5)).await;
        match p.recv().await {
            Packet::Ack {
                kind: kind::PUBREC,
                pkid: 7,
                reason,
            } => assert!(reason < 0x80),
            other => panic!("expected a second PUBREC 7, got {other:?}"),
        }
        p.send(&ack(kind::PUBREL, 7)).await;
        match p.recv().await {
            Packet::Ack {
                kind: kind::PUBCOMP,
                pkid: 7,
                reason,
            } => assert_eq!(reason, 0),
            other => panic!("expected PUBCOMP 7, got {other:?}"),
        }
        p.publish("eo/t", b"marker", 1).await;
        let got = sub.until_payload(b"marker").await;
        let n = got.iter().filter(|m| m.payload == b"once").count();
        assert_eq!(
            n, 1,
            "v{version}: QoS 2 message must be delivered exactly once: {got:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_limits_inflight_towards_client() {
    let s = start().await;
    let c = Connect::v5(&uid("rm")).props(Props::new().u16(prop::RECEIVE_MAXIMUM, 2));
    let (mut sub, _) = Raw::connect_ok(s.addr, c).await;
    sub.auto_ack = false;
    sub.subscribe("rm/t", 1).await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    for i in 0..5 {
        p.publish("rm/t", format!("m{i}").as_bytes(), 1).await;
    }
    let a = sub.next_publish().await;
    let b = sub.next_publish().await;
    assert_eq!(
        (a.payload.as_slice(), b.payload.as_slice()),
        (&b"m0"[..], &b"m1"[..])
    );
    assert!(
        sub.next_publish_within(Duration::from_millis(800))
            .await
            .is_none(),
        "a third QoS 1 PUBLISH was sent while 2 (= Receive Maximum) were unacknowledged"
    );
    sub.send(&ack(kind::PUBACK, a.pkid)).await;
    let c3 = sub.next_publish().await;
    assert_eq!(c3.payload, b"m2", "acking one frees one slot");
    if let Some(extra) = sub.next_publish_within(Duration::from_millis(500)).await {
        panic!("only one slot was freed, yet got {extra:?}");
    }
    sub.auto_ack = true;
    sub.send(&ack(kind::PUBACK, b.pkid)).await;
    sub.send(&ack(kind::PUBACK, c3.pkid)).await;
    assert_eq!(sub.next_publish().await.payload, b"m3");
    assert_eq!(sub.next_publish().await.payload, b"m4");
}

async fn redelivery_case(version: u8) {
    let s = start().await;
    let id = uid("redeliver");
    let persistent = |clean: bool| {
        let c = Connect::new(version, &id).clean(clean);
        if version == 5 {
            c.session_expiry(60)
        } else {
            c
        }
    };
    let (mut sub, _) = Raw::connect_ok(s.addr, persistent(version == 5)).await;
    sub.auto_ack = false;
    sub.subscribe("rd/t", 1).await;
    let (mut p, _) = Raw::connect_ok(s.addr, Connect::new(version, &uid("pub"))).await;
    p.publish("rd/t", b"unacked", 1).await;
    let first = sub.next_publish().await;
    assert!(!first.dup, "first delivery has DUP=0");
    sub.drop_socket().await; // never acked

    let (mut sub, ack) = Raw::connect_ok(s.addr, persistent(false)).await;
    assert!(ack.session_present);
    let again = sub.next_publish().await;
    assert_eq!(
        again.payload, b"unacked",
        "unacknowledged QoS 1 message resent on resume"
    );
    assert!(again.dup, "resent PUBLISH must have DUP=1");
    assert_eq!(
        again.pkid, first.pkid,
        "resent with the original packet identifier"
    );
    assert_eq!(again.qos, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_unacked_qos1_redelivered_with_dup_on_resume() {
    redelivery_case(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_unacked_qos1_redelivered_with_dup_on_resume() {
    redelivery_case(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_topic_ordering_is_preserved() {
    let s = start().await;
    let mut sub = Raw::v5(s.addr, &uid("sub")).await;
    sub.subscribe("ord/#", 2).await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    for qos in [0u8, 1, 2] {
        let topic = format!("ord/q{qos}");
        let n = 60;
        // QoS 0 and 1 without waiting between messages: pipeline them.
        for i in 0..n {
            let mut m = Publish::new(&topic, format!("{i}").as_bytes()).qos(qos);
            if qos == 2 {
                p.publish_msg(m).await;
                continue;
            }
            if qos == 1 {
                m.pkid = p.pkid();
            }
            p.send(&m.encode(true)).await;
        }
        p.publish(&topic, b"end", 1).await;
        let got: Vec<String> = sub
            .until_payload(b"end")
            .await
            .into_iter()
            .filter(|m| m.topic == topic && m.payload != b"end")
            .map(|m| String::from_utf8_lossy(&m.payload).to_string())
            .collect();
        let want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        assert_eq!(got, want, "QoS {qos} messages out of order or missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_downgraded_to_subscription_qos() {
    let s = start().await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    for granted in 0..=2u8 {
        let mut sub = Raw::v5(s.addr, &uid("sub")).await;
        let topic = format!("dg/{granted}");
        assert_eq!(sub.subscribe(&topic, granted).await, granted);
        for published in 0..=2u8 {
            p.publish(&topic, format!("{published}").as_bytes(), published)
                .await;
            let got = sub.next_publish().await;
            assert_eq!(
                got.qos,
                granted.min(published),
                "published at {published}, subscribed at {granted}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_queue_limit_drops_and_counts() {
    let s = start_with(|c| c.mqtt.max_offline_messages = 5).await;
    let before = scrape(s.admin(), "tern_queue_dropped").await;
    let id = uid("offq");
    let mut sub = Raw::connect_ok(s.addr, Connect::v5(&id).session_expiry(60))
        .await
        .0;
    sub.subscribe("oq/t", 1).await;
    sub.disconnect().await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    for i in 0..8 {
        p.publish("oq/t", format!("m{i}").as_bytes(), 1).await;
    }
    let (mut sub, ack) =
        Raw::connect_ok(s.addr, Connect::v5(&id).clean(false).session_expiry(60)).await;
    assert!(ack.session_present);
    p.publish("oq/t", b"marker", 1).await;
    let got: Vec<Vec<u8>> = sub
        .until_payload(b"marker")
        .await
        .into_iter()
        .map(|m| m.payload)
        .filter(|m| m != b"marker")
        .collect();
    assert_eq!(got.len(), 5, "max_offline_messages = 5: {got:?}");
    // Default policy drop_newest keeps the oldest.
    let want: Vec<Vec<u8>> = (0..5).map(|i| format!("m{i}").into_bytes()).collect();
    assert_eq!(got, want, "drop_newest keeps m0..m4 in order");
    let admin = s.admin();
    wait_until(
        T,
        "tern_queue_dropped counts the 3 dropped messages",
        || async move { scrape(admin, "tern_queue_dropped").await - before == 3.0 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_queue_drop_oldest_policy() {
    let s = start_with(|c| {
        c.mqtt.max_offline_messages = 3;
        c.mqtt.queue_drop_policy = tern_broker::config::DropPolicy::DropOldest;
    })
    .await;
    let id = uid("offq-old");
    let mut sub = Raw::connect_ok(s.addr, Connect::v4(&id).clean(false))
        .await
        .0;
    sub.subscribe("oqo/t", 1).await;
    sub.disconnect().await;
    let mut p = Raw::v4(s.addr, &uid("pub")).await;
    for i in 0..6 {
        p.publish("oqo/t", format!("m{i}").as_bytes(), 1).await;
    }
    let (mut sub, _) = Raw::connect_ok(s.addr, Connect::v4(&id).clean(false)).await;
    p.publish("oqo/t", b"marker", 1).await;
    let got: Vec<Vec<u8>> = sub
        .until_payload(b"marker")
        .await
        .into_iter()
        .map(|m| m.payload)
        .filter(|m| m != b"marker")
        .collect();
    let want: Vec<Vec<u8>> = (3..6).map(|i| format!("m{i}").into_bytes()).collect();
    assert_eq!(got, want, "drop_oldest keeps the newest 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_expiry_in_offline_queue() {
    let s = start().await;
    let id = uid("exp");
    let mut sub = Raw::connect_ok(s.addr, Connect::v5(&id).session_expiry(60))
        .await
        .0;
    sub.subscribe("exp/t", 1).await;
    sub.disconnect().await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    let short = Publish::new("exp/t", b"short")
        .qos(1)
        .props(Props::new().u32(prop::MESSAGE_EXPIRY, 1));
    let long = Publish::new("exp/t", b"long")
        .qos(1)
        .props(Props::new().u32(prop::MESSAGE_EXPIRY, 30));
    p.publish_msg(short).await;
    p.publish_msg(long).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (mut sub, _) =
        Raw::connect_ok(s.addr, Connect::v5(&id).clean(false).session_expiry(60)).await;
    let got = sub.until_payload(b"long").await;
    assert!(
        got.iter().all(|m| m.payload != b"short"),
        "a message past its expiry interval was delivered: {got:?}"
    );
    let long = got.last().expect("long");
    let left = long
        .props
        .u32(prop::MESSAGE_EXPIRY)
        .expect("forwarded message keeps a Message Expiry Interval");
    assert!(
        (1..=29).contains(&left),
        "expiry must be decremented by the time spent queued (≥ 2 s): got {left}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_alias_client_to_broker() {
    let s = start().await;
    let mut sub = Raw::v5(s.addr, &uid("sub")).await;
    sub.subscribe("alias/in", 1).await;
    let (mut p, ack) = Raw::connect_ok(s.addr, Connect::v5(&uid("pub"))).await;
    let max = ack.props.u16(prop::TOPIC_ALIAS_MAXIMUM).unwrap_or(0);
    assert!(
        max >= 1,
        "broker announces Topic Alias Maximum ≥ 1 (config default 64), got {max}"
    );
    p.publish_msg(
        Publish::new("alias/in", b"set")
            .qos(1)
            .props(Props::new().u16(prop::TOPIC_ALIAS, 1)),
    )
    .await;
    p.publish_msg(
        Publish::new("", b"use")
            .qos(1)
            .props(Props::new().u16(prop::TOPIC_ALIAS, 1)),
    )
    .await;
    for want in [&b"set"[..], b"use"] {
        let m = sub.next_publish().await;
        assert_eq!((m.topic.as_str(), m.payload.as_slice()), ("alias/in", want));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_alias_over_maximum_is_rejected() {
    let s = start_with(|c| c.mqtt.topic_alias_maximum = 2).await;
    let (mut p, ack) = Raw::connect_ok(s.addr, Connect::v5(&uid("pub"))).await;
    assert_eq!(ack.props.u16(prop::TOPIC_ALIAS_MAXIMUM), Some(2));
    p.send(
        &Publish::new("alias/x", b"x")
            .props(Props::new().u16(prop::TOPIC_ALIAS, 3))
            .encode(true),
    )
    .await;
    p.expect_disconnect(&[0x94], T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_alias_broker_to_client() {
    let s = start().await;
    let c = Connect::v5(&uid("sub")).props(Props::new().u16(prop::TOPIC_ALIAS_MAXIMUM, 4));
    let (mut sub, _) = Raw::connect_ok(s.addr, c).await;
    sub.subscribe("alias/out/#", 1).await;
    let mut plain = Raw::v5(s.addr, &uid("plain")).await; // Topic Alias Maximum 0
    plain.subscribe("alias/out/#", 1).await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    let topics = [
        "alias/out/a",
        "alias/out/b",
        "alias/out/a",
        "alias/out/a",
        "alias/out/b",
    ];
    for (i, t) in topics.iter().enumerate() {
        p.publish(t, format!("{i}").as_bytes(), 1).await;
    }
    let mut aliases: HashMap<u16, String> = HashMap::new();
    for (i, t) in topics.iter().enumerate() {
        let m = sub.next_publish().await;
        let effective = match m.props.u16(prop::TOPIC_ALIAS) {
            Some(a) => {
                assert!(
                    (1..=4).contains(&a),
                    "alias {a} outside the client's Topic Alias Maximum"
                );
                if !m.topic.is_empty() {
                    aliases.insert(a, m.topic.clone());
                }
                aliases
                    .get(&a)
                    .cloned()
                    .unwrap_or_else(|| panic!("alias {a} used before being set"))
            }
            None => m.topic.clone(),
        };
        assert_eq!(
            (effective.as_str(), m.payload.as_slice()),
            (*t, format!("{i}").as_bytes())
        );
        let pm = plain.next_publish().await;
        assert!(
            !pm.props.has(prop::TOPIC_ALIAS),
            "a client without Topic Alias Maximum must never get a Topic Alias"
        );
        assert_eq!(pm.topic, *t);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_larger_than_client_maximum_packet_size_is_not_sent() {
    let s = start().await;
    let c = Connect::v5(&uid("small")).props(Props::new().u32(prop::MAXIMUM_PACKET_SIZE, 128));
    let (mut sub, _) = Raw::connect_ok(s.addr, c).await;
    sub.subscribe("mps/t", 1).await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    p.publish("mps/t", &[b'x'; 300], 1).await;
    p.publish("mps/t", b"small", 1).await;
    let got = sub.next_publish().await;
    assert_eq!(
        got.payload, b"small",
        "the oversize message must be skipped, not sent"
    );
    sub.ping().await; // still connected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_packet_from_v5_client_gets_disconnect_0x95() {
    let s = start_with(|c| c.mqtt.max_packet_size = 1024).await;
    let mut w = Witness::new(s.addr).await;
    let mut p = Raw::v5(s.addr, &uid("big")).await;
    p.send(&Publish::new("mps/in", &[b'y'; 2000]).qos(1).encode(true))
        .await;
    p.expect_disconnect(&[0x95], T).await;
    w.round_trip().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_publish_properties_pass_through() {
    let s = start().await;
    let mut sub = Raw::v5(s.addr, &uid("sub")).await;
    sub.subscribe("props/t", 1).await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    let props = Props::new()
        .byte(prop::PAYLOAD_FORMAT, 1)
        .str(prop::CONTENT_TYPE, "application/json")
        .str(prop::RESPONSE_TOPIC, "props/reply")
        .bin(prop::CORRELATION_DATA, &[0, 1, 2, 0xFF])
        .pair("k1", "v1")
        .pair("k2", "v2")
        .pair("k1", "v3");
    p.publish_msg(Publish::new("props/t", br#"{"a":1}"#).qos(1).props(props))
        .await;
    let m = sub.next_publish().await;
    assert_eq!(
        m.props.byte(prop::PAYLOAD_FORMAT),
        Some(1),
        "payload format indicator"
    );
    assert_eq!(
        m.props.str(prop::CONTENT_TYPE).as_deref(),
        Some("application/json")
    );
    assert_eq!(
        m.props.str(prop::RESPONSE_TOPIC).as_deref(),
        Some("props/reply")
    );
    assert_eq!(
        m.props.bin(prop::CORRELATION_DATA),
        Some(vec![0, 1, 2, 0xFF])
    );
    let pairs: Vec<(String, String)> = [("k1", "v1"), ("k2", "v2"), ("k1", "v3")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        m.props.pairs(),
        pairs,
        "user properties, in order, duplicates kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_qos2_publish_redelivered_with_dup_on_resume() {
    let s = start().await;
    let id = uid("rd2");
    let mut sub = Raw::connect_ok(s.addr, Connect::v5(&id).session_expiry(60))
        .await
        .0;
    sub.auto_ack = false;
    sub.subscribe("rd2/t", 2).await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    p.publish("rd2/t", b"q2", 2).await;
    let first = sub.next_publish().await;
    assert_eq!(first.qos, 2);
    sub.drop_socket().await; // no PUBREC
    let (mut sub, ack) =
        Raw::connect_ok(s.addr, Connect::v5(&id).clean(false).session_expiry(60)).await;
    assert!(ack.session_present);
    let again = sub.next_publish().await;
    assert_eq!(
        (again.payload.as_slice(), again.qos, again.dup),
        (&b"q2"[..], 2, true)
    );
    assert_eq!(again.pkid, first.pkid, "original packet identifier");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_pubrel_resent_on_resume_not_the_publish() {
    let s = start().await;
    let id = uid("rel");
    let mut sub = Raw::connect_ok(s.addr, Connect::v5(&id).session_expiry(60))
        .await
        .0;
    sub.auto_ack = false;
    sub.subscribe("rel/t", 2).await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    p.publish("rel/t", b"x", 2).await;
    let m = sub.next_publish().await;
    sub.send(&ack(kind::PUBREC, m.pkid)).await;
    let (pkid, _) = sub.expect_ack(kind::PUBREL).await;
    assert_eq!(pkid, m.pkid);
    sub.drop_socket().await; // no PUBCOMP
    let (mut sub, _) =
        Raw::connect_ok(s.addr, Connect::v5(&id).clean(false).session_expiry(60)).await;
    sub.auto_ack = false;
    // The PUBREL is resent, not the PUBLISH.
    let (pkid, _) = sub.expect_ack(kind::PUBREL).await;
    assert_eq!(pkid, m.pkid, "PUBREL resent with the original id");
    sub.send(&ack(kind::PUBCOMP, m.pkid)).await;
    sub.auto_ack = true;
    p.publish("rel/t", b"marker", 1).await;
    let got = sub.until_payload(b"marker").await;
    assert_eq!(
        got.len(),
        1,
        "the released message must not be sent again: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_qos2_state_survives_reconnect() {
    let s = start().await;
    let mut sub = Raw::v5(s.addr, &uid("sub")).await;
    sub.subscribe("in2/t", 2).await;
    let id = uid("pub2");
    let (mut p, _) = Raw::connect_ok(s.addr, Connect::v5(&id).session_expiry(60)).await;
    let mut m = Publish::new("in2/t", b"once").qos(2);
    m.pkid = 9;
    p.send(&m.encode(true)).await;
    match p.recv().await {
        Packet::Ack {
            kind: kind::PUBREC,
            pkid: 9,
            ..
        } => {}
        other => panic!("expected PUBREC 9, got {other:?}"),
    }
    p.drop_socket().await;
    let (mut p, ack_) =
        Raw::connect_ok(s.addr, Connect::v5(&id).clean(false).session_expiry(60)).await;
    assert!(ack_.session_present);
    // Resend the PUBLISH with DUP (allowed) and then release it.
    m.dup = true;
    p.send(&m.encode(true)).await;
    match p.recv().await {
        Packet::Ack {
            kind: kind::PUBREC,
            pkid: 9,
            ..
        } => {}
        other => panic!("expected PUBREC 9 again, got {other:?}"),
    }
    p.send(&ack(kind::PUBREL, 9)).await;
    match p.recv().await {
        Packet::Ack {
            kind: kind::PUBCOMP,
            pkid: 9,
            reason,
        } => assert_eq!(reason, 0, "the broker still knew packet 9"),
        other => panic!("expected PUBCOMP 9, got {other:?}"),
    }
    p.publish("in2/t", b"marker", 1).await;
    let got = sub.until_payload(b"marker").await;
    let n = got.iter().filter(|x| x.payload == b"once").count();
    assert_eq!(n, 1, "exactly once across a reconnect: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubrel_for_unknown_packet_id_gets_pubcomp_0x92() {
    let s = start().await;
    let mut c = Raw::v5(s.addr, &uid("rel92")).await;
    c.send(&ack(kind::PUBREL, 4242)).await;
    match c.recv().await {
        Packet::Ack {
            kind: kind::PUBCOMP,
            pkid: 4242,
            reason,
        } => assert_eq!(reason, 0x92, "Packet Identifier not found"),
        other => panic!("expected PUBCOMP 4242, got {other:?}"),
    }
    c.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payload_round_trip() {
    let s = start().await;
    let mut sub = Raw::v4(s.addr, &uid("sub")).await;
    sub.subscribe("big/t", 1).await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    p.publish("big/t", &payload, 1).await;
    let m = sub.next_publish().await;
    assert_eq!(m.payload.len(), payload.len());
    assert!(m.payload == payload, "300 kB payload corrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_packet_size_boundary_is_exact() {
    let s = start_with(|c| c.mqtt.max_packet_size = 1024).await;
    let mut sub = Raw::v5(s.addr, &uid("sub")).await;
    sub.subscribe("b", 0).await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    // PUBLISH QoS 0, topic "b", no properties: 1 + 2 (length) + 3 + 1 + payload.
    let exact = Publish::new("b", &[b'e'; 1017]).encode(true);
    assert_eq!(exact.len(), 1024);
    p.send(&exact).await;
    assert_eq!(
        sub.next_publish().await.payload.len(),
        1017,
        "1024-byte packet accepted"
    );
    let over = Publish::new("b", &[b'o'; 1018]).encode(true);
    assert_eq!(over.len(), 1025);
    p.send(&over).await;
    p.expect_disconnect(&[0x95], T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_maximum_packet_size_boundary_is_exact() {
    let s = start().await;
    // The forwarded packet: 1 (type) + 1 (remaining length) + 2 + 3 ("m/b") + 1 (no properties) + 119 = 127 bytes.
    let c = Connect::v5(&uid("edge")).props(Props::new().u32(prop::MAXIMUM_PACKET_SIZE, 127));
    let (mut sub, _) = Raw::connect_ok(s.addr, c).await;
    sub.subscribe("m/b", 0).await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    p.publish("m/b", &[b'x'; 120], 0).await; // 128 bytes: too big
    p.publish("m/b", &[b'y'; 119], 0).await; // exactly 127: fits
    let m = sub.next_publish().await;
    assert_eq!(
        m.payload,
        vec![b'y'; 119],
        "the 128-byte packet is skipped, the 127-byte one sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_protocol_versions() {
    let s = start().await;
    let mut v3 = Raw::connect_ok(s.addr, Connect::v3(&uid("x3"))).await.0;
    let mut v4 = Raw::v4(s.addr, &uid("x4")).await;
    let mut v5 = Raw::v5(s.addr, &uid("x5")).await;
    for c in [&mut v3, &mut v4, &mut v5] {
        c.subscribe("xv/#", 1).await;
    }
    // A 5.0 message with properties reaches 3.x subscribers as a plain message.
    let props = Props::new()
        .pair("k", "v")
        .str(prop::CONTENT_TYPE, "text/plain");
    v5.publish_msg(Publish::new("xv/from5", b"five").qos(1).props(props))
        .await;
    v4.publish("xv/from4", b"four", 1).await;
    v3.publish("xv/from3", b"three", 1).await;
    for c in [&mut v3, &mut v4, &mut v5] {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let m = c.next_publish().await;
            if m.topic == "xv/from5" && c.v5 {
                assert_eq!(m.props.pairs(), vec![("k".to_string(), "v".to_string())]);
            }
            if m.topic != "xv/from5" {
                assert!(
                    m.props.pairs().is_empty(),
                    "3.x messages carry no user properties"
                );
            }
            seen.push((m.topic, m.payload));
        }
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("xv/from3".to_string(), b"three".to_vec()),
                ("xv/from4".to_string(), b"four".to_vec()),
                ("xv/from5".to_string(), b"five".to_vec()),
            ],
            "{}: every version's messages arrive",
            c.name
        );
    }
}
