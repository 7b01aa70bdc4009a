//! Configured limits: connections, client id length, anonymous access,
//! in-flight windows both ways, the online queue.
mod common;

use common::raw::{ack, kind, prop};
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_closes_extra_connections() {
    let s = start_with(|c| c.listeners.tcp.max_connections = 2).await;
    let mut a = Raw::v5(s.addr, &uid("a")).await;
    let mut b = Raw::v5(s.addr, &uid("b")).await;
    let mut extra = Raw::tcp(s.addr).await;
    extra.name = "third connection".into();
    let _ = extra.try_send(&Connect::v5(&uid("c")).encode()).await;
    let seen = extra.expect_closed(T).await;
    assert!(
        !seen
            .iter()
            .any(|p| matches!(p, Packet::ConnAck { code: 0, .. })),
        "a connection over listeners.tcp.max_connections must not be accepted: {seen:?}"
    );
    a.ping().await;
    b.ping().await;
    // A slot frees up when a client leaves.
    b.disconnect().await;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let mut raw = Raw::tcp(s.addr).await;
        raw.name = "retry".into();
        let _ = raw.try_send(&Connect::v5(&uid("d")).encode()).await;
        if let Recv::Packet(Packet::ConnAck { code: 0, .. }) =
            raw.recv_within(Duration::from_millis(500)).await
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no connection accepted after a slot was freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_longer_than_max_client_id_len_is_rejected() {
    let s = start_with(|c| c.mqtt.max_client_id_len = 23).await;
    let (mut c, ack) = Raw::connect(s.addr, Connect::v5(&"x".repeat(24))).await;
    assert_eq!(ack.code, 0x85, "5.0: Client Identifier not valid");
    c.expect_closed(T).await;
    let (mut c, ack) = Raw::connect(s.addr, Connect::v4(&"y".repeat(24))).await;
    assert_eq!(ack.code, 0x02, "3.1.1: identifier rejected");
    c.expect_closed(T).await;
    let (c, _) = Raw::connect_ok(s.addr, Connect::v5(&"z".repeat(23))).await;
    c.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_refused_when_not_allowed() {
    let s = start_with(|c| c.auth.allow_anonymous = false).await;
    let (mut c, ack) = Raw::connect(s.addr, Connect::v5(&uid("anon5"))).await;
    assert!(
        [0x86, 0x87].contains(&ack.code),
        "5.0: 0x87 Not authorized, got {:#04x}",
        ack.code
    );
    c.expect_closed(T).await;
    let (mut c, ack) = Raw::connect(s.addr, Connect::v4(&uid("anon4"))).await;
    assert!(
        [0x04, 0x05].contains(&ack.code),
        "3.1.1: 0x05 not authorized, got {:#04x}",
        ack.code
    );
    c.expect_closed(T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_inflight_bounds_unacked_messages_to_a_client() {
    let s = start_with(|c| c.mqtt.max_inflight = 2).await;
    let mut sub = Raw::v4(s.addr, &uid("sub")).await;
    sub.auto_ack = false;
    sub.subscribe("mi/t", 1).await;
    let mut p = Raw::v4(s.addr, &uid("pub")).await;
    for i in 0..4 {
        p.publish("mi/t", format!("m{i}").as_bytes(), 1).await;
    }
    let a = sub.next_publish().await;
    let _b = sub.next_publish().await;
    if let Some(extra) = sub.next_publish_within(Duration::from_millis(800)).await {
        panic!("mqtt.max_inflight = 2, yet a third message was sent: {extra:?}");
    }
    sub.send(&ack(kind::PUBACK, a.pkid)).await;
    assert_eq!(sub.next_publish().await.payload, b"m2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_receive_maximum_announced_and_enforced() {
    let s = start_with(|c| c.mqtt.receive_maximum = 2).await;
    let (mut c, ack) = Raw::connect_ok(s.addr, Connect::v5(&uid("rmx"))).await;
    assert_eq!(
        ack.props.u16(prop::RECEIVE_MAXIMUM),
        Some(2),
        "CONNACK Receive Maximum"
    );
    // Three QoS 2 PUBLISHes left unfinished (no PUBREL): one too many.
    for id in 1..=3u16 {
        let mut m = Publish::new("rmx/t", b"x").qos(2);
        m.pkid = id;
        let _ = c.try_send(&m.encode(true)).await;
    }
    c.expect_disconnect(&[0x93], T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_queue_limit_drops_and_counts() {
    let s = start_with(|c| {
        c.mqtt.max_online_messages = 3;
        c.mqtt.max_inflight = 1;
        // No QoS 1/2 headroom: the strict limit (the default keeps QoS 1/2
        // and slows publishers instead, see tests/edge_overload.rs).
        c.limits.qos_queue_headroom = 0;
    })
    .await;
    let before = scrape(s.admin(), "tern_queue_dropped").await;
    let mut sub = Raw::v5(s.addr, &uid("slow")).await;
    sub.auto_ack = false;
    sub.subscribe("olq/t", 1).await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    for i in 0..10 {
        p.publish("olq/t", format!("m{i}").as_bytes(), 1).await;
    }
    let admin = s.admin();
    wait_until(
        T,
        "6 messages dropped (1 in flight + 3 queued of 10)",
        || async move { scrape(admin, "tern_queue_dropped").await - before == 6.0 },
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let m = sub.next_publish().await;
        sub.send(&ack(kind::PUBACK, m.pkid)).await;
        got.push(String::from_utf8_lossy(&m.payload).to_string());
    }
    assert_eq!(
        got,
        ["m0", "m1", "m2", "m3"],
        "in flight + queued, oldest kept"
    );
    sub.auto_ack = true;
    p.publish("olq/t", b"marker", 1).await;
    assert_eq!(
        sub.next_publish().await.payload,
        b"marker",
        "dropped messages must not appear"
    );
}
