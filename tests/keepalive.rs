//! Keep-alive: silent clients are disconnected after ~1.5 × keep-alive,
//! PINGREQ keeps them alive, and the 5.0 Server Keep Alive override.
mod common;

use common::raw::prop;
use common::*;
use std::time::Duration;
use tokio::time::Instant;

async fn silent_client_closed(version: u8) {
    let s = start().await;
    let (mut c, _) = Raw::connect_ok(s.addr, Connect::new(version, &uid("ka")).keep_alive(1)).await;
    let t0 = Instant::now();
    let seen = c.expect_closed(Duration::from_millis(1500 + 2000)).await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1000),
        "closed after {took:?}, before 1 × keep-alive"
    );
    if version == 5 {
        // Optional DISCONNECT must be 0x8D (Keep Alive timeout) if sent.
        for p in &seen {
            if let Packet::Disconnect { reason, .. } = p {
                assert_eq!(*reason, 0x8D, "keep-alive DISCONNECT reason");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_silent_client_disconnected_after_one_and_a_half_keep_alive() {
    silent_client_closed(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_silent_client_disconnected_after_one_and_a_half_keep_alive() {
    silent_client_closed(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pingreq_keeps_connection_alive() {
    let s = start().await;
    let (mut c, _) = Raw::connect_ok(s.addr, Connect::v4(&uid("pinger")).keep_alive(1)).await;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        c.ping().await; // panics if the connection was closed
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_server_keep_alive_overrides_larger_request() {
    let s = start_with(|c| c.mqtt.max_keep_alive = 2).await;
    let (mut c, ack) = Raw::connect_ok(s.addr, Connect::v5(&uid("ska")).keep_alive(60)).await;
    assert_eq!(
        ack.props.u16(prop::SERVER_KEEP_ALIVE),
        Some(2),
        "CONNACK must carry Server Keep Alive = mqtt.max_keep_alive"
    );
    // And the broker enforces its value, not the client's 60 s.
    let t0 = Instant::now();
    c.expect_closed(Duration::from_millis(3000 + 2000)).await;
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "closed before 1 × server keep-alive"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_server_keep_alive_overrides_zero() {
    let s = start_with(|c| c.mqtt.max_keep_alive = 5).await;
    let (c, ack) = Raw::connect_ok(s.addr, Connect::v5(&uid("ska0")).keep_alive(0)).await;
    assert_eq!(
        ack.props.u16(prop::SERVER_KEEP_ALIVE),
        Some(5),
        "keep-alive 0 is above any limit"
    );
    c.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_no_server_keep_alive_when_request_within_limit() {
    let s = start_with(|c| c.mqtt.max_keep_alive = 30).await;
    let (c, ack) = Raw::connect_ok(s.addr, Connect::v5(&uid("ska-ok")).keep_alive(10)).await;
    let ska = ack.props.u16(prop::SERVER_KEEP_ALIVE);
    assert!(
        ska.is_none() || ska == Some(10),
        "request within the limit is kept, got {ska:?}"
    );
    c.disconnect().await;
}
