//! The MQTT wire codec for 3.1, 3.1.1 and 5.0: strict, zero-copy decoding
//! from a `BytesMut` read buffer and encoding into a `BytesMut` write buffer.
//!
//! Decoding is incremental: [`decode`] returns `Ok(None)` until a whole
//! packet is buffered, and rejects an oversize packet as soon as its fixed
//! header says so, before the body arrives.
//!
//! # What decoding checks
//!
//! Everything the specifications let a receiver check within one packet;
//! whatever needs connection state (topic alias ranges, receive maximum,
//! a second CONNECT, client identifier rules) is the broker's business.
//! - [`DecodeError::Malformed`]: grammar. Packet type 0, AUTH before 5.0,
//!   reserved fixed-header flags (3.1 also allows DUP on PUBREL, SUBSCRIBE
//!   and UNSUBSCRIBE), PUBLISH QoS 3 or DUP on QoS 0, a variable byte
//!   integer over four bytes or not in its shortest form, fields running
//!   past the packet, trailing bytes, invalid UTF-8 or U+0000, CONNECT
//!   flag inconsistencies, a 3.x password without a user name, reserved
//!   subscription option bits (and, in 3.x, QoS 3), unknown properties.
//! - [`DecodeError::Protocol`]: a property not allowed on the packet, a
//!   duplicate, an out-of-range value, authentication data without a
//!   method, packet identifier 0, a reason code not listed for the packet,
//!   a 5.0 SUBSCRIBE without filters or with QoS 3 or retain handling 3,
//!   No Local on a shared subscription, a 5.0 PUBLISH with an empty topic
//!   and no topic alias, a response topic with wildcards.
//! - [`DecodeError::TopicNameInvalid`] / [`DecodeError::TopicFilterInvalid`]:
//!   PUBLISH and will topics, SUBSCRIBE and UNSUBSCRIBE filters, as judged
//!   by [`crate::topic`].
//!
//! Server-to-client packets (CONNACK, SUBACK, UNSUBACK, PINGRESP) decode
//! too, with the same strictness.

mod connect;
mod control;
mod packet;
mod properties;
mod publish;
mod read;
mod subscribe;
#[cfg(test)]
mod tests;
mod write;

pub use packet::*;

use bytes::BytesMut;

use publish::Ack;
use read::{parse_varint, Reader};
use write::{put_field, put_header, varint_len, Sizes};

/// Why a byte stream is not a valid MQTT packet. Each maps to the 5.0
/// reason code the broker sends in DISCONNECT (or CONNACK, for errors in
/// CONNECT); 3.x connections are simply closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes do not follow the packet grammar (§1.5, §2, §3).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// Grammatical, but breaks a protocol rule (e.g. a duplicate property).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The remaining length announces more than the allowed maximum.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge {
        /// Total packet size announced.
        size: usize,
        /// Limit in force.
        max: usize,
    },
    /// CONNECT with protocol name `MQTT`/`MQIsdp` but an unknown level.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// CONNECT with an unknown protocol name.
    #[error("invalid protocol name")]
    InvalidProtocolName,
    /// The first packet on a connection was not CONNECT.
    #[error("first packet is not CONNECT")]
    FirstPacketNotConnect,
    /// A PUBLISH or will topic that is not a valid topic name.
    #[error("invalid topic name")]
    TopicNameInvalid,
    /// A SUBSCRIBE/UNSUBSCRIBE filter that is not a valid filter.
    #[error("invalid topic filter")]
    TopicFilterInvalid,
}

impl DecodeError {
    /// The 5.0 reason code for this error.
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::Malformed(_) => reason::MALFORMED_PACKET,
            DecodeError::Protocol(_) | DecodeError::FirstPacketNotConnect => reason::PROTOCOL_ERROR,
            DecodeError::PacketTooLarge { .. } => reason::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocolLevel(_) | DecodeError::InvalidProtocolName => {
                reason::UNSUPPORTED_PROTOCOL_VERSION
            }
            DecodeError::TopicNameInvalid => reason::TOPIC_NAME_INVALID,
            DecodeError::TopicFilterInvalid => reason::TOPIC_FILTER_INVALID,
        }
    }
}

/// Why a packet could not be encoded (a value out of the wire's range).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string or binary field longer than 65,535 bytes.
    #[error("field too long: {0}")]
    FieldTooLong(&'static str),
    /// The packet would exceed the 268,435,455-byte remaining-length limit.
    #[error("packet too large")]
    PacketTooLarge,
    /// The packet type does not exist in this protocol version (AUTH in 3.x).
    #[error("packet not available in this protocol version")]
    NotInProtocol,
}

/// Decodes one packet from the front of `buf`.
///
/// `protocol` is `None` until CONNECT has been decoded: then only CONNECT is
/// accepted. `max_packet_size` bounds the whole packet (fixed header
/// included). On `Ok(Some(_))` the packet's bytes have been consumed; on
/// `Ok(None)` nothing was consumed and more bytes are needed. A CONNECT is
/// always decoded for the protocol its own name and level announce.
///
/// Errors are reported as early as the bytes allow: a bad first byte or an
/// oversize remaining length before the rest of the packet has arrived.
/// After an error the buffer's contents are unspecified; the connection
/// must be closed.
pub fn decode(
    buf: &mut BytesMut,
    protocol: Option<Protocol>,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&byte1) = buf.first() else {
        return Ok(None);
    };
    let kind = byte1 >> 4;
    let protocol = match protocol {
        Some(p) => p,
        None if kind == 1 => Protocol::V311, // unused: CONNECT names its own
        None => return Err(DecodeError::FirstPacketNotConnect),
    };
    check_fixed_flags(byte1, protocol)?;
    let Some((remaining, len_len)) = parse_varint(buf.get(1..).unwrap_or_default())? else {
        return Ok(None);
    };
    let header = 1 + len_len;
    let size = header + remaining as usize;
    if size > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    let packet = buf.split_to(size).freeze();
    let mut r = Reader::at(&packet, header);
    let r = &mut r;
    let p = protocol;
    Ok(Some(match kind {
        1 => Packet::Connect(Box::new(connect::decode_connect(r)?)),
        2 => Packet::ConnAck(connect::decode_connack(r, p)?),
        3 => Packet::Publish(publish::decode_publish(byte1, r, p)?),
        4 => Packet::PubAck(publish::decode_ack(Ack::Puback, r, p)?),
        5 => Packet::PubRec(publish::decode_ack(Ack::Pubrec, r, p)?),
        6 => Packet::PubRel(publish::decode_ack(Ack::Pubrel, r, p)?),
        7 => Packet::PubComp(publish::decode_ack(Ack::Pubcomp, r, p)?),
        8 => Packet::Subscribe(subscribe::decode_subscribe(r, p)?),
        9 => Packet::SubAck(subscribe::decode_suback(r, p)?),
        10 => Packet::Unsubscribe(subscribe::decode_unsubscribe(r, p)?),
        11 => Packet::UnsubAck(subscribe::decode_unsuback(r, p)?),
        12 => {
            r.finish()?;
            Packet::PingReq
        }
        13 => {
            r.finish()?;
            Packet::PingResp
        }
        14 => Packet::Disconnect(control::decode_disconnect(r, p)?),
        // `check_fixed_flags` let type 15 through only for 5.0.
        _ => Packet::Auth(control::decode_auth(r)?),
    }))
}

/// Checks the packet type and the flags of the fixed header (§2.1.3).
fn check_fixed_flags(byte1: u8, protocol: Protocol) -> Result<(), DecodeError> {
    let flags = byte1 & 0x0F;
    let expected = match byte1 >> 4 {
        0 => return Err(DecodeError::Malformed("reserved packet type 0")),
        3 => return publish::publish_flags(byte1).map(|_| ()),
        // 3.1 let a resent PUBREL/SUBSCRIBE/UNSUBSCRIBE carry DUP.
        6 | 8 | 10 if protocol == Protocol::V31 && flags == 0x0A => return Ok(()),
        6 | 8 | 10 => 0x02,
        15 if !protocol.is_v5() => return Err(DecodeError::Malformed("AUTH before MQTT 5.0")),
        _ => 0,
    };
    if flags == expected {
        Ok(())
    } else {
        Err(DecodeError::Malformed("invalid fixed header flags"))
    }
}

/// The first byte of the fixed header and the sizes of `packet`, or
/// `None` if the packet does not exist in `protocol`.
fn plan(packet: &Packet, protocol: Protocol) -> Option<(u8, Sizes)> {
    let fixed = |remaining| Sizes {
        remaining,
        ..Sizes::default()
    };
    Some(match packet {
        Packet::Connect(c) => (0x10, connect::connect_sizes(c)),
        Packet::ConnAck(c) => (0x20, connect::connack_sizes(c, protocol)),
        Packet::Publish(p) => (
            publish::publish_byte1(p),
            publish::publish_sizes(p, protocol),
        ),
        Packet::PubAck(a) => (0x40, publish::ack_sizes(a, protocol)),
        Packet::PubRec(a) => (0x50, publish::ack_sizes(a, protocol)),
        Packet::PubRel(a) => (0x62, publish::ack_sizes(a, protocol)),
        Packet::PubComp(a) => (0x70, publish::ack_sizes(a, protocol)),
        Packet::Subscribe(s) => (0x82, subscribe::subscribe_sizes(s, protocol)),
        Packet::SubAck(s) => (0x90, subscribe::suback_sizes(s, protocol)),
        Packet::Unsubscribe(u) => (0xA2, subscribe::unsubscribe_sizes(u, protocol)),
        Packet::UnsubAck(u) => (0xB0, subscribe::unsuback_sizes(u, protocol)),
        Packet::PingReq => (0xC0, fixed(0)),
        Packet::PingResp => (0xD0, fixed(0)),
        Packet::Disconnect(d) => (
            0xE0,
            control::reasoned_sizes(d.reason, &d.properties, protocol),
        ),
        Packet::Auth(_) if !protocol.is_v5() => return None,
        Packet::Auth(a) => (
            0xF0,
            control::reasoned_sizes(a.reason, &a.properties, protocol),
        ),
    })
}

/// Appends the encoding of `packet` for `protocol` to `out`.
///
/// The packet is taken as valid; only what the wire cannot carry fails:
/// a string or binary field over 65,535 bytes or a subscription identifier
/// over 268,435,455 ([`EncodeError::FieldTooLong`]), a packet over the
/// remaining-length limit ([`EncodeError::PacketTooLarge`]), AUTH before
/// 5.0 ([`EncodeError::NotInProtocol`]).
///
/// Fields that `protocol` lacks are left out (properties and ack reasons
/// in 3.x); a CONNECT is encoded for its own `protocol` field. 5.0 acks,
/// DISCONNECT and AUTH take their shortest form. On error nothing is
/// appended.
pub fn encode(packet: &Packet, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
    let (byte1, sizes) = plan(packet, protocol).ok_or(EncodeError::NotInProtocol)?;
    if sizes.remaining > read::VARINT_MAX as usize {
        return Err(EncodeError::PacketTooLarge);
    }
    let start = out.len();
    out.reserve(total_len(sizes.remaining));
    let result = put_header(out, byte1, sizes.remaining)
        .and_then(|()| put_body(packet, protocol, out, sizes));
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn put_body(
    packet: &Packet,
    protocol: Protocol,
    out: &mut BytesMut,
    sizes: Sizes,
) -> Result<(), EncodeError> {
    match packet {
        Packet::Connect(c) => connect::put_connect(out, c, sizes),
        Packet::ConnAck(c) => connect::put_connack(out, c, protocol, sizes),
        Packet::Publish(p) => publish::put_publish(out, p, protocol, sizes),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            publish::put_ack(out, a, sizes)
        }
        Packet::Subscribe(s) => subscribe::put_subscribe(out, s, protocol, sizes),
        Packet::SubAck(s) => subscribe::put_suback(out, s, protocol, sizes),
        Packet::Unsubscribe(u) => subscribe::put_unsubscribe(out, u, protocol, sizes),
        Packet::UnsubAck(u) => subscribe::put_unsuback(out, u, protocol, sizes),
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(d) => control::put_reasoned(out, d.reason, &d.properties, sizes),
        Packet::Auth(a) => control::put_reasoned(out, a.reason, &a.properties, sizes),
    }
}

fn total_len(remaining: usize) -> usize {
    remaining.saturating_add(1 + varint_len(remaining))
}

/// A PUBLISH without properties, from borrowed parts: what most deliveries
/// are (any 3.x one, a 5.0 one whose message has no properties, no expiry,
/// no subscription identifier and no topic alias). Encodes to the same
/// bytes as the [`Publish`] with empty properties, without building one
/// (a topic copy and a `Properties` per delivery).
#[derive(Debug, Clone, Copy)]
pub struct BarePublish<'a> {
    /// DUP flag.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name.
    pub topic: &'a str,
    /// Packet identifier; 0 for QoS 0 (and then not on the wire).
    pub pkid: u16,
    /// Payload.
    pub payload: &'a [u8],
}

impl BarePublish<'_> {
    fn remaining(&self, protocol: Protocol) -> usize {
        2 + self.topic.len()
            + if self.qos == QoS::AtMostOnce { 0 } else { 2 }
            + usize::from(protocol.is_v5())
            + self.payload.len()
    }

    /// The size [`BarePublish::encode`] writes.
    pub fn encoded_len(&self, protocol: Protocol) -> usize {
        total_len(self.remaining(protocol))
    }

    /// Appends the packet to `out` (nothing on error).
    pub fn encode(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        use bytes::BufMut;
        let remaining = self.remaining(protocol);
        if remaining > read::VARINT_MAX as usize {
            return Err(EncodeError::PacketTooLarge);
        }
        let start = out.len();
        out.reserve(total_len(remaining));
        let byte1 = 0x30 | u8::from(self.dup) << 3 | (self.qos as u8) << 1 | u8::from(self.retain);
        let result = put_header(out, byte1, remaining).and_then(|()| {
            put_field(out, self.topic.as_bytes(), "topic")?;
            if self.qos != QoS::AtMostOnce {
                out.put_u16(self.pkid);
            }
            if protocol.is_v5() {
                out.put_u8(0);
            }
            out.put_slice(self.payload);
            Ok(())
        });
        if result.is_err() {
            out.truncate(start);
        }
        result
    }
}

/// The size `encode` would write, so that a packet over the peer's
/// maximum packet size can be dropped before it is written.
///
/// Computed from field lengths without encoding. For a packet `encode`
/// rejects, the value is not meaningful (0 for AUTH outside 5.0).
pub fn encoded_len(packet: &Packet, protocol: Protocol) -> usize {
    plan(packet, protocol).map_or(0, |(_, sizes)| total_len(sizes.remaining))
}
