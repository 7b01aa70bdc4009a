//! Sessions: clean start / clean session, session expiry (v5 and the
//! configurable 3.1.1 persistent-session expiry), session present.
mod common;

use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_session_resumed_with_subscriptions_and_offline_messages() {
    let s = start().await;
    let id = uid("s5");
    let (mut c, ack) =
        Raw::connect_ok(s.addr, Connect::v5(&id).clean(true).session_expiry(60)).await;
    assert!(!ack.session_present, "clean start → session present 0");
    c.subscribe("sess5/t", 1).await;
    c.disconnect().await;

    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    p.publish("sess5/t", b"while-away", 1).await;

    let (mut c, ack) =
        Raw::connect_ok(s.addr, Connect::v5(&id).clean(false).session_expiry(60)).await;
    assert!(
        ack.session_present,
        "clean start 0 with a stored session → session present 1"
    );
    assert_eq!(
        c.next_publish().await.payload,
        b"while-away",
        "queued message delivered on resume"
    );
    // The subscription survived: a new message arrives without re-subscribing.
    p.publish("sess5/t", b"after", 1).await;
    assert_eq!(c.next_publish().await.payload, b"after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_clean_start_discards_existing_session() {
    let s = start().await;
    let id = uid("s5c");
    let mut c = Raw::connect_ok(s.addr, Connect::v5(&id).session_expiry(60))
        .await
        .0;
    c.subscribe("sess5c/old", 1).await;
    c.disconnect().await;

    let (mut c, ack) =
        Raw::connect_ok(s.addr, Connect::v5(&id).clean(true).session_expiry(60)).await;
    assert!(
        !ack.session_present,
        "clean start 1 → session present 0 even though a session existed"
    );
    c.subscribe("sess5c/marker", 1).await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    p.publish("sess5c/old", b"old-sub", 1).await;
    p.publish("sess5c/marker", b"marker", 1).await;
    let got = c.until_payload(b"marker").await;
    assert_eq!(got.len(), 1, "the old subscription must be gone: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_session_expiry_zero_ends_session_at_disconnect() {
    let s = start().await;
    let id = uid("s5z");
    let mut c = Raw::v5(s.addr, &id).await; // no Session Expiry Interval = 0
    c.subscribe("sess5z/t", 1).await;
    c.disconnect().await;
    let (c, ack) = Raw::connect_ok(s.addr, Connect::v5(&id).clean(false)).await;
    assert!(!ack.session_present, "session expiry 0: nothing to resume");
    c.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_session_kept_before_expiry_and_gone_after() {
    let s = start().await;
    let id = uid("s5e");
    let expiry = 2u32;
    let mut c = Raw::connect_ok(s.addr, Connect::v5(&id).session_expiry(expiry))
        .await
        .0;
    c.subscribe("sess5e/t", 1).await;
    c.disconnect().await;

    // Well before the expiry: still there.
    let (c, ack) =
        Raw::connect_ok(s.addr, Connect::v5(&id).clean(false).session_expiry(expiry)).await;
    assert!(
        ack.session_present,
        "session must survive within its expiry interval"
    );
    c.disconnect().await;

    // Past the expiry (counted from this disconnect): gone.
    tokio::time::sleep(Duration::from_secs(expiry as u64) + Duration::from_millis(1500)).await;
    let (mut c, ack) = Raw::connect_ok(s.addr, Connect::v5(&id).clean(false)).await;
    assert!(
        !ack.session_present,
        "session must be discarded after its expiry interval"
    );
    // And its subscription with it.
    c.subscribe("sess5e/marker", 1).await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    p.publish("sess5e/t", b"old", 1).await;
    p.publish("sess5e/marker", b"marker", 1).await;
    assert_eq!(
        c.until_payload(b"marker").await.len(),
        1,
        "expired subscription delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_disconnect_can_shorten_session_expiry_to_zero() {
    let s = start().await;
    let id = uid("s5d");
    let c = Raw::connect_ok(s.addr, Connect::v5(&id).session_expiry(60))
        .await
        .0;
    c.disconnect_with(0, Props::new().u32(raw::prop::SESSION_EXPIRY, 0))
        .await;
    let (c, ack) = Raw::connect_ok(s.addr, Connect::v5(&id).clean(false)).await;
    assert!(
        !ack.session_present,
        "DISCONNECT with Session Expiry 0 ends the session"
    );
    c.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_persistent_session_present_both_ways() {
    let s = start().await;
    let id = uid("s4");
    let (mut c, ack) = Raw::connect_ok(s.addr, Connect::v4(&id).clean(false)).await;
    assert!(
        !ack.session_present,
        "first persistent connect: no session yet"
    );
    c.subscribe("sess4/t", 1).await;
    c.disconnect().await;

    let mut p = Raw::v4(s.addr, &uid("pub")).await;
    p.publish("sess4/t", b"queued", 1).await;

    let (mut c, ack) = Raw::connect_ok(s.addr, Connect::v4(&id).clean(false)).await;
    assert!(ack.session_present, "clean session 0 → session present 1");
    assert_eq!(c.next_publish().await.payload, b"queued");
    c.disconnect().await;

    let (c, ack) = Raw::connect_ok(s.addr, Connect::v4(&id).clean(true)).await;
    assert!(!ack.session_present, "clean session 1 → session present 0");
    c.disconnect().await;

    // Clean session 1 also discarded the stored session.
    let (c, ack) = Raw::connect_ok(s.addr, Connect::v4(&id).clean(false)).await;
    assert!(
        !ack.session_present,
        "the clean-session connection discarded the old session"
    );
    c.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_persistent_session_kept_within_configured_expiration() {
    let s = start_with(|c| c.mqtt.persistent_client_expiration = 60).await;
    let id = uid("s4k");
    let c = Raw::connect_ok(s.addr, Connect::v4(&id).clean(false))
        .await
        .0;
    c.disconnect().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (c, ack) = Raw::connect_ok(s.addr, Connect::v4(&id).clean(false)).await;
    assert!(
        ack.session_present,
        "session within persistent_client_expiration must be kept"
    );
    c.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_persistent_session_expires_after_configured_expiration() {
    let s = start_with(|c| c.mqtt.persistent_client_expiration = 1).await;
    let id = uid("s4x");
    let mut c = Raw::connect_ok(s.addr, Connect::v4(&id).clean(false))
        .await
        .0;
    c.subscribe("sess4x/t", 1).await;
    c.disconnect().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (c, ack) = Raw::connect_ok(s.addr, Connect::v4(&id).clean(false)).await;
    assert!(
        !ack.session_present,
        "mqtt.persistent_client_expiration = 1 s: the session must be gone after 2.5 s"
    );
    c.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_session_expiry_is_capped_by_max_session_expiry() {
    let s = start_with(|c| c.mqtt.max_session_expiry = 1).await;
    let id = uid("s5cap");
    let (c, ack) = Raw::connect_ok(s.addr, Connect::v5(&id).session_expiry(3600)).await;
    // The server tells the client the expiry it actually uses.
    assert_eq!(
        ack.props.u32(raw::prop::SESSION_EXPIRY),
        Some(1),
        "CONNACK must announce the capped Session Expiry Interval"
    );
    c.disconnect().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (c, ack) = Raw::connect_ok(s.addr, Connect::v5(&id).clean(false)).await;
    assert!(!ack.session_present, "capped expiry (1 s) must apply");
    c.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_takeover_with_clean_start_0_keeps_the_session() {
    let s = start().await;
    let id = uid("tk");
    let mut first = Raw::connect_ok(s.addr, Connect::v5(&id).session_expiry(60))
        .await
        .0;
    first.subscribe("tk/t", 1).await;
    let (mut second, ack) =
        Raw::connect_ok(s.addr, Connect::v5(&id).clean(false).session_expiry(60)).await;
    assert!(
        ack.session_present,
        "the live session is handed to the new connection"
    );
    first.expect_disconnect(&[0x8E], T).await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    p.publish("tk/t", b"to-second", 1).await;
    assert_eq!(second.next_publish().await.payload, b"to-second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_takeover_publishes_the_old_connections_will() {
    let s = start().await;
    let mut o = Raw::v5(s.addr, &uid("obs")).await;
    o.subscribe("tkw/will", 1).await;
    let id = uid("tkw");
    let mut first = Raw::connect_ok(
        s.addr,
        Connect::v5(&id).will(Will::new("tkw/will", b"replaced")),
    )
    .await
    .0;
    let (_second, _) = Raw::connect_ok(s.addr, Connect::v5(&id)).await;
    first.expect_disconnect(&[0x8E], T).await;
    assert_eq!(
        o.next_publish().await.payload,
        b"replaced",
        "will of the taken-over connection"
    );
}
