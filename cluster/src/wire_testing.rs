//! Test support for the hand-written mesh encoding (`wire.rs`) and decoding
//! (`batch.rs`): random broker messages and prost's own encoding of a
//! `PublishBatch` frame to compare with.

use crate::convert::message_to_pb;
use crate::pb;
use bytes::Bytes;
use proptest::prelude::*;
use std::sync::Arc;
use tern_broker::codec::{Properties, QoS};
use tern_broker::session::Message;

/// `PublishBatch` as prost generates it (the crate's `pb` holds the
/// hand-decoded `Batch` instead).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PbBatch {
    #[prost(message, repeated, tag = "1")]
    pub(crate) envelopes: Vec<pb::Envelope>,
}

/// A `Frame` holding a `PublishBatch` (a oneof member is written as an
/// optional message field).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PbFrame {
    #[prost(message, optional, tag = "7")]
    pub(crate) publish_batch: Option<PbBatch>,
}

/// What prost writes for `msg` in an envelope: `message_to_pb`, with the
/// origin node only when the message has one.
pub(crate) fn pb_message(msg: &Message) -> pb::MqttMessage {
    let mut m = message_to_pb(msg, "");
    m.origin_node = msg.origin_node.as_deref().map(str::to_owned);
    m
}

/// A prost envelope around `msg`.
pub(crate) fn pb_envelope(
    seq: u64,
    msg: &Message,
    direct: bool,
    groups: &[(Arc<str>, Arc<str>)],
    retained: bool,
) -> pb::Envelope {
    pb::Envelope {
        seq,
        message: Some(pb_message(msg)),
        direct,
        groups: groups
            .iter()
            .map(|(g, f)| pb::SharedGroup {
                group: g.to_string(),
                filter: f.to_string(),
            })
            .collect(),
        retained,
    }
}

fn name() -> impl Strategy<Value = String> {
    // Mostly short ASCII, sometimes empty or multi-byte.
    prop_oneof![
        4 => "[a-z0-9/+#]{0,12}",
        1 => "\\PC{0,6}",
    ]
}

fn arc(s: String) -> Arc<str> {
    Arc::from(s)
}

/// Any broker message that can travel between nodes: every optional v5
/// property present or not, user properties, origin client and node.
pub(crate) fn message() -> impl Strategy<Value = Message> {
    let head = (
        name().prop_map(arc),
        prop::collection::vec(any::<u8>(), 0..40),
        0u8..3,
        any::<bool>(),
        any::<Option<u8>>(),
        any::<Option<u32>>(),
        prop::option::of(name()),
        prop::option::of(name()),
    );
    let tail = (
        prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
        prop::collection::vec((name(), name()), 0..3),
        any::<Option<u64>>(),
        prop::option::of(name().prop_map(arc)),
        any::<u64>(),
        prop::option::of(name().prop_map(arc)),
    );
    (head, tail).prop_map(
        |(
            (topic, payload, qos, retain, pfi, mei, content_type, response_topic),
            (correlation, user_properties, expires_at, origin, timestamp, origin_node),
        )| Message {
            topic,
            payload: Bytes::from(payload),
            qos: QoS::from_u8(qos).unwrap_or(QoS::AtMostOnce),
            retain,
            properties: Properties {
                payload_format_indicator: pfi,
                message_expiry_interval: mei,
                content_type,
                response_topic,
                correlation_data: correlation.map(Bytes::from),
                user_properties,
                ..Properties::default()
            }
            .into(),
            expires_at,
            origin,
            timestamp,
            origin_node,
        },
    )
}

/// Shared groups of an envelope.
pub(crate) fn groups() -> impl Strategy<Value = Vec<(Arc<str>, Arc<str>)>> {
    prop::collection::vec((name().prop_map(arc), name().prop_map(arc)), 0..3)
}
