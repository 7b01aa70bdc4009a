//! CONNECT/CONNACK: protocol versions, client identifiers, takeover, auth seam.
mod common;

use common::raw::prop;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_connect_and_round_trip() {
    let s = start().await;
    let (mut c, ack) = Raw::connect_ok(s.addr, Connect::v5(&uid("c5"))).await;
    assert!(
        !ack.session_present,
        "clean start must not report a session"
    );
    c.subscribe("rt/v5", 1).await;
    c.publish("rt/v5", b"hello", 1).await;
    let p = c.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), p.payload.as_slice()),
        ("rt/v5", &b"hello"[..])
    );
    c.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_connect_and_round_trip() {
    let s = start().await;
    let (mut c, ack) = Raw::connect_ok(s.addr, Connect::v4(&uid("c4"))).await;
    assert!(!ack.session_present);
    c.subscribe("rt/v4", 1).await;
    c.publish("rt/v4", b"hello", 1).await;
    let p = c.next_publish().await;
    assert_eq!(p.payload, b"hello");
    c.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v31_connect_and_round_trip() {
    let s = start().await;
    // MQTT 3.1: protocol name "MQIsdp", level 3.
    let (mut c, ack) = Raw::connect_ok(s.addr, Connect::v3(&uid("c3"))).await;
    assert!(!ack.session_present);
    c.subscribe("rt/v3", 1).await;
    c.publish("rt/v3", b"hello", 1).await;
    let p = c.next_publish().await;
    assert_eq!(p.payload, b"hello");
    c.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v4_and_v5_clients_interoperate() {
    let s = start().await;
    let mut a = v4_client(s.addr, &uid("rq4"), |_| {}).await;
    let mut b = v5_client(s.addr, &uid("rq5"), |_| {}).await;
    a.subscribe("rq/x", rumqttc::QoS::AtLeastOnce).await;
    b.subscribe("rq/x", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await;
    b.publish(
        "rq/x",
        b"from-v5",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        false,
    )
    .await;
    assert_eq!(a.recv().await.payload.as_ref(), b"from-v5");
    assert_eq!(b.recv().await.payload.as_ref(), b"from-v5");
    a.publish("rq/x", b"from-v4", rumqttc::QoS::ExactlyOnce, false)
        .await;
    assert_eq!(a.recv().await.payload.as_ref(), b"from-v4");
    assert_eq!(b.recv().await.payload.as_ref(), b"from-v4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_empty_client_id_gets_assigned_identifier() {
    let s = start().await;
    let (mut c, ack) = Raw::connect_ok(s.addr, Connect::v5("")).await;
    let assigned = ack
        .props
        .str(prop::ASSIGNED_CLIENT_ID)
        .expect("CONNACK must carry an Assigned Client Identifier for an empty client id");
    assert!(!assigned.is_empty(), "assigned client id must not be empty");
    // Two anonymous clients get different identifiers.
    let (c2, ack2) = Raw::connect_ok(s.addr, Connect::v5("")).await;
    let assigned2 = ack2
        .props
        .str(prop::ASSIGNED_CLIENT_ID)
        .expect("second assigned id");
    assert_ne!(assigned, assigned2, "assigned identifiers must be unique");
    // The first connection is still alive (no takeover between them).
    c.ping().await;
    c.disconnect().await;
    c2.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_empty_client_id_with_clean_session_0_is_rejected() {
    let s = start().await;
    let (mut c, ack) = Raw::connect(s.addr, Connect::v4("").clean(false)).await;
    assert_eq!(
        ack.code, 0x02,
        "3.1.1 empty id + clean session 0 → CONNACK 0x02 (identifier rejected)"
    );
    assert!(
        !ack.session_present,
        "session present must be 0 with a non-zero return code"
    );
    c.expect_closed(T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_empty_client_id_with_clean_session_1_is_accepted() {
    let s = start().await;
    let (mut c, ack) = Raw::connect_ok(s.addr, Connect::v4("").clean(true)).await;
    assert!(!ack.session_present);
    c.subscribe("anon/t", 0).await;
    c.publish("anon/t", b"x", 0).await;
    assert_eq!(c.next_publish().await.payload, b"x");
    c.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v31_empty_client_id_is_rejected() {
    let s = start().await;
    let (mut c, ack) = Raw::connect(s.addr, Connect::v3("").clean(true)).await;
    assert_eq!(
        ack.code, 0x02,
        "3.1 requires a 1..23 byte client id → CONNACK 0x02"
    );
    c.expect_closed(T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_takeover_disconnects_first_with_0x8e() {
    let s = start().await;
    let id = uid("take5");
    let mut first = Raw::v5(s.addr, &id).await;
    let (mut second, _) = Raw::connect_ok(s.addr, Connect::v5(&id)).await;
    first.expect_disconnect(&[0x8E], T).await;
    // The new connection works.
    second.subscribe("take/t", 0).await;
    second.publish("take/t", b"x", 0).await;
    assert_eq!(second.next_publish().await.payload, b"x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_takeover_closes_first() {
    let s = start().await;
    let id = uid("take4");
    let mut first = Raw::v4(s.addr, &id).await;
    let (mut second, _) = Raw::connect_ok(s.addr, Connect::v4(&id)).await;
    let seen = first.expect_closed(T).await;
    assert!(
        seen.iter().all(|p| !matches!(p, Packet::Publish(_))),
        "nothing but a close expected: {seen:?}"
    );
    second.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_unknown_authentication_method_gets_0x8c() {
    let s = start().await;
    let c =
        Connect::v5(&uid("auth")).props(Props::new().str(prop::AUTH_METHOD, "X-UNKNOWN-METHOD"));
    let (mut raw, ack) = Raw::connect(s.addr, c).await;
    assert_eq!(
        ack.code, 0x8C,
        "unknown Authentication Method → CONNACK 0x8C (Bad authentication method)"
    );
    raw.expect_closed(T).await;
    // The server keeps serving.
    let mut w = Witness::new(s.addr).await;
    w.round_trip().await;
}
