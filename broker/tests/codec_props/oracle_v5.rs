//! `mqttbytes::v5` as an oracle for MQTT 5.0.
//!
//! [`from_v5`] maps mqttbytes' packets onto ours field by field (reason
//! codes via their `repr(u8)`), so a comparison needs no table of ours.
//! Known gaps in mqttbytes 0.6, worked around here:
//! - no AUTH packet: not compared;
//! - `Login` as in 3.1.1 (see `oracle_v4::fit`), though 5.0 allows a
//!   password without a user name and mqttbytes handles that;
//! - it cannot read a DISCONNECT without properties (remaining length 0 is
//!   refused outright, and after a lone reason code it demands a property
//!   length), so [`mqttbytes_reads`] excludes those;
//! - it writes a CONNACK without properties with no property length,
//!   which is malformed, so [`writable`] gives it an empty property block.

use bytes::{Bytes, BytesMut};
use mqttbytes::v5;
use tern_broker::codec::*;

use crate::oracle_v4::{our_qos, utf8};

/// Adjusts `p` to what mqttbytes can represent without loss.
pub fn fit(p: Packet) -> Packet {
    match p {
        Packet::Connect(mut c) => {
            c.username = c.username.filter(|u| !u.is_empty());
            c.password = c.password.map(utf8).filter(|p| !p.is_empty());
            Packet::Connect(c)
        }
        p => p,
    }
}

/// Whether mqttbytes can decode our encoding of `p`.
pub fn mqttbytes_reads(p: &Packet) -> bool {
    match p {
        Packet::Auth(_) => false,
        Packet::Disconnect(d) => d.properties != Properties::default(),
        _ => true,
    }
}

/// `p` made encodable by mqttbytes (see the module comment).
pub fn writable(p: v5::Packet) -> v5::Packet {
    match p {
        v5::Packet::ConnAck(mut c) => {
            c.properties.get_or_insert_with(v5::ConnAckProperties::new);
            v5::Packet::ConnAck(c)
        }
        p => p,
    }
}

/// A DISCONNECT that mqttbytes cannot decode, built directly.
pub fn disconnect(d: &Disconnect) -> v5::Packet {
    v5::Packet::Disconnect(v5::Disconnect {
        reason_code: d.reason.try_into().expect("valid reason"),
        properties: None,
    })
}

type Pairs = Vec<(String, String)>;

/// Properties that only carry a reason string and user properties.
fn acked(reason_string: Option<String>, user_properties: Pairs) -> Properties {
    Properties {
        reason_string,
        user_properties,
        ..Properties::default()
    }
}

fn resp<P>(pkid: u16, reason: u8, props: Option<P>, f: impl FnOnce(P) -> Properties) -> PubResp {
    PubResp {
        pkid,
        reason,
        properties: props.map(f).unwrap_or_default(),
    }
}

fn ids(ids: Vec<usize>) -> Vec<u32> {
    ids.into_iter()
        .map(|id| u32::try_from(id).expect("identifier range"))
        .collect()
}

/// Our form of a packet mqttbytes decoded.
pub fn from_v5(p: v5::Packet) -> Packet {
    match p {
        v5::Packet::Connect(c) => {
            let (username, password) = match c.login {
                Some(l) => (
                    Some(l.username).filter(|u| !u.is_empty()),
                    Some(Bytes::from(l.password)).filter(|p| !p.is_empty()),
                ),
                None => (None, None),
            };
            Packet::Connect(Connect {
                protocol: match c.protocol {
                    mqttbytes::Protocol::V4 => Protocol::V311,
                    mqttbytes::Protocol::V5 => Protocol::V5,
                },
                clean_start: c.clean_session,
                keep_alive: c.keep_alive,
                client_id: c.client_id,
                will: c.last_will.map(|w| LastWill {
                    topic: w.topic,
                    payload: w.message,
                    qos: our_qos(w.qos),
                    retain: w.retain,
                    properties: w
                        .properties
                        .map(|p| Properties {
                            will_delay_interval: p.delay_interval,
                            payload_format_indicator: p.payload_format_indicator,
                            message_expiry_interval: p.message_expiry_interval,
                            content_type: p.content_type,
                            response_topic: p.response_topic,
                            correlation_data: p.correlation_data,
                            user_properties: p.user_properties,
                            ..Properties::default()
                        })
                        .unwrap_or_default(),
                }),
                username,
                password,
                properties: c
                    .properties
                    .map(|p| Properties {
                        session_expiry_interval: p.session_expiry_interval,
                        receive_maximum: p.receive_maximum,
                        maximum_packet_size: p.max_packet_size,
                        topic_alias_maximum: p.topic_alias_max,
                        request_response_information: p.request_response_info,
                        request_problem_information: p.request_problem_info,
                        user_properties: p.user_properties,
                        authentication_method: p.authentication_method,
                        authentication_data: p.authentication_data,
                        ..Properties::default()
                    })
                    .unwrap_or_default(),
            })
        }
        v5::Packet::ConnAck(c) => Packet::ConnAck(ConnAck {
            session_present: c.session_present,
            code: c.code as u8,
            properties: c
                .properties
                .map(|p| Properties {
                    session_expiry_interval: p.session_expiry_interval,
                    receive_maximum: p.receive_max,
                    maximum_qos: p.max_qos,
                    retain_available: p.retain_available,
                    maximum_packet_size: p.max_packet_size,
                    assigned_client_identifier: p.assigned_client_identifier,
                    topic_alias_maximum: p.topic_alias_max,
                    reason_string: p.reason_string,
                    user_properties: p.user_properties,
                    wildcard_subscription_available: p.wildcard_subscription_available,
                    subscription_identifier_available: p.subscription_identifiers_available,
                    shared_subscription_available: p.shared_subscription_available,
                    server_keep_alive: p.server_keep_alive,
                    response_information: p.response_information,
                    server_reference: p.server_reference,
                    authentication_method: p.authentication_method,
                    authentication_data: p.authentication_data,
                    ..Properties::default()
                })
                .unwrap_or_default(),
        }),
        v5::Packet::Publish(p) => Packet::Publish(Publish {
            dup: p.dup,
            qos: our_qos(p.qos),
            retain: p.retain,
            topic: p.topic,
            pkid: p.pkid,
            payload: p.payload,
            properties: p
                .properties
                .map(|p| Properties {
                    payload_format_indicator: p.payload_format_indicator,
                    message_expiry_interval: p.message_expiry_interval,
                    topic_alias: p.topic_alias,
                    response_topic: p.response_topic,
                    correlation_data: p.correlation_data,
                    user_properties: p.user_properties,
                    subscription_identifiers: ids(p.subscription_identifiers),
                    content_type: p.content_type,
                    ..Properties::default()
                })
                .unwrap_or_default(),
        }),
        v5::Packet::PubAck(a) => Packet::PubAck(resp(a.pkid, a.reason as u8, a.properties, |p| {
            acked(p.reason_string, p.user_properties)
        })),
        v5::Packet::PubRec(a) => Packet::PubRec(resp(a.pkid, a.reason as u8, a.properties, |p| {
            acked(p.reason_string, p.user_properties)
        })),
        v5::Packet::PubRel(a) => Packet::PubRel(resp(a.pkid, a.reason as u8, a.properties, |p| {
            acked(p.reason_string, p.user_properties)
        })),
        v5::Packet::PubComp(a) => {
            Packet::PubComp(resp(a.pkid, a.reason as u8, a.properties, |p| {
                acked(p.reason_string, p.user_properties)
            }))
        }
        v5::Packet::Subscribe(s) => Packet::Subscribe(Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| SubscribeFilter {
                    filter: f.path,
                    options: SubOptions {
                        qos: our_qos(f.qos),
                        no_local: f.nolocal,
                        retain_as_published: f.preserve_retain,
                        retain_handling: match f.retain_forward_rule {
                            v5::RetainForwardRule::OnEverySubscribe => 0,
                            v5::RetainForwardRule::OnNewSubscribe => 1,
                            v5::RetainForwardRule::Never => 2,
                        },
                    },
                })
                .collect(),
            properties: s
                .properties
                .map(|p| Properties {
                    subscription_identifiers: ids(p.id.into_iter().collect()),
                    user_properties: p.user_properties,
                    ..Properties::default()
                })
                .unwrap_or_default(),
        }),
        v5::Packet::SubAck(s) => Packet::SubAck(SubAck {
            pkid: s.pkid,
            reasons: s.return_codes.iter().map(|&c| c as u8).collect(),
            properties: s
                .properties
                .map(|p| acked(p.reason_string, p.user_properties))
                .unwrap_or_default(),
        }),
        v5::Packet::Unsubscribe(u) => Packet::Unsubscribe(Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
            properties: u
                .properties
                .map(|p| acked(None, p.user_properties))
                .unwrap_or_default(),
        }),
        v5::Packet::UnsubAck(u) => Packet::UnsubAck(UnsubAck {
            pkid: u.pkid,
            reasons: u.reasons.iter().map(|&c| c as u8).collect(),
            properties: u
                .properties
                .map(|p| acked(p.reason_string, p.user_properties))
                .unwrap_or_default(),
        }),
        v5::Packet::PingReq => Packet::PingReq,
        v5::Packet::PingResp => Packet::PingResp,
        v5::Packet::Disconnect(d) => Packet::Disconnect(Disconnect {
            reason: d.reason_code as u8,
            properties: d
                .properties
                .map(|p| Properties {
                    session_expiry_interval: p.session_expiry_interval,
                    reason_string: p.reason_string,
                    user_properties: p.user_properties,
                    server_reference: p.server_reference,
                    ..Properties::default()
                })
                .unwrap_or_default(),
        }),
    }
}

/// Encodes `p` with mqttbytes.
pub fn write(p: &v5::Packet, out: &mut BytesMut) -> Result<usize, mqttbytes::Error> {
    match p {
        v5::Packet::Connect(c) => c.write(out),
        v5::Packet::ConnAck(c) => c.write(out),
        v5::Packet::Publish(p) => p.write(out),
        v5::Packet::PubAck(a) => a.write(out),
        v5::Packet::PubRec(a) => a.write(out),
        v5::Packet::PubRel(a) => a.write(out),
        v5::Packet::PubComp(a) => a.write(out),
        v5::Packet::Subscribe(s) => s.write(out),
        v5::Packet::SubAck(s) => s.write(out),
        v5::Packet::Unsubscribe(u) => u.write(out),
        v5::Packet::UnsubAck(u) => u.write(out),
        v5::Packet::PingReq => v5::PingReq.write(out),
        v5::Packet::PingResp => v5::PingResp.write(out),
        v5::Packet::Disconnect(d) => d.write(out),
    }
}
