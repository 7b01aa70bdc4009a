//! The on-disk encoding of store values: a small, explicit binary format
//! written with `bytes`. Every value starts with a format byte
//! ([`FORMAT`]); a reader refuses any other, so a future change of layout
//! bumps it and adds a reader for the old one. Integers are big-endian,
//! strings and byte strings are a `u32` length then the bytes, options a
//! 0/1 byte then the value.

use super::{SessionMeta, StoreError};
use crate::codec::{Properties, QoS, SubOptions};
use crate::session::{Delivery, Message, Will};
use crate::trie::SubEntry;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::sync::Arc;

/// Version of the value layout written by this build.
pub const FORMAT: u8 = 1;

type Result<T> = std::result::Result<T, StoreError>;

fn bad(what: &'static str) -> StoreError {
    StoreError::Decode(what)
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_u32(v.len() as u32);
    b.put_slice(v);
}

fn get_bytes(b: &mut Bytes) -> Result<Bytes> {
    if b.remaining() < 4 {
        return Err(bad("truncated length"));
    }
    let n = b.get_u32() as usize;
    if b.remaining() < n {
        return Err(bad("truncated bytes"));
    }
    Ok(b.split_to(n))
}

fn get_string(b: &mut Bytes) -> Result<String> {
    String::from_utf8(get_bytes(b)?.to_vec()).map_err(|_| bad("invalid UTF-8"))
}

fn get_u8(b: &mut Bytes) -> Result<u8> {
    if b.remaining() < 1 {
        return Err(bad("truncated u8"));
    }
    Ok(b.get_u8())
}

fn get_u16(b: &mut Bytes) -> Result<u16> {
    if b.remaining() < 2 {
        return Err(bad("truncated u16"));
    }
    Ok(b.get_u16())
}

fn get_u32(b: &mut Bytes) -> Result<u32> {
    if b.remaining() < 4 {
        return Err(bad("truncated u32"));
    }
    Ok(b.get_u32())
}

fn get_u64(b: &mut Bytes) -> Result<u64> {
    if b.remaining() < 8 {
        return Err(bad("truncated u64"));
    }
    Ok(b.get_u64())
}

fn get_qos(b: &mut Bytes) -> Result<QoS> {
    QoS::from_u8(get_u8(b)?).ok_or(bad("invalid QoS"))
}

fn get_bool(b: &mut Bytes) -> Result<bool> {
    match get_u8(b)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(bad("invalid bool")),
    }
}

fn put_opt<T>(b: &mut BytesMut, v: &Option<T>, f: impl FnOnce(&mut BytesMut, &T)) {
    match v {
        Some(x) => {
            b.put_u8(1);
            f(b, x);
        }
        None => b.put_u8(0),
    }
}

fn get_opt<T>(b: &mut Bytes, f: impl FnOnce(&mut Bytes) -> Result<T>) -> Result<Option<T>> {
    if get_bool(b)? {
        f(b).map(Some)
    } else {
        Ok(None)
    }
}

fn put_props(b: &mut BytesMut, p: &Properties) {
    put_opt(b, &p.payload_format_indicator, |b, v| b.put_u8(*v));
    put_opt(b, &p.content_type, |b, v| put_bytes(b, v.as_bytes()));
    put_opt(b, &p.response_topic, |b, v| put_bytes(b, v.as_bytes()));
    put_opt(b, &p.correlation_data, |b, v| put_bytes(b, v));
    b.put_u32(p.user_properties.len() as u32);
    for (k, v) in &p.user_properties {
        put_bytes(b, k.as_bytes());
        put_bytes(b, v.as_bytes());
    }
}

fn get_props(b: &mut Bytes) -> Result<Properties> {
    let mut p = Properties {
        payload_format_indicator: get_opt(b, get_u8)?,
        content_type: get_opt(b, get_string)?,
        response_topic: get_opt(b, get_string)?,
        correlation_data: get_opt(b, get_bytes)?,
        ..Properties::default()
    };
    let n = get_u32(b)?;
    for _ in 0..n {
        p.user_properties.push((get_string(b)?, get_string(b)?));
    }
    Ok(p)
}

fn put_message(b: &mut BytesMut, m: &Message) {
    put_bytes(b, m.topic.as_bytes());
    put_bytes(b, &m.payload);
    b.put_u8(m.qos as u8);
    b.put_u8(u8::from(m.retain));
    put_props(b, &m.properties);
    put_opt(b, &m.expires_at, |b, v| b.put_u64(*v));
    put_opt(b, &m.origin, |b, v| put_bytes(b, v.as_bytes()));
    b.put_u64(m.timestamp);
    put_opt(b, &m.origin_node, |b, v| put_bytes(b, v.as_bytes()));
}

fn get_message(b: &mut Bytes) -> Result<Message> {
    Ok(Message {
        topic: Arc::from(get_string(b)?),
        payload: get_bytes(b)?,
        qos: get_qos(b)?,
        retain: get_bool(b)?,
        properties: get_props(b)?.into(),
        expires_at: get_opt(b, get_u64)?,
        origin: get_opt(b, |b| get_string(b).map(Into::into))?,
        timestamp: get_u64(b)?,
        origin_node: get_opt(b, |b| get_string(b).map(Arc::from))?,
    })
}

fn finish(b: &mut Bytes) -> Result<()> {
    if b.has_remaining() {
        return Err(bad("trailing bytes"));
    }
    Ok(())
}

fn start(b: &mut Bytes) -> Result<()> {
    match get_u8(b)? {
        FORMAT => Ok(()),
        _ => Err(StoreError::Format),
    }
}

/// Encodes a retained message.
pub fn encode_retained(m: &Message) -> Bytes {
    let mut b = BytesMut::with_capacity(64 + m.payload.len());
    b.put_u8(FORMAT);
    put_message(&mut b, m);
    b.freeze()
}

/// Decodes a retained message.
pub fn decode_retained(mut b: Bytes) -> Result<Message> {
    start(&mut b)?;
    let m = get_message(&mut b)?;
    finish(&mut b)?;
    Ok(m)
}

/// Encodes a queued (pkid 0) or in-flight (pkid ≠ 0, PUBLISH sent) delivery.
pub fn encode_delivery(pkid: u16, d: &Delivery) -> Bytes {
    let mut b = BytesMut::with_capacity(80 + d.msg.payload.len());
    b.put_u8(FORMAT);
    b.put_u16(pkid);
    b.put_u8(d.qos as u8);
    b.put_u8(u8::from(d.retain));
    b.put_u32(d.sub_ids.len() as u32);
    for id in &d.sub_ids {
        b.put_u32(*id);
    }
    put_message(&mut b, &d.msg);
    b.freeze()
}

/// Decodes a delivery and its packet id (0 while queued).
pub fn decode_delivery(mut b: Bytes) -> Result<(u16, Delivery)> {
    start(&mut b)?;
    let pkid = get_u16(&mut b)?;
    let qos = get_qos(&mut b)?;
    let retain = get_bool(&mut b)?;
    let n = get_u32(&mut b)?;
    let mut sub_ids = Vec::new();
    for _ in 0..n {
        sub_ids.push(get_u32(&mut b)?);
    }
    let msg = Arc::new(get_message(&mut b)?);
    finish(&mut b)?;
    Ok((
        pkid,
        Delivery {
            msg,
            qos,
            retain,
            sub_ids,
        },
    ))
}

/// Encodes a session's record (everything but its queued messages).
pub fn encode_meta(m: &SessionMeta) -> Bytes {
    let mut b = BytesMut::with_capacity(128);
    b.put_u8(FORMAT);
    b.put_u32(m.expiry_interval);
    b.put_u16(m.last_pkid);
    put_opt(&mut b, &m.offline_since, |b, v| b.put_u64(*v));
    b.put_u32(m.subscriptions.len() as u32);
    for (f, e) in &m.subscriptions {
        put_bytes(&mut b, f.as_bytes());
        b.put_u8(e.options.qos as u8);
        b.put_u8(u8::from(e.options.no_local));
        b.put_u8(u8::from(e.options.retain_as_published));
        b.put_u8(e.options.retain_handling);
        put_opt(&mut b, &e.identifier, |b, v| b.put_u32(*v));
    }
    for ids in [&m.incoming_qos2, &m.released] {
        b.put_u32(ids.len() as u32);
        for id in ids {
            b.put_u16(*id);
        }
    }
    put_opt(&mut b, &m.will, |b, w| {
        put_bytes(b, w.topic.as_bytes());
        put_bytes(b, &w.payload);
        b.put_u8(w.qos as u8);
        b.put_u8(u8::from(w.retain));
        put_props(b, &w.properties);
        b.put_u32(w.delay);
    });
    b.freeze()
}

fn get_ids(b: &mut Bytes) -> Result<Vec<u16>> {
    let n = get_u32(b)?;
    (0..n).map(|_| get_u16(b)).collect()
}

/// Decodes a session's record.
pub fn decode_meta(mut b: Bytes) -> Result<SessionMeta> {
    let b = &mut b;
    start(b)?;
    let expiry_interval = get_u32(b)?;
    let last_pkid = get_u16(b)?;
    let offline_since = get_opt(b, get_u64)?;
    let n = get_u32(b)?;
    let mut subscriptions = Vec::new();
    for _ in 0..n {
        let f = get_string(b)?;
        let options = SubOptions {
            qos: get_qos(b)?,
            no_local: get_bool(b)?,
            retain_as_published: get_bool(b)?,
            retain_handling: get_u8(b)?,
        };
        let identifier = get_opt(b, get_u32)?;
        subscriptions.push((
            f,
            SubEntry {
                options,
                identifier,
            },
        ));
    }
    let incoming_qos2 = get_ids(b)?;
    let released = get_ids(b)?;
    let will = get_opt(b, |b| {
        Ok(Will {
            topic: Arc::from(get_string(b)?),
            payload: get_bytes(b)?,
            qos: get_qos(b)?,
            retain: get_bool(b)?,
            properties: Box::new(get_props(b)?),
            delay: get_u32(b)?,
        })
    })?;
    finish(b)?;
    Ok(SessionMeta {
        expiry_interval,
        last_pkid,
        offline_since,
        subscriptions,
        incoming_qos2,
        released,
        will,
    })
}
