use super::*;
use bytes::Bytes;

fn full_message() -> Message {
    Message {
        topic: Arc::from("a/b"),
        payload: Bytes::from_static(b"hello"),
        qos: QoS::ExactlyOnce,
        retain: true,
        properties: Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(30),
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
            ..Properties::default()
        }
        .into(),
        expires_at: Some(1_700_000_030_000),
        origin: Some(Arc::from("publisher")),
        timestamp: 1_700_000_000_000,
        origin_node: Some(Arc::from("node-a")),
    }
}

#[test]
fn message_round_trips_with_every_field() {
    let m = full_message();
    let back = message_from_pb(message_to_pb(&m, "ignored")).expect("decodes");
    assert_eq!(back, m);
}

#[test]
fn local_message_gets_the_local_node_as_origin() {
    let mut m = full_message();
    m.origin_node = None;
    let back = message_from_pb(message_to_pb(&m, "here")).expect("decodes");
    assert_eq!(back.origin_node.as_deref(), Some("here"));
}

#[test]
fn bad_qos_is_an_error_not_a_panic() {
    let mut p = message_to_pb(&full_message(), "n");
    p.qos = 3;
    assert!(matches!(message_from_pb(p), Err(Error::Decode { .. })));
}

#[test]
fn non_utf8_topic_or_origin_is_an_error_not_a_panic() {
    let mut p = message_to_pb(&full_message(), "n");
    p.topic = Bytes::from_static(b"a/\xff");
    assert!(matches!(message_from_pb(p), Err(Error::Decode { .. })));
    let mut p = message_to_pb(&full_message(), "n");
    p.origin_client = Some(Bytes::from_static(b"\xc3"));
    assert!(matches!(message_from_pb(p), Err(Error::Decode { .. })));
}

#[test]
fn session_round_trips() {
    let msg = Arc::new(full_message());
    let d = |qos| Delivery {
        msg: msg.clone(),
        qos,
        retain: false,
        sub_ids: vec![7, 9],
    };
    let mut s = SessionData::new(Arc::from("client-1"));
    s.subscriptions.insert(
        "$share/g/a/+".into(),
        SubEntry {
            options: SubOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: 2,
            },
            identifier: Some(7),
        },
    );
    s.subscriptions.insert(
        "x/#".into(),
        SubEntry {
            options: SubOptions::default(),
            identifier: None,
        },
    );
    s.queue.push_back(d(QoS::AtLeastOnce));
    s.queue.push_back(d(QoS::AtMostOnce));
    s.inflight
        .push_back((3, Inflight::Sent(d(QoS::ExactlyOnce))));
    s.inflight.push_back((4, Inflight::Released));
    s.incoming_qos2.extend([10, 11]);
    s.will = Some(Box::new(Will {
        topic: Arc::from("will/t"),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Box::new(Properties {
            content_type: Some("x".into()),
            ..Properties::default()
        }),
        delay: 5,
    }));
    s.expiry_interval = 3600;
    s.last_pkid = 4;
    let back = session_from_pb(session_to_pb(&s, "node-a")).expect("decodes");
    assert_eq!(back, s);
}

#[test]
fn out_of_range_packet_id_is_an_error() {
    let mut p = session_to_pb(&SessionData::new(Arc::from("c")), "n");
    p.last_pkid = 70_000;
    assert!(session_from_pb(p).is_err());
}
