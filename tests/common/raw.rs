//! A hand-written MQTT wire encoder/decoder and a raw-socket client.
//!
//! Deliberately independent of `tern_broker::codec`: every byte the tests put
//! on the wire is written here, following the MQTT 3.1, 3.1.1 and 5.0 specs.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Default deadline for anything the broker should do "now".
pub const T: Duration = Duration::from_secs(5);

/// Any byte stream (TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Io for S {}

// ---------------------------------------------------------------- encoding

/// Packet type numbers.
pub mod kind {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const UNSUBACK: u8 = 11;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
    pub const AUTH: u8 = 15;
}

/// MQTT 5 property identifiers.
pub mod prop {
    pub const PAYLOAD_FORMAT: u8 = 0x01;
    pub const MESSAGE_EXPIRY: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_ID: u8 = 0x0B;
    pub const SESSION_EXPIRY: u8 = 0x11;
    pub const ASSIGNED_CLIENT_ID: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTH_METHOD: u8 = 0x15;
    pub const AUTH_DATA: u8 = 0x16;
    pub const WILL_DELAY: u8 = 0x18;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
}

/// Appends a Variable Byte Integer.
pub fn put_varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

/// Appends Binary Data (two-byte length + bytes).
pub fn put_bin(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

/// Appends a UTF-8 Encoded String.
pub fn put_str(s: &str, out: &mut Vec<u8>) {
    put_bin(s.as_bytes(), out);
}

/// A whole packet: first byte, remaining length, body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    put_varint(body.len(), &mut v);
    v.extend_from_slice(body);
    v
}

/// An MQTT 5 property list being built (encoded items, without the length).
#[derive(Debug, Default, Clone)]
pub struct Props(pub Vec<u8>);

impl Props {
    pub fn new() -> Props {
        Props(Vec::new())
    }
    pub fn byte(mut self, id: u8, v: u8) -> Props {
        self.0.extend_from_slice(&[id, v]);
        self
    }
    pub fn u16(mut self, id: u8, v: u16) -> Props {
        self.0.push(id);
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(mut self, id: u8, v: u32) -> Props {
        self.0.push(id);
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn varint(mut self, id: u8, v: usize) -> Props {
        self.0.push(id);
        put_varint(v, &mut self.0);
        self
    }
    pub fn str(mut self, id: u8, v: &str) -> Props {
        self.0.push(id);
        put_str(v, &mut self.0);
        self
    }
    pub fn bin(mut self, id: u8, v: &[u8]) -> Props {
        self.0.push(id);
        put_bin(v, &mut self.0);
        self
    }
    pub fn pair(mut self, k: &str, v: &str) -> Props {
        self.0.push(prop::USER_PROPERTY);
        put_str(k, &mut self.0);
        put_str(v, &mut self.0);
        self
    }
    /// Appends the property length and the properties.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        put_varint(self.0.len(), out);
        out.extend_from_slice(&self.0);
    }
}

/// A Will for [`Connect`].
#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub props: Props,
}

impl Will {
    pub fn new(topic: &str, payload: &[u8]) -> Will {
        Will {
            topic: topic.to_string(),
            payload: payload.to_vec(),
            qos: 0,
            retain: false,
            props: Props::new(),
        }
    }
    pub fn qos(mut self, qos: u8) -> Will {
        self.qos = qos;
        self
    }
    pub fn retain(mut self, retain: bool) -> Will {
        self.retain = retain;
        self
    }
    pub fn props(mut self, props: Props) -> Will {
        self.props = props;
        self
    }
}

/// A CONNECT packet. `version`: 3 = MQTT 3.1, 4 = 3.1.1, 5 = 5.0.
#[derive(Debug, Clone)]
pub struct Connect {
    pub version: u8,
    pub protocol_name: String,
    pub client_id: String,
    pub clean: bool,
    pub keep_alive: u16,
    pub props: Props,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
}

/// `c` with a user name and password.
pub fn login(c: Connect, user: &str, pass: &str) -> Connect {
    Connect {
        username: Some(user.into()),
        password: Some(pass.as_bytes().to_vec()),
        ..c
    }
}

impl Connect {
    pub fn new(version: u8, client_id: &str) -> Connect {
        Connect {
            version,
            protocol_name: if version == 3 { "MQIsdp" } else { "MQTT" }.to_string(),
            client_id: client_id.to_string(),
            clean: true,
            keep_alive: 60,
            props: Props::new(),
            will: None,
            username: None,
            password: None,
        }
    }
    pub fn v5(client_id: &str) -> Connect {
        Connect::new(5, client_id)
    }
    pub fn v4(client_id: &str) -> Connect {
        Connect::new(4, client_id)
    }
    pub fn v3(client_id: &str) -> Connect {
        Connect::new(3, client_id)
    }
    pub fn clean(mut self, clean: bool) -> Connect {
        self.clean = clean;
        self
    }
    pub fn keep_alive(mut self, secs: u16) -> Connect {
        self.keep_alive = secs;
        self
    }
    pub fn props(mut self, props: Props) -> Connect {
        self.props = props;
        self
    }
    pub fn will(mut self, will: Will) -> Connect {
        self.will = Some(will);
        self
    }
    /// v5 Session Expiry Interval.
    pub fn session_expiry(mut self, secs: u32) -> Connect {
        self.props = self.props.u32(prop::SESSION_EXPIRY, secs);
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        put_str(&self.protocol_name, &mut b);
        b.push(self.version);
        let mut flags = 0u8;
        if self.clean {
            flags |= 0x02;
        }
        if let Some(w) = &self.will {
            flags |= 0x04 | (w.qos << 3);
            if w.retain {
                flags |= 0x20;
            }
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        b.push(flags);
        b.extend_from_slice(&self.keep_alive.to_be_bytes());
        if self.version == 5 {
            self.props.encode_into(&mut b);
        }
        put_str(&self.client_id, &mut b);
        if let Some(w) = &self.will {
            if self.version == 5 {
                w.props.encode_into(&mut b);
            }
            put_str(&w.topic, &mut b);
            put_bin(&w.payload, &mut b);
        }
        if let Some(u) = &self.username {
            put_str(u, &mut b);
        }
        if let Some(p) = &self.password {
            put_bin(p, &mut b);
        }
        packet(0x10, &b)
    }
}

/// A PUBLISH to send.
#[derive(Debug, Clone)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
    pub pkid: u16,
    pub props: Props,
}

impl Publish {
    pub fn new(topic: &str, payload: &[u8]) -> Publish {
        Publish {
            topic: topic.to_string(),
            payload: payload.to_vec(),
            qos: 0,
            retain: false,
            dup: false,
            pkid: 0,
            props: Props::new(),
        }
    }
    pub fn qos(mut self, qos: u8) -> Publish {
        self.qos = qos;
        self
    }
    pub fn retain(mut self, retain: bool) -> Publish {
        self.retain = retain;
        self
    }
    pub fn props(mut self, props: Props) -> Publish {
        self.props = props;
        self
    }
    pub fn encode(&self, v5: bool) -> Vec<u8> {
        let mut b = Vec::new();
        put_str(&self.topic, &mut b);
        if self.qos > 0 {
            b.extend_from_slice(&self.pkid.to_be_bytes());
        }
        if v5 {
            self.props.encode_into(&mut b);
        }
        b.extend_from_slice(&self.payload);
        let first = 0x30 | ((self.dup as u8) << 3) | (self.qos << 1) | self.retain as u8;
        packet(first, &b)
    }
}

/// PUBACK / PUBREC / PUBREL / PUBCOMP (reason code omitted = success).
pub fn ack(kind: u8, pkid: u16) -> Vec<u8> {
    let first = (kind << 4) | if kind == kind::PUBREL { 0x02 } else { 0 };
    packet(first, &pkid.to_be_bytes())
}

/// SUBSCRIBE with (filter, options byte) pairs. Options: bits 0-1 QoS,
/// bit 2 No Local, bit 3 Retain As Published, bits 4-5 Retain Handling.
pub fn subscribe(v5: bool, pkid: u16, filters: &[(&str, u8)], props: &Props) -> Vec<u8> {
    let mut b = pkid.to_be_bytes().to_vec();
    if v5 {
        props.encode_into(&mut b);
    }
    for (f, o) in filters {
        put_str(f, &mut b);
        b.push(*o);
    }
    packet(0x82, &b)
}

/// UNSUBSCRIBE.
pub fn unsubscribe(v5: bool, pkid: u16, filters: &[&str]) -> Vec<u8> {
    let mut b = pkid.to_be_bytes().to_vec();
    if v5 {
        b.push(0);
    }
    for f in filters {
        put_str(f, &mut b);
    }
    packet(0xA2, &b)
}

/// Subscription options byte helpers.
pub const NO_LOCAL: u8 = 0x04;
pub const RETAIN_AS_PUBLISHED: u8 = 0x08;
pub fn retain_handling(n: u8) -> u8 {
    n << 4
}

pub fn pingreq() -> Vec<u8> {
    vec![0xC0, 0x00]
}

/// DISCONNECT; v5 with a reason code.
pub fn disconnect(v5: bool, reason: u8) -> Vec<u8> {
    if v5 {
        packet(0xE0, &[reason, 0])
    } else {
        vec![0xE0, 0x00]
    }
}

// ---------------------------------------------------------------- decoding

#[derive(Debug, Clone, PartialEq)]
pub enum PropVal {
    Byte(u8),
    U16(u16),
    U32(u32),
    Var(u32),
    Str(String),
    Bin(Vec<u8>),
    Pair(String, String),
}

/// Decoded MQTT 5 properties, in wire order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PropList(pub Vec<(u8, PropVal)>);

impl PropList {
    pub fn get(&self, id: u8) -> Option<&PropVal> {
        self.0.iter().find(|(i, _)| *i == id).map(|(_, v)| v)
    }
    pub fn has(&self, id: u8) -> bool {
        self.get(id).is_some()
    }
    pub fn byte(&self, id: u8) -> Option<u8> {
        match self.get(id) {
            Some(PropVal::Byte(v)) => Some(*v),
            _ => None,
        }
    }
    pub fn u16(&self, id: u8) -> Option<u16> {
        match self.get(id) {
            Some(PropVal::U16(v)) => Some(*v),
            _ => None,
        }
    }
    pub fn u32(&self, id: u8) -> Option<u32> {
        match self.get(id) {
            Some(PropVal::U32(v)) => Some(*v),
            _ => None,
        }
    }
    pub fn str(&self, id: u8) -> Option<String> {
        match self.get(id) {
            Some(PropVal::Str(v)) => Some(v.clone()),
            _ => None,
        }
    }
    pub fn bin(&self, id: u8) -> Option<Vec<u8>> {
        match self.get(id) {
            Some(PropVal::Bin(v)) => Some(v.clone()),
            _ => None,
        }
    }
    /// Every Subscription Identifier, sorted.
    pub fn sub_ids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .0
            .iter()
            .filter_map(|(i, v)| match (i, v) {
                (&prop::SUBSCRIPTION_ID, PropVal::Var(n)) => Some(*n),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v
    }
    /// User properties, in order.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter_map(|(_, v)| match v {
                PropVal::Pair(k, v) => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect()
    }
}

/// A PUBLISH received from the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct RxPublish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
    pub pkid: u16,
    pub props: PropList,
}

/// A packet received from the broker.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    ConnAck {
        session_present: bool,
        code: u8,
        props: PropList,
    },
    Publish(RxPublish),
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack {
        kind: u8,
        pkid: u16,
        reason: u8,
    },
    SubAck {
        pkid: u16,
        codes: Vec<u8>,
    },
    UnsubAck {
        pkid: u16,
        /// 5.0 reason codes (empty for 3.x).
        codes: Vec<u8>,
    },
    PingResp,
    Disconnect {
        reason: u8,
        props: PropList,
    },
    Other {
        first: u8,
        body: Vec<u8>,
    },
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.b.len() - self.pos
    }
    fn u8(&mut self) -> Result<u8, String> {
        let v = *self.b.get(self.pos).ok_or("short packet")?;
        self.pos += 1;
        Ok(v)
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }
    fn varint(&mut self) -> Result<u32, String> {
        let mut v = 0u32;
        for i in 0..4 {
            let b = self.u8()?;
            v |= ((b & 0x7F) as u32) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 4 bytes".into())
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.left() < n {
            return Err("short packet".into());
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn bin(&mut self) -> Result<Vec<u8>, String> {
        let n = self.u16()? as usize;
        Ok(self.bytes(n)?.to_vec())
    }
    fn str(&mut self) -> Result<String, String> {
        let b = self.bin()?;
        String::from_utf8(b).map_err(|_| "bad UTF-8 from broker".to_string())
    }
    fn rest(&mut self) -> Vec<u8> {
        let s = self.b[self.pos..].to_vec();
        self.pos = self.b.len();
        s
    }
    fn props(&mut self) -> Result<PropList, String> {
        let len = self.varint()? as usize;
        let end = self.pos + len;
        if end > self.b.len() {
            return Err("property length past packet end".into());
        }
        let mut out = Vec::new();
        while self.pos < end {
            let id = self.u8()?;
            let v = match id {
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => PropVal::Byte(self.u8()?),
                0x13 | 0x21 | 0x22 | 0x23 => PropVal::U16(self.u16()?),
                0x02 | 0x11 | 0x18 | 0x27 => PropVal::U32(self.u32()?),
                0x0B => PropVal::Var(self.varint()?),
                0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => PropVal::Str(self.str()?),
                0x09 | 0x16 => PropVal::Bin(self.bin()?),
                0x26 => PropVal::Pair(self.str()?, self.str()?),
                other => return Err(format!("unknown property id {other:#04x}")),
            };
            out.push((id, v));
        }
        Ok(PropList(out))
    }
}

/// Decodes one packet body. `v5` selects the 5.0 layouts.
pub fn decode(first: u8, body: &[u8], v5: bool) -> Result<Packet, String> {
    let mut r = Reader { b: body, pos: 0 };
    let k = first >> 4;
    Ok(match k {
        kind::CONNACK => {
            let flags = r.u8()?;
            let code = r.u8()?;
            let props = if v5 && r.left() > 0 {
                r.props()?
            } else {
                PropList::default()
            };
            Packet::ConnAck {
                session_present: flags & 1 == 1,
                code,
                props,
            }
        }
        kind::PUBLISH => {
            let qos = (first >> 1) & 3;
            let topic = r.str()?;
            let pkid = if qos > 0 { r.u16()? } else { 0 };
            let props = if v5 { r.props()? } else { PropList::default() };
            Packet::Publish(RxPublish {
                topic,
                payload: r.rest(),
                qos,
                retain: first & 1 == 1,
                dup: first & 8 == 8,
                pkid,
                props,
            })
        }
        kind::PUBACK | kind::PUBREC | kind::PUBREL | kind::PUBCOMP => {
            let pkid = r.u16()?;
            let reason = if r.left() > 0 { r.u8()? } else { 0 };
            Packet::Ack {
                kind: k,
                pkid,
                reason,
            }
        }
        kind::SUBACK => {
            let pkid = r.u16()?;
            if v5 {
                r.props()?;
            }
            Packet::SubAck {
                pkid,
                codes: r.rest(),
            }
        }
        kind::UNSUBACK => {
            let pkid = r.u16()?;
            if v5 {
                r.props()?;
            }
            Packet::UnsubAck {
                pkid,
                codes: r.rest(),
            }
        }
        kind::PINGRESP => Packet::PingResp,
        kind::DISCONNECT => {
            let reason = if r.left() > 0 { r.u8()? } else { 0 };
            let props = if r.left() > 0 {
                r.props()?
            } else {
                PropList::default()
            };
            Packet::Disconnect { reason, props }
        }
        _ => Packet::Other {
            first,
            body: body.to_vec(),
        },
    })
}

// ---------------------------------------------------------------- client

/// What one read attempt produced.
#[derive(Debug)]
pub enum Recv {
    Packet(Packet),
    /// EOF or connection reset.
    Closed,
    Timeout,
}

/// The result of CONNECT.
#[derive(Debug, Clone)]
pub struct ConnAck {
    pub session_present: bool,
    pub code: u8,
    pub props: PropList,
}

/// A raw MQTT client over one socket.
pub struct Raw {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    pending: VecDeque<Packet>,
    closed: bool,
    pub v5: bool,
    /// Ack received QoS 1/2 PUBLISHes (and PUBREL) automatically.
    pub auto_ack: bool,
    next_pkid: u16,
    pub name: String,
}

impl Raw {
    /// Opens a TCP connection (no CONNECT sent yet).
    pub async fn tcp(addr: SocketAddr) -> Raw {
        let s = tokio::time::timeout(T, TcpStream::connect(addr))
            .await
            .expect("TCP connect timed out")
            .expect("TCP connect to broker");
        s.set_nodelay(true).expect("set_nodelay");
        Raw::over(Box::new(s))
    }

    pub fn over(io: Box<dyn Io>) -> Raw {
        Raw {
            io,
            buf: Vec::new(),
            pending: VecDeque::new(),
            closed: false,
            v5: true,
            auto_ack: true,
            next_pkid: 0,
            name: String::new(),
        }
    }

    /// Connects over TCP, sends `c`, returns the client and the CONNACK
    /// (panics if there is none).
    pub async fn connect(addr: SocketAddr, c: Connect) -> (Raw, ConnAck) {
        let mut raw = Raw::tcp(addr).await;
        let ack = raw.handshake(c).await;
        (raw, ack)
    }

    /// Like [`Raw::connect`] but asserts CONNACK success.
    pub async fn connect_ok(addr: SocketAddr, c: Connect) -> (Raw, ConnAck) {
        let id = c.client_id.clone();
        let (raw, ack) = Raw::connect(addr, c).await;
        assert_eq!(
            ack.code, 0,
            "CONNACK for {id:?} should be success, got {ack:?}"
        );
        (raw, ack)
    }

    /// A connected v5 client with clean start.
    pub async fn v5(addr: SocketAddr, id: &str) -> Raw {
        Raw::connect_ok(addr, Connect::v5(id)).await.0
    }

    /// A connected 3.1.1 client with clean session.
    pub async fn v4(addr: SocketAddr, id: &str) -> Raw {
        Raw::connect_ok(addr, Connect::v4(id)).await.0
    }

    /// Sends CONNECT on this socket and reads the CONNACK.
    pub async fn handshake(&mut self, c: Connect) -> ConnAck {
        self.v5 = c.version == 5;
        self.name = c.client_id.clone();
        self.send(&c.encode()).await;
        match self.recv().await {
            Packet::ConnAck {
                session_present,
                code,
                props,
            } => ConnAck {
                session_present,
                code,
                props,
            },
            other => panic!("{}: expected CONNACK, got {other:?}", self.name),
        }
    }

    pub fn pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid.wrapping_add(1);
        if self.next_pkid == 0 {
            self.next_pkid = 1;
        }
        self.next_pkid
    }

    /// Writes bytes; panics on failure.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .await
            .unwrap_or_else(|e| panic!("{}: write to broker failed: {e}", self.name));
    }

    /// Writes bytes, reporting failure.
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    /// Shuts the socket down without DISCONNECT (an abnormal close).
    pub async fn drop_socket(mut self) {
        let _ = self.io.shutdown().await;
    }

    fn parse_one(&mut self) -> Result<Option<Packet>, String> {
        if self.buf.len() < 2 {
            return Ok(None);
        }
        let mut len = 0usize;
        let mut i = 1;
        loop {
            let Some(b) = self.buf.get(i) else {
                return Ok(None);
            };
            len |= ((b & 0x7F) as usize) << (7 * (i - 1));
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            if i > 4 {
                return Err("broker sent a remaining length over 4 bytes".into());
            }
        }
        if self.buf.len() < i + len {
            return Ok(None);
        }
        let first = self.buf[0];
        let body: Vec<u8> = self.buf[i..i + len].to_vec();
        self.buf.drain(..i + len);
        decode(first, &body, self.v5).map(Some)
    }

    /// Reads one packet (including auto-ack handling) within `d`.
    pub async fn recv_within(&mut self, d: Duration) -> Recv {
        let deadline = Instant::now() + d;
        loop {
            if let Some(p) = self.pending.pop_front() {
                return Recv::Packet(p);
            }
            match self.parse_one() {
                Err(e) => panic!("{}: undecodable packet from broker: {e}", self.name),
                Ok(Some(p)) => {
                    if self.auto_ack {
                        match &p {
                            Packet::Publish(pb) if pb.qos == 1 => {
                                let _ = self.try_send(&ack(kind::PUBACK, pb.pkid)).await;
                            }
                            Packet::Publish(pb) if pb.qos == 2 => {
                                let _ = self.try_send(&ack(kind::PUBREC, pb.pkid)).await;
                            }
                            Packet::Ack {
                                kind: kind::PUBREL,
                                pkid,
                                ..
                            } => {
                                let _ = self.try_send(&ack(kind::PUBCOMP, *pkid)).await;
                                continue;
                            }
                            _ => {}
                        }
                    }
                    return Recv::Packet(p);
                }
                Ok(None) => {}
            }
            if self.closed {
                return Recv::Closed;
            }
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
                Err(_) => return Recv::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => self.closed = true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads one packet within [`T`]; panics on close or timeout.
    pub async fn recv(&mut self) -> Packet {
        match self.recv_within(T).await {
            Recv::Packet(p) => p,
            other => panic!(
                "{}: expected a packet from the broker, got {other:?}",
                self.name
            ),
        }
    }

    /// The next packet, which must be an acknowledgement of `want` (a
    /// `kind::` value): its packet id and reason code.
    pub async fn expect_ack(&mut self, want: u8) -> (u16, u8) {
        match self.recv().await {
            Packet::Ack { kind, pkid, reason } if kind == want => (pkid, reason),
            other => panic!(
                "{}: expected ack type {want:#04x}, got {other:?}",
                self.name
            ),
        }
    }

    /// Reads until the broker closes the connection within `d`; returns the
    /// packets received before the close. Panics if still open at `d`.
    pub async fn expect_closed(&mut self, d: Duration) -> Vec<Packet> {
        let deadline = Instant::now() + d;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_within(left).await {
                Recv::Packet(p) => seen.push(p),
                Recv::Closed => return seen,
                Recv::Timeout => panic!(
                    "{}: broker did not close the connection within {d:?}; received {seen:?}",
                    self.name
                ),
            }
        }
    }

    /// Expects the broker to send a v5 DISCONNECT whose reason is one of
    /// `reasons` (possibly after other packets) and then close.
    pub async fn expect_disconnect(&mut self, reasons: &[u8], d: Duration) {
        let seen = self.expect_closed(d).await;
        let got: Vec<u8> = seen
            .iter()
            .filter_map(|p| match p {
                Packet::Disconnect { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect();
        assert!(
            got.len() == 1 && reasons.contains(&got[0]),
            "{}: expected one DISCONNECT with reason in {reasons:02X?} before the close, got {seen:?}",
            self.name
        );
    }

    /// Asserts the connection stays open for `d`; packets that arrive
    /// meanwhile are kept for later reads.
    pub async fn expect_open(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        let mut stash = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_within(left).await {
                Recv::Packet(p) => stash.push(p),
                Recv::Closed => panic!(
                    "{}: broker closed the connection early (after {stash:?})",
                    self.name
                ),
                Recv::Timeout => break,
            }
        }
        self.pending.extend(stash);
    }

    /// Next PUBLISH within `d` (PINGRESP skipped; other packets panic).
    pub async fn next_publish_within(&mut self, d: Duration) -> Option<RxPublish> {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_within(left).await {
                Recv::Packet(Packet::Publish(p)) => return Some(p),
                Recv::Packet(Packet::PingResp) => continue,
                Recv::Packet(other) => panic!("{}: expected PUBLISH, got {other:?}", self.name),
                Recv::Closed => {
                    panic!("{}: connection closed while waiting for PUBLISH", self.name)
                }
                Recv::Timeout => return None,
            }
        }
    }

    /// Next PUBLISH within [`T`]; panics if none.
    pub async fn next_publish(&mut self) -> RxPublish {
        self.next_publish_within(T)
            .await
            .unwrap_or_else(|| panic!("{}: no PUBLISH within {T:?}", self.name))
    }

    /// Collects PUBLISHes until one carries `payload` (inclusive).
    pub async fn until_payload(&mut self, payload: &[u8]) -> Vec<RxPublish> {
        let mut out = Vec::new();
        loop {
            let p = self.next_publish().await;
            let done = p.payload == payload;
            out.push(p);
            if done {
                return out;
            }
        }
    }

    /// Waits for a specific non-PUBLISH packet; PUBLISHes meanwhile are kept
    /// for later reads.
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&Packet) -> bool) -> Packet {
        let deadline = Instant::now() + T;
        let mut stash = Vec::new();
        let out = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_within(left).await {
                Recv::Packet(p) if pred(&p) => break p,
                Recv::Packet(p @ Packet::Publish(_)) | Recv::Packet(p @ Packet::PingResp) => {
                    stash.push(p)
                }
                // Acks for earlier pipelined QoS 1/2 sends are not errors.
                Recv::Packet(Packet::Ack {
                    kind: kind::PUBACK | kind::PUBCOMP,
                    ..
                }) => {}
                Recv::Packet(p) => panic!("{}: waiting for {what}, got {p:?}", self.name),
                other => panic!(
                    "{}: waiting for {what}, got {other:?} (stashed {stash:?})",
                    self.name
                ),
            }
        };
        // Stashed packets go back in front, in order.
        for p in stash.into_iter().rev() {
            self.pending.push_front(p);
        }
        out
    }

    /// SUBSCRIBE; returns the SUBACK codes.
    pub async fn subscribe_with(&mut self, filters: &[(&str, u8)], props: Props) -> Vec<u8> {
        let pkid = self.pkid();
        let v5 = self.v5;
        self.send(&subscribe(v5, pkid, filters, &props)).await;
        match self
            .wait_for(
                "SUBACK",
                |p| matches!(p, Packet::SubAck { pkid: id, .. } if *id == pkid),
            )
            .await
        {
            Packet::SubAck { codes, .. } => codes,
            _ => unreachable!(),
        }
    }

    /// SUBSCRIBE one filter; asserts it was granted (any QoS).
    pub async fn subscribe(&mut self, filter: &str, options: u8) -> u8 {
        let codes = self
            .subscribe_with(&[(filter, options)], Props::new())
            .await;
        assert_eq!(codes.len(), 1, "{}: one SUBACK code expected", self.name);
        assert!(
            codes[0] < 0x80,
            "{}: subscription to {filter} refused: {:#04x}",
            self.name,
            codes[0]
        );
        codes[0]
    }

    /// UNSUBSCRIBE and wait for UNSUBACK; returns its 5.0 reason codes.
    pub async fn unsubscribe(&mut self, filter: &str) -> Vec<u8> {
        let pkid = self.pkid();
        let v5 = self.v5;
        self.send(&unsubscribe(v5, pkid, &[filter])).await;
        match self
            .wait_for(
                "UNSUBACK",
                |p| matches!(p, Packet::UnsubAck { pkid: id, .. } if *id == pkid),
            )
            .await
        {
            Packet::UnsubAck { codes, .. } => codes,
            _ => unreachable!(),
        }
    }

    /// PUBLISH and complete the QoS handshake; returns the last ack's reason.
    pub async fn publish_msg(&mut self, mut p: Publish) -> u8 {
        if p.qos > 0 && p.pkid == 0 {
            p.pkid = self.pkid();
        }
        let v5 = self.v5;
        self.send(&p.encode(v5)).await;
        let pkid = p.pkid;
        match p.qos {
            1 => match self
                .wait_for("PUBACK", |x| matches!(x, Packet::Ack { kind: kind::PUBACK, pkid: id, .. } if *id == pkid))
                .await
            {
                Packet::Ack { reason, .. } => reason,
                _ => unreachable!(),
            },
            2 => {
                let rec = self
                    .wait_for("PUBREC", |x| matches!(x, Packet::Ack { kind: kind::PUBREC, pkid: id, .. } if *id == pkid))
                    .await;
                let Packet::Ack { reason, .. } = rec else { unreachable!() };
                if reason >= 0x80 {
                    return reason;
                }
                self.send(&ack(kind::PUBREL, pkid)).await;
                match self
                    .wait_for("PUBCOMP", |x| matches!(x, Packet::Ack { kind: kind::PUBCOMP, pkid: id, .. } if *id == pkid))
                    .await
                {
                    Packet::Ack { reason, .. } => reason,
                    _ => unreachable!(),
                }
            }
            _ => 0,
        }
    }

    /// PUBLISH `payload` to `topic` at `qos` (not retained) and complete the handshake.
    pub async fn publish(&mut self, topic: &str, payload: &[u8], qos: u8) {
        let r = self
            .publish_msg(Publish::new(topic, payload).qos(qos))
            .await;
        assert!(
            r < 0x80,
            "{}: publish to {topic} refused with {r:#04x}",
            self.name
        );
    }

    /// A retained PUBLISH.
    ///
    /// Returns once the broker has stored it: a QoS 0 publish has no ack, so
    /// a PINGREQ round trip follows it (the broker handles one connection's
    /// packets in order). Without it a subscriber that connects next can
    /// subscribe first and get the message live, with RETAIN=0.
    pub async fn publish_retained(&mut self, topic: &str, payload: &[u8], qos: u8) {
        let r = self
            .publish_msg(Publish::new(topic, payload).qos(qos).retain(true))
            .await;
        assert!(
            r < 0x80,
            "{}: retained publish to {topic} refused with {r:#04x}",
            self.name
        );
        if qos == 0 {
            self.ping().await;
        }
    }

    /// PINGREQ and wait for PINGRESP.
    pub async fn ping(&mut self) {
        self.send(&pingreq()).await;
        self.wait_for("PINGRESP", |p| matches!(p, Packet::PingResp))
            .await;
        // wait_for stashes PINGRESPs it skipped; drop stale ones.
        self.pending.retain(|p| !matches!(p, Packet::PingResp));
    }

    /// Normal DISCONNECT (reason 0 for v5), then wait for the close.
    pub async fn disconnect(mut self) {
        let v5 = self.v5;
        let _ = self.try_send(&disconnect(v5, 0)).await;
        let _ = tokio::time::timeout(T, async {
            while !matches!(self.recv_within(T).await, Recv::Closed | Recv::Timeout) {}
        })
        .await;
    }

    /// Sends a v5 DISCONNECT with `reason` and waits for the close.
    pub async fn disconnect_with(mut self, reason: u8, props: Props) {
        let mut b = vec![reason];
        props.encode_into(&mut b);
        let _ = self.try_send(&packet(0xE0, &b)).await;
        let _ = tokio::time::timeout(T, async {
            while !matches!(self.recv_within(T).await, Recv::Closed | Recv::Timeout) {}
        })
        .await;
    }
}
