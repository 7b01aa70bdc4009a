use super::codec::*;
use super::*;
use crate::codec::{Properties, QoS, SubOptions};
use crate::config::{Durability, StorageConfig};
use bytes::Bytes;
use proptest::prelude::*;
use std::sync::Arc;

fn message() -> Message {
    let props = Properties {
        payload_format_indicator: Some(1),
        content_type: Some("text/plain".into()),
        response_topic: Some("r/t".into()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01")),
        user_properties: vec![("k".into(), "v".into())],
        message_expiry_interval: Some(60),
        ..Properties::default()
    };
    let mut m = Message::new(
        "a/b".into(),
        Bytes::from_static(b"payload"),
        QoS::ExactlyOnce,
        true,
        &props,
    );
    m.origin = Some("client".into());
    m.origin_node = Some("n1".into());
    m.timestamp = 1_700_000_000_000;
    m.expires_at = Some(u64::MAX);
    m
}

fn meta() -> SessionMeta {
    SessionMeta {
        expiry_interval: 3600,
        last_pkid: 42,
        offline_since: Some(1_700_000_000_000),
        subscriptions: vec![(
            "$share/g/a/#".into(),
            SubEntry {
                options: SubOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: 2,
                },
                identifier: Some(7),
            },
        )],
        incoming_qos2: vec![3, 9],
        released: vec![5],
        will: Some(Will {
            topic: "w".into(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Box::default(),
            delay: 10,
        }),
    }
}

#[test]
fn values_round_trip() {
    let m = message();
    assert_eq!(decode_retained(encode_retained(&m)).ok(), Some(m.clone()));
    let d = Delivery {
        msg: Arc::new(m),
        qos: QoS::AtLeastOnce,
        retain: true,
        sub_ids: vec![1, 2],
    };
    assert_eq!(decode_delivery(encode_delivery(9, &d)).ok(), Some((9, d)));
    assert_eq!(decode_meta(encode_meta(&meta())).ok(), Some(meta()));
}

#[test]
fn unknown_format_and_truncation_are_errors() {
    let mut v = encode_meta(&meta()).to_vec();
    v[0] = FORMAT + 1;
    assert!(matches!(
        decode_meta(Bytes::from(v.clone())),
        Err(StoreError::Format)
    ));
    v[0] = FORMAT;
    v.pop();
    assert!(matches!(
        decode_meta(Bytes::from(v)),
        Err(StoreError::Decode(_))
    ));
}

proptest! {
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let b = Bytes::from(bytes);
        let _ = decode_meta(b.clone());
        let _ = decode_delivery(b.clone());
        let _ = decode_retained(b);
    }
}

#[test]
fn disk_store_reloads_what_it_wrote() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = StorageConfig {
        dir: Some(dir.path().to_path_buf()),
        durability: Durability::Group,
        group_commit_ms: 1,
        max_in_memory_per_session: 1000,
    };
    let d = Delivery {
        msg: Arc::new(message()),
        qos: QoS::AtLeastOnce,
        retain: false,
        sub_ids: vec![],
    };
    {
        let (store, loaded) = DiskStore::open(&config, "n1").expect("open");
        assert!(loaded.sessions.is_empty() && loaded.node.is_none());
        store.put_session("c", &meta());
        store.put_session("gone", &meta());
        for seq in [store.next_seq(), store.next_seq(), store.next_seq()] {
            store.put_message("c", seq, 0, &d);
            store.put_message("gone", seq, 0, &d);
        }
        store.delete_message("c", 2);
        store.delete_session("gone");
        store.put_retained(&message());
    }
    let (store, loaded) = DiskStore::open(&config, "n1").expect("reopen");
    assert_eq!(loaded.node.as_deref(), Some("n1"));
    assert_eq!(loaded.sessions.len(), 1);
    let s = &loaded.sessions[0];
    assert_eq!((s.client_id.as_str(), &s.meta), ("c", &meta()));
    let seqs: Vec<u64> = s.messages.iter().map(|m| m.0).collect();
    assert_eq!(seqs, vec![1, 3]);
    assert_eq!(loaded.retained, vec![message()]);
    assert!(
        store.next_seq() > 3,
        "sequence numbers continue after reload"
    );
}
