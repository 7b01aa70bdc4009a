//! The packet data model: one representation for MQTT 3.1, 3.1.1 and 5.0.
//!
//! Fields that only exist in 5.0 (properties, reason codes on acks) are
//! simply left at their defaults for older protocol versions; the codec
//! neither reads nor writes them there.

use bytes::Bytes;

/// The protocol version a connection speaks, fixed by its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// MQTT 3.1: protocol name `MQIsdp`, level 3.
    V31,
    /// MQTT 3.1.1: protocol name `MQTT`, level 4.
    V311,
    /// MQTT 5.0: protocol name `MQTT`, level 5.
    V5,
}

impl Protocol {
    /// The protocol level byte carried in CONNECT.
    pub fn level(self) -> u8 {
        match self {
            Protocol::V31 => 3,
            Protocol::V311 => 4,
            Protocol::V5 => 5,
        }
    }

    /// The protocol name carried in CONNECT.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V31 => "MQIsdp",
            Protocol::V311 | Protocol::V5 => "MQTT",
        }
    }

    /// Whether this is MQTT 5.0 (properties and reason codes on the wire).
    pub fn is_v5(self) -> bool {
        self == Protocol::V5
    }
}

/// Quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum QoS {
    /// At most once.
    #[default]
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// Parses the two-bit QoS value; 3 is not a QoS.
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// MQTT 5.0 properties. One struct serves every packet type; the codec
/// rejects (as a protocol error) a property that is not allowed on the
/// packet being decoded, and a duplicate of a property that may appear
/// only once. Absent properties are `None` / empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties {
    /// 0x01, PUBLISH, will.
    pub payload_format_indicator: Option<u8>,
    /// 0x02, PUBLISH, will.
    pub message_expiry_interval: Option<u32>,
    /// 0x03, PUBLISH, will.
    pub content_type: Option<String>,
    /// 0x08, PUBLISH, will.
    pub response_topic: Option<String>,
    /// 0x09, PUBLISH, will.
    pub correlation_data: Option<Bytes>,
    /// 0x0B, PUBLISH (may repeat) and SUBSCRIBE (once). Each is 1..=268_435_455.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11, CONNECT, CONNACK, DISCONNECT.
    pub session_expiry_interval: Option<u32>,
    /// 0x12, CONNACK.
    pub assigned_client_identifier: Option<String>,
    /// 0x13, CONNACK.
    pub server_keep_alive: Option<u16>,
    /// 0x15, CONNECT, CONNACK, AUTH.
    pub authentication_method: Option<String>,
    /// 0x16, CONNECT, CONNACK, AUTH.
    pub authentication_data: Option<Bytes>,
    /// 0x17, CONNECT.
    pub request_problem_information: Option<u8>,
    /// 0x18, will.
    pub will_delay_interval: Option<u32>,
    /// 0x19, CONNECT.
    pub request_response_information: Option<u8>,
    /// 0x1A, CONNACK.
    pub response_information: Option<String>,
    /// 0x1C, CONNACK, DISCONNECT.
    pub server_reference: Option<String>,
    /// 0x1F, every ack, CONNACK, DISCONNECT, AUTH.
    pub reason_string: Option<String>,
    /// 0x21, CONNECT, CONNACK.
    pub receive_maximum: Option<u16>,
    /// 0x22, CONNECT, CONNACK.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23, PUBLISH.
    pub topic_alias: Option<u16>,
    /// 0x24, CONNACK.
    pub maximum_qos: Option<u8>,
    /// 0x25, CONNACK.
    pub retain_available: Option<u8>,
    /// 0x26, every packet with properties; may repeat, order kept.
    pub user_properties: Vec<(String, String)>,
    /// 0x27, CONNECT, CONNACK.
    pub maximum_packet_size: Option<u32>,
    /// 0x28, CONNACK.
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29, CONNACK.
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A, CONNACK.
    pub shared_subscription_available: Option<u8>,
}

/// CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol version, from name and level.
    pub protocol: Protocol,
    /// Clean session (3.x) / clean start (5.0).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// Client identifier; may be empty (each version has its own rules,
    /// which the broker, not the codec, applies).
    pub client_id: String,
    /// Will message, if the will flag is set.
    pub will: Option<LastWill>,
    /// User name, if the flag is set.
    pub username: Option<String>,
    /// Password, if the flag is set.
    pub password: Option<Bytes>,
    /// CONNECT properties (5.0).
    pub properties: Properties,
}

/// The will carried in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Will topic (a topic name: no wildcards).
    pub topic: String,
    /// Will payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will retain flag.
    pub retain: bool,
    /// Will properties (5.0).
    pub properties: Properties,
}

/// CONNACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session present flag.
    pub session_present: bool,
    /// 5.0 reason code, or the 3.x return code (0..=5).
    pub code: u8,
    /// CONNACK properties (5.0).
    pub properties: Properties,
}

/// PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name; may be empty in 5.0 when a topic alias is present.
    pub topic: String,
    /// Packet identifier; 0 for QoS 0 (and then not on the wire).
    pub pkid: u16,
    /// Payload, shared without copying.
    pub payload: Bytes,
    /// PUBLISH properties (5.0).
    pub properties: Properties,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one shape.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PubResp {
    /// Packet identifier (non-zero).
    pub pkid: u16,
    /// 5.0 reason code; 0 (success) for 3.x. On the wire, 5.0 omits a
    /// success code with no properties (remaining length 2).
    pub reason: u8,
    /// Properties (5.0): reason string and user properties only.
    pub properties: Properties,
}

/// Subscription options of one SUBSCRIBE entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// 5.0 no-local.
    pub no_local: bool,
    /// 5.0 retain-as-published.
    pub retain_as_published: bool,
    /// 5.0 retain handling, 0..=2.
    pub retain_handling: u8,
}

/// One topic filter of a SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// Topic filter, possibly `$share/group/filter`.
    pub filter: String,
    /// Options.
    pub options: SubOptions,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier (non-zero).
    pub pkid: u16,
    /// At least one filter.
    pub filters: Vec<SubscribeFilter>,
    /// Properties (5.0): one subscription identifier, user properties.
    pub properties: Properties,
}

/// SUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier.
    pub pkid: u16,
    /// One reason code per filter (3.x: 0, 1, 2 or 0x80).
    pub reasons: Vec<u8>,
    /// Properties (5.0).
    pub properties: Properties,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier (non-zero).
    pub pkid: u16,
    /// At least one filter.
    pub filters: Vec<String>,
    /// Properties (5.0): user properties.
    pub properties: Properties,
}

/// UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier.
    pub pkid: u16,
    /// One reason code per filter in 5.0; empty (not on the wire) for 3.x.
    pub reasons: Vec<u8>,
    /// Properties (5.0).
    pub properties: Properties,
}

/// DISCONNECT (5.0 carries a reason code and properties; 3.x neither).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Reason code; 0 is normal disconnection. On the wire, 5.0 omits a
    /// 0 reason with no properties (remaining length 0).
    pub reason: u8,
    /// Properties (5.0).
    pub properties: Properties,
}

/// AUTH (5.0 only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// 0x00 success, 0x18 continue authentication, 0x19 re-authenticate.
    pub reason: u8,
    /// Properties: authentication method and data, reason string, user properties.
    pub properties: Properties,
}

/// Any MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// 1. Boxed: CONNECT is rare and large, and would size every `Packet`.
    Connect(Box<Connect>),
    /// 2
    ConnAck(ConnAck),
    /// 3
    Publish(Publish),
    /// 4
    PubAck(PubResp),
    /// 5
    PubRec(PubResp),
    /// 6
    PubRel(PubResp),
    /// 7
    PubComp(PubResp),
    /// 8
    Subscribe(Subscribe),
    /// 9
    SubAck(SubAck),
    /// 10
    Unsubscribe(Unsubscribe),
    /// 11
    UnsubAck(UnsubAck),
    /// 12
    PingReq,
    /// 13
    PingResp,
    /// 14
    Disconnect(Disconnect),
    /// 15 (5.0 only)
    Auth(Auth),
}

/// MQTT 5.0 reason codes used by the broker (§2.4).
#[allow(missing_docs)]
pub mod reason {
    pub const SUCCESS: u8 = 0x00;
    pub const NORMAL_DISCONNECTION: u8 = 0x00;
    pub const GRANTED_QOS_0: u8 = 0x00;
    pub const GRANTED_QOS_1: u8 = 0x01;
    pub const GRANTED_QOS_2: u8 = 0x02;
    pub const DISCONNECT_WITH_WILL: u8 = 0x04;
    pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    pub const CONTINUE_AUTHENTICATION: u8 = 0x18;
    pub const REAUTHENTICATE: u8 = 0x19;
    pub const UNSPECIFIED_ERROR: u8 = 0x80;
    pub const MALFORMED_PACKET: u8 = 0x81;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const IMPLEMENTATION_SPECIFIC_ERROR: u8 = 0x83;
    pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    pub const CLIENT_IDENTIFIER_NOT_VALID: u8 = 0x85;
    pub const BAD_USER_NAME_OR_PASSWORD: u8 = 0x86;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    pub const SERVER_BUSY: u8 = 0x89;
    pub const BANNED: u8 = 0x8A;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    pub const PACKET_IDENTIFIER_IN_USE: u8 = 0x91;
    pub const PACKET_IDENTIFIER_NOT_FOUND: u8 = 0x92;
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    pub const MESSAGE_RATE_TOO_HIGH: u8 = 0x96;
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    pub const ADMINISTRATIVE_ACTION: u8 = 0x98;
    pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
    pub const RETAIN_NOT_SUPPORTED: u8 = 0x9A;
    pub const QOS_NOT_SUPPORTED: u8 = 0x9B;
    pub const USE_ANOTHER_SERVER: u8 = 0x9C;
    pub const SERVER_MOVED: u8 = 0x9D;
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0x9E;
    pub const CONNECTION_RATE_EXCEEDED: u8 = 0x9F;
    pub const MAXIMUM_CONNECT_TIME: u8 = 0xA0;
    pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: u8 = 0xA1;
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0xA2;

    /// MQTT 3.x CONNACK return codes.
    pub mod v3 {
        pub const ACCEPTED: u8 = 0;
        pub const UNACCEPTABLE_PROTOCOL_VERSION: u8 = 1;
        pub const IDENTIFIER_REJECTED: u8 = 2;
        pub const SERVER_UNAVAILABLE: u8 = 3;
        pub const BAD_USER_NAME_OR_PASSWORD: u8 = 4;
        pub const NOT_AUTHORIZED: u8 = 5;
    }
}
