//! Every validation rule, each with the `DecodeError` it must produce.

use super::*;
use DecodeError::{
    FirstPacketNotConnect, InvalidProtocolName, Malformed, TopicFilterInvalid, TopicNameInvalid,
    UnsupportedProtocolLevel,
};
use Protocol::*;

/// Decodes `bytes` (one whole packet) and returns the error.
fn err(bytes: &[u8], v: Option<Protocol>) -> DecodeError {
    let mut buf = BytesMut::from(bytes);
    match decode(&mut buf, v, MAX) {
        Err(e) => e,
        Ok(p) => panic!("accepted {bytes:02x?} as {p:?}"),
    }
}

fn malformed(bytes: &[u8], v: Option<Protocol>) {
    assert!(
        matches!(err(bytes, v), Malformed(_)),
        "{bytes:02x?} for {v:?}: {:?}",
        err(bytes, v)
    );
}

fn protocol_error(bytes: &[u8], v: Option<Protocol>) {
    assert!(
        matches!(err(bytes, v), DecodeError::Protocol(_)),
        "{bytes:02x?} for {v:?}: {:?}",
        err(bytes, v)
    );
}

/// A CONNECT for `name`/`level` with `flags` and then `rest`.
fn connect(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut body = vec![0, name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(&[level, flags, 0, 10]);
    body.extend_from_slice(rest);
    let mut p = vec![0x10, body.len() as u8];
    p.extend(body);
    p
}

#[test]
fn fixed_header() {
    for v in [V31, V311, V5] {
        malformed(b"\x00\x00", Some(v));
        malformed(b"\x60\x02\x00\x01", Some(v)); // PUBREL needs 0b0010
        malformed(b"\x80\x06\x00\x01\x00\x01a\x00", Some(v)); // SUBSCRIBE
        malformed(b"\xa0\x05\x00\x01\x00\x01a", Some(v)); // UNSUBSCRIBE
        malformed(b"\x41\x02\x00\x01", Some(v));
        malformed(b"\xc1\x00", Some(v));
        malformed(b"\xe2\x00", Some(v));
        malformed(b"\x36\x03\x00\x01t", Some(v)); // PUBLISH QoS 3
        malformed(b"\x38\x03\x00\x01t", Some(v)); // DUP on QoS 0
    }
    malformed(b"\x11\x00", None);
    malformed(b"\xf0\x00", Some(V31));
    malformed(b"\xf0\x00", Some(V311));
    // 3.1 allowed DUP on a resent PUBREL; 3.1.1 does not.
    assert_eq!(
        dec(b"\x6a\x02\x00\x01", Some(V31)),
        Ok(Packet::PubRel(PubResp {
            pkid: 1,
            ..Default::default()
        }))
    );
    malformed(b"\x6a\x02\x00\x01", Some(V311));
}

#[test]
fn errors_come_before_the_body() {
    // One byte is enough to refuse a packet type or flags.
    for (byte, v) in [
        (0x00, Some(V5)),
        (0x36, Some(V5)),
        (0x61, Some(V311)),
        (0xf0, Some(V311)),
    ] {
        assert!(matches!(err(&[byte], v), Malformed(_)));
    }
    assert_eq!(err(b"\x30", None), FirstPacketNotConnect);
    assert_eq!(err(b"\xe0\x00", None), FirstPacketNotConnect);
}

#[test]
fn remaining_length() {
    malformed(b"\x30\xff\xff\xff\xff\x7f", Some(V311));
    malformed(b"\x30\xff\xff\xff\xff", Some(V311));
    malformed(b"\xc0\x80\x00", Some(V311)); // not minimal
    let mut buf = BytesMut::from(&b"\x30\xff\xff\xff"[..]);
    assert_eq!(decode(&mut buf, Some(V311), usize::MAX), Ok(None));
    assert_eq!(buf.len(), 4);
}

#[test]
fn connect_protocol() {
    assert_eq!(
        err(&connect(b"MQTX", 4, 2, b"\x00\x00"), None),
        InvalidProtocolName
    );
    assert_eq!(
        err(&connect(b"mqtt", 4, 2, b"\x00\x00"), None),
        InvalidProtocolName
    );
    assert_eq!(
        err(&connect(b"MQTT", 3, 2, b"\x00\x00"), None),
        UnsupportedProtocolLevel(3)
    );
    assert_eq!(
        err(&connect(b"MQTT", 6, 2, b"\x00\x00"), None),
        UnsupportedProtocolLevel(6)
    );
    assert_eq!(
        err(&connect(b"MQIsdp", 4, 2, b"\x00\x00"), None),
        UnsupportedProtocolLevel(4)
    );
    assert!(dec(&connect(b"MQTT", 4, 2, b"\x00\x00"), None).is_ok());
}

#[test]
fn connect_flags() {
    for (name, level) in [(&b"MQIsdp"[..], 3), (b"MQTT", 4), (b"MQTT", 5)] {
        let props: &[u8] = if level == 5 { b"\x00" } else { b"" };
        let with = |flags: u8, rest: &[u8]| {
            connect(name, level, flags, &[props, b"\x00\x01c", rest].concat())
        };
        malformed(&with(0x03, b""), None); // reserved bit
        malformed(&with(0x08, b""), None); // will QoS without will
        malformed(&with(0x20, b""), None); // will retain without will
        let will = [props, b"\x00\x01t\x00\x00"].concat();
        malformed(&with(0x1C, &will), None); // will QoS 3
        assert!(dec(&with(0x2C, &will), None).is_ok()); // QoS 1 retained will
        assert_eq!(
            err(&with(0x04, &[props, b"\x00\x03a/#\x00\x00"].concat()), None),
            TopicNameInvalid
        );
        assert_eq!(
            err(&with(0x04, &[props, b"\x00\x00\x00\x00"].concat()), None),
            TopicNameInvalid
        );
        malformed(&with(0x80, b""), None); // user name flag, no user name
        malformed(&with(0x00, b"\x00\x01u"), None); // user name without flag
        malformed(&with(0xC0, b"\x00\x01u"), None); // password flag, no password
        let password_only = with(0x40, b"\x00\x01p");
        if level == 5 {
            assert!(dec(&password_only, None).is_ok());
        } else {
            malformed(&password_only, None);
        }
    }
}

#[test]
fn strings() {
    let bad = |client_id: &[u8]| {
        connect(
            b"MQTT",
            4,
            2,
            &[&[0, client_id.len() as u8][..], client_id].concat(),
        )
    };
    malformed(&bad(b"a\xffb"), None);
    malformed(&bad(b"a\x00b"), None);
    malformed(&bad(b"\xed\xa0\x80"), None); // UTF-16 surrogate U+D800
    malformed(&bad(b"\xc0\x80"), None); // overlong U+0000
    assert!(dec(&bad("é€😀".as_bytes()), None).is_ok());
    // A string longer than the packet.
    malformed(b"\x30\x04\x00\x09ab", Some(V311));
}

#[test]
fn publish_rules() {
    for v in [V31, V311, V5] {
        let props: &[u8] = if v == V5 { b"\x00" } else { b"" };
        let publish = |topic: &[u8]| {
            let body = [&[0, topic.len() as u8][..], topic, props].concat();
            [&[0x30, body.len() as u8][..], &body].concat()
        };
        assert_eq!(err(&publish(b"a/+"), Some(v)), TopicNameInvalid);
        assert_eq!(err(&publish(b"#"), Some(v)), TopicNameInvalid);
        assert!(dec(&publish(b"/"), Some(v)).is_ok());
        protocol_error(
            &[&b"\x32\x05\x00\x01t\x00\x00"[..], props].concat(),
            Some(v),
        ); // pkid 0
        malformed(b"\x32\x04\x00\x01t\x00", Some(v)); // truncated pkid
    }
    assert_eq!(err(b"\x30\x02\x00\x00", Some(V311)), TopicNameInvalid);
    assert_eq!(err(b"\x30\x02\x00\x00", Some(V31)), TopicNameInvalid);
    protocol_error(b"\x30\x03\x00\x00\x00", Some(V5)); // empty topic, no alias
    protocol_error(b"\x30\x06\x00\x00\x03\x23\x00\x00", Some(V5)); // alias 0
    assert!(dec(b"\x30\x06\x00\x00\x03\x23\x00\x01", Some(V5)).is_ok());
}

#[test]
fn subscribe_rules() {
    for v in [V31, V311] {
        malformed(b"\x82\x02\x00\x01", Some(v)); // no filter
        malformed(b"\x82\x06\x00\x01\x00\x01a\x04", Some(v)); // 5.0 bits in 3.x
        malformed(b"\x82\x06\x00\x01\x00\x01a\x03", Some(v)); // QoS 3
        assert_eq!(
            err(b"\x82\x08\x00\x01\x00\x03a#b\x00", Some(v)),
            TopicFilterInvalid
        );
        protocol_error(b"\x82\x06\x00\x00\x00\x01a\x00", Some(v)); // pkid 0
        malformed(b"\x82\x05\x00\x01\x00\x01a", Some(v)); // options byte missing
    }
    let v = Some(V5);
    protocol_error(b"\x82\x03\x00\x01\x00", v);
    malformed(b"\x82\x07\x00\x01\x00\x00\x01a\x40", v); // reserved bits
    protocol_error(b"\x82\x07\x00\x01\x00\x00\x01a\x30", v); // retain handling 3
    protocol_error(b"\x82\x07\x00\x01\x00\x00\x01a\x03", v); // QoS 3
    assert_eq!(
        err(b"\x82\x0a\x00\x01\x00\x00\x04a/#/\x00", v),
        TopicFilterInvalid
    );
    assert_eq!(
        err(b"\x82\x0e\x00\x01\x00\x00\x08$share/g\x00", v),
        TopicFilterInvalid
    );
    protocol_error(b"\x82\x10\x00\x01\x00\x00\x0a$share/g/a\x04", v); // shared + no local
    assert!(dec(b"\x82\x10\x00\x01\x00\x00\x0a$share/g/a\x01", v).is_ok());
    assert!(dec(b"\x82\x07\x00\x01\x00\x00\x01a\x04", v).is_ok());
}

#[test]
fn unsubscribe_rules() {
    for v in [V31, V311, V5] {
        let props: &[u8] = if v == V5 { b"\x00" } else { b"" };
        let unsub = |pkid: u8, filters: &[u8]| {
            let body = [&[0, pkid][..], props, filters].concat();
            [&[0xa2, body.len() as u8][..], &body].concat()
        };
        let no_filter = err(&unsub(1, b""), Some(v));
        assert!(matches!(no_filter, Malformed(_) | DecodeError::Protocol(_)));
        assert_eq!(err(&unsub(1, b"\x00\x03a+b"), Some(v)), TopicFilterInvalid);
        assert_eq!(err(&unsub(1, b"\x00\x00"), Some(v)), TopicFilterInvalid);
        protocol_error(&unsub(0, b"\x00\x01a"), Some(v));
        assert!(dec(&unsub(1, b"\x00\x01a\x00\x01#"), Some(v)).is_ok());
    }
}

/// A 5.0 PUBLISH (QoS 0, topic "t") carrying property bytes `props`.
fn publish_with(props: &[u8]) -> Vec<u8> {
    let body = [&b"\x00\x01t"[..], &[props.len() as u8], props].concat();
    [&[0x30, body.len() as u8][..], &body].concat()
}

/// A 5.0 CONNACK carrying property bytes `props`.
fn connack_with(props: &[u8]) -> Vec<u8> {
    [
        &[0x20, props.len() as u8 + 3, 0, 0, props.len() as u8][..],
        props,
    ]
    .concat()
}

#[test]
fn property_rules() {
    let v = Some(V5);
    // Not allowed on this packet.
    protocol_error(&publish_with(b"\x11\x00\x00\x00\x01"), v);
    protocol_error(&connack_with(b"\x23\x00\x01"), v);
    protocol_error(b"\x40\x08\x00\x01\x00\x04\x11\x00\x00\x00", v);
    protocol_error(&connect(b"MQTT", 5, 2, b"\x02\x23\x00\x01\x00\x00"), None);
    // Will Delay Interval is a will property, not a CONNECT property.
    protocol_error(
        &connect(b"MQTT", 5, 2, b"\x05\x18\x00\x00\x00\x01\x00\x00"),
        None,
    );
    // Duplicates.
    protocol_error(
        &publish_with(b"\x02\x00\x00\x00\x01\x02\x00\x00\x00\x02"),
        v,
    );
    protocol_error(&publish_with(b"\x01\x00\x01\x01"), v);
    protocol_error(b"\x82\x0a\x00\x01\x04\x0b\x01\x0b\x02\x00\x01a\x00", v);
    // Repeatable ones.
    assert!(dec(&publish_with(b"\x0b\x01\x0b\x02"), v).is_ok());
    assert!(dec(
        &publish_with(b"\x26\x00\x01k\x00\x00\x26\x00\x01k\x00\x00"),
        v
    )
    .is_ok());
    // Values out of range.
    protocol_error(&publish_with(b"\x0b\x00"), v);
    protocol_error(&publish_with(b"\x01\x02"), v);
    protocol_error(&publish_with(b"\x23\x00\x00"), v);
    protocol_error(&publish_with(b"\x08\x00\x03a/+"), v);
    protocol_error(&connack_with(b"\x24\x02"), v);
    protocol_error(&connack_with(b"\x21\x00\x00"), v);
    protocol_error(&connack_with(b"\x27\x00\x00\x00\x00"), v);
    protocol_error(&connack_with(b"\x25\x02"), v);
    protocol_error(&connack_with(b"\x28\x02"), v);
    protocol_error(&connect(b"MQTT", 5, 2, b"\x02\x17\x02\x00\x00"), None);
    protocol_error(&connect(b"MQTT", 5, 2, b"\x02\x19\x02\x00\x00"), None);
    protocol_error(&connect(b"MQTT", 5, 2, b"\x03\x21\x00\x00\x00\x00"), None);
    protocol_error(
        &connect(b"MQTT", 5, 2, b"\x05\x27\x00\x00\x00\x00\x00\x00"),
        None,
    );
    // Authentication data needs an authentication method.
    protocol_error(&connect(b"MQTT", 5, 2, b"\x04\x16\x00\x01x\x00\x00"), None);
    assert!(dec(
        &connect(b"MQTT", 5, 2, b"\x08\x15\x00\x01m\x16\x00\x01x\x00\x00"),
        None
    )
    .is_ok());
    // Unknown identifiers and bad lengths are malformed.
    malformed(&publish_with(b"\x04\x00"), v);
    malformed(&publish_with(b"\x80\x01"), v);
    malformed(&publish_with(b"\x02\x00\x00"), v); // value cut short by the length
    malformed(b"\x30\x04\x00\x01t\x05", v); // length past the packet
    malformed(b"\x30\x07\x00\x01t\x80\x80\x80\x80", v); // length is a bad varint
    malformed(&publish_with(b"\x03\x00\x02\xff\xfe"), v); // bad UTF-8
}

#[test]
fn ack_rules() {
    let v = Some(V5);
    protocol_error(b"\x62\x03\x00\x01\x10", v); // PUBREL allows only 0x00, 0x92
    protocol_error(b"\x70\x03\x00\x01\x80", v);
    protocol_error(b"\x40\x03\x00\x01\x92", v); // PUBACK: not 0x92
    protocol_error(b"\x50\x03\x00\x01\x05", v);
    for p in [0x40, 0x50, 0x62, 0x70] {
        protocol_error(&[p, 2, 0, 0], v); // pkid 0
        malformed(&[p, 1, 0], v);
        malformed(&[p, 5, 0, 1, 0, 0, 0], v); // trailing byte
        malformed(&[p, 3, 0, 1, 0], Some(V311)); // no reason codes in 3.x
    }
    protocol_error(b"\xe0\x01\x05", v);
    protocol_error(b"\xf0\x01\x01", v);
    protocol_error(b"\xf0\x07\x18\x05\x11\x00\x00\x00\x00", v); // not an AUTH property
    malformed(b"\xe0\x01\x00", Some(V311));
    malformed(b"\xe0\x01\x00", Some(V31));
    malformed(b"\xc0\x01\x00", v);
    malformed(b"\xd0\x01\x00", Some(V311));
    protocol_error(b"\x20\x02\x00\x06", Some(V311)); // CONNACK code 6
    protocol_error(b"\x20\x03\x00\x01\x00", v); // not a 5.0 reason
    protocol_error(b"\x20\x02\x01\x05", Some(V311)); // session present on refusal
    malformed(b"\x20\x02\x02\x00", Some(V311)); // reserved flag
    malformed(b"\x20\x03\x00\x00\x00", Some(V311)); // trailing byte
    protocol_error(b"\x90\x03\x00\x01\x03", Some(V311));
    protocol_error(b"\x90\x02\x00\x01", Some(V311)); // no return codes
    protocol_error(b"\x90\x04\x00\x01\x00\x03", v);
    protocol_error(b"\xb0\x04\x00\x01\x00\x01", v);
    malformed(b"\xb0\x03\x00\x01\x00", Some(V311));
}

#[test]
fn trailing_bytes() {
    malformed(&connect(b"MQTT", 4, 2, b"\x00\x01c\x00"), None);
    malformed(&connect(b"MQTT", 5, 2, b"\x00\x00\x01c\x00"), None);
    malformed(b"\xe0\x04\x00\x00\x00\x00", Some(V5));
}
