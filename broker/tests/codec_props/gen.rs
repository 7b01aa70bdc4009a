//! Proptest strategies for packets that are valid for a given protocol
//! version: only what that version can carry (no properties or ack
//! reasons in 3.x), and only values the decoder accepts.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use tern_broker::codec::*;
use tern_broker::topic::{parse_shared, valid_topic_filter};

/// Which packet a property block is generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum For {
    Connect,
    Will,
    ConnAck,
    Publish,
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

/// A UTF-8 string without U+0000, sometimes multi-byte.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![4 => "[a-z/ ]{0,6}", 1 => "[^\\x00]{0,4}"]
}

pub fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

/// A valid topic name: non-empty, no wildcards.
pub fn topic_name() -> impl Strategy<Value = String> {
    prop_oneof![4 => "[a-z$/]{1,8}", 1 => "[^\\x00+#]{1,6}"]
}

/// A valid topic filter, sometimes a shared subscription.
pub fn topic_filter() -> impl Strategy<Value = String> {
    let level = prop_oneof!["[a-z$]{0,3}", Just("+".to_string())];
    let plain = (vec(level, 1..4), any::<bool>()).prop_map(|(levels, hash)| {
        let mut f = levels.join("/");
        if hash {
            f.push_str(if f.is_empty() { "#" } else { "/#" });
        }
        f
    });
    (plain, option::weighted(0.2, "[a-z]{1,3}"))
        .prop_map(|(f, group)| match group {
            Some(g) => format!("$share/{g}/{f}"),
            None => f,
        })
        .prop_filter("valid filter", |f| valid_topic_filter(f))
}

fn some<T: std::fmt::Debug>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
    option::weighted(0.25, s)
}

fn flag() -> impl Strategy<Value = Option<u8>> {
    some(0u8..=1)
}

fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    vec((text(), text()), 0..3)
}

/// Any valid property values (before restricting them to a packet).
fn all_properties() -> impl Strategy<Value = Properties> {
    let message = (
        flag(),
        some(any::<u32>()),
        some(text()),
        some(topic_name()),
        some(bytes(6)),
        vec(1u32..=268_435_455, 0..3),
        some(any::<u32>()),
    );
    let connect = (
        some(text()),
        some(any::<u16>()),
        some((text(), option::of(bytes(6)))),
        flag(),
        flag(),
        some(text()),
        some(text()),
        some(text()),
    );
    let limits = (
        some(1u16..),
        some(any::<u16>()),
        some(1u16..),
        flag(),
        flag(),
        pairs(),
        some(1u32..),
        (flag(), flag(), flag()),
        some(any::<u32>()),
    );
    (message, connect, limits).prop_map(|(m, c, l)| {
        let (auth_method, auth_data) = match c.2 {
            Some((method, data)) => (Some(method), data),
            None => (None, None),
        };
        Properties {
            payload_format_indicator: m.0,
            message_expiry_interval: m.1,
            content_type: m.2,
            response_topic: m.3,
            correlation_data: m.4,
            subscription_identifiers: m.5,
            session_expiry_interval: m.6,
            assigned_client_identifier: c.0,
            server_keep_alive: c.1,
            authentication_method: auth_method,
            authentication_data: auth_data,
            request_problem_information: c.3,
            request_response_information: c.4,
            response_information: c.5,
            server_reference: c.6,
            reason_string: c.7,
            receive_maximum: l.0,
            topic_alias_maximum: l.1,
            topic_alias: l.2,
            maximum_qos: l.3,
            retain_available: l.4,
            user_properties: l.5,
            maximum_packet_size: l.6,
            wildcard_subscription_available: l.7 .0,
            subscription_identifier_available: l.7 .1,
            shared_subscription_available: l.7 .2,
            will_delay_interval: l.8,
        }
    })
}

fn keep<T>(ok: bool, v: Option<T>) -> Option<T> {
    v.filter(|_| ok)
}

/// Keeps only the properties §2.2.2.2 allows on `at`.
pub fn restrict(p: Properties, at: For) -> Properties {
    use For::*;
    let is = |set: &[For]| set.contains(&at);
    let message = is(&[Publish, Will]);
    let mut subscription_identifiers = if is(&[Publish, Subscribe]) {
        p.subscription_identifiers
    } else {
        vec![]
    };
    if at == Subscribe {
        subscription_identifiers.truncate(1);
    }
    let auth = is(&[Connect, ConnAck, Auth]);
    Properties {
        payload_format_indicator: keep(message, p.payload_format_indicator),
        message_expiry_interval: keep(message, p.message_expiry_interval),
        content_type: keep(message, p.content_type),
        response_topic: keep(message, p.response_topic),
        correlation_data: keep(message, p.correlation_data),
        subscription_identifiers,
        session_expiry_interval: keep(
            is(&[Connect, ConnAck, Disconnect]),
            p.session_expiry_interval,
        ),
        assigned_client_identifier: keep(at == ConnAck, p.assigned_client_identifier),
        server_keep_alive: keep(at == ConnAck, p.server_keep_alive),
        authentication_method: keep(auth, p.authentication_method),
        authentication_data: keep(auth, p.authentication_data),
        request_problem_information: keep(at == Connect, p.request_problem_information),
        will_delay_interval: keep(at == Will, p.will_delay_interval),
        request_response_information: keep(at == Connect, p.request_response_information),
        response_information: keep(at == ConnAck, p.response_information),
        server_reference: keep(is(&[ConnAck, Disconnect]), p.server_reference),
        reason_string: keep(
            is(&[ConnAck, Ack, SubAck, UnsubAck, Disconnect, Auth]),
            p.reason_string,
        ),
        receive_maximum: keep(is(&[Connect, ConnAck]), p.receive_maximum),
        topic_alias_maximum: keep(is(&[Connect, ConnAck]), p.topic_alias_maximum),
        topic_alias: keep(at == Publish, p.topic_alias),
        maximum_qos: keep(at == ConnAck, p.maximum_qos),
        retain_available: keep(at == ConnAck, p.retain_available),
        user_properties: p.user_properties,
        maximum_packet_size: keep(is(&[Connect, ConnAck]), p.maximum_packet_size),
        wildcard_subscription_available: keep(at == ConnAck, p.wildcard_subscription_available),
        subscription_identifier_available: keep(at == ConnAck, p.subscription_identifier_available),
        shared_subscription_available: keep(at == ConnAck, p.shared_subscription_available),
    }
}

/// Properties for `at` in `v`: always empty before 5.0.
pub fn properties(v: Protocol, at: For) -> BoxedStrategy<Properties> {
    if v.is_v5() {
        all_properties().prop_map(move |p| restrict(p, at)).boxed()
    } else {
        Just(Properties::default()).boxed()
    }
}

pub fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn pkid() -> impl Strategy<Value = u16> {
    1u16..
}

/// One of `codes`, or 0 outside 5.0.
fn reason(v: Protocol, codes: &'static [u8]) -> BoxedStrategy<u8> {
    if v.is_v5() {
        prop::sample::select(codes).boxed()
    } else {
        Just(0).boxed()
    }
}

const CONNACK_V5: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
pub const PUBACK: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
pub const PUBREL: &[u8] = &[0x00, 0x92];
const SUBACK_V3: &[u8] = &[0x00, 0x01, 0x02, 0x80];
const SUBACK_V5: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const UNSUBACK: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH: &[u8] = &[0x00, 0x18, 0x19];

fn connect(v: Protocol) -> impl Strategy<Value = Packet> {
    let will = (
        topic_name(),
        bytes(8),
        qos(),
        any::<bool>(),
        properties(v, For::Will),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        });
    (
        (any::<bool>(), any::<u16>(), text()),
        option::of(will),
        option::of(text()),
        option::of(bytes(6)),
        properties(v, For::Connect),
    )
        .prop_map(
            move |((clean_start, keep_alive, client_id), will, username, password, properties)| {
                // 3.x forbids a password without a user name.
                let username = if password.is_some() && !v.is_v5() {
                    username.or(Some(String::new()))
                } else {
                    username
                };
                Packet::Connect(Connect {
                    protocol: v,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                })
            },
        )
}

fn connack(v: Protocol) -> impl Strategy<Value = Packet> {
    let code = if v.is_v5() {
        prop::sample::select(CONNACK_V5).boxed()
    } else {
        (0u8..=5).boxed()
    };
    (any::<bool>(), code, properties(v, For::ConnAck)).prop_map(|(present, code, properties)| {
        // Session present only on an accepted connection.
        Packet::ConnAck(ConnAck {
            session_present: present && code == 0,
            code,
            properties,
        })
    })
}

fn publish(v: Protocol) -> impl Strategy<Value = Packet> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        pkid(),
        bytes(32),
        properties(v, For::Publish),
        any::<bool>(),
    )
        .prop_map(
            move |(qos, dup, retain, topic, pkid, payload, properties, empty_topic)| {
                let at_most_once = qos == QoS::AtMostOnce;
                // 5.0: with a topic alias, the topic may be empty.
                let topic = if empty_topic && properties.topic_alias.is_some() {
                    String::new()
                } else {
                    topic
                };
                Packet::Publish(Publish {
                    dup: dup && !at_most_once,
                    qos,
                    retain,
                    topic,
                    pkid: if at_most_once { 0 } else { pkid },
                    payload,
                    properties,
                })
            },
        )
}

fn resp(v: Protocol, codes: &'static [u8]) -> impl Strategy<Value = PubResp> {
    (pkid(), reason(v, codes), properties(v, For::Ack)).prop_map(|(pkid, reason, properties)| {
        PubResp {
            pkid,
            reason,
            properties,
        }
    })
}

fn sub_options(v: Protocol) -> impl Strategy<Value = SubOptions> {
    (qos(), any::<bool>(), any::<bool>(), 0u8..=2).prop_map(
        move |(qos, no_local, retain_as_published, rh)| {
            if v.is_v5() {
                SubOptions {
                    qos,
                    no_local,
                    retain_as_published,
                    retain_handling: rh,
                }
            } else {
                SubOptions {
                    qos,
                    ..SubOptions::default()
                }
            }
        },
    )
}

fn subscribe(v: Protocol) -> impl Strategy<Value = Packet> {
    let filter = (topic_filter(), sub_options(v)).prop_map(|(filter, mut options)| {
        // No Local on a shared subscription is a protocol error.
        options.no_local &= parse_shared(&filter).is_none();
        SubscribeFilter { filter, options }
    });
    (pkid(), vec(filter, 1..4), properties(v, For::Subscribe)).prop_map(
        |(pkid, filters, properties)| {
            Packet::Subscribe(Subscribe {
                pkid,
                filters,
                properties,
            })
        },
    )
}

fn codes(v: Protocol, codes: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    vec(prop::sample::select(codes), 1..4).prop_map(move |c| {
        if v.is_v5() || codes != UNSUBACK {
            c
        } else {
            vec![]
        }
    })
}

/// Any packet valid for `v` (AUTH only in 5.0).
pub fn packet(v: Protocol) -> BoxedStrategy<Packet> {
    let suback_codes = if v.is_v5() { SUBACK_V5 } else { SUBACK_V3 };
    let mut all = vec![
        connect(v).boxed(),
        connack(v).boxed(),
        publish(v).boxed(),
        publish(v).boxed(),
        resp(v, PUBACK).prop_map(Packet::PubAck).boxed(),
        resp(v, PUBACK).prop_map(Packet::PubRec).boxed(),
        resp(v, PUBREL).prop_map(Packet::PubRel).boxed(),
        resp(v, PUBREL).prop_map(Packet::PubComp).boxed(),
        subscribe(v).boxed(),
        (pkid(), codes(v, suback_codes), properties(v, For::SubAck))
            .prop_map(|(pkid, reasons, properties)| {
                Packet::SubAck(SubAck {
                    pkid,
                    reasons,
                    properties,
                })
            })
            .boxed(),
        (
            pkid(),
            vec(topic_filter(), 1..4),
            properties(v, For::Unsubscribe),
        )
            .prop_map(|(pkid, filters, properties)| {
                Packet::Unsubscribe(Unsubscribe {
                    pkid,
                    filters,
                    properties,
                })
            })
            .boxed(),
        (pkid(), codes(v, UNSUBACK), properties(v, For::UnsubAck))
            .prop_map(|(pkid, reasons, properties)| {
                Packet::UnsubAck(UnsubAck {
                    pkid,
                    reasons,
                    properties,
                })
            })
            .boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        (reason(v, DISCONNECT), properties(v, For::Disconnect))
            .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }))
            .boxed(),
    ];
    if v.is_v5() {
        all.push(
            (reason(v, AUTH), properties(v, For::Auth))
                .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }))
                .boxed(),
        );
    }
    prop::strategy::Union::new(all).boxed()
}

/// Any packet valid for any version, with its version.
pub fn versioned_packet() -> impl Strategy<Value = (Protocol, Packet)> {
    prop_oneof![
        Just(Protocol::V31),
        Just(Protocol::V311),
        Just(Protocol::V5)
    ]
    .prop_flat_map(|v| packet(v).prop_map(move |p| (v, p)))
}
