//! CONNECT (§3.1) and CONNACK (§3.2).

use bytes::{BufMut, BytesMut};

use super::properties::{block_len, properties_len, put_properties, read_properties, Ctx};
use super::read::Reader;
use super::write::{field_len, put_field, sum, Sizes};
use super::{ConnAck, Connect, DecodeError, EncodeError, LastWill, Protocol, QoS};
use crate::topic::valid_topic_name;

const RESERVED: u8 = 0x01;
const CLEAN_START: u8 = 0x02;
const WILL: u8 = 0x04;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD: u8 = 0x40;
const USERNAME: u8 = 0x80;

/// Identifies the protocol from CONNECT's protocol name and level.
fn protocol(name: &[u8], level: u8) -> Result<Protocol, DecodeError> {
    match (name, level) {
        (b"MQTT", 4) => Ok(Protocol::V311),
        (b"MQTT", 5) => Ok(Protocol::V5),
        (b"MQIsdp", 3) => Ok(Protocol::V31),
        (b"MQTT" | b"MQIsdp", _) => Err(DecodeError::UnsupportedProtocolLevel(level)),
        _ => Err(DecodeError::InvalidProtocolName),
    }
}

/// Decodes a CONNECT body; its own name and level fix the protocol.
pub(crate) fn decode_connect(r: &mut Reader<'_>) -> Result<Connect, DecodeError> {
    let name = r.raw_field()?;
    let protocol = protocol(name, r.u8()?)?;
    let v5 = protocol.is_v5();
    let flags = r.u8()?;
    if flags & RESERVED != 0 {
        return Err(DecodeError::Malformed("CONNECT reserved flag set"));
    }
    let will_flag = flags & WILL != 0;
    let will_qos = QoS::from_u8((flags >> 3) & 0x03).ok_or(DecodeError::Malformed("will QoS 3"))?;
    let will_retain = flags & WILL_RETAIN != 0;
    if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
        return Err(DecodeError::Malformed(
            "will QoS or retain without will flag",
        ));
    }
    // 3.x forbids a password without a user name ([MQTT-3.1.2-22]); 5.0 allows it.
    if !v5 && flags & PASSWORD != 0 && flags & USERNAME == 0 {
        return Err(DecodeError::Malformed("password without user name"));
    }
    let keep_alive = r.u16()?;
    let properties = if v5 {
        read_properties(r, Ctx::Connect)?
    } else {
        Default::default()
    };
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = if v5 {
            read_properties(r, Ctx::Will)?
        } else {
            Default::default()
        };
        let topic = r.string()?;
        if !valid_topic_name(&topic) {
            return Err(DecodeError::TopicNameInvalid);
        }
        let payload = r.binary()?;
        Some(LastWill {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if flags & USERNAME != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let password = if flags & PASSWORD != 0 {
        Some(r.binary()?)
    } else {
        None
    };
    r.finish()?;
    Ok(Connect {
        protocol,
        clean_start: flags & CLEAN_START != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

/// Sizes of a CONNECT, which is encoded for its own `protocol` field.
pub(crate) fn connect_sizes(c: &Connect) -> Sizes {
    let v5 = c.protocol.is_v5();
    let props = if v5 { properties_len(&c.properties) } else { 0 };
    let mut will_props = 0;
    let will_len = match &c.will {
        Some(w) => {
            let mut n = sum(&[field_len(w.topic.len()), field_len(w.payload.len())]);
            if v5 {
                will_props = properties_len(&w.properties);
                n = n.saturating_add(block_len(will_props));
            }
            n
        }
        None => 0,
    };
    let remaining = sum(&[
        field_len(c.protocol.name().len()),
        4, // level, flags, keep alive
        if v5 { block_len(props) } else { 0 },
        field_len(c.client_id.len()),
        will_len,
        c.username.as_ref().map_or(0, |u| field_len(u.len())),
        c.password.as_ref().map_or(0, |p| field_len(p.len())),
    ]);
    Sizes {
        remaining,
        props,
        will_props,
    }
}

/// Writes a CONNECT body.
pub(crate) fn put_connect(
    out: &mut BytesMut,
    c: &Connect,
    sizes: Sizes,
) -> Result<(), EncodeError> {
    let v5 = c.protocol.is_v5();
    put_field(out, c.protocol.name().as_bytes(), "protocol name")?;
    out.put_u8(c.protocol.level());
    let mut flags = 0;
    if c.clean_start {
        flags |= CLEAN_START;
    }
    if let Some(w) = &c.will {
        flags |= WILL | (w.qos as u8) << 3;
        if w.retain {
            flags |= WILL_RETAIN;
        }
    }
    if c.username.is_some() {
        flags |= USERNAME;
    }
    if c.password.is_some() {
        flags |= PASSWORD;
    }
    out.put_u8(flags);
    out.put_u16(c.keep_alive);
    if v5 {
        put_properties(out, &c.properties, sizes.props)?;
    }
    put_field(out, c.client_id.as_bytes(), "client identifier")?;
    if let Some(w) = &c.will {
        if v5 {
            put_properties(out, &w.properties, sizes.will_props)?;
        }
        put_field(out, w.topic.as_bytes(), "will topic")?;
        put_field(out, &w.payload, "will payload")?;
    }
    if let Some(u) = &c.username {
        put_field(out, u.as_bytes(), "user name")?;
    }
    if let Some(p) = &c.password {
        put_field(out, p, "password")?;
    }
    Ok(())
}

/// CONNACK reason codes (§3.2.2.2).
fn valid_connack_reason(code: u8) -> bool {
    matches!(
        code,
        0x00 | 0x80..=0x8A | 0x8C | 0x90 | 0x95 | 0x97 | 0x99..=0x9D | 0x9F
    )
}

/// Decodes a CONNACK body.
pub(crate) fn decode_connack(
    r: &mut Reader<'_>,
    protocol: Protocol,
) -> Result<ConnAck, DecodeError> {
    let ack_flags = r.u8()?;
    if ack_flags & 0xFE != 0 {
        return Err(DecodeError::Malformed("CONNACK reserved flags set"));
    }
    let session_present = ack_flags & 0x01 != 0;
    let code = r.u8()?;
    let known = if protocol.is_v5() {
        valid_connack_reason(code)
    } else {
        code <= 5
    };
    if !known {
        return Err(DecodeError::Protocol("unknown CONNACK code"));
    }
    if session_present && code != 0 {
        return Err(DecodeError::Protocol(
            "session present on a refused connection",
        ));
    }
    let properties = if protocol.is_v5() {
        read_properties(r, Ctx::ConnAck)?
    } else {
        Default::default()
    };
    r.finish()?;
    Ok(ConnAck {
        session_present,
        code,
        properties,
    })
}

/// Sizes of a CONNACK.
pub(crate) fn connack_sizes(c: &ConnAck, protocol: Protocol) -> Sizes {
    if protocol.is_v5() {
        let props = properties_len(&c.properties);
        Sizes {
            remaining: 2usize.saturating_add(block_len(props)),
            props,
            will_props: 0,
        }
    } else {
        Sizes {
            remaining: 2,
            ..Sizes::default()
        }
    }
}

/// Writes a CONNACK body.
pub(crate) fn put_connack(
    out: &mut BytesMut,
    c: &ConnAck,
    protocol: Protocol,
    sizes: Sizes,
) -> Result<(), EncodeError> {
    out.put_u8(u8::from(c.session_present));
    out.put_u8(c.code);
    if protocol.is_v5() {
        put_properties(out, &c.properties, sizes.props)?;
    }
    Ok(())
}
