use super::*;
use crate::convert::message_from_pb;
use crate::pb;
use crate::wire_testing::{groups, message, pb_envelope, pb_message, PbBatch, PbFrame};
use proptest::prelude::*;
use prost::Message as _;

/// A `Frame` holding a `PublishBatch` of these encoded envelopes.
fn wrap(envelopes: &[&[u8]]) -> Vec<u8> {
    wrap_with(envelopes, &[])
}

/// The same with `extra` bytes (unknown fields) inside the batch.
fn wrap_with(envelopes: &[&[u8]], extra: &[u8]) -> Vec<u8> {
    let mut batch = extra.to_vec();
    for e in envelopes {
        encode_key(BATCH_ENVELOPES, WireType::LengthDelimited, &mut batch);
        encode_varint(e.len() as u64, &mut batch);
        batch.extend_from_slice(e);
    }
    let mut frame = Vec::new();
    encode_key(FRAME_PUBLISH_BATCH, WireType::LengthDelimited, &mut frame);
    encode_varint(batch.len() as u64, &mut frame);
    frame.extend_from_slice(&batch);
    frame
}

fn decode(frame: &[u8]) -> Result<Batch, DecodeError> {
    match pb::Frame::decode(Bytes::copy_from_slice(frame))?.kind {
        Some(pb::frame::Kind::PublishBatch(b)) => Ok(b),
        other => panic!("not a batch: {other:?}"),
    }
}

/// prost's decoding of the same bytes.
fn prost_decode(frame: &[u8]) -> Result<Vec<pb::Envelope>, DecodeError> {
    Ok(PbFrame::decode(frame)?
        .publish_batch
        .unwrap_or_default()
        .envelopes)
}

/// `ours` holds what prost decoded, converted as before this decoder.
fn assert_same(ours: &Received, prost: &pb::Envelope) {
    assert_eq!(ours.seq, prost.seq);
    assert_eq!(ours.direct, prost.direct);
    assert_eq!(ours.retained, prost.retained);
    let groups: Vec<(String, String)> = ours
        .groups
        .iter()
        .map(|(g, f)| (g.to_string(), f.to_string()))
        .collect();
    let expected: Vec<(String, String)> = prost
        .groups
        .iter()
        .map(|g| (g.group.clone(), g.filter.clone()))
        .collect();
    assert_eq!(groups, expected);
    let converted = prost.message.clone().map(message_from_pb);
    match (&ours.message, converted) {
        (Ok(m), Some(Ok(p))) => assert_eq!(**m, p),
        (Err(_), None | Some(Err(_))) => {}
        (ours, prost) => panic!("ours {ours:?}, prost {prost:?}"),
    }
}

/// The encoded fields of an encoded message, each with its key.
fn fields(mut buf: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let start = buf;
        let (tag, wire_type) = decode_key(&mut buf).expect("key");
        skip_field(wire_type, tag, &mut buf, DecodeContext::default()).expect("field");
        out.push(start[..start.len() - buf.len()].to_vec());
    }
    out
}

fn encoded(e: &pb::Envelope) -> Vec<u8> {
    e.encode_to_vec()
}

fn plain(topic: &str, origin: &str) -> Message {
    Message {
        topic: Arc::from(topic),
        payload: Bytes::from_static(b"payload"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::default().into(),
        expires_at: None,
        origin: Some(Arc::from(origin)),
        timestamp: 42,
        origin_node: None,
    }
}

proptest! {
    #[test]
    fn decodes_what_prost_decodes(
        envs in prop::collection::vec(
            (message(), any::<u64>(), any::<bool>(), groups(), any::<bool>()),
            0..6,
        ),
    ) {
        let pb_envs: Vec<pb::Envelope> = envs
            .iter()
            .map(|(m, seq, direct, g, retained)| pb_envelope(*seq, m, *direct, g, *retained))
            .collect();
        let frame = PbFrame { publish_batch: Some(PbBatch { envelopes: pb_envs.clone() }) }
            .encode_to_vec();
        let batch = decode(&frame).expect("decodes");
        prop_assert_eq!(batch.envelopes.len(), envs.len());
        for ((ours, prost), (m, ..)) in batch.envelopes.iter().zip(&pb_envs).zip(&envs) {
            assert_same(ours, prost);
            prop_assert_eq!(ours.message.as_deref(), Ok(m), "round trip");
        }
        // Encoding the decoded batch gives the same bytes back.
        let again = pb::Frame { kind: Some(pb::frame::Kind::PublishBatch(batch)) };
        prop_assert_eq!(again.encode_to_vec(), frame);
    }

    #[test]
    fn fields_in_any_order_or_repeated_decode_as_prost_does(
        m in message(),
        seq in any::<u64>(),
        g in groups(),
        order in any::<prop::sample::Index>(),
        repeat in any::<prop::sample::Index>(),
    ) {
        // The decoder takes the usual fields where every node writes them
        // and leaves the rest to its general loop: shuffle the fields of a
        // message and of its envelope, repeat one, and compare with prost.
        let msg = fields(&pb_message(&m).encode_to_vec());
        let shuffle = |mut f: Vec<Vec<u8>>| {
            if !f.is_empty() {
                let dup = f[repeat.index(f.len())].clone();
                f.push(dup);
                let k = order.index(f.len());
                f.rotate_left(k);
                f.reverse();
            }
            f.concat()
        };
        let mut env = Vec::new();
        prost::encoding::uint64::encode(ENV_SEQ, &seq, &mut env);
        prost::encoding::bytes::encode(ENV_MESSAGE, &shuffle(msg), &mut env);
        env.extend_from_slice(&pb::Envelope {
            direct: true,
            groups: g.iter().map(|(group, filter)| pb::SharedGroup {
                group: group.to_string(),
                filter: filter.to_string(),
            }).collect(),
            ..pb::Envelope::default()
        }.encode_to_vec());
        let env = shuffle(fields(&env));
        let frame = wrap(&[&env]);
        let ours = decode(&frame).expect("decodes");
        let prost = prost_decode(&frame).expect("prost decodes");
        assert_same(&ours.envelopes[0], &prost[0]);
    }

    #[test]
    fn any_bytes_are_an_error_or_a_batch_never_a_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let _ = pb::Frame::decode(&bytes[..]);
        let _ = decode(&wrap(&[&bytes]));
        // The same bytes as a message inside a valid envelope.
        let mut env = vec![0x08, 0x01];
        prost::encoding::bytes::encode(ENV_MESSAGE, &bytes, &mut env);
        let ours = decode(&wrap(&[&env]));
        let prost = prost_decode(&wrap(&[&env]));
        if let (Ok(ours), Ok(prost)) = (&ours, &prost) {
            assert_same(&ours.envelopes[0], &prost[0]);
        }
        // prost refuses non-UTF-8 `string` fields outright; the decoder
        // refuses only that envelope's message.
        if ours.is_err() {
            prop_assert!(prost.is_err());
        }
    }

    #[test]
    fn every_truncation_of_an_envelope_fails_as_with_prost(
        m in message(),
        g in groups(),
        cut in any::<prop::sample::Index>(),
    ) {
        let env = encoded(&pb_envelope(7, &m, true, &g, false));
        let k = cut.index(env.len());
        let frame = wrap(&[&env[..k]]);
        let ours = decode(&frame);
        let prost = prost_decode(&frame);
        prop_assert_eq!(ours.is_err(), prost.is_err(), "cut at {} of {}", k, env.len());
        if let (Ok(ours), Ok(prost)) = (ours, prost) {
            assert_same(&ours.envelopes[0], &prost[0]);
        }
    }
}

#[test]
fn payload_is_a_slice_of_the_frame_and_names_are_shared() {
    let a = encoded(&pb_envelope(1, &plain("t/1", "c1"), true, &[], false));
    let b = encoded(&pb_envelope(2, &plain("t/1", "c1"), true, &[], false));
    let frame = Bytes::from(wrap(&[&a, &b]));
    let Some(pb::frame::Kind::PublishBatch(batch)) = pb::Frame::decode(frame.clone()).unwrap().kind
    else {
        panic!("not a batch");
    };
    let [x, y] = &batch.envelopes[..] else {
        panic!("two envelopes");
    };
    let (x, y) = (x.message.as_ref().unwrap(), y.message.as_ref().unwrap());
    assert!(Arc::ptr_eq(&x.topic, &y.topic));
    assert!(Arc::ptr_eq(
        x.origin.as_ref().unwrap(),
        y.origin.as_ref().unwrap()
    ));
    let range = frame.as_ptr_range();
    assert!(
        range.contains(&x.payload.as_ptr()),
        "no copy of the payload"
    );
}

#[test]
fn names_beyond_the_cache_still_decode() {
    let envs: Vec<Vec<u8>> = (0..NAMES as u64 * 3)
        .map(|i| {
            let m = plain(&format!("t/{}", i % (NAMES as u64 + 3)), "c");
            encoded(&pb_envelope(i + 1, &m, true, &[], false))
        })
        .collect();
    let refs: Vec<&[u8]> = envs.iter().map(Vec::as_slice).collect();
    let batch = decode(&wrap(&refs)).unwrap();
    for (i, r) in batch.envelopes.iter().enumerate() {
        let topic = format!("t/{}", i as u64 % (NAMES as u64 + 3));
        assert_eq!(&*r.message.as_ref().unwrap().topic, topic.as_str());
    }
}

/// Unknown fields of every wire type, a group nested in a group included.
fn unknown() -> Vec<u8> {
    let mut b = Vec::new();
    encode_key(99, WireType::Varint, &mut b);
    encode_varint(300, &mut b);
    encode_key(100, WireType::SixtyFourBit, &mut b);
    b.extend_from_slice(&[1; 8]);
    encode_key(101, WireType::LengthDelimited, &mut b);
    encode_varint(3, &mut b);
    b.extend_from_slice(b"xyz");
    encode_key(102, WireType::ThirtyTwoBit, &mut b);
    b.extend_from_slice(&[2; 4]);
    encode_key(103, WireType::StartGroup, &mut b);
    encode_key(1, WireType::Varint, &mut b);
    encode_varint(5, &mut b);
    encode_key(104, WireType::StartGroup, &mut b);
    encode_key(104, WireType::EndGroup, &mut b);
    encode_key(103, WireType::EndGroup, &mut b);
    b
}

fn delimited_field(tag: u32, body: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

#[test]
fn unknown_fields_are_skipped_at_every_level() {
    let mut m = plain("a/b", "c1");
    m.properties.user_properties = vec![("k".into(), "v".into())];
    let groups = [(Arc::from("g"), Arc::from("a/+"))];
    let expected = decode(&wrap(&[&encoded(&pb_envelope(9, &m, true, &groups, true))])).unwrap();

    // The same envelope by hand, unknown fields everywhere.
    let mut property = pb::UserProperty {
        key: "k".into(),
        value: "v".into(),
    }
    .encode_to_vec();
    property.extend(unknown());
    let mut without_props = m.clone();
    without_props.properties.user_properties.clear();
    let mut msg = unknown();
    msg.extend(pb_message(&without_props).encode_to_vec());
    delimited_field(MSG_USER_PROPERTIES, &property, &mut msg);
    msg.extend(unknown());
    let mut group = unknown();
    group.extend(
        pb::SharedGroup {
            group: "g".into(),
            filter: "a/+".into(),
        }
        .encode_to_vec(),
    );
    let mut env = unknown();
    encode_key(ENV_SEQ, WireType::Varint, &mut env);
    encode_varint(9, &mut env);
    delimited_field(ENV_MESSAGE, &msg, &mut env);
    env.extend(unknown());
    env.extend([0x18, 0x01]); // direct
    delimited_field(ENV_GROUPS, &group, &mut env);
    env.extend([0x28, 0x01]); // retained
    env.extend(unknown());

    let frame = wrap_with(&[&env], &unknown());
    let got = decode(&frame).expect("unknown fields skipped");
    assert_eq!(got, expected);
    assert_same(&got.envelopes[0], &prost_decode(&frame).unwrap()[0]);
}

#[test]
fn a_message_field_seen_twice_is_merged_as_prost_does() {
    let first = pb::MqttMessage {
        topic: Bytes::from_static(b"a/b"),
        qos: 1,
        ..Default::default()
    };
    let second = pb::MqttMessage {
        payload: Bytes::from_static(b"p"),
        timestamp: 7,
        user_properties: vec![pb::UserProperty {
            key: "k".into(),
            value: "v".into(),
        }],
        ..Default::default()
    };
    let mut env = Vec::new();
    delimited_field(ENV_MESSAGE, &first.encode_to_vec(), &mut env);
    delimited_field(ENV_MESSAGE, &second.encode_to_vec(), &mut env);
    let frame = wrap(&[&env]);
    let got = decode(&frame).unwrap();
    assert_same(&got.envelopes[0], &prost_decode(&frame).unwrap()[0]);
    let m = got.envelopes[0].message.as_ref().unwrap();
    assert_eq!(
        (&*m.topic, &m.payload[..], m.timestamp),
        ("a/b", &b"p"[..], 7)
    );
}

#[test]
fn truncated_varints_are_errors() {
    // seq: a continuation bit with nothing after it.
    assert!(decode(&wrap(&[&[0x08, 0xff]])).is_err());
    // seq: eleven continuation bytes (longer than any varint).
    assert!(decode(&wrap(&[&[
        0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
    ]]))
    .is_err());
    // A key cut short.
    assert!(decode(&wrap(&[&[0x80]])).is_err());
    // qos inside the message.
    assert!(decode(&wrap(&[&[0x12, 0x02, 0x18, 0x80]])).is_err());
    // A length that runs past the envelope.
    assert!(decode(&wrap(&[&[0x12, 0x05, 0x0a, 0x01]])).is_err());
    // The envelope's own length runs past the batch.
    let mut frame = wrap(&[&[0x08, 0x01]]);
    frame[3] = 0x7f;
    assert!(decode(&frame).is_err());
}

#[test]
fn known_fields_with_the_wrong_wire_type_are_errors() {
    let cases: [&[u8]; 7] = [
        &[0x0a, 0x00],             // seq as bytes
        &[0x10, 0x01],             // message as a varint
        &[0x1d, 0, 0, 0, 0],       // direct as fixed32
        &[0x20, 0x01],             // groups as a varint
        &[0x12, 0x02, 0x08, 0x01], // topic as a varint
        &[0x12, 0x02, 0x1a, 0x00], // qos as bytes
        &[0x12, 0x02, 0x48, 0x01], // a user property as a varint
    ];
    for env in cases {
        let frame = wrap(&[env]);
        assert!(decode(&frame).is_err(), "{env:x?}");
        assert!(prost_decode(&frame).is_err(), "prost agrees: {env:x?}");
    }
    // Field number 0 and the reserved wire types 6 and 7.
    for env in [&[0x00, 0x01][..], &[0x0e][..], &[0x0f][..]] {
        assert!(decode(&wrap(&[env])).is_err(), "{env:x?}");
    }
    // The envelope itself as a varint.
    let mut frame = Vec::new();
    delimited_field(FRAME_PUBLISH_BATCH, &[0x08, 0x01], &mut frame);
    assert!(decode(&frame).is_err());
}

#[test]
fn deeply_nested_unknown_groups_are_an_error_not_a_stack_overflow() {
    let mut env = Vec::new();
    for _ in 0..10_000 {
        encode_key(50, WireType::StartGroup, &mut env);
    }
    assert!(decode(&wrap(&[&env])).is_err());
}

/// An envelope whose message is `m` with field `tag` replaced by `value`.
fn with_field(m: &pb::MqttMessage, tag: u32, value: &[u8]) -> Vec<u8> {
    let mut msg = m.encode_to_vec();
    delimited_field(tag, value, &mut msg);
    let mut env = vec![0x08, 0x01];
    delimited_field(ENV_MESSAGE, &msg, &mut env);
    env
}

#[test]
fn an_invalid_message_spoils_its_envelope_only() {
    let good = encoded(&pb_envelope(1, &plain("ok", "c"), true, &[], false));
    let base = pb_message(&plain("ok", "c"));
    let bad_utf8 = b"a/\xff";
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (with_field(&base, MSG_TOPIC, bad_utf8), "topic not UTF-8"),
        (
            with_field(&base, MSG_ORIGIN_CLIENT, bad_utf8),
            "origin client not UTF-8",
        ),
        (
            with_field(&base, MSG_ORIGIN_NODE, bad_utf8),
            "origin node not UTF-8",
        ),
        (
            with_field(&base, MSG_CONTENT_TYPE, bad_utf8),
            "content type not UTF-8",
        ),
        (
            with_field(&base, MSG_RESPONSE_TOPIC, bad_utf8),
            "response topic not UTF-8",
        ),
        (
            with_field(&base, MSG_USER_PROPERTIES, &[0x0a, 0x01, 0xc3]),
            "user property not UTF-8",
        ),
        (
            {
                let mut env = with_field(&base, MSG_TOPIC, b"t");
                delimited_field(ENV_GROUPS, &[0x0a, 0x01, 0xff], &mut env);
                env
            },
            "shared group not UTF-8",
        ),
        (
            {
                let mut m = base.clone();
                m.qos = 3;
                with_field(&m, MSG_TOPIC, b"t")
            },
            "QoS out of range",
        ),
        (
            {
                let mut m = base.clone();
                m.payload_format_indicator = Some(256);
                with_field(&m, MSG_TOPIC, b"t")
            },
            "payload format indicator out of range",
        ),
        (vec![0x08, 0x02, 0x18, 0x01], "no message"),
    ];
    for (env, why) in bad {
        let batch = decode(&wrap(&[&good, &env, &good])).expect("the frame decodes");
        let [a, b, c] = &batch.envelopes[..] else {
            panic!("three envelopes");
        };
        assert!(a.message.is_ok() && c.message.is_ok());
        assert_eq!(b.message, Err(Invalid(why)));
    }
}
