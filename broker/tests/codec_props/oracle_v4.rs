//! `mqttbytes::v4` as an oracle for MQTT 3.1.1.
//!
//! mqttbytes knows neither MQTT 3.1 nor AUTH, so only 3.1.1 packets other
//! than AUTH are compared. Its `Login` holds the user name and password
//! as strings and treats an empty one as absent, so [`fit`] makes both
//! non-empty and the password UTF-8.

use bytes::{Bytes, BytesMut};
use mqttbytes::v4;
use tern_broker::codec::*;

/// Adjusts `p` to what mqttbytes can represent without loss.
pub fn fit(p: Packet) -> Packet {
    match p {
        Packet::Connect(mut c) => {
            c.username = c.username.filter(|u| !u.is_empty());
            c.password = c
                .password
                .map(utf8)
                .filter(|p| !p.is_empty() && c.username.is_some());
            Packet::Connect(c)
        }
        p => p,
    }
}

/// Bytes made valid UTF-8, for fields mqttbytes reads as strings.
pub fn utf8(b: Bytes) -> Bytes {
    Bytes::from(String::from_utf8_lossy(&b).into_owned())
}

pub fn qos(q: QoS) -> mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => mqttbytes::QoS::ExactlyOnce,
    }
}

pub fn our_qos(q: mqttbytes::QoS) -> QoS {
    QoS::from_u8(q as u8).expect("mqttbytes QoS")
}

/// The mqttbytes form of `p` (3.1.1), `None` for AUTH.
pub fn to_v4(p: &Packet) -> Option<v4::Packet> {
    Some(match p {
        Packet::Connect(c) => v4::Packet::Connect(v4::Connect {
            protocol: mqttbytes::Protocol::V4,
            keep_alive: c.keep_alive,
            client_id: c.client_id.clone(),
            clean_session: c.clean_start,
            last_will: c.will.as_ref().map(|w| v4::LastWill {
                topic: w.topic.clone(),
                message: w.payload.clone(),
                qos: qos(w.qos),
                retain: w.retain,
            }),
            login: c.username.as_ref().map(|u| v4::Login {
                username: u.clone(),
                password: c
                    .password
                    .as_ref()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .unwrap_or_default(),
            }),
        }),
        Packet::ConnAck(c) => v4::Packet::ConnAck(v4::ConnAck {
            session_present: c.session_present,
            code: match c.code {
                0 => v4::ConnectReturnCode::Success,
                1 => v4::ConnectReturnCode::RefusedProtocolVersion,
                2 => v4::ConnectReturnCode::BadClientId,
                3 => v4::ConnectReturnCode::ServiceUnavailable,
                4 => v4::ConnectReturnCode::BadUserNamePassword,
                _ => v4::ConnectReturnCode::NotAuthorized,
            },
        }),
        Packet::Publish(p) => v4::Packet::Publish(v4::Publish {
            dup: p.dup,
            qos: qos(p.qos),
            retain: p.retain,
            topic: p.topic.clone(),
            pkid: p.pkid,
            payload: p.payload.clone(),
        }),
        Packet::PubAck(a) => v4::Packet::PubAck(v4::PubAck { pkid: a.pkid }),
        Packet::PubRec(a) => v4::Packet::PubRec(v4::PubRec { pkid: a.pkid }),
        Packet::PubRel(a) => v4::Packet::PubRel(v4::PubRel { pkid: a.pkid }),
        Packet::PubComp(a) => v4::Packet::PubComp(v4::PubComp { pkid: a.pkid }),
        Packet::Subscribe(s) => v4::Packet::Subscribe(v4::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .iter()
                .map(|f| v4::SubscribeFilter::new(f.filter.clone(), qos(f.options.qos)))
                .collect(),
        }),
        Packet::SubAck(s) => v4::Packet::SubAck(v4::SubAck {
            pkid: s.pkid,
            return_codes: s
                .reasons
                .iter()
                .map(|&c| match QoS::from_u8(c) {
                    Some(q) => v4::SubscribeReasonCode::Success(qos(q)),
                    None => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        }),
        Packet::Unsubscribe(u) => v4::Packet::Unsubscribe(v4::Unsubscribe {
            pkid: u.pkid,
            topics: u.filters.clone(),
        }),
        Packet::UnsubAck(u) => v4::Packet::UnsubAck(v4::UnsubAck { pkid: u.pkid }),
        Packet::PingReq => v4::Packet::PingReq,
        Packet::PingResp => v4::Packet::PingResp,
        Packet::Disconnect(_) => v4::Packet::Disconnect,
        Packet::Auth(_) => return None,
    })
}

/// Encodes `p` with mqttbytes.
pub fn write(p: &v4::Packet, out: &mut BytesMut) -> Result<usize, mqttbytes::Error> {
    match p {
        v4::Packet::Connect(c) => c.write(out),
        v4::Packet::ConnAck(c) => c.write(out),
        v4::Packet::Publish(p) => p.write(out),
        v4::Packet::PubAck(a) => a.write(out),
        v4::Packet::PubRec(a) => a.write(out),
        v4::Packet::PubRel(a) => a.write(out),
        v4::Packet::PubComp(a) => a.write(out),
        v4::Packet::Subscribe(s) => s.write(out),
        v4::Packet::SubAck(s) => s.write(out),
        v4::Packet::Unsubscribe(u) => u.write(out),
        v4::Packet::UnsubAck(u) => u.write(out),
        v4::Packet::PingReq => v4::PingReq.write(out),
        v4::Packet::PingResp => v4::PingResp.write(out),
        v4::Packet::Disconnect => v4::Disconnect.write(out),
    }
}
