//! Unit tests: known encodings (`known`), rejected inputs (`reject`), and
//! the incremental, zero-copy behaviour of `decode` (here).

mod known;
mod reject;

use bytes::{Bytes, BytesMut};

use super::*;

const MAX: usize = 1 << 20;

/// Encodes `p`, checking that `encoded_len` agrees.
fn enc(p: &Packet, v: Protocol) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(p, v, &mut out).expect("encodable");
    assert_eq!(encoded_len(p, v), out.len(), "encoded_len of {p:?}");
    out.to_vec()
}

/// Decodes exactly one packet from `bytes`, which it must consume fully.
fn dec(bytes: &[u8], v: Option<Protocol>) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let p = decode(&mut buf, v, MAX)?.expect("complete packet");
    assert!(buf.is_empty(), "left over: {buf:?}");
    Ok(p)
}

/// `p` encodes to exactly `bytes` for `v`, and `bytes` decode back to `p`.
fn wire(p: Packet, v: Protocol, bytes: &[u8]) {
    assert_eq!(enc(&p, v), bytes, "encoding of {p:?} for {v:?}");
    assert_eq!(dec(bytes, Some(v)), Ok(p.clone()), "decoding for {v:?}");
    if let Packet::Connect(_) = p {
        assert_eq!(dec(bytes, None), Ok(p), "first-packet decoding");
    }
}

fn publish(topic: &str, qos: QoS, pkid: u16, payload: impl Into<Bytes>) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        payload: payload.into(),
        properties: Properties::default(),
    }
}

#[test]
fn incremental_byte_by_byte() {
    let mut p = publish("a/b", QoS::AtLeastOnce, 7, &b"payload"[..]);
    p.properties.user_properties.push(("k".into(), "v".into()));
    p.properties.message_expiry_interval = Some(60);
    let packet = Packet::Publish(p);
    let mut bytes = enc(&packet, Protocol::V5);
    // Followed by the start of another packet, which must stay buffered.
    bytes.extend_from_slice(&[0xC0]);
    let mut buf = BytesMut::new();
    for (i, &b) in bytes.iter().enumerate() {
        buf.extend_from_slice(&[b]);
        let got = decode(&mut buf, Some(Protocol::V5), MAX).unwrap();
        if i == bytes.len() - 2 {
            assert_eq!(got.as_ref(), Some(&packet));
            assert!(buf.is_empty());
        } else if i < bytes.len() - 2 {
            assert_eq!(got, None, "byte {i}");
            assert_eq!(buf.len(), i + 1, "nothing consumed");
        } else {
            assert_eq!(got, None);
            assert_eq!(&buf[..], &[0xC0]);
        }
    }
    buf.extend_from_slice(&[0x00]);
    assert_eq!(
        decode(&mut buf, Some(Protocol::V5), MAX),
        Ok(Some(Packet::PingReq))
    );
    assert_eq!(decode(&mut buf, Some(Protocol::V5), MAX), Ok(None));
}

#[test]
fn incremental_connect_with_no_protocol() {
    let bytes = b"\x10\x0f\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x01c";
    let mut buf = BytesMut::new();
    for (i, &b) in bytes.iter().enumerate() {
        buf.extend_from_slice(&[b]);
        let got = decode(&mut buf, None, MAX).unwrap();
        assert_eq!(got.is_some(), i == bytes.len() - 1, "byte {i}");
    }
}

#[test]
fn payload_is_zero_copy() {
    let bytes = enc(
        &Packet::Publish(publish("t", QoS::AtMostOnce, 0, &b"0123456789"[..])),
        Protocol::V311,
    );
    let mut buf = BytesMut::from(&bytes[..]);
    let base = buf.as_ptr() as usize;
    let Some(Packet::Publish(p)) = decode(&mut buf, Some(Protocol::V311), MAX).unwrap() else {
        panic!("not a publish");
    };
    assert_eq!(p.payload.as_ptr() as usize, base + bytes.len() - 10);
}

#[test]
fn packet_too_large_known_from_header() {
    // Remaining length 200 announced; only the fixed header is buffered.
    let mut buf = BytesMut::from(&[0x30, 0xC8, 0x01][..]);
    assert_eq!(
        decode(&mut buf, Some(Protocol::V311), 100),
        Err(DecodeError::PacketTooLarge {
            size: 203,
            max: 100
        })
    );
    // Exactly at the limit is fine.
    let mut buf = BytesMut::from(&[0xC0, 0x00][..]);
    assert_eq!(
        decode(&mut buf, Some(Protocol::V311), 2),
        Ok(Some(Packet::PingReq))
    );
}

#[test]
fn encode_errors_leave_output_untouched() {
    let mut out = BytesMut::from(&b"prefix"[..]);
    let long = "x".repeat(70_000);
    let p = Packet::Publish(publish(&long, QoS::AtMostOnce, 0, Bytes::new()));
    assert_eq!(
        encode(&p, Protocol::V311, &mut out),
        Err(EncodeError::FieldTooLong("topic"))
    );
    let mut props = Properties::default();
    props.user_properties.push(("k".into(), long));
    let d = Packet::Disconnect(Disconnect {
        reason: 0,
        properties: props,
    });
    assert_eq!(
        encode(&d, Protocol::V5, &mut out),
        Err(EncodeError::FieldTooLong("user property"))
    );
    let a = Packet::Auth(Auth::default());
    assert_eq!(
        encode(&a, Protocol::V311, &mut out),
        Err(EncodeError::NotInProtocol)
    );
    assert_eq!(
        encode(&a, Protocol::V31, &mut out),
        Err(EncodeError::NotInProtocol)
    );
    assert_eq!(&out[..], b"prefix");
}

#[test]
fn encode_rejects_out_of_range_varints() {
    let mut props = Properties::default();
    props.subscription_identifiers.push(read::VARINT_MAX + 1);
    let mut p = publish("t", QoS::AtMostOnce, 0, Bytes::new());
    p.properties = props;
    let mut out = BytesMut::new();
    assert_eq!(
        encode(&Packet::Publish(p), Protocol::V5, &mut out),
        Err(EncodeError::FieldTooLong("subscription identifier"))
    );
    assert!(out.is_empty());
}

#[test]
fn encode_appends() {
    let mut out = BytesMut::new();
    encode(&Packet::PingReq, Protocol::V311, &mut out).unwrap();
    encode(&Packet::PingResp, Protocol::V311, &mut out).unwrap();
    assert_eq!(&out[..], &[0xC0, 0x00, 0xD0, 0x00]);
}

#[test]
fn large_remaining_lengths() {
    for len in [127usize, 128, 16_383, 16_384, 70_000] {
        let p = Packet::Publish(publish("t", QoS::AtMostOnce, 0, vec![7u8; len]));
        let bytes = enc(&p, Protocol::V311);
        assert_eq!(dec(&bytes, Some(Protocol::V311)), Ok(p));
    }
}

#[test]
fn bare_publish_encodes_as_publish_with_no_properties() {
    let payloads: [&[u8]; 3] = [b"", b"x", &[7u8; 300]];
    let topics = ["a".to_string(), "t/é/+x".to_string(), "t".repeat(200)];
    for v in [Protocol::V31, Protocol::V311, Protocol::V5] {
        for (qos, pkid) in [
            (QoS::AtMostOnce, 0),
            (QoS::AtLeastOnce, 1),
            (QoS::ExactlyOnce, 0xFFFF),
        ] {
            for (dup, retain) in [(false, false), (true, true), (false, true)] {
                for topic in &topics {
                    for payload in payloads {
                        let dup = dup && qos != QoS::AtMostOnce;
                        let mut p = publish(topic, qos, pkid, Bytes::copy_from_slice(payload));
                        p.dup = dup;
                        p.retain = retain;
                        let want = enc(&Packet::Publish(p), v);
                        let bare = BarePublish {
                            dup,
                            qos,
                            retain,
                            topic,
                            pkid,
                            payload,
                        };
                        let mut out = BytesMut::from(&b"kept"[..]);
                        bare.encode(v, &mut out).expect("encodable");
                        assert_eq!(&out[..4], b"kept", "appends");
                        assert_eq!(&out[4..], &want[..], "{bare:?} for {v:?}");
                        assert_eq!(bare.encoded_len(v), want.len());
                    }
                }
            }
        }
    }
    // A topic too long for its length prefix writes nothing.
    let long = "t".repeat(70_000);
    let bare = BarePublish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: &long,
        pkid: 0,
        payload: b"p",
    };
    let mut out = BytesMut::from(&b"kept"[..]);
    assert!(bare.encode(Protocol::V5, &mut out).is_err());
    assert_eq!(&out[..], b"kept");
}
