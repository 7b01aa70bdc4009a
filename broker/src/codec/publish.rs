//! PUBLISH (§3.3) and its acknowledgements PUBACK, PUBREC, PUBREL and
//! PUBCOMP (§3.4–3.7), which share one shape.

use bytes::{BufMut, BytesMut};

use super::properties::{block_len, properties_len, put_properties, read_properties, Ctx};
use super::read::Reader;
use super::write::{field_len, put_field, sum, Sizes};
use super::{DecodeError, EncodeError, Protocol, PubResp, Publish, QoS};
use crate::topic::valid_topic_name;

/// The fixed-header flags of a PUBLISH: DUP, QoS, RETAIN (§3.3.1).
pub(crate) fn publish_flags(byte1: u8) -> Result<(bool, QoS, bool), DecodeError> {
    let dup = byte1 & 0x08 != 0;
    let qos = QoS::from_u8((byte1 >> 1) & 0x03).ok_or(DecodeError::Malformed("PUBLISH QoS 3"))?;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::Malformed("DUP set on a QoS 0 PUBLISH"));
    }
    Ok((dup, qos, byte1 & 0x01 != 0))
}

/// Decodes a PUBLISH body; `byte1` carries its flags (already checked).
pub(crate) fn decode_publish(
    byte1: u8,
    r: &mut Reader<'_>,
    protocol: Protocol,
) -> Result<Publish, DecodeError> {
    let (dup, qos, retain) = publish_flags(byte1)?;
    let topic = r.string()?;
    let pkid = if qos == QoS::AtMostOnce {
        0
    } else {
        nonzero_pkid(r)?
    };
    let properties = if protocol.is_v5() {
        read_properties(r, Ctx::Publish)?
    } else {
        Default::default()
    };
    if topic.is_empty() {
        // 5.0: an empty topic stands for the one a Topic Alias maps to.
        if !protocol.is_v5() {
            return Err(DecodeError::TopicNameInvalid);
        }
        if properties.topic_alias.is_none() {
            return Err(DecodeError::Protocol("empty topic without topic alias"));
        }
    } else if !valid_topic_name(&topic) {
        return Err(DecodeError::TopicNameInvalid);
    }
    let payload = r.rest_bytes();
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        pkid,
        payload,
        properties,
    })
}

/// A packet identifier, which must be non-zero (§2.2.1).
pub(crate) fn nonzero_pkid(r: &mut Reader<'_>) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::Protocol("packet identifier 0")),
        id => Ok(id),
    }
}

/// The first byte of a PUBLISH's fixed header.
pub(crate) fn publish_byte1(p: &Publish) -> u8 {
    0x30 | u8::from(p.dup) << 3 | (p.qos as u8) << 1 | u8::from(p.retain)
}

/// Sizes of a PUBLISH.
pub(crate) fn publish_sizes(p: &Publish, protocol: Protocol) -> Sizes {
    let props = if protocol.is_v5() {
        properties_len(&p.properties)
    } else {
        0
    };
    let remaining = sum(&[
        field_len(p.topic.len()),
        if p.qos == QoS::AtMostOnce { 0 } else { 2 },
        if protocol.is_v5() {
            block_len(props)
        } else {
            0
        },
        p.payload.len(),
    ]);
    Sizes {
        remaining,
        props,
        will_props: 0,
    }
}

/// Writes a PUBLISH body.
pub(crate) fn put_publish(
    out: &mut BytesMut,
    p: &Publish,
    protocol: Protocol,
    sizes: Sizes,
) -> Result<(), EncodeError> {
    put_field(out, p.topic.as_bytes(), "topic")?;
    if p.qos != QoS::AtMostOnce {
        out.put_u16(p.pkid);
    }
    if protocol.is_v5() {
        put_properties(out, &p.properties, sizes.props)?;
    }
    out.put_slice(&p.payload);
    Ok(())
}

/// Which acknowledgement of a PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ack {
    Puback,
    Pubrec,
    Pubrel,
    Pubcomp,
}

impl Ack {
    /// 5.0 reason codes allowed on this packet (§3.4.2.1, §3.5.2.1, ...).
    fn valid_reason(self, code: u8) -> bool {
        match self {
            Ack::Puback | Ack::Pubrec => {
                matches!(
                    code,
                    0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
                )
            }
            Ack::Pubrel | Ack::Pubcomp => matches!(code, 0x00 | 0x92),
        }
    }
}

/// Decodes a PUBACK/PUBREC/PUBREL/PUBCOMP body. In 5.0, remaining length 2
/// means success without properties and 3 a reason without properties.
pub(crate) fn decode_ack(
    ack: Ack,
    r: &mut Reader<'_>,
    protocol: Protocol,
) -> Result<PubResp, DecodeError> {
    let pkid = nonzero_pkid(r)?;
    let mut resp = PubResp {
        pkid,
        ..PubResp::default()
    };
    if protocol.is_v5() && !r.is_empty() {
        resp.reason = r.u8()?;
        if !ack.valid_reason(resp.reason) {
            return Err(DecodeError::Protocol(
                "reason code not allowed on this packet",
            ));
        }
        if !r.is_empty() {
            resp.properties = read_properties(r, Ctx::PubResp)?;
        }
    }
    r.finish()?;
    Ok(resp)
}

/// Sizes of an acknowledgement, in its shortest 5.0 form.
pub(crate) fn ack_sizes(a: &PubResp, protocol: Protocol) -> Sizes {
    if !protocol.is_v5() {
        return Sizes {
            remaining: 2,
            ..Sizes::default()
        };
    }
    let props = properties_len(&a.properties);
    let remaining = match (a.reason, props) {
        (0, 0) => 2,
        (_, 0) => 3,
        _ => 3usize.saturating_add(block_len(props)),
    };
    Sizes {
        remaining,
        props,
        will_props: 0,
    }
}

/// Writes an acknowledgement body of the size `ack_sizes` chose.
pub(crate) fn put_ack(out: &mut BytesMut, a: &PubResp, sizes: Sizes) -> Result<(), EncodeError> {
    out.put_u16(a.pkid);
    if sizes.remaining > 2 {
        out.put_u8(a.reason);
    }
    if sizes.remaining > 3 {
        put_properties(out, &a.properties, sizes.props)?;
    }
    Ok(())
}
