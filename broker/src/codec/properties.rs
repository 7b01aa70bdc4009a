//! MQTT 5.0 properties (§2.2.2): which identifiers each packet may carry,
//! their value rules, and their encoding.

use bytes::{BufMut, Bytes, BytesMut};

use super::read::Reader;
use super::write::{field_len, put_field, put_varint, varint_len};
use super::{DecodeError, EncodeError, Properties};
use crate::topic::valid_topic_name;

/// The packet (or will) a property block belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ctx {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    PubResp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl Ctx {
    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

const fn mask(ctxs: &[Ctx]) -> u16 {
    let mut m = 0;
    let mut i = 0;
    while i < ctxs.len() {
        m |= ctxs[i].bit();
        i += 1;
    }
    m
}

use Ctx::*;
const MESSAGE: u16 = mask(&[Publish, Will]);
const ACKS: u16 = mask(&[ConnAck, PubResp, SubAck, UnsubAck, Disconnect, Auth]);

/// Where each property identifier may appear (§2.2.2.2); `None` for an
/// identifier the specification does not define.
fn allowed(id: u8) -> Option<u16> {
    Some(match id {
        0x01 | 0x02 | 0x03 | 0x08 | 0x09 => MESSAGE,
        0x0B => mask(&[Publish, Subscribe]),
        0x11 => mask(&[Connect, ConnAck, Disconnect]),
        0x12 | 0x13 | 0x1A | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => ConnAck.bit(),
        0x15 | 0x16 => mask(&[Connect, ConnAck, Auth]),
        0x17 | 0x19 => Connect.bit(),
        0x18 => Will.bit(),
        0x1C => mask(&[ConnAck, Disconnect]),
        0x1F => ACKS,
        0x21 | 0x22 | 0x27 => mask(&[Connect, ConnAck]),
        0x23 => Publish.bit(),
        0x26 => u16::MAX,
        _ => return None,
    })
}

const DUPLICATE: DecodeError = DecodeError::Protocol("duplicate property");

fn once<T>(slot: &mut Option<T>, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DUPLICATE);
    }
    *slot = Some(value);
    Ok(())
}

/// A one-byte property that may only be 0 or 1.
fn flag(r: &mut Reader<'_>, what: &'static str) -> Result<u8, DecodeError> {
    match r.u8()? {
        v @ (0 | 1) => Ok(v),
        _ => Err(DecodeError::Protocol(what)),
    }
}

fn nonzero_u16(r: &mut Reader<'_>, what: &'static str) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::Protocol(what)),
        v => Ok(v),
    }
}

/// Reads a property length and the properties it covers, for `ctx`.
pub(crate) fn read_properties(r: &mut Reader<'_>, ctx: Ctx) -> Result<Properties, DecodeError> {
    let len = r.varint()? as usize;
    let mut r = r.sub(len)?;
    let mut p = Properties::default();
    while !r.is_empty() {
        // Identifiers are variable byte integers, but every defined one
        // fits in a byte; a larger one is unknown either way.
        let id = r.u8()?;
        let allowed = allowed(id).ok_or(DecodeError::Malformed("unknown property"))?;
        if allowed & ctx.bit() == 0 {
            return Err(DecodeError::Protocol("property not allowed on this packet"));
        }
        match id {
            0x01 => once(
                &mut p.payload_format_indicator,
                flag(&mut r, "payload format indicator")?,
            )?,
            0x02 => once(&mut p.message_expiry_interval, r.u32()?)?,
            0x03 => once(&mut p.content_type, r.string()?)?,
            0x08 => {
                let topic = r.string()?;
                if !valid_topic_name(&topic) {
                    return Err(DecodeError::Protocol("response topic is not a topic name"));
                }
                once(&mut p.response_topic, topic)?
            }
            0x09 => once(&mut p.correlation_data, r.binary()?)?,
            0x0B => {
                let id = r.varint()?;
                if id == 0 {
                    return Err(DecodeError::Protocol("subscription identifier 0"));
                }
                if ctx != Publish && !p.subscription_identifiers.is_empty() {
                    return Err(DUPLICATE);
                }
                p.subscription_identifiers.push(id);
            }
            0x11 => once(&mut p.session_expiry_interval, r.u32()?)?,
            0x12 => once(&mut p.assigned_client_identifier, r.string()?)?,
            0x13 => once(&mut p.server_keep_alive, r.u16()?)?,
            0x15 => once(&mut p.authentication_method, r.string()?)?,
            0x16 => once(&mut p.authentication_data, r.binary()?)?,
            0x17 => once(
                &mut p.request_problem_information,
                flag(&mut r, "request problem information")?,
            )?,
            0x18 => once(&mut p.will_delay_interval, r.u32()?)?,
            0x19 => once(
                &mut p.request_response_information,
                flag(&mut r, "request response information")?,
            )?,
            0x1A => once(&mut p.response_information, r.string()?)?,
            0x1C => once(&mut p.server_reference, r.string()?)?,
            0x1F => once(&mut p.reason_string, r.string()?)?,
            0x21 => once(
                &mut p.receive_maximum,
                nonzero_u16(&mut r, "receive maximum 0")?,
            )?,
            0x22 => once(&mut p.topic_alias_maximum, r.u16()?)?,
            0x23 => once(&mut p.topic_alias, nonzero_u16(&mut r, "topic alias 0")?)?,
            0x24 => once(&mut p.maximum_qos, flag(&mut r, "maximum QoS")?)?,
            0x25 => once(&mut p.retain_available, flag(&mut r, "retain available")?)?,
            0x26 => {
                let key = r.string()?;
                let value = r.string()?;
                p.user_properties.push((key, value));
            }
            0x27 => match r.u32()? {
                0 => return Err(DecodeError::Protocol("maximum packet size 0")),
                v => once(&mut p.maximum_packet_size, v)?,
            },
            0x28 => once(
                &mut p.wildcard_subscription_available,
                flag(&mut r, "wildcard subscription available")?,
            )?,
            0x29 => once(
                &mut p.subscription_identifier_available,
                flag(&mut r, "subscription identifier available")?,
            )?,
            _ => once(
                &mut p.shared_subscription_available,
                flag(&mut r, "shared subscription available")?,
            )?,
        }
    }
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(DecodeError::Protocol("authentication data without method"));
    }
    Ok(p)
}

fn byte_len<T>(v: &Option<T>, size: usize) -> usize {
    if v.is_some() {
        1 + size
    } else {
        0
    }
}

fn str_len(v: &Option<String>) -> usize {
    v.as_ref()
        .map_or(0, |s| 1usize.saturating_add(field_len(s.len())))
}

fn bin_len(v: &Option<Bytes>) -> usize {
    v.as_ref()
        .map_or(0, |b| 1usize.saturating_add(field_len(b.len())))
}

/// The length of the properties themselves, without their length prefix.
pub(crate) fn properties_len(p: &Properties) -> usize {
    let fixed = byte_len(&p.payload_format_indicator, 1)
        + byte_len(&p.message_expiry_interval, 4)
        + byte_len(&p.session_expiry_interval, 4)
        + byte_len(&p.server_keep_alive, 2)
        + byte_len(&p.request_problem_information, 1)
        + byte_len(&p.will_delay_interval, 4)
        + byte_len(&p.request_response_information, 1)
        + byte_len(&p.receive_maximum, 2)
        + byte_len(&p.topic_alias_maximum, 2)
        + byte_len(&p.topic_alias, 2)
        + byte_len(&p.maximum_qos, 1)
        + byte_len(&p.retain_available, 1)
        + byte_len(&p.maximum_packet_size, 4)
        + byte_len(&p.wildcard_subscription_available, 1)
        + byte_len(&p.subscription_identifier_available, 1)
        + byte_len(&p.shared_subscription_available, 1);
    let strings = [
        &p.content_type,
        &p.response_topic,
        &p.assigned_client_identifier,
        &p.authentication_method,
        &p.response_information,
        &p.server_reference,
        &p.reason_string,
    ]
    .into_iter()
    .fold(0usize, |acc, s| acc.saturating_add(str_len(s)));
    let binaries = bin_len(&p.correlation_data).saturating_add(bin_len(&p.authentication_data));
    let sub_ids = p.subscription_identifiers.iter().fold(0usize, |acc, &id| {
        acc.saturating_add(1 + varint_len(id as usize))
    });
    let user = p.user_properties.iter().fold(0usize, |acc, (k, v)| {
        acc.saturating_add(1)
            .saturating_add(field_len(k.len()))
            .saturating_add(field_len(v.len()))
    });
    fixed
        .saturating_add(strings)
        .saturating_add(binaries)
        .saturating_add(sub_ids)
        .saturating_add(user)
}

/// The length of a property block: length prefix plus properties.
pub(crate) fn block_len(props_len: usize) -> usize {
    varint_len(props_len).saturating_add(props_len)
}

fn put_str(
    out: &mut BytesMut,
    id: u8,
    v: &Option<String>,
    what: &'static str,
) -> Result<(), EncodeError> {
    if let Some(s) = v {
        out.put_u8(id);
        put_field(out, s.as_bytes(), what)?;
    }
    Ok(())
}

fn put_u8p(out: &mut BytesMut, id: u8, v: Option<u8>) {
    if let Some(v) = v {
        out.put_u8(id);
        out.put_u8(v);
    }
}

fn put_u16p(out: &mut BytesMut, id: u8, v: Option<u16>) {
    if let Some(v) = v {
        out.put_u8(id);
        out.put_u16(v);
    }
}

fn put_u32p(out: &mut BytesMut, id: u8, v: Option<u32>) {
    if let Some(v) = v {
        out.put_u8(id);
        out.put_u32(v);
    }
}

/// Writes a property block whose properties take `props_len` bytes (as
/// computed by [`properties_len`]), in identifier order.
pub(crate) fn put_properties(
    out: &mut BytesMut,
    p: &Properties,
    props_len: usize,
) -> Result<(), EncodeError> {
    put_varint(out, props_len, "property length")?;
    put_u8p(out, 0x01, p.payload_format_indicator);
    put_u32p(out, 0x02, p.message_expiry_interval);
    put_str(out, 0x03, &p.content_type, "content type")?;
    put_str(out, 0x08, &p.response_topic, "response topic")?;
    if let Some(data) = &p.correlation_data {
        out.put_u8(0x09);
        put_field(out, data, "correlation data")?;
    }
    for &id in &p.subscription_identifiers {
        out.put_u8(0x0B);
        put_varint(out, id as usize, "subscription identifier")?;
    }
    put_u32p(out, 0x11, p.session_expiry_interval);
    put_str(
        out,
        0x12,
        &p.assigned_client_identifier,
        "assigned client identifier",
    )?;
    put_u16p(out, 0x13, p.server_keep_alive);
    put_str(out, 0x15, &p.authentication_method, "authentication method")?;
    if let Some(data) = &p.authentication_data {
        out.put_u8(0x16);
        put_field(out, data, "authentication data")?;
    }
    put_u8p(out, 0x17, p.request_problem_information);
    put_u32p(out, 0x18, p.will_delay_interval);
    put_u8p(out, 0x19, p.request_response_information);
    put_str(out, 0x1A, &p.response_information, "response information")?;
    put_str(out, 0x1C, &p.server_reference, "server reference")?;
    put_str(out, 0x1F, &p.reason_string, "reason string")?;
    put_u16p(out, 0x21, p.receive_maximum);
    put_u16p(out, 0x22, p.topic_alias_maximum);
    put_u16p(out, 0x23, p.topic_alias);
    put_u8p(out, 0x24, p.maximum_qos);
    put_u8p(out, 0x25, p.retain_available);
    for (k, v) in &p.user_properties {
        out.put_u8(0x26);
        put_field(out, k.as_bytes(), "user property")?;
        put_field(out, v.as_bytes(), "user property")?;
    }
    put_u32p(out, 0x27, p.maximum_packet_size);
    put_u8p(out, 0x28, p.wildcard_subscription_available);
    put_u8p(out, 0x29, p.subscription_identifier_available);
    put_u8p(out, 0x2A, p.shared_subscription_available);
    Ok(())
}
