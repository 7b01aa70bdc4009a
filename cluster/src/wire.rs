//! The dialer's frames, encoded by hand where it saves work. A forwarded
//! message is encoded once, when it is forwarded, straight from the
//! broker's [`Message`] into its record: its envelope framed as one element
//! of `PublishBatch.envelopes` (no `pb::MqttMessage` on the way). The retry
//! buffer keeps the records one after the other in chunks
//! ([`Outbox`](crate::outbox::Outbox)), and a `PublishBatch` frame is a
//! header and slices of those chunks, which tonic's encoder copies into
//! its buffer. The bytes are exactly what prost writes for the equivalent
//! [`pb::Frame`] (unit tests compare): nothing on the wire changes (no
//! protocol version bump). The receiving side is `batch.rs`.

use crate::link::AddSecret;
use crate::outbox::Taken;
use crate::pb;
use bytes::{BufMut, Bytes};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message as _;
use std::sync::Arc;
use tern_broker::session::Message;
use tonic::codec::Streaming;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Response, Status};

/// Bytes of envelopes the link puts in one `PublishBatch` (one envelope
/// more may cross it: a batch holds at least one).
pub(crate) const BATCH_BYTES: usize = 1 << 20;

/// How many of the leading items, of these sizes, go into one frame: as
/// many as stay within about [`BATCH_BYTES`], and at least one.
pub(crate) fn fits_in_batch(sizes: impl Iterator<Item = usize>) -> usize {
    let mut bytes = 0;
    sizes
        .take_while(|&size| {
            let first = bytes == 0;
            bytes += size;
            first || bytes <= BATCH_BYTES
        })
        .count()
}

/// The largest mesh frame either side encodes or accepts: a batch of
/// [`BATCH_BYTES`] plus one envelope carrying the largest MQTT packet a
/// node may be configured for (256 MiB), with room for its other fields.
/// tonic's default (4 MiB) refused a batch of five 1 MiB messages, and the
/// link then failed on the same batch after every reconnect.
pub(crate) const MAX_FRAME: usize = 300 << 20;

/// Field numbers, as in `mesh.proto` (shared with the decoder, `batch.rs`).
pub(crate) mod field {
    pub(crate) const FRAME_PUBLISH_BATCH: u32 = 7;
    pub(crate) const BATCH_ENVELOPES: u32 = 1;

    pub(crate) const ENV_SEQ: u32 = 1;
    pub(crate) const ENV_MESSAGE: u32 = 2;
    pub(crate) const ENV_DIRECT: u32 = 3;
    pub(crate) const ENV_GROUPS: u32 = 4;
    pub(crate) const ENV_RETAINED: u32 = 5;

    pub(crate) const GROUP_GROUP: u32 = 1;
    pub(crate) const GROUP_FILTER: u32 = 2;

    pub(crate) const MSG_TOPIC: u32 = 1;
    pub(crate) const MSG_PAYLOAD: u32 = 2;
    pub(crate) const MSG_QOS: u32 = 3;
    pub(crate) const MSG_RETAIN: u32 = 4;
    pub(crate) const MSG_PAYLOAD_FORMAT: u32 = 5;
    pub(crate) const MSG_CONTENT_TYPE: u32 = 6;
    pub(crate) const MSG_RESPONSE_TOPIC: u32 = 7;
    pub(crate) const MSG_CORRELATION_DATA: u32 = 8;
    pub(crate) const MSG_USER_PROPERTIES: u32 = 9;
    pub(crate) const MSG_EXPIRES_AT: u32 = 10;
    pub(crate) const MSG_ORIGIN_CLIENT: u32 = 11;
    pub(crate) const MSG_TIMESTAMP: u32 = 12;
    pub(crate) const MSG_ORIGIN_NODE: u32 = 13;
    pub(crate) const MSG_EXPIRY_INTERVAL: u32 = 14;

    pub(crate) const PROP_KEY: u32 = 1;
    pub(crate) const PROP_VALUE: u32 = 2;
}

use field::*;

/// An encoded `pb::Frame`, sent as is: whole, or a `PublishBatch` kept as
/// slices of the outbox's chunks of records, which tonic's encoder copies
/// one after the other into its buffer (no frame-sized copy of the batch
/// on the way, and a copy per slice, not per record).
#[derive(Clone, PartialEq)]
pub(crate) enum Encoded {
    Frame(Bytes),
    Batch {
        /// Length of the `envelopes` field's records, all together.
        records: usize,
        /// Those records.
        slices: Vec<Bytes>,
    },
}

impl Default for Encoded {
    fn default() -> Encoded {
        Encoded::Frame(Bytes::new())
    }
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoded({} bytes)", self.encoded_len())
    }
}

impl Encoded {
    /// A frame of `kind`, encoded by prost.
    pub(crate) fn frame(kind: pb::frame::Kind) -> Encoded {
        Encoded::Frame(pb::Frame { kind: Some(kind) }.encode_to_vec().into())
    }

    /// A `PublishBatch` frame of records written by [`put_record`].
    pub(crate) fn batch(taken: Taken) -> Encoded {
        Encoded::Batch {
            records: taken.bytes,
            slices: taken.slices,
        }
    }
}

/// Only ever encoded: the dialer never reads its own frames back.
impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match self {
            Encoded::Frame(b) => buf.put_slice(b),
            Encoded::Batch { records, slices } => {
                put_key(FRAME_PUBLISH_BATCH, WireType::LengthDelimited, buf);
                put_raw_varint(*records as u64, buf);
                for s in slices {
                    buf.put_slice(s);
                }
            }
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        match self {
            Encoded::Frame(b) => b.len(),
            Encoded::Batch { records, .. } => {
                key_len(FRAME_PUBLISH_BATCH) + encoded_len_varint(*records as u64) + records
            }
        }
    }

    fn clear(&mut self) {
        *self = Encoded::default();
    }
}

/// A field's key: one byte for the field numbers written here (< 16),
/// prost's general encoding otherwise.
#[inline]
fn put_key(tag: u32, wire_type: WireType, buf: &mut impl BufMut) {
    if tag < 16 {
        buf.put_u8(((tag << 3) | wire_type as u32) as u8);
    } else {
        encode_key(tag, wire_type, buf);
    }
}

/// A varint, with the one-byte case (lengths, flags, QoS) inline.
#[inline]
fn put_raw_varint(v: u64, buf: &mut impl BufMut) {
    if v < 0x80 {
        buf.put_u8(v as u8);
    } else {
        encode_varint(v, buf);
    }
}

/// Length of a length-delimited field of `len` bytes.
fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_delimited(tag: u32, bytes: &[u8], buf: &mut impl BufMut) {
    put_key(tag, WireType::LengthDelimited, buf);
    put_raw_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

fn varint_len(tag: u32, v: u64) -> usize {
    key_len(tag) + encoded_len_varint(v)
}

fn put_varint(tag: u32, v: u64, buf: &mut impl BufMut) {
    put_key(tag, WireType::Varint, buf);
    put_raw_varint(v, buf);
}

/// proto3 leaves out a field at its default value (`optional` ones are
/// written whenever present).
fn bytes_len(tag: u32, b: &[u8]) -> usize {
    if b.is_empty() {
        0
    } else {
        delimited_len(tag, b.len())
    }
}

fn put_bytes(tag: u32, b: &[u8], buf: &mut impl BufMut) {
    if !b.is_empty() {
        put_delimited(tag, b, buf);
    }
}

fn uint_len(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        varint_len(tag, v)
    }
}

fn put_uint(tag: u32, v: u64, buf: &mut impl BufMut) {
    if v != 0 {
        put_varint(tag, v, buf);
    }
}

fn user_property_len(key: &str, value: &str) -> usize {
    bytes_len(PROP_KEY, key.as_bytes()) + bytes_len(PROP_VALUE, value.as_bytes())
}

/// Length of `msg` as an `MqttMessage` (see [`encode_message`]).
pub(crate) fn message_len(msg: &Message) -> usize {
    let p = &msg.properties;
    let opt_bytes = |tag, b: Option<&[u8]>| b.map_or(0, |b| delimited_len(tag, b.len()));
    let opt_uint = |tag, v: Option<u64>| v.map_or(0, |v| varint_len(tag, v));
    bytes_len(MSG_TOPIC, msg.topic.as_bytes())
        + bytes_len(MSG_PAYLOAD, &msg.payload)
        + uint_len(MSG_QOS, msg.qos as u64)
        + uint_len(MSG_RETAIN, u64::from(msg.retain))
        + opt_uint(
            MSG_PAYLOAD_FORMAT,
            p.payload_format_indicator.map(u64::from),
        )
        + opt_bytes(
            MSG_CONTENT_TYPE,
            p.content_type.as_deref().map(str::as_bytes),
        )
        + opt_bytes(
            MSG_RESPONSE_TOPIC,
            p.response_topic.as_deref().map(str::as_bytes),
        )
        + opt_bytes(MSG_CORRELATION_DATA, p.correlation_data.as_deref())
        + p.user_properties
            .iter()
            .map(|(k, v)| delimited_len(MSG_USER_PROPERTIES, user_property_len(k, v)))
            .sum::<usize>()
        + opt_uint(MSG_EXPIRES_AT, msg.expires_at)
        + opt_bytes(MSG_ORIGIN_CLIENT, msg.origin.as_deref().map(str::as_bytes))
        + uint_len(MSG_TIMESTAMP, msg.timestamp)
        + opt_bytes(
            MSG_ORIGIN_NODE,
            msg.origin_node.as_deref().map(str::as_bytes),
        )
        + opt_uint(
            MSG_EXPIRY_INTERVAL,
            p.message_expiry_interval.map(u64::from),
        )
}

/// Writes `msg` as an `MqttMessage`, byte for byte what prost writes for
/// [`message_to_pb`](crate::convert::message_to_pb) of it, except that the
/// origin node is left out when the message has none (the receiver takes
/// the link's peer), with no `pb::MqttMessage` built on the way.
pub(crate) fn encode_message(msg: &Message, buf: &mut impl BufMut) {
    let p = &msg.properties;
    put_bytes(MSG_TOPIC, msg.topic.as_bytes(), buf);
    put_bytes(MSG_PAYLOAD, &msg.payload, buf);
    put_uint(MSG_QOS, msg.qos as u64, buf);
    put_uint(MSG_RETAIN, u64::from(msg.retain), buf);
    if let Some(v) = p.payload_format_indicator {
        put_varint(MSG_PAYLOAD_FORMAT, u64::from(v), buf);
    }
    if let Some(v) = &p.content_type {
        put_delimited(MSG_CONTENT_TYPE, v.as_bytes(), buf);
    }
    if let Some(v) = &p.response_topic {
        put_delimited(MSG_RESPONSE_TOPIC, v.as_bytes(), buf);
    }
    if let Some(v) = &p.correlation_data {
        put_delimited(MSG_CORRELATION_DATA, v, buf);
    }
    for (k, v) in &p.user_properties {
        put_key(MSG_USER_PROPERTIES, WireType::LengthDelimited, buf);
        put_raw_varint(user_property_len(k, v) as u64, buf);
        put_bytes(PROP_KEY, k.as_bytes(), buf);
        put_bytes(PROP_VALUE, v.as_bytes(), buf);
    }
    if let Some(v) = msg.expires_at {
        put_varint(MSG_EXPIRES_AT, v, buf);
    }
    if let Some(v) = &msg.origin {
        put_delimited(MSG_ORIGIN_CLIENT, v.as_bytes(), buf);
    }
    put_uint(MSG_TIMESTAMP, msg.timestamp, buf);
    if let Some(v) = &msg.origin_node {
        put_delimited(MSG_ORIGIN_NODE, v.as_bytes(), buf);
    }
    if let Some(v) = p.message_expiry_interval {
        put_varint(MSG_EXPIRY_INTERVAL, u64::from(v), buf);
    }
}

/// What an envelope carries besides its message.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EnvelopeMeta<'a> {
    pub(crate) seq: u64,
    /// Deliver to ordinary subscribers.
    pub(crate) direct: bool,
    /// Shared groups (group, filter) the receiver serves with one member each.
    pub(crate) groups: &'a [(Arc<str>, Arc<str>)],
    /// A retained update.
    pub(crate) retained: bool,
}

fn group_len(group: &str, filter: &str) -> usize {
    bytes_len(GROUP_GROUP, group.as_bytes()) + bytes_len(GROUP_FILTER, filter.as_bytes())
}

/// Length of an `Envelope` whose message encodes in `message_len` bytes
/// (`None`: no message field).
pub(crate) fn envelope_len(meta: &EnvelopeMeta<'_>, message_len: Option<usize>) -> usize {
    uint_len(ENV_SEQ, meta.seq) + envelope_rest_len(meta, message_len)
}

/// Length of the fields of an `Envelope` that follow its sequence number.
fn envelope_rest_len(meta: &EnvelopeMeta<'_>, message_len: Option<usize>) -> usize {
    message_len.map_or(0, |l| delimited_len(ENV_MESSAGE, l))
        + uint_len(ENV_DIRECT, u64::from(meta.direct))
        + meta
            .groups
            .iter()
            .map(|(g, f)| delimited_len(ENV_GROUPS, group_len(g, f)))
            .sum::<usize>()
        + uint_len(ENV_RETAINED, u64::from(meta.retained))
}

/// Writes an `Envelope` around `msg` (whose [`message_len`] is given), as
/// prost would (proto3: defaults left out, fields in number order).
pub(crate) fn encode_envelope(
    meta: &EnvelopeMeta<'_>,
    msg: Option<(&Message, usize)>,
    buf: &mut impl BufMut,
) {
    put_uint(ENV_SEQ, meta.seq, buf);
    encode_envelope_rest(meta, msg, buf);
}

/// Writes the fields of an `Envelope` that follow its sequence number
/// (`meta.seq` is not used).
fn encode_envelope_rest(
    meta: &EnvelopeMeta<'_>,
    msg: Option<(&Message, usize)>,
    buf: &mut impl BufMut,
) {
    if let Some((msg, len)) = msg {
        put_key(ENV_MESSAGE, WireType::LengthDelimited, buf);
        put_raw_varint(len as u64, buf);
        encode_message(msg, buf);
    }
    put_uint(ENV_DIRECT, u64::from(meta.direct), buf);
    for (g, f) in meta.groups {
        put_key(ENV_GROUPS, WireType::LengthDelimited, buf);
        put_raw_varint(group_len(g, f) as u64, buf);
        put_bytes(GROUP_GROUP, g.as_bytes(), buf);
        put_bytes(GROUP_FILTER, f.as_bytes(), buf);
    }
    put_uint(ENV_RETAINED, u64::from(meta.retained), buf);
}

/// Writes what follows the sequence number in the envelope around `msg`:
/// its *rest*, encoded straight from the broker's [`Message`] when the
/// forward is staged. The outbox numbers the envelope later, under its
/// lock, and writes the record ([`put_record`]); the message itself need
/// not live until then.
pub(crate) fn put_rest(meta: &EnvelopeMeta<'_>, msg: &Message, buf: &mut impl BufMut) {
    encode_envelope_rest(meta, Some((msg, message_len(msg))), buf);
}

/// Length of the record of the envelope numbered `seq` whose rest is
/// `rest` bytes long: the envelope framed as one element of
/// `PublishBatch.envelopes` (key, length, envelope).
pub(crate) fn record_len(seq: u64, rest: usize) -> usize {
    delimited_len(BATCH_ENVELOPES, uint_len(ENV_SEQ, seq) + rest)
}

/// Writes the record of the envelope numbered `seq` around `rest` (see
/// [`put_rest`], [`record_len`]).
pub(crate) fn put_record(seq: u64, rest: &[u8], buf: &mut impl BufMut) {
    put_record_head(seq, rest.len(), buf);
    buf.put_slice(rest);
}

/// The sizes of the rest of the envelope around a message (see
/// [`rest_len`]): measured once, then written by [`put_record_of`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct RestLen {
    /// The rest: the fields after the sequence number.
    pub(crate) rest: usize,
    message: usize,
}

/// The sizes of the rest of the envelope around `msg` (see [`put_rest`]).
pub(crate) fn rest_len(meta: &EnvelopeMeta<'_>, msg: &Message) -> RestLen {
    let message = message_len(msg);
    RestLen {
        rest: envelope_rest_len(meta, Some(message)),
        message,
    }
}

/// Writes the record of the envelope numbered `seq` around `msg` (of the
/// sizes [`rest_len`] measured) straight from the message: for large
/// payloads, copied once rather than through a staged rest.
pub(crate) fn put_record_of(
    seq: u64,
    meta: &EnvelopeMeta<'_>,
    msg: &Message,
    len: RestLen,
    buf: &mut impl BufMut,
) {
    put_record_head(seq, len.rest, buf);
    encode_envelope_rest(meta, Some((msg, len.message)), buf);
}

/// A record's key, length and sequence number.
fn put_record_head(seq: u64, rest_len: usize, buf: &mut impl BufMut) {
    put_key(BATCH_ENVELOPES, WireType::LengthDelimited, buf);
    put_raw_varint((uint_len(ENV_SEQ, seq) + rest_len) as u64, buf);
    put_uint(ENV_SEQ, seq, buf);
}

/// Opens the `Link` stream with the dialer's frames already encoded (the
/// generated client would take `pb::Frame`s and encode them itself).
pub(crate) async fn link(
    channel: InterceptedService<Channel, AddSecret>,
    frames: tokio_stream::wrappers::ReceiverStream<Encoded>,
) -> Result<Response<Streaming<pb::Frame>>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(MAX_FRAME)
        .max_encoding_message_size(MAX_FRAME);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("Service was not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<Encoded, pb::Frame>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/tern.mesh.Mesh/Link");
    grpc.streaming(tonic::Request::new(frames), path, codec)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{Outbox, CHUNK};
    use crate::wire_testing::{groups, message, pb_envelope, PbBatch, PbFrame};
    use proptest::prelude::*;

    /// The record of an envelope around `msg`, as the outbox keeps it.
    fn record(meta: &EnvelopeMeta<'_>, msg: &Message) -> Vec<u8> {
        let mut rest = Vec::new();
        put_rest(meta, msg, &mut rest);
        let mut out = Vec::new();
        put_record(meta.seq, &rest, &mut out);
        assert_eq!(out.len(), record_len(meta.seq, rest.len()));
        let mut direct = Vec::new();
        put_record_of(meta.seq, meta, msg, rest_len(meta, msg), &mut direct);
        assert_eq!(direct, out, "written from the message or from its rest");
        out
    }

    /// Pushes envelopes around `msgs` (with their metadata) into an
    /// outbox, as forwarding does.
    fn outbox_of<'a>(items: impl Iterator<Item = (EnvelopeMeta<'a>, &'a Message)>) -> Outbox {
        let mut o = Outbox::new(usize::MAX);
        for (meta, msg) in items {
            assert_eq!(o.next_seq(), meta.seq);
            let mut rest = Vec::new();
            put_rest(&meta, msg, &mut rest);
            let len = record_len(meta.seq, rest.len());
            o.push(len, |b| put_record(meta.seq, &rest, b), None)
                .expect("room");
        }
        o
    }

    proptest! {
        #[test]
        fn record_is_byte_identical_to_prost(
            msg in message(),
            seq in prop_oneof![Just(0u64), any::<u64>()],
            direct in any::<bool>(),
            groups in groups(),
            retained in any::<bool>(),
        ) {
            let meta = EnvelopeMeta { seq, direct, groups: &groups, retained };
            let ours = record(&meta, &msg);
            let env = pb_envelope(seq, &msg, direct, &groups, retained);
            let mut prost = Vec::new();
            prost::encoding::message::encode(BATCH_ENVELOPES, &env, &mut prost);
            prop_assert_eq!(&ours[..], &prost[..]);
        }

        #[test]
        fn batch_is_byte_identical_to_prost(
            msgs in prop::collection::vec((message(), groups()), 0..6),
        ) {
            let meta = |i: usize, g| EnvelopeMeta {
                seq: i as u64 + 1,
                direct: i.is_multiple_of(2),
                groups: g,
                retained: msgs[i].0.retain,
            };
            let mut o = outbox_of(msgs.iter().enumerate().map(|(i, (m, g))| (meta(i, g), m)));
            let frame = match o.take(usize::MAX) {
                Some(taken) => Encoded::batch(taken),
                None => Encoded::Batch { records: 0, slices: Vec::new() },
            };
            let expected = PbFrame {
                publish_batch: Some(PbBatch {
                    envelopes: msgs
                        .iter()
                        .enumerate()
                        .map(|(i, (m, g))| pb_envelope(i as u64 + 1, m, i % 2 == 0, g, m.retain))
                        .collect(),
                }),
            };
            prop_assert_eq!(frame.encode_to_vec(), expected.encode_to_vec());
        }
    }

    #[test]
    fn frames_of_records_across_chunks_are_what_prost_writes() {
        use tern_broker::codec::{Properties, QoS};
        // Small messages past several chunks, one larger than a chunk, one
        // after it; every frame checked after all were written: no record
        // was overwritten by a later one written into the same chunk.
        let sizes = (0..2_000).map(|i| i % 700).chain([CHUNK, 5]);
        let msgs: Vec<Message> = sizes
            .enumerate()
            .map(|(i, size)| {
                Message::new(
                    Arc::from(format!("t/{i}")),
                    Bytes::from(vec![i as u8; size]),
                    QoS::AtLeastOnce,
                    false,
                    &Properties::default(),
                )
            })
            .collect();
        let meta = |i: usize| EnvelopeMeta {
            seq: i as u64 + 1,
            direct: true,
            groups: &[],
            retained: false,
        };
        let mut o = outbox_of(msgs.iter().enumerate().map(|(i, m)| (meta(i), m)));
        let mut frames = Vec::new();
        while let Some(taken) = o.take(256) {
            frames.push((taken.count, Encoded::batch(taken)));
        }
        let mut at = 0;
        for (count, frame) in frames {
            let expected = PbFrame {
                publish_batch: Some(PbBatch {
                    envelopes: (at..at + count)
                        .map(|i| pb_envelope(i as u64 + 1, &msgs[i], true, &[], false))
                        .collect(),
                }),
            };
            assert_eq!(
                frame.encode_to_vec(),
                expected.encode_to_vec(),
                "frame from {at}"
            );
            at += count;
        }
        assert_eq!(at, msgs.len());
    }

    #[test]
    fn a_batch_stays_within_its_bytes_and_holds_at_least_one() {
        assert_eq!(fits_in_batch([].into_iter()), 0);
        assert_eq!(fits_in_batch([BATCH_BYTES * 3, 1].into_iter()), 1);
        assert_eq!(fits_in_batch([BATCH_BYTES / 2; 5].into_iter()), 2);
        assert_eq!(fits_in_batch([10; 7].into_iter()), 7);
    }

    #[test]
    fn empty_batch_decodes_as_an_empty_publish_batch() {
        let empty = Encoded::Batch {
            records: 0,
            slices: Vec::new(),
        };
        let decoded = pb::Frame::decode(&empty.encode_to_vec()[..]).unwrap();
        assert!(matches!(
            decoded.kind,
            Some(pb::frame::Kind::PublishBatch(b)) if b.envelopes.is_empty()
        ));
    }
}
