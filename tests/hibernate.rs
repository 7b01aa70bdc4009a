//! Hibernated connections (`limits.hibernate_after_ms`) behave exactly like
//! live ones: deliveries at every QoS, PINGREQ, keep-alive expiry and its
//! will, takeover, admin disconnect, shutdown's DISCONNECT 0x8B, and a
//! client that closes its socket. Each test waits (with a deadline) until
//! `tern_connections_hibernated` shows its connections parked first.
mod common;

use common::raw::{ack, kind};
use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tern_broker::config::{ApiKeyConfig, Config, Scope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const MGMT_KEY: &str = "mgmt-key-0123456789";

/// Hibernation after 100 ms of quiet.
fn quick(c: &mut Config) {
    c.limits.hibernate_after_ms = 100;
}

async fn hibernated(admin: SocketAddr) -> f64 {
    scrape(admin, "tern_connections_hibernated").await
}

/// Waits until `n` connections are hibernated.
async fn until_hibernated(s: &TestServer, n: f64) {
    let a = s.admin();
    wait_until(T, &format!("{n} connections hibernate"), || async move {
        hibernated(a).await == n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hibernated_subscriber_receives_every_qos_promptly() {
    let s = start_with(quick).await;
    let topic = uid("hib/sub");
    let mut sub = Raw::v5(s.addr, &uid("sleeper")).await;
    sub.subscribe(&topic, 2).await;
    // Acknowledged by hand, so the QoS 2 exchange is seen whole.
    sub.auto_ack = false;
    let mut publisher = Raw::v4(s.addr, &uid("pub")).await;
    for qos in 0..=2u8 {
        until_hibernated(&s, 2.0).await;
        let payload = format!("m{qos}");
        let t0 = Instant::now();
        publisher.publish(&topic, payload.as_bytes(), qos).await;
        let m = sub.next_publish().await;
        let took = t0.elapsed();
        assert_eq!(m.payload, payload.as_bytes(), "QoS {qos} payload");
        assert_eq!(m.qos, qos, "granted QoS");
        assert!(
            took < Duration::from_secs(1),
            "QoS {qos} delivered after {took:?}"
        );
        match qos {
            1 => sub.send(&ack(kind::PUBACK, m.pkid)).await,
            2 => {
                sub.send(&ack(kind::PUBREC, m.pkid)).await;
                let (pkid, _) = sub.expect_ack(kind::PUBREL).await;
                assert_eq!(pkid, m.pkid, "PUBREL for the PUBREC'd id");
                sub.send(&ack(kind::PUBCOMP, m.pkid)).await;
            }
            _ => {}
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hibernated_client_gets_pingresp() {
    let s = start_with(quick).await;
    let mut c = Raw::v4(s.addr, &uid("pinger")).await;
    for _ in 0..3 {
        until_hibernated(&s, 1.0).await;
        c.ping().await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_expiry_of_a_hibernated_client_fires_its_will() {
    let s = start_with(quick).await;
    let topic = uid("hib/will");
    let mut o = Raw::v5(s.addr, &uid("observer")).await;
    o.subscribe(&topic, 1).await;
    let c = Connect::v4(&uid("silent"))
        .keep_alive(1)
        .will(Will::new(&topic, b"gone"));
    let t0 = Instant::now();
    let (mut c, _) = Raw::connect_ok(s.addr, c).await;
    until_hibernated(&s, 2.0).await;
    c.expect_closed(Duration::from_millis(1500 + 2000)).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(1000),
        "closed before 1 × keep-alive"
    );
    let m = o.next_publish().await;
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        (topic.as_str(), &b"gone"[..])
    );
    let a = s.admin();
    wait_until(T, "the connection gauge drops", || async move {
        scrape(a, "tern_connections").await == 1.0
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hibernated_session_is_taken_over() {
    let s = start_with(quick).await;
    let id = uid("taken");
    let (mut old, _) = Raw::connect_ok(s.addr, Connect::v5(&id).session_expiry(300)).await;
    old.subscribe(&uid("hib/t"), 1).await;
    until_hibernated(&s, 1.0).await;
    let (mut new, ack) =
        Raw::connect_ok(s.addr, Connect::v5(&id).clean(false).session_expiry(300)).await;
    assert!(
        ack.session_present,
        "the session moved to the new connection"
    );
    old.expect_disconnect(&[0x8E], T).await;
    new.ping().await;
    s.stop().await;
}

/// One management request: the status.
async fn post(addr: SocketAddr, path: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {MGMT_KEY}\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut buf))
        .await
        .expect("HTTP timed out")
        .expect("read");
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hibernated_client_is_disconnected_by_the_admin_api() {
    let s = start_with(|c| {
        quick(c);
        c.admin.api_keys = vec![ApiKeyConfig {
            key: MGMT_KEY.into(),
            scopes: vec![Scope::Mgmt],
        }];
    })
    .await;
    let id = uid("kicked");
    let mut c = Raw::v5(s.addr, &id).await;
    until_hibernated(&s, 1.0).await;
    let path = format!("/api/v1/session/disconnect?client_id={id}");
    assert_eq!(post(s.admin(), &path).await, 200);
    c.expect_disconnect(&[0x98], T).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_hibernated_v5_clients() {
    let s = start_with(quick).await;
    let mut a = Raw::v5(s.addr, &uid("bye-a")).await;
    let mut b = Raw::v5(s.addr, &uid("bye-b")).await;
    until_hibernated(&s, 2.0).await;
    let stop = tokio::spawn(s.stop());
    a.expect_disconnect(&[0x8B], T).await;
    b.expect_disconnect(&[0x8B], T).await;
    stop.await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hibernated_client_closing_its_socket_is_cleaned_up() {
    let s = start_with(quick).await;
    let c = Raw::v4(s.addr, &uid("leaver")).await;
    let stay = Raw::v4(s.addr, &uid("stayer")).await;
    until_hibernated(&s, 2.0).await;
    c.drop_socket().await;
    let a = s.admin();
    wait_until(T, "the gauges drop by one", || async move {
        scrape(a, "tern_connections").await == 1.0 && hibernated(a).await == 1.0
    })
    .await;
    drop(stay);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_turns_hibernation_off() {
    let s = start_with(|c| c.limits.hibernate_after_ms = 0).await;
    let mut c = Raw::v4(s.addr, &uid("awake")).await;
    // Long past the default threshold, nothing hibernates.
    c.expect_open(Duration::from_millis(1500)).await;
    assert_eq!(hibernated(s.admin()).await, 0.0);
    c.ping().await;
    s.stop().await;
}

/// A client that sends nothing after CONNACK (most devices, until their
/// next report) hibernates at once, not after the threshold: a burst of
/// connects then never holds a task per connection. Once it has spoken,
/// the threshold applies again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_silent_after_connack_hibernates_at_once() {
    let s = start_with(|c| c.limits.hibernate_after_ms = 600_000).await;
    let topic = uid("hib/fresh");
    let mut quiet = Raw::v4(s.addr, &uid("quiet")).await;
    until_hibernated(&s, 1.0).await;
    // Woken by its own SUBSCRIBE; not fresh any more, so it stays awake
    // (a 10-minute threshold) while a second silent client parks.
    quiet.subscribe(&topic, 1).await;
    let mut other = Raw::v4(s.addr, &uid("other")).await;
    until_hibernated(&s, 1.0).await;
    let mut publisher = Raw::v4(s.addr, &uid("pub")).await;
    publisher.publish(&topic, b"hello", 1).await;
    let m = quiet.next_publish().await;
    assert_eq!(m.payload, b"hello");
    other.ping().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_shutting_down_leaves_this_ones_sleepers_parked() {
    // Two nodes in one process share the hibernation thread; a 10-minute
    // threshold, so a connection woken for nothing would stay awake.
    let s = start_with(|c| c.limits.hibernate_after_ms = 600_000).await;
    let other = start_with(|c| c.limits.hibernate_after_ms = 600_000).await;
    let mut c = Raw::v4(s.addr, &uid("sleeper")).await;
    let _o = Raw::v4(other.addr, &uid("other-sleeper")).await;
    until_hibernated(&s, 1.0).await;
    until_hibernated(&other, 1.0).await;
    other.stop().await;
    assert_eq!(
        hibernated(s.admin()).await,
        1.0,
        "another node's shutdown woke this node's connection"
    );
    c.ping().await;
    s.stop().await;
}
