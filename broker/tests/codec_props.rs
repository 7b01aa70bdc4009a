//! Property tests of the MQTT codec:
//! 1. round trip: every valid packet of every version encodes, decodes to
//!    itself, and `encoded_len` predicts the bytes written;
//! 2. robustness: arbitrary bytes and mutated encodings never panic
//!    `decode`, and every strict prefix of a packet is "incomplete";
//! 3. cross-check against `mqttbytes` 0.6 as an independent oracle, both
//!    directions, for 3.1.1 (`oracle_v4`) and 5.0 (`oracle_v5`).

#[path = "codec_props/gen.rs"]
mod gen;
#[path = "codec_props/oracle_v4.rs"]
mod oracle_v4;
#[path = "codec_props/oracle_v5.rs"]
mod oracle_v5;

use bytes::BytesMut;
use proptest::prelude::*;
use tern_broker::codec::*;

const MAX: usize = 1 << 20;

fn encoded(p: &Packet, v: Protocol) -> BytesMut {
    let mut out = BytesMut::new();
    encode(p, v, &mut out).expect("valid packets encode");
    out
}

/// Decodes until the buffer is exhausted, incomplete or invalid.
fn decode_all(mut buf: BytesMut, v: Option<Protocol>, max: usize) {
    let mut v = v;
    while let Ok(Some(p)) = decode(&mut buf, v, max) {
        if let Packet::Connect(c) = p {
            v = Some(c.protocol);
        }
    }
}

/// A way to damage an encoding.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Xor(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), 1u8..).prop_map(|(i, b)| Mutation::Xor(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len().max(1);
    match *m {
        Mutation::Set(i, b) => bytes[i % n] = b,
        Mutation::Xor(i, b) => bytes[i % n] ^= b,
        Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
        Mutation::Remove(i) => {
            bytes.remove(i % n);
        }
        Mutation::Truncate(i) => bytes.truncate(i % n),
    }
}

fn protocol_or_none() -> impl Strategy<Value = Option<Protocol>> {
    prop_oneof![
        Just(None),
        Just(Some(Protocol::V31)),
        Just(Some(Protocol::V311)),
        Just(Some(Protocol::V5))
    ]
}

/// Named `codec` so that `cargo test codec` selects these tests too.
mod codec {
    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        #[test]
        fn round_trip((v, p) in gen::versioned_packet()) {
            let bytes = encoded(&p, v);
            prop_assert_eq!(encoded_len(&p, v), bytes.len());
            let mut buf = bytes.clone();
            let decoded = decode(&mut buf, Some(v), MAX);
            prop_assert_eq!(decoded, Ok(Some(p.clone())));
            prop_assert!(buf.is_empty());
            if let Packet::Connect(_) = p {
                let mut buf = bytes.clone();
                prop_assert_eq!(decode(&mut buf, None, MAX), Ok(Some(p)));
            }
        }

        #[test]
        fn prefixes_are_incomplete((v, p) in gen::versioned_packet()) {
            let bytes = encoded(&p, v);
            for end in 0..bytes.len() {
                let mut buf = BytesMut::from(&bytes[..end]);
                prop_assert_eq!(decode(&mut buf, Some(v), MAX), Ok(None));
                prop_assert_eq!(buf.len(), end);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..96),
            v in protocol_or_none(),
            max in prop_oneof![Just(MAX), 0usize..64],
        ) {
            decode_all(BytesMut::from(&bytes[..]), v, max);
        }

        #[test]
        fn framed_garbage_never_panics(
            byte1 in any::<u8>(),
            body in proptest::collection::vec(any::<u8>(), 0..64),
            v in protocol_or_none(),
        ) {
            // A correct fixed header so that the body parsers see the garbage.
            let mut bytes = vec![byte1, body.len() as u8];
            bytes.extend_from_slice(&body);
            decode_all(BytesMut::from(&bytes[..]), v, MAX);
        }

        #[test]
        fn mutated_packets_never_panic(
            (v, p) in gen::versioned_packet(),
            mutations in proptest::collection::vec(mutation(), 1..4),
            as_first in any::<bool>(),
        ) {
            let mut bytes = encoded(&p, v).to_vec();
            for m in &mutations {
                if !bytes.is_empty() {
                    mutate(&mut bytes, m);
                }
            }
            decode_all(BytesMut::from(&bytes[..]), if as_first { None } else { Some(v) }, MAX);
        }
    }

    fn oracle_err(e: mqttbytes::Error) -> TestCaseError {
        TestCaseError::fail(format!("mqttbytes: {e:?}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// 3.1.1: mqttbytes reads what we write, as the same packet; it writes
        /// the very same bytes; and we read what it writes.
        #[test]
        fn mqttbytes_v4_agrees(p in gen::packet(Protocol::V311).prop_map(oracle_v4::fit)) {
            let theirs = oracle_v4::to_v4(&p).expect("3.1.1 has no AUTH");
            let ours = encoded(&p, Protocol::V311);
            let mut buf = ours.clone();
            prop_assert_eq!(mqttbytes::v4::read(&mut buf, MAX).map_err(oracle_err)?, theirs.clone());
            let mut written = BytesMut::new();
            oracle_v4::write(&theirs, &mut written).map_err(oracle_err)?;
            prop_assert_eq!(&written, &ours);
            prop_assert_eq!(decode(&mut written, Some(Protocol::V311), MAX), Ok(Some(p)));
        }

        /// 5.0: mqttbytes reads what we write, as the same packet, and we read
        /// what it writes (property order differs, so bytes are not compared).
        #[test]
        fn mqttbytes_v5_agrees(
            p in gen::packet(Protocol::V5)
                .prop_filter("AUTH is not in mqttbytes", |p| !matches!(p, Packet::Auth(_)))
                .prop_map(oracle_v5::fit)
        ) {
            let theirs = if oracle_v5::mqttbytes_reads(&p) {
                let mut buf = encoded(&p, Protocol::V5);
                let theirs = mqttbytes::v5::read(&mut buf, MAX).map_err(oracle_err)?;
                prop_assert!(buf.is_empty());
                prop_assert_eq!(oracle_v5::from_v5(theirs.clone()), p.clone());
                theirs
            } else {
                let Packet::Disconnect(d) = &p else { unreachable!("only DISCONNECT is unreadable") };
                oracle_v5::disconnect(d)
            };
            let mut written = BytesMut::new();
            oracle_v5::write(&oracle_v5::writable(theirs), &mut written).map_err(oracle_err)?;
            prop_assert_eq!(decode(&mut written, Some(Protocol::V5), MAX), Ok(Some(p)));
            prop_assert!(written.is_empty());
        }
    }
}

/// The generators reach every packet type, and 5.0 properties, so the
/// properties above are not vacuous.
#[test]
fn codec_generators_cover_the_model() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut kinds = std::collections::HashSet::new();
    let (mut with_props, mut with_will, mut aliased) = (0, 0, 0);
    for _ in 0..2000 {
        let (v, p) = gen::versioned_packet()
            .new_tree(&mut runner)
            .unwrap()
            .current();
        kinds.insert((v, std::mem::discriminant(&p)));
        let props = match &p {
            Packet::Connect(c) => {
                with_will += usize::from(c.will.is_some());
                &c.properties
            }
            Packet::Publish(p) => {
                aliased += usize::from(p.topic.is_empty());
                &p.properties
            }
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                &a.properties
            }
            Packet::Subscribe(s) => &s.properties,
            Packet::Disconnect(d) => &d.properties,
            Packet::Auth(a) => &a.properties,
            _ => continue,
        };
        with_props += usize::from(*props != Properties::default());
    }
    // 14 packet types in 3.1 and 3.1.1, 15 (with AUTH) in 5.0.
    assert_eq!(kinds.len(), 14 + 14 + 15);
    assert!(
        with_props > 100 && with_will > 20 && aliased > 5,
        "{with_props} {with_will} {aliased}"
    );
}
