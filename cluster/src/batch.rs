//! The receiving side of `PublishBatch`, decoded by hand: each envelope's
//! message goes straight into a broker [`Message`] (topic and origin into
//! `Arc<str>`, shared when they repeat within the batch; payload and
//! correlation data zero-copy slices of the received frame), with no
//! `pb::Envelope` or `pb::MqttMessage` on the way. The generated
//! [`pb::Frame`](crate::pb::Frame) holds a [`Batch`] where prost's type
//! would be (`extern_path` in `build.rs`); every other frame is prost's.
//!
//! Decoding follows prost's rules for the same `.proto`: unknown fields are
//! skipped, the last value of a scalar field wins, a message field seen
//! twice is merged, repeated fields append. A truncated field, a bad
//! varint or a known field with the wrong wire type is a [`DecodeError`]
//! for the whole frame, as with prost. A message that is well formed but
//! not a valid broker message (a name not UTF-8, QoS 3) spoils only its
//! envelope ([`Received::message`] is an error): its sequence still counts
//! and is acknowledged, so one bad message cannot stall the link.

use crate::wire::field::*;
use crate::wire::{encode_envelope, envelope_len, message_len, EnvelopeMeta};
use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{
    check_wire_type, decode_key, decode_varint, encode_key, encode_varint, encoded_len_varint,
    skip_field, DecodeContext, WireType,
};
use prost::DecodeError;
use std::sync::Arc;
use tern_broker::codec::{Properties, QoS};
use tern_broker::session::{Message, MessageProps};

/// A decoded `PublishBatch`.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Its envelopes, in order.
    pub envelopes: Vec<Received>,
    names: Names,
}

impl PartialEq for Batch {
    fn eq(&self, other: &Batch) -> bool {
        self.envelopes == other.envelopes
    }
}

/// One envelope of a [`Batch`].
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    /// Its sequence on the sender's link.
    pub seq: u64,
    /// The message (its origin node `None` when the sender left it out:
    /// the link's peer), or why it is not one.
    pub message: Result<Arc<Message>, Invalid>,
    /// Deliver to ordinary subscribers.
    pub direct: bool,
    /// Shared groups (group, filter) to serve with one member each.
    pub groups: Vec<(Arc<str>, Arc<str>)>,
    /// A retained update instead of a delivery.
    pub retained: bool,
}

/// Why an envelope's message is not a broker message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The names (topics, client ids, nodes, groups) met in one batch: a name
/// that repeats is checked and allocated once, and its messages share one
/// `Arc<str>`. A small table indexed by a hash of the name's length and
/// ends (cheap for long topics); a collision replaces the older name.
#[derive(Clone, Debug)]
struct Names {
    slots: Box<[Option<Arc<str>>; NAMES]>,
}

/// Slots per batch: room for the publishers interleaved in a batch, their
/// topics and client ids.
const NAMES: usize = 64;
const _: () = assert!(NAMES.is_power_of_two());

impl Default for Names {
    fn default() -> Names {
        Names {
            slots: Box::new([const { None }; NAMES]),
        }
    }
}

impl Names {
    fn slot(b: &[u8]) -> usize {
        let word = |w: &[u8]| {
            let mut a = [0u8; 8];
            a[..w.len()].copy_from_slice(w);
            u64::from_le_bytes(a)
        };
        let n = b.len();
        let h = (n as u64) ^ word(&b[..n.min(8)]) ^ word(&b[n.saturating_sub(8)..]).rotate_left(29);
        (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - NAMES.ilog2())) as usize
    }

    fn get(&mut self, b: &[u8]) -> Option<Arc<str>> {
        let slot = &mut self.slots[Self::slot(b)];
        if let Some(n) = slot.as_ref().filter(|n| n.as_bytes() == b) {
            return Some(n.clone());
        }
        let n: Arc<str> = Arc::from(std::str::from_utf8(b).ok()?);
        *slot = Some(n.clone());
        Some(n)
    }
}

/// prost's error for a field longer than what is left. Its error kinds are
/// private; `DecodeError::new` (deprecated, meant for hand-written
/// `Message` implementations like this one) is the only way to make one.
#[allow(deprecated)]
fn truncated() -> DecodeError {
    DecodeError::new("buffer underflow")
}

/// The bytes of a length-delimited field whose key was read.
#[inline]
fn delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let len = decode_varint(buf)?;
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= buf.len())
        .ok_or_else(truncated)?;
    let (field, rest) = buf.split_at(len);
    *buf = rest;
    Ok(field)
}

fn varint(wire_type: WireType, buf: &mut &[u8]) -> Result<u64, DecodeError> {
    check_wire_type(WireType::Varint, wire_type)?;
    decode_varint(buf)
}

/// The one-byte key of field `tag` (< 16) with `wire_type`.
const fn key(tag: u32, wire_type: WireType) -> u8 {
    ((tag << 3) | wire_type as u32) as u8
}

/// Whether `buf` starts with the one-byte key `k`; if so, it is consumed.
#[inline(always)]
fn next_is(buf: &mut &[u8], k: u8) -> bool {
    match buf.split_first() {
        Some((&first, rest)) if first == k => {
            *buf = rest;
            true
        }
        _ => false,
    }
}

/// A varint value whose key was read; one byte inline.
#[inline(always)]
fn varint_value(buf: &mut &[u8]) -> Result<u64, DecodeError> {
    match buf.split_first() {
        Some((&b, rest)) if b < 0x80 => {
            *buf = rest;
            Ok(u64::from(b))
        }
        _ => decode_varint(buf),
    }
}

const VARINT: WireType = WireType::Varint;
const DELIMITED: WireType = WireType::LengthDelimited;

fn bytes<'a>(wire_type: WireType, buf: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    check_wire_type(WireType::LengthDelimited, wire_type)?;
    delimited(buf)
}

/// The fields of an `MqttMessage`, borrowed from the frame.
#[derive(Default)]
struct Fields<'a> {
    topic: &'a [u8],
    payload: &'a [u8],
    qos: u32,
    retain: bool,
    payload_format: Option<u32>,
    content_type: Option<&'a [u8]>,
    response_topic: Option<&'a [u8]>,
    correlation_data: Option<&'a [u8]>,
    user_properties: Vec<(&'a [u8], &'a [u8])>,
    expires_at: Option<u64>,
    origin_client: Option<&'a [u8]>,
    timestamp: u64,
    origin_node: Option<&'a [u8]>,
    expiry_interval: Option<u32>,
}

/// A `(key, value)` or `(group, filter)` pair: two string fields.
fn pair<'a>(mut buf: &'a [u8], ctx: &DecodeContext) -> Result<(&'a [u8], &'a [u8]), DecodeError> {
    let (mut first, mut second): (&[u8], &[u8]) = (&[], &[]);
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf)?;
        match tag {
            1 => first = bytes(wire_type, &mut buf)?,
            2 => second = bytes(wire_type, &mut buf)?,
            _ => skip_field(wire_type, tag, &mut buf, ctx.clone())?,
        }
    }
    Ok((first, second))
}

impl<'a> Fields<'a> {
    /// Merges one encoded `MqttMessage` into these fields.
    fn merge(&mut self, mut buf: &'a [u8], ctx: &DecodeContext) -> Result<(), DecodeError> {
        // Every node writes the usual fields in number order with one-byte
        // keys: each is taken where expected, a test per field that the
        // CPU predicts, instead of the generic loop's dispatch per field.
        // Only a prefix of `buf` is taken, field by field, so what is left
        // (any other order, unknown fields) goes through the loop as if
        // the loop had read it all.
        let b = &mut buf;
        if next_is(b, key(MSG_TOPIC, DELIMITED)) {
            self.topic = delimited(b)?;
        }
        if next_is(b, key(MSG_PAYLOAD, DELIMITED)) {
            self.payload = delimited(b)?;
        }
        if next_is(b, key(MSG_QOS, VARINT)) {
            self.qos = varint_value(b)? as u32;
        }
        if next_is(b, key(MSG_RETAIN, VARINT)) {
            self.retain = varint_value(b)? != 0;
        }
        if next_is(b, key(MSG_EXPIRES_AT, VARINT)) {
            self.expires_at = Some(varint_value(b)?);
        }
        if next_is(b, key(MSG_ORIGIN_CLIENT, DELIMITED)) {
            self.origin_client = Some(delimited(b)?);
        }
        if next_is(b, key(MSG_TIMESTAMP, VARINT)) {
            self.timestamp = varint_value(b)?;
        }
        if next_is(b, key(MSG_ORIGIN_NODE, DELIMITED)) {
            self.origin_node = Some(delimited(b)?);
        }
        while !buf.is_empty() {
            let (tag, wt) = decode_key(&mut buf)?;
            let b = &mut buf;
            match tag {
                MSG_TOPIC => self.topic = bytes(wt, b)?,
                MSG_PAYLOAD => self.payload = bytes(wt, b)?,
                // uint32 fields keep the low 32 bits, as prost does.
                MSG_QOS => self.qos = varint(wt, b)? as u32,
                MSG_RETAIN => self.retain = varint(wt, b)? != 0,
                MSG_PAYLOAD_FORMAT => self.payload_format = Some(varint(wt, b)? as u32),
                MSG_CONTENT_TYPE => self.content_type = Some(bytes(wt, b)?),
                MSG_RESPONSE_TOPIC => self.response_topic = Some(bytes(wt, b)?),
                MSG_CORRELATION_DATA => self.correlation_data = Some(bytes(wt, b)?),
                MSG_USER_PROPERTIES => {
                    let p = pair(bytes(wt, b)?, ctx)?;
                    self.user_properties.push(p);
                }
                MSG_EXPIRES_AT => self.expires_at = Some(varint(wt, b)?),
                MSG_ORIGIN_CLIENT => self.origin_client = Some(bytes(wt, b)?),
                MSG_TIMESTAMP => self.timestamp = varint(wt, b)?,
                MSG_ORIGIN_NODE => self.origin_node = Some(bytes(wt, b)?),
                MSG_EXPIRY_INTERVAL => self.expiry_interval = Some(varint(wt, b)? as u32),
                _ => skip_field(wt, tag, b, ctx.clone())?,
            }
        }
        Ok(())
    }

    /// The broker message; `frame` holds every borrowed slice.
    fn message(self, frame: &Bytes, names: &mut Names) -> Result<Message, Invalid> {
        let string = |b: &[u8], what| {
            std::str::from_utf8(b)
                .map(str::to_owned)
                .map_err(|_| Invalid(what))
        };
        let qos = u8::try_from(self.qos)
            .ok()
            .and_then(QoS::from_u8)
            .ok_or(Invalid("QoS out of range"))?;
        let bare = self.payload_format.is_none()
            && self.expiry_interval.is_none()
            && self.content_type.is_none()
            && self.response_topic.is_none()
            && self.correlation_data.is_none()
            && self.user_properties.is_empty();
        let properties = match bare {
            true => MessageProps::default(),
            false => self.properties(frame, string)?.into(),
        };
        Ok(Message {
            topic: names.get(self.topic).ok_or(Invalid("topic not UTF-8"))?,
            payload: frame.slice_ref(self.payload),
            qos,
            retain: self.retain,
            properties,
            expires_at: self.expires_at,
            origin: self
                .origin_client
                .map(|b| names.get(b).ok_or(Invalid("origin client not UTF-8")))
                .transpose()?,
            timestamp: self.timestamp,
            origin_node: self
                .origin_node
                .map(|b| names.get(b).ok_or(Invalid("origin node not UTF-8")))
                .transpose()?,
        })
    }

    /// The 5.0 properties among these fields.
    fn properties(
        &self,
        frame: &Bytes,
        string: impl Fn(&[u8], &'static str) -> Result<String, Invalid>,
    ) -> Result<Properties, Invalid> {
        let payload_format_indicator = self
            .payload_format
            .map(|v| u8::try_from(v).map_err(|_| Invalid("payload format indicator out of range")))
            .transpose()?;
        let user_properties = self
            .user_properties
            .iter()
            .map(|&(k, v)| {
                Ok((
                    string(k, "user property not UTF-8")?,
                    string(v, "user property not UTF-8")?,
                ))
            })
            .collect::<Result<Vec<_>, Invalid>>()?;
        Ok(Properties {
            payload_format_indicator,
            message_expiry_interval: self.expiry_interval,
            content_type: self
                .content_type
                .map(|b| string(b, "content type not UTF-8"))
                .transpose()?,
            response_topic: self
                .response_topic
                .map(|b| string(b, "response topic not UTF-8"))
                .transpose()?,
            correlation_data: self.correlation_data.map(|b| frame.slice_ref(b)),
            user_properties,
            ..Properties::default()
        })
    }
}

impl Batch {
    /// Decodes one encoded `Envelope`.
    fn envelope(&mut self, frame: &Bytes, ctx: &DecodeContext) -> Result<Received, DecodeError> {
        let mut buf: &[u8] = frame;
        let (mut seq, mut direct, mut retained) = (0, false, false);
        let mut fields: Option<Fields<'_>> = None;
        let mut groups = Vec::new();
        // The usual fields in number order first, as in `Fields::merge`.
        let b = &mut buf;
        if next_is(b, key(ENV_SEQ, VARINT)) {
            seq = varint_value(b)?;
        }
        if next_is(b, key(ENV_MESSAGE, DELIMITED)) {
            fields.get_or_insert_default().merge(delimited(b)?, ctx)?;
        }
        if next_is(b, key(ENV_DIRECT, VARINT)) {
            direct = varint_value(b)? != 0;
        }
        while !buf.is_empty() {
            let (tag, wt) = decode_key(&mut buf)?;
            let b = &mut buf;
            match tag {
                ENV_SEQ => seq = varint(wt, b)?,
                ENV_MESSAGE => fields.get_or_insert_default().merge(bytes(wt, b)?, ctx)?,
                ENV_DIRECT => direct = varint(wt, b)? != 0,
                ENV_GROUPS => groups.push(pair(bytes(wt, b)?, ctx)?),
                ENV_RETAINED => retained = varint(wt, b)? != 0,
                _ => skip_field(wt, tag, b, ctx.clone())?,
            }
        }
        let names = &mut self.names;
        let groups = match groups.is_empty() {
            // The usual case: nothing to collect.
            true => Some(Vec::new()),
            false => groups
                .into_iter()
                .map(|(g, f)| Some((names.get(g)?, names.get(f)?)))
                .collect::<Option<Vec<_>>>(),
        };
        let message = match (fields, &groups) {
            (None, _) => Err(Invalid("no message")),
            (_, None) => Err(Invalid("shared group not UTF-8")),
            (Some(f), Some(_)) => f.message(frame, names).map(tern_broker::recycle::make),
        };
        Ok(Received {
            seq,
            message,
            direct,
            groups: groups.unwrap_or_default(),
            retained,
        })
    }
}

impl Received {
    fn meta(&self) -> EnvelopeMeta<'_> {
        EnvelopeMeta {
            seq: self.seq,
            direct: self.direct,
            groups: &self.groups,
            retained: self.retained,
        }
    }

    /// Encoded length; an envelope whose message was invalid is written
    /// without it.
    fn encoded_len(&self) -> usize {
        let msg = self.message.as_ref().ok().map(|m| message_len(m));
        envelope_len(&self.meta(), msg)
    }
}

/// Decoding is by hand (above); encoding, which only tests use (the
/// dialer sends envelopes it encoded when forwarding, `wire.rs`), writes
/// what prost would for the same values.
impl prost::Message for Batch {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for e in &self.envelopes {
            encode_key(BATCH_ENVELOPES, WireType::LengthDelimited, buf);
            encode_varint(e.encoded_len() as u64, buf);
            let msg = e.message.as_ref().ok().map(|m| (&**m, message_len(m)));
            encode_envelope(&e.meta(), msg, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != BATCH_ENVELOPES {
            return skip_field(wire_type, tag, buf, ctx);
        }
        check_wire_type(WireType::LengthDelimited, wire_type)?;
        let len = decode_varint(buf)?;
        if len > buf.remaining() as u64 {
            return Err(truncated());
        }
        // Without a copy when `buf` is tonic's (a `BytesMut`): the payloads
        // are slices of the received frame.
        let envelope = buf.copy_to_bytes(len as usize);
        if self.envelopes.is_empty() {
            // What follows in the frame is mostly envelopes of about this
            // size: one allocation for the batch instead of eight doublings.
            let estimate = buf.remaining() / (envelope.len() + 2) + 1;
            self.envelopes.reserve(estimate.min(1024));
        }
        let received = self.envelope(&envelope, &ctx)?;
        self.envelopes.push(received);
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.envelopes
            .iter()
            .map(|e| {
                let l = e.encoded_len();
                1 + encoded_len_varint(l as u64) + l
            })
            .sum()
    }

    fn clear(&mut self) {
        self.envelopes.clear();
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
