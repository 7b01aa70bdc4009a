//! Each packet type, in each version, against bytes worked out from the
//! specifications (the CONNECT flags 0xCE follow the examples of §3.1.2
//! in both 3.1.1 and 5.0).

use bytes::Bytes;

use super::*;
use Protocol::*;

fn connect(protocol: Protocol) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 10,
        client_id: "id".into(),
        will: Some(LastWill {
            topic: "w/t".into(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::default(),
        }),
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"p")),
        properties: Properties::default(),
    }
}

#[test]
fn connect_v31() {
    let c = Connect {
        protocol: V31,
        clean_start: true,
        keep_alive: 60,
        client_id: "c".into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    };
    wire(
        Packet::Connect(c),
        V31,
        b"\x10\x0f\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x01c",
    );
}

#[test]
fn connect_v311() {
    let bytes =
        b"\x10\x1e\x00\x04MQTT\x04\xce\x00\x0a\x00\x02id\x00\x03w/t\x00\x03bye\x00\x01u\x00\x01p";
    wire(Packet::Connect(connect(V311)), V311, bytes);
    // A CONNECT names its own protocol, whatever the connection's is.
    assert_eq!(dec(bytes, Some(V5)), Ok(Packet::Connect(connect(V311))));
}

#[test]
fn connect_v5() {
    let mut c = connect(V5);
    c.properties.session_expiry_interval = Some(10);
    c.will.as_mut().unwrap().properties.will_delay_interval = Some(5);
    let bytes = b"\x10\x2a\x00\x04MQTT\x05\xce\x00\x0a\x05\x11\x00\x00\x00\x0a\x00\x02id\
                  \x05\x18\x00\x00\x00\x05\x00\x03w/t\x00\x03bye\x00\x01u\x00\x01p";
    wire(Packet::Connect(c), V5, bytes);
}

#[test]
fn connect_v5_password_without_username() {
    let c = Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 0,
        client_id: String::new(),
        will: None,
        username: None,
        password: Some(Bytes::from_static(b"pw")),
        properties: Properties::default(),
    };
    wire(
        Packet::Connect(c),
        V5,
        b"\x10\x11\x00\x04MQTT\x05\x42\x00\x00\x00\x00\x00\x00\x02pw",
    );
}

#[test]
fn connack() {
    let ack = |session_present, code| ConnAck {
        session_present,
        code,
        properties: Properties::default(),
    };
    wire(
        Packet::ConnAck(ack(false, reason::v3::NOT_AUTHORIZED)),
        V31,
        b"\x20\x02\x00\x05",
    );
    wire(Packet::ConnAck(ack(true, 0)), V311, b"\x20\x02\x01\x00");
    wire(
        Packet::ConnAck(ack(false, reason::BANNED)),
        V5,
        b"\x20\x03\x00\x8a\x00",
    );
    let mut c = ack(false, 0);
    c.properties.assigned_client_identifier = Some("x".into());
    c.properties.receive_maximum = Some(10);
    c.properties.maximum_qos = Some(1);
    wire(
        Packet::ConnAck(c),
        V5,
        b"\x20\x0c\x00\x00\x09\x12\x00\x01x\x21\x00\x0a\x24\x01",
    );
}

#[test]
fn publish_v3() {
    for v in [V31, V311] {
        wire(
            Packet::Publish(publish("a/b", QoS::AtMostOnce, 0, &b"hi"[..])),
            v,
            b"\x30\x07\x00\x03a/bhi",
        );
        let mut p = publish("a/b", QoS::AtLeastOnce, 10, &b"hi"[..]);
        p.dup = true;
        p.retain = true;
        wire(Packet::Publish(p), v, b"\x3b\x09\x00\x03a/b\x00\x0ahi");
    }
}

#[test]
fn publish_v5() {
    wire(
        Packet::Publish(publish("a/b", QoS::AtMostOnce, 0, &b"hi"[..])),
        V5,
        b"\x30\x08\x00\x03a/b\x00hi",
    );
    // Empty topic with a Topic Alias (§3.3.2.3.4).
    let mut p = publish("", QoS::ExactlyOnce, 1, &b"x"[..]);
    p.properties.topic_alias = Some(5);
    wire(
        Packet::Publish(p),
        V5,
        b"\x34\x09\x00\x00\x00\x01\x03\x23\x00\x05x",
    );
    // Subscription identifiers may repeat on PUBLISH, in order.
    let mut p = publish("t", QoS::AtMostOnce, 0, Bytes::new());
    p.properties.subscription_identifiers = vec![1, 200];
    wire(
        Packet::Publish(p),
        V5,
        b"\x30\x09\x00\x01t\x05\x0b\x01\x0b\xc8\x01",
    );
}

fn resp(pkid: u16, reason: u8) -> PubResp {
    PubResp {
        pkid,
        reason,
        properties: Properties::default(),
    }
}

#[test]
fn acks_v3() {
    for v in [V31, V311] {
        wire(Packet::PubAck(resp(1, 0)), v, b"\x40\x02\x00\x01");
        wire(Packet::PubRec(resp(2, 0)), v, b"\x50\x02\x00\x02");
        wire(Packet::PubRel(resp(3, 0)), v, b"\x62\x02\x00\x03");
        wire(Packet::PubComp(resp(4, 0)), v, b"\x70\x02\x00\x04");
    }
    // 3.x has no reason codes: a 5.0 reason is simply not sent.
    assert_eq!(
        enc(&Packet::PubAck(resp(1, 0x10)), V311),
        b"\x40\x02\x00\x01"
    );
}

#[test]
fn acks_v5() {
    wire(Packet::PubAck(resp(1, 0)), V5, b"\x40\x02\x00\x01");
    wire(
        Packet::PubAck(resp(1, reason::NO_MATCHING_SUBSCRIBERS)),
        V5,
        b"\x40\x03\x00\x01\x10",
    );
    wire(
        Packet::PubRec(resp(2, reason::QUOTA_EXCEEDED)),
        V5,
        b"\x50\x03\x00\x02\x97",
    );
    wire(Packet::PubRel(resp(3, 0)), V5, b"\x62\x02\x00\x03");
    wire(
        Packet::PubComp(resp(4, reason::PACKET_IDENTIFIER_NOT_FOUND)),
        V5,
        b"\x70\x03\x00\x04\x92",
    );
    let mut a = resp(1, 0x10);
    a.properties.reason_string = Some("no".into());
    wire(
        Packet::PubAck(a),
        V5,
        b"\x40\x09\x00\x01\x10\x05\x1f\x00\x02no",
    );
    let mut a = resp(1, 0);
    a.properties.user_properties.push(("k".into(), "v".into()));
    wire(
        Packet::PubRel(a),
        V5,
        b"\x62\x0b\x00\x01\x00\x07\x26\x00\x01k\x00\x01v",
    );
    // Longer forms a peer may send for success: reason byte, empty properties.
    assert_eq!(
        dec(b"\x40\x03\x00\x01\x00", Some(V5)),
        Ok(Packet::PubAck(resp(1, 0)))
    );
    assert_eq!(
        dec(b"\x40\x04\x00\x01\x00\x00", Some(V5)),
        Ok(Packet::PubAck(resp(1, 0)))
    );
}

fn filter(f: &str, qos: QoS) -> SubscribeFilter {
    SubscribeFilter {
        filter: f.into(),
        options: SubOptions {
            qos,
            ..SubOptions::default()
        },
    }
}

#[test]
fn subscribe() {
    let s = Subscribe {
        pkid: 1,
        filters: vec![
            filter("a/+", QoS::AtLeastOnce),
            filter("#", QoS::ExactlyOnce),
        ],
        properties: Properties::default(),
    };
    for v in [V31, V311] {
        wire(
            Packet::Subscribe(s.clone()),
            v,
            b"\x82\x0c\x00\x01\x00\x03a/+\x01\x00\x01#\x02",
        );
    }
    let options = SubOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: 2,
    };
    let mut s = Subscribe {
        pkid: 1,
        filters: vec![SubscribeFilter {
            filter: "a/+".into(),
            options,
        }],
        ..s
    };
    s.properties.subscription_identifiers.push(7);
    wire(
        Packet::Subscribe(s),
        V5,
        b"\x82\x0b\x00\x01\x02\x0b\x07\x00\x03a/+\x2d",
    );
}

#[test]
fn suback() {
    let s = SubAck {
        pkid: 1,
        reasons: vec![1, 0x80],
        properties: Properties::default(),
    };
    wire(Packet::SubAck(s.clone()), V31, b"\x90\x04\x00\x01\x01\x80");
    wire(Packet::SubAck(s), V311, b"\x90\x04\x00\x01\x01\x80");
    let s = SubAck {
        pkid: 1,
        reasons: vec![2, 0xA2],
        properties: Properties::default(),
    };
    wire(Packet::SubAck(s), V5, b"\x90\x05\x00\x01\x00\x02\xa2");
}

#[test]
fn unsubscribe() {
    let u = Unsubscribe {
        pkid: 2,
        filters: vec!["a/b".into()],
        properties: Properties::default(),
    };
    wire(
        Packet::Unsubscribe(u.clone()),
        V31,
        b"\xa2\x07\x00\x02\x00\x03a/b",
    );
    wire(
        Packet::Unsubscribe(u.clone()),
        V311,
        b"\xa2\x07\x00\x02\x00\x03a/b",
    );
    wire(
        Packet::Unsubscribe(u),
        V5,
        b"\xa2\x08\x00\x02\x00\x00\x03a/b",
    );
}

#[test]
fn unsuback() {
    let u = UnsubAck {
        pkid: 2,
        reasons: Vec::new(),
        properties: Properties::default(),
    };
    wire(Packet::UnsubAck(u.clone()), V31, b"\xb0\x02\x00\x02");
    wire(Packet::UnsubAck(u), V311, b"\xb0\x02\x00\x02");
    let u = UnsubAck {
        pkid: 2,
        reasons: vec![reason::NO_SUBSCRIPTION_EXISTED],
        properties: Properties::default(),
    };
    wire(Packet::UnsubAck(u), V5, b"\xb0\x04\x00\x02\x00\x11");
}

#[test]
fn ping() {
    for v in [V31, V311, V5] {
        wire(Packet::PingReq, v, b"\xc0\x00");
        wire(Packet::PingResp, v, b"\xd0\x00");
    }
}

#[test]
fn disconnect() {
    for v in [V31, V311, V5] {
        wire(Packet::Disconnect(Disconnect::default()), v, b"\xe0\x00");
    }
    let d = |reason| Disconnect {
        reason,
        properties: Properties::default(),
    };
    wire(
        Packet::Disconnect(d(reason::DISCONNECT_WITH_WILL)),
        V5,
        b"\xe0\x01\x04",
    );
    let mut with_props = d(0);
    with_props.properties.session_expiry_interval = Some(0);
    wire(
        Packet::Disconnect(with_props),
        V5,
        b"\xe0\x07\x00\x05\x11\x00\x00\x00\x00",
    );
    // Reason byte plus an empty property block is also accepted.
    assert_eq!(
        dec(b"\xe0\x02\x8e\x00", Some(V5)),
        Ok(Packet::Disconnect(d(0x8E)))
    );
}

#[test]
fn auth() {
    wire(Packet::Auth(Auth::default()), V5, b"\xf0\x00");
    let mut a = Auth {
        reason: reason::CONTINUE_AUTHENTICATION,
        properties: Properties::default(),
    };
    a.properties.authentication_method = Some("m".into());
    wire(Packet::Auth(a), V5, b"\xf0\x06\x18\x04\x15\x00\x01m");
}
