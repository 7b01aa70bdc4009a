//! SUBSCRIBE (§3.8), SUBACK (§3.9), UNSUBSCRIBE (§3.10), UNSUBACK (§3.11).

use bytes::{BufMut, BytesMut};

use super::properties::{block_len, properties_len, put_properties, read_properties, Ctx};
use super::publish::nonzero_pkid;
use super::read::Reader;
use super::write::{field_len, put_field, sum, Sizes};
use super::{
    DecodeError, EncodeError, Protocol, QoS, SubAck, SubOptions, Subscribe, SubscribeFilter,
    UnsubAck, Unsubscribe,
};
use crate::topic::{parse_shared, valid_topic_filter};

const NO_FILTER_V3: DecodeError = DecodeError::Malformed("no topic filter");
const NO_FILTER_V5: DecodeError = DecodeError::Protocol("no topic filter");

fn no_filter(protocol: Protocol) -> DecodeError {
    if protocol.is_v5() {
        NO_FILTER_V5
    } else {
        NO_FILTER_V3
    }
}

/// Decodes one subscription options byte (§3.8.3.1).
fn decode_options(byte: u8, protocol: Protocol) -> Result<SubOptions, DecodeError> {
    if !protocol.is_v5() {
        return match byte {
            0..=2 => Ok(SubOptions {
                qos: QoS::from_u8(byte).unwrap_or_default(),
                ..SubOptions::default()
            }),
            _ => Err(DecodeError::Malformed("invalid requested QoS byte")),
        };
    }
    if byte & 0xC0 != 0 {
        return Err(DecodeError::Malformed(
            "subscription options reserved bits set",
        ));
    }
    let qos = QoS::from_u8(byte & 0x03).ok_or(DecodeError::Protocol("subscription QoS 3"))?;
    let retain_handling = (byte >> 4) & 0x03;
    if retain_handling == 3 {
        return Err(DecodeError::Protocol("retain handling 3"));
    }
    Ok(SubOptions {
        qos,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling,
    })
}

fn encode_options(o: &SubOptions, protocol: Protocol) -> u8 {
    let mut byte = o.qos as u8;
    if protocol.is_v5() {
        byte |= u8::from(o.no_local) << 2
            | u8::from(o.retain_as_published) << 3
            | (o.retain_handling & 0x03) << 4;
    }
    byte
}

/// Decodes a SUBSCRIBE body.
pub(crate) fn decode_subscribe(
    r: &mut Reader<'_>,
    protocol: Protocol,
) -> Result<Subscribe, DecodeError> {
    let pkid = nonzero_pkid(r)?;
    let properties = if protocol.is_v5() {
        read_properties(r, Ctx::Subscribe)?
    } else {
        Default::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let options = decode_options(r.u8()?, protocol)?;
        if !valid_topic_filter(&filter) {
            return Err(DecodeError::TopicFilterInvalid);
        }
        if options.no_local && parse_shared(&filter).is_some() {
            return Err(DecodeError::Protocol("no local on a shared subscription"));
        }
        filters.push(SubscribeFilter { filter, options });
    }
    if filters.is_empty() {
        return Err(no_filter(protocol));
    }
    Ok(Subscribe {
        pkid,
        filters,
        properties,
    })
}

fn props_sizes(props: &super::Properties, protocol: Protocol) -> (usize, usize) {
    if protocol.is_v5() {
        let len = properties_len(props);
        (len, block_len(len))
    } else {
        (0, 0)
    }
}

/// Sizes of a SUBSCRIBE.
pub(crate) fn subscribe_sizes(s: &Subscribe, protocol: Protocol) -> Sizes {
    let (props, block) = props_sizes(&s.properties, protocol);
    let filters = s.filters.iter().fold(0usize, |acc, f| {
        acc.saturating_add(field_len(f.filter.len()) + 1)
    });
    Sizes {
        remaining: sum(&[2, block, filters]),
        props,
        will_props: 0,
    }
}

/// Writes a SUBSCRIBE body.
pub(crate) fn put_subscribe(
    out: &mut BytesMut,
    s: &Subscribe,
    protocol: Protocol,
    sizes: Sizes,
) -> Result<(), EncodeError> {
    out.put_u16(s.pkid);
    if protocol.is_v5() {
        put_properties(out, &s.properties, sizes.props)?;
    }
    for f in &s.filters {
        put_field(out, f.filter.as_bytes(), "topic filter")?;
        out.put_u8(encode_options(&f.options, protocol));
    }
    Ok(())
}

/// SUBACK codes: 3.x return codes (§3.9.3 of 3.1.1) or 5.0 reasons.
fn valid_suback_code(code: u8, protocol: Protocol) -> bool {
    if protocol.is_v5() {
        matches!(
            code,
            0x00..=0x02 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91 | 0x97 | 0x9E | 0xA1 | 0xA2
        )
    } else {
        matches!(code, 0x00..=0x02 | 0x80)
    }
}

fn valid_unsuback_reason(code: u8) -> bool {
    matches!(code, 0x00 | 0x11 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91)
}

/// Reads the reason codes that fill the rest of a SUBACK/UNSUBACK.
fn read_reasons(r: &mut Reader<'_>, valid: impl Fn(u8) -> bool) -> Result<Vec<u8>, DecodeError> {
    let reasons = r.take_rest();
    if reasons.is_empty() {
        return Err(DecodeError::Protocol(
            "acknowledgement without reason codes",
        ));
    }
    if !reasons.iter().all(|&c| valid(c)) {
        return Err(DecodeError::Protocol(
            "reason code not allowed on this packet",
        ));
    }
    Ok(reasons.to_vec())
}

/// Decodes a SUBACK body.
pub(crate) fn decode_suback(r: &mut Reader<'_>, protocol: Protocol) -> Result<SubAck, DecodeError> {
    let pkid = nonzero_pkid(r)?;
    let properties = if protocol.is_v5() {
        read_properties(r, Ctx::SubAck)?
    } else {
        Default::default()
    };
    let reasons = read_reasons(r, |c| valid_suback_code(c, protocol))?;
    Ok(SubAck {
        pkid,
        reasons,
        properties,
    })
}

/// Sizes of a SUBACK.
pub(crate) fn suback_sizes(s: &SubAck, protocol: Protocol) -> Sizes {
    let (props, block) = props_sizes(&s.properties, protocol);
    Sizes {
        remaining: sum(&[2, block, s.reasons.len()]),
        props,
        will_props: 0,
    }
}

/// Writes a SUBACK body.
pub(crate) fn put_suback(
    out: &mut BytesMut,
    s: &SubAck,
    protocol: Protocol,
    sizes: Sizes,
) -> Result<(), EncodeError> {
    out.put_u16(s.pkid);
    if protocol.is_v5() {
        put_properties(out, &s.properties, sizes.props)?;
    }
    out.put_slice(&s.reasons);
    Ok(())
}

/// Decodes an UNSUBSCRIBE body.
pub(crate) fn decode_unsubscribe(
    r: &mut Reader<'_>,
    protocol: Protocol,
) -> Result<Unsubscribe, DecodeError> {
    let pkid = nonzero_pkid(r)?;
    let properties = if protocol.is_v5() {
        read_properties(r, Ctx::Unsubscribe)?
    } else {
        Default::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        if !valid_topic_filter(&filter) {
            return Err(DecodeError::TopicFilterInvalid);
        }
        filters.push(filter);
    }
    if filters.is_empty() {
        return Err(no_filter(protocol));
    }
    Ok(Unsubscribe {
        pkid,
        filters,
        properties,
    })
}

/// Sizes of an UNSUBSCRIBE.
pub(crate) fn unsubscribe_sizes(u: &Unsubscribe, protocol: Protocol) -> Sizes {
    let (props, block) = props_sizes(&u.properties, protocol);
    let filters = u
        .filters
        .iter()
        .fold(0usize, |acc, f| acc.saturating_add(field_len(f.len())));
    Sizes {
        remaining: sum(&[2, block, filters]),
        props,
        will_props: 0,
    }
}

/// Writes an UNSUBSCRIBE body.
pub(crate) fn put_unsubscribe(
    out: &mut BytesMut,
    u: &Unsubscribe,
    protocol: Protocol,
    sizes: Sizes,
) -> Result<(), EncodeError> {
    out.put_u16(u.pkid);
    if protocol.is_v5() {
        put_properties(out, &u.properties, sizes.props)?;
    }
    for f in &u.filters {
        put_field(out, f.as_bytes(), "topic filter")?;
    }
    Ok(())
}

/// Decodes an UNSUBACK body: 3.x carries only the packet identifier.
pub(crate) fn decode_unsuback(
    r: &mut Reader<'_>,
    protocol: Protocol,
) -> Result<UnsubAck, DecodeError> {
    let pkid = nonzero_pkid(r)?;
    if !protocol.is_v5() {
        r.finish()?;
        return Ok(UnsubAck {
            pkid,
            reasons: Vec::new(),
            properties: Default::default(),
        });
    }
    let properties = read_properties(r, Ctx::UnsubAck)?;
    let reasons = read_reasons(r, valid_unsuback_reason)?;
    Ok(UnsubAck {
        pkid,
        reasons,
        properties,
    })
}

/// Sizes of an UNSUBACK.
pub(crate) fn unsuback_sizes(u: &UnsubAck, protocol: Protocol) -> Sizes {
    if !protocol.is_v5() {
        return Sizes {
            remaining: 2,
            ..Sizes::default()
        };
    }
    let (props, block) = props_sizes(&u.properties, protocol);
    Sizes {
        remaining: sum(&[2, block, u.reasons.len()]),
        props,
        will_props: 0,
    }
}

/// Writes an UNSUBACK body.
pub(crate) fn put_unsuback(
    out: &mut BytesMut,
    u: &UnsubAck,
    protocol: Protocol,
    sizes: Sizes,
) -> Result<(), EncodeError> {
    out.put_u16(u.pkid);
    if protocol.is_v5() {
        put_properties(out, &u.properties, sizes.props)?;
        out.put_slice(&u.reasons);
    }
    Ok(())
}
