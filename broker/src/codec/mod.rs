//! The MQTT wire codec for 3.1, 3.1.1 and 5.0: strict, zero-copy decoding
//! from a `BytesMut` read buffer and encoding into a `BytesMut` write buffer.
//!
//! Decoding is incremental: [`decode`] returns `Ok(None)` until a whole
//! packet is buffered, and rejects an oversize packet as soon as its fixed
//! header says so, before the body arrives.

mod packet;

pub use packet::*;

use bytes::BytesMut;

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
/// `Ok(None)` nothing was consumed and more bytes are needed.
pub fn decode(
    buf: &mut BytesMut,
    protocol: Option<Protocol>,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let _ = (buf, protocol, max_packet_size);
    unimplemented!("codec::decode")
}

/// Appends the encoding of `packet` for `protocol` to `out`.
pub fn encode(packet: &Packet, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
    let _ = (packet, protocol, out);
    unimplemented!("codec::encode")
}

/// The size `encode` would write, so that a packet over the peer's
/// maximum packet size can be dropped before it is written.
pub fn encoded_len(packet: &Packet, protocol: Protocol) -> usize {
    let _ = (packet, protocol);
    unimplemented!("codec::encoded_len")
}
