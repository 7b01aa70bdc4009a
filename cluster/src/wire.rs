//! The dialer's frames, encoded by hand where it saves work. A forwarded
//! message is encoded once, when it is forwarded; its envelope (the
//! encoded message behind the envelope's own fields) is what the retry
//! buffer keeps, and a `PublishBatch` frame is those envelopes copied one
//! after the other. The bytes are exactly what prost writes for the
//! equivalent [`pb::Frame`] (a `repeated Envelope` field is a sequence of
//! length-delimited records): the receiver decodes `pb::Frame` as before,
//! nothing on the wire changes (no protocol version bump).

use crate::link::AddSecret;
use crate::pb;
use bytes::{BufMut, Bytes};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;
use tonic::codec::Streaming;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Response, Status};

/// Field numbers, as in `mesh.proto`.
const FRAME_PUBLISH_BATCH: u32 = 7;
const BATCH_ENVELOPES: u32 = 1;
const ENV_SEQ: u32 = 1;
const ENV_MESSAGE: u32 = 2;
const ENV_DIRECT: u32 = 3;
const ENV_GROUPS: u32 = 4;
const ENV_RETAINED: u32 = 5;

/// An encoded `pb::Frame`, sent as is.
#[derive(Clone, Default, PartialEq)]
pub(crate) struct Encoded(Bytes);

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoded({} bytes)", self.0.len())
    }
}

impl Encoded {
    /// A frame of `kind`, encoded by prost.
    pub(crate) fn frame(kind: pb::frame::Kind) -> Encoded {
        Encoded(pb::Frame { kind: Some(kind) }.encode_to_vec().into())
    }

    /// A `PublishBatch` frame of envelopes encoded by [`envelope`].
    pub(crate) fn batch<'a>(envelopes: impl Iterator<Item = &'a Bytes> + Clone) -> Encoded {
        let records: usize = envelopes
            .clone()
            .map(|e| 1 + encoded_len_varint(e.len() as u64) + e.len())
            .sum();
        let mut buf = Vec::with_capacity(1 + encoded_len_varint(records as u64) + records);
        encode_key(FRAME_PUBLISH_BATCH, WireType::LengthDelimited, &mut buf);
        encode_varint(records as u64, &mut buf);
        for e in envelopes {
            encode_key(BATCH_ENVELOPES, WireType::LengthDelimited, &mut buf);
            encode_varint(e.len() as u64, &mut buf);
            buf.put_slice(e);
        }
        Encoded(buf.into())
    }
}

/// Only ever encoded: the dialer never reads its own frames back.
impl Message for Encoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
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
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

/// An `Envelope` around `message` (an encoded `MqttMessage`), as prost
/// would encode it (proto3: default values are left out).
pub(crate) fn envelope(
    seq: u64,
    message: &[u8],
    direct: bool,
    groups: &[pb::SharedGroup],
    retained: bool,
) -> Bytes {
    let groups_len: usize = groups
        .iter()
        .map(|g| {
            let l = g.encoded_len();
            1 + encoded_len_varint(l as u64) + l
        })
        .sum();
    let len = 1
        + encoded_len_varint(seq)
        + 1
        + encoded_len_varint(message.len() as u64)
        + message.len()
        + 2
        + groups_len
        + 2;
    let mut buf = Vec::with_capacity(len);
    if seq != 0 {
        encode_key(ENV_SEQ, WireType::Varint, &mut buf);
        encode_varint(seq, &mut buf);
    }
    encode_key(ENV_MESSAGE, WireType::LengthDelimited, &mut buf);
    encode_varint(message.len() as u64, &mut buf);
    buf.put_slice(message);
    if direct {
        prost::encoding::bool::encode(ENV_DIRECT, &direct, &mut buf);
    }
    for g in groups {
        prost::encoding::message::encode(ENV_GROUPS, g, &mut buf);
    }
    if retained {
        prost::encoding::bool::encode(ENV_RETAINED, &retained, &mut buf);
    }
    buf.into()
}

/// Opens the `Link` stream with the dialer's frames already encoded (the
/// generated client would take `pb::Frame`s and encode them itself).
pub(crate) async fn link(
    channel: InterceptedService<Channel, AddSecret>,
    frames: tokio_stream::wrappers::ReceiverStream<Encoded>,
) -> Result<Response<Streaming<pb::Frame>>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
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
    use pb::frame::Kind;

    fn message(topic: &str) -> pb::MqttMessage {
        pb::MqttMessage {
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            payload: Bytes::from_static(b"payload"),
            qos: 1,
            origin_client: Some(Bytes::from_static(b"c1")),
            timestamp: 42,
            ..Default::default()
        }
    }

    #[test]
    fn batch_decodes_as_the_generated_frame() {
        let envs = vec![
            pb::Envelope {
                seq: 1,
                message: Some(message("a/b")),
                direct: true,
                groups: vec![],
                retained: false,
            },
            pb::Envelope {
                seq: 300,
                message: Some(message("x")),
                direct: false,
                groups: vec![pb::SharedGroup {
                    group: "g".into(),
                    filter: "x/#".into(),
                }],
                retained: true,
            },
        ];
        let encoded: Vec<Bytes> = envs
            .iter()
            .map(|e| {
                let m = e.message.as_ref().map(|m| m.encode_to_vec()).unwrap();
                envelope(e.seq, &m, e.direct, &e.groups, e.retained)
            })
            .collect();
        for (e, b) in envs.iter().zip(&encoded) {
            assert_eq!(&e.encode_to_vec()[..], &b[..], "byte-identical to prost");
        }
        let frame = Encoded::batch(encoded.iter());
        let expected = pb::Frame {
            kind: Some(Kind::PublishBatch(pb::PublishBatch {
                envelopes: envs.clone(),
            })),
        };
        assert_eq!(frame.encode_to_vec(), expected.encode_to_vec());
        let decoded = pb::Frame::decode(&frame.encode_to_vec()[..]).unwrap();
        assert_eq!(decoded, expected);
        let empty = Encoded::batch([].iter());
        assert_eq!(
            pb::Frame::decode(&empty.encode_to_vec()[..]).unwrap(),
            pb::Frame {
                kind: Some(Kind::PublishBatch(pb::PublishBatch::default()))
            }
        );
    }
}
