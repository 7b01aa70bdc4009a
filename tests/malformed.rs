//! Malformed input on raw sockets. Each case checks the spec's reaction
//! (5.0: DISCONNECT with the right reason code, or CONNACK with an error
//! code, then close; 3.1.1: close) and that ANOTHER, already-connected
//! client keeps working afterwards.
mod common;

use common::raw::{packet, put_str, put_varint};
use common::*;
use tern_broker::config::Config;

/// What the broker must do with the bad input.
enum Expect {
    /// Close the connection without sending anything (3.x, or before CONNECT).
    Close,
    /// Close, optionally after a refusing CONNACK (any non-zero code).
    CloseMaybeRefused,
    /// 5.0: DISCONNECT with one of these reason codes, then close.
    Disconnect(&'static [u8]),
    /// CONNACK with this code (3.x layout), then close.
    ConnAck(u8),
    /// Close, optionally after a CONNACK whose code is one of these.
    ConnAckOptional(&'static [u8]),
}

/// Runs one case: `version` is the CONNECT sent first when `connect_first`.
async fn case(
    version: u8,
    connect_first: bool,
    bad: Vec<u8>,
    expect: Expect,
    cfg: impl FnOnce(&mut Config),
) {
    let s = start_with(cfg).await;
    let mut witness = Witness::new(s.addr).await;
    let mut c = Raw::tcp(s.addr).await;
    c.name = format!("malformed-v{version}");
    c.v5 = version == 5;
    if connect_first {
        let ack = c.handshake(Connect::new(version, &uid("bad"))).await;
        assert_eq!(ack.code, 0);
    }
    // The broker may close while we are still writing; that is fine.
    let _ = c.try_send(&bad).await;
    match expect {
        Expect::Close => {
            let seen = c.expect_closed(T).await;
            assert!(seen.is_empty(), "expected a silent close, got {seen:?}");
        }
        Expect::CloseMaybeRefused => {
            let seen = c.expect_closed(T).await;
            for p in &seen {
                match p {
                    Packet::ConnAck { code, .. } if *code != 0 => {}
                    other => panic!("only a refusing CONNACK may precede the close, got {other:?}"),
                }
            }
        }
        Expect::Disconnect(reasons) => c.expect_disconnect(reasons, T).await,
        Expect::ConnAckOptional(codes) => {
            let seen = c.expect_closed(T).await;
            for p in &seen {
                match p {
                    Packet::ConnAck { code, .. } if codes.contains(code) => {}
                    other => panic!(
                        "expected close, optionally after CONNACK in {codes:02X?}; got {other:?}"
                    ),
                }
            }
        }
        Expect::ConnAck(code) => {
            let seen = c.expect_closed(T).await;
            match seen.as_slice() {
                [Packet::ConnAck {
                    code: got,
                    session_present: false,
                    ..
                }] => {
                    assert_eq!(*got, code, "CONNACK return code")
                }
                other => panic!("expected exactly CONNACK {code:#04x} then close, got {other:?}"),
            }
        }
    }
    witness.round_trip().await;
}

fn connect_with_name(name: &str, level: u8) -> Vec<u8> {
    let mut b = Vec::new();
    put_str(name, &mut b);
    b.extend_from_slice(&[level, 0x02, 0, 60]);
    if level == 5 {
        b.push(0);
    }
    put_str(&uid("x"), &mut b);
    packet(0x10, &b)
}

fn publish_raw_topic(topic: &[u8], v5: bool) -> Vec<u8> {
    let mut b = (topic.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(topic);
    if v5 {
        b.push(0);
    }
    b.extend_from_slice(b"payload");
    packet(0x30, &b)
}

// --- CONNECT-level errors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_name_v311() {
    case(
        4,
        false,
        connect_with_name("MQTX", 4),
        Expect::CloseMaybeRefused,
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_name_v5() {
    case(
        5,
        false,
        connect_with_name("HTTP", 5),
        Expect::CloseMaybeRefused,
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_level_gets_connack_0x01() {
    // "MQTT" with an unknown level: 3.1.1 says CONNACK 0x01 (unacceptable protocol version), then close.
    case(
        4,
        false,
        connect_with_name("MQTT", 7),
        Expect::ConnAck(0x01),
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_connect_flag_set_v311() {
    let mut b = Vec::new();
    put_str("MQTT", &mut b);
    b.extend_from_slice(&[4, 0x03, 0, 60]); // bit 0 (reserved) set
    put_str(&uid("x"), &mut b);
    case(
        4,
        false,
        packet(0x10, &b),
        Expect::CloseMaybeRefused,
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_before_connect_closes() {
    case(4, false, vec![0xC0, 0x00], Expect::Close, |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_before_connect_closes() {
    case(
        5,
        false,
        publish_raw_topic(b"a/b", true),
        Expect::Close,
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connect_v311_closes() {
    case(
        4,
        true,
        Connect::v4(&uid("again")).encode(),
        Expect::Close,
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connect_v5_protocol_error() {
    case(
        5,
        true,
        Connect::v5(&uid("again")).encode(),
        Expect::Disconnect(&[0x82]),
        |_| {},
    )
    .await;
}

// --- fixed header

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_fixed_header_bits_v311() {
    // SUBSCRIBE must have flags 0010; 0000 is malformed [MQTT-3.8.1-1].
    let bad = packet(0x80, &[0, 1, 0, 3, b'a', b'/', b'b', 0]);
    case(4, true, bad, Expect::Close, |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_fixed_header_bits_v5() {
    let bad = packet(0x80, &[0, 1, 0, 0, 3, b'a', b'/', b'b', 0]);
    case(5, true, bad, Expect::Disconnect(&[0x81]), |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_bits_in_pingreq_v5() {
    case(
        5,
        true,
        vec![0xC1, 0x00],
        Expect::Disconnect(&[0x81]),
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos3_publish_v311() {
    let mut bad = publish_raw_topic(b"a/b", false);
    bad[0] = 0x36;
    case(4, true, bad, Expect::Close, |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos3_publish_v5() {
    let mut bad = publish_raw_topic(b"a/b", true);
    bad[0] = 0x36;
    case(5, true, bad, Expect::Disconnect(&[0x81]), |_| {}).await;
}

// --- remaining length

fn oversize_header() -> Vec<u8> {
    // Declares 100 000 bytes; only the start follows.
    let mut b = vec![0x30];
    put_varint(100_000, &mut b);
    b.extend_from_slice(&[0, 3, b'a', b'/', b'b']);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remaining_length_over_max_packet_size_v311() {
    case(4, true, oversize_header(), Expect::Close, |c| {
        c.mqtt.max_packet_size = 4096
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remaining_length_over_max_packet_size_v5() {
    case(
        5,
        true,
        oversize_header(),
        Expect::Disconnect(&[0x95]),
        |c| c.mqtt.max_packet_size = 4096,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_byte_remaining_length_v311() {
    case(
        4,
        true,
        vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        Expect::Close,
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_byte_remaining_length_v5() {
    case(
        5,
        true,
        vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        Expect::Disconnect(&[0x81]),
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_byte_remaining_length_before_connect() {
    case(
        4,
        false,
        vec![0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        Expect::Close,
        |_| {},
    )
    .await;
}

// --- topics and payload contents

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_utf8_topic_v311() {
    case(
        4,
        true,
        publish_raw_topic(&[b'a', 0xFF, 0xFE], false),
        Expect::Close,
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_utf8_topic_v5() {
    case(
        5,
        true,
        publish_raw_topic(&[b'a', 0xC3, 0x28], true),
        Expect::Disconnect(&[0x81]),
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_character_in_topic_v5() {
    case(
        5,
        true,
        publish_raw_topic(b"a\0b", true),
        Expect::Disconnect(&[0x81]),
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_wildcard_topic_v311() {
    case(
        4,
        true,
        publish_raw_topic(b"a/+/b", false),
        Expect::Close,
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_wildcard_topic_v5() {
    // [MQTT-3.3.2-2]: 0x90 Topic Name invalid; a broker may classify it as
    // a protocol error or malformed packet instead.
    case(
        5,
        true,
        publish_raw_topic(b"a/#", true),
        Expect::Disconnect(&[0x90, 0x82, 0x81]),
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_with_no_filters_v311() {
    case(4, true, packet(0x82, &[0, 1]), Expect::Close, |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_with_no_filters_v5() {
    // 3.8.3: "A SUBSCRIBE packet with no Payload is a Protocol Error".
    case(
        5,
        true,
        packet(0x82, &[0, 1, 0]),
        Expect::Disconnect(&[0x82]),
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_string_length_v5() {
    // Topic length says 50 bytes; the packet ends after 3.
    let bad = packet(0x30, &[0, 50, b'a', b'/', b'b']);
    case(5, true, bad, Expect::Disconnect(&[0x81]), |_| {}).await;
}

// --- CONNECT contents (5.0: CONNACK with the reason is optional, close is not)

fn connect_bytes(c: Connect) -> Vec<u8> {
    c.encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_receive_maximum_zero_v5() {
    let c = Connect::v5(&uid("rm0")).props(Props::new().u16(raw::prop::RECEIVE_MAXIMUM, 0));
    case(
        5,
        false,
        connect_bytes(c),
        Expect::ConnAckOptional(&[0x82]),
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_maximum_packet_size_zero_v5() {
    let c = Connect::v5(&uid("mps0")).props(Props::new().u32(raw::prop::MAXIMUM_PACKET_SIZE, 0));
    case(
        5,
        false,
        connect_bytes(c),
        Expect::ConnAckOptional(&[0x82]),
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_duplicate_property_v5() {
    let c = Connect::v5(&uid("dup")).props(
        Props::new()
            .u32(raw::prop::SESSION_EXPIRY, 10)
            .u32(raw::prop::SESSION_EXPIRY, 20),
    );
    case(
        5,
        false,
        connect_bytes(c),
        Expect::ConnAckOptional(&[0x82]),
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_unknown_property_v5() {
    let c = Connect::v5(&uid("unk")).props(Props(vec![0x7F, 0x00]));
    case(
        5,
        false,
        connect_bytes(c),
        Expect::ConnAckOptional(&[0x81]),
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_will_qos_3_v5() {
    let c = Connect::v5(&uid("wq3")).will(Will::new("w/t", b"x").qos(3));
    case(
        5,
        false,
        connect_bytes(c),
        Expect::ConnAckOptional(&[0x81]),
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_will_retain_without_will_flag_v311() {
    let mut b = connect_bytes(Connect::v4(&uid("wr")));
    // Fixed header (2) + "MQTT" (6) + level (1) → the connect flags.
    b[9] |= 0x20;
    case(4, false, b, Expect::CloseMaybeRefused, |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_password_without_username_v311() {
    let mut c = Connect::v4(&uid("pw"));
    c.password = Some(b"secret".to_vec());
    case(
        4,
        false,
        connect_bytes(c),
        Expect::CloseMaybeRefused,
        |_| {},
    )
    .await;
}

// --- 5.0 protocol errors after CONNECT

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_qos1_with_packet_id_zero_v5() {
    let m = Publish::new("a/b", b"x").qos(1); // pkid stays 0
    case(
        5,
        true,
        m.encode(true),
        Expect::Disconnect(&[0x81, 0x82]),
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_topic_alias_zero_v5() {
    let m = Publish::new("a/b", b"x").props(Props::new().u16(raw::prop::TOPIC_ALIAS, 0));
    // [MQTT-3.3.2-8]; 0x94's definition names only "greater than the maximum",
    // so a Protocol Error is accepted too.
    case(
        5,
        true,
        m.encode(true),
        Expect::Disconnect(&[0x94, 0x82]),
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_empty_topic_without_alias_v5() {
    let m = Publish::new("", b"x");
    case(5, true, m.encode(true), Expect::Disconnect(&[0x82]), |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_identifier_zero_v5() {
    let b = raw::subscribe(
        true,
        1,
        &[("a/b", 1)],
        &Props::new().varint(raw::prop::SUBSCRIPTION_ID, 0),
    );
    case(5, true, b, Expect::Disconnect(&[0x81, 0x82]), |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_reserved_option_bits_v5() {
    let b = raw::subscribe(true, 1, &[("a/b", 0xC1)], &Props::new());
    case(5, true, b, Expect::Disconnect(&[0x81]), |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_qos_3_v311() {
    let b = raw::subscribe(false, 1, &[("a/b", 3)], &Props::new());
    case(4, true, b, Expect::Close, |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_retain_handling_3_v5() {
    let b = raw::subscribe(true, 1, &[("a/b", 0x31)], &Props::new());
    case(5, true, b, Expect::Disconnect(&[0x81, 0x82]), |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_with_no_local_v5() {
    let b = raw::subscribe(true, 1, &[("$share/g/a", 1 | raw::NO_LOCAL)], &Props::new());
    case(5, true, b, Expect::Disconnect(&[0x82]), |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_setting_session_expiry_after_zero_v5() {
    let mut body = vec![0x00];
    Props::new()
        .u32(raw::prop::SESSION_EXPIRY, 60)
        .encode_into(&mut body);
    case(
        5,
        true,
        packet(0xE0, &body),
        Expect::Disconnect(&[0x82]),
        |_| {},
    )
    .await;
}
