//! One client connection: a single task that owns the socket, reads and
//! decodes packets, drains the session's queue into a write buffer, and
//! writes that buffer in one call per round (batching many packets per
//! syscall). Keep-alive, takeover and shutdown are branches of one `select!`.

mod acks;
mod authorize;
mod handshake;
mod hibernate;
mod inbound;
mod keepalive;
mod outbound;
mod throttle;

use crate::broker::{Broker, CloseKind, SessionCell};
use crate::codec::{self, reason, ConnAck, Disconnect, Packet, Properties, Protocol};
use crate::session::Will;
use crate::trie::ClientId;
use bytes::BytesMut;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// What the listener knows about a connection before CONNECT.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Remote address.
    pub peer: SocketAddr,
    /// The listener the client came through.
    pub listener: ListenerKind,
    /// Common name of a verified TLS client certificate.
    pub cert_cn: Option<String>,
}

/// A client listener's kind: its name in logs, metrics and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// Plain TCP (1883).
    Tcp,
    /// TLS (8883).
    Tls,
    /// MQTT over WebSocket.
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl ListenerKind {
    /// "tcp", "tls", "ws" or "wss".
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Tcp => "tcp",
            ListenerKind::Tls => "tls",
            ListenerKind::Ws => "ws",
            ListenerKind::Wss => "wss",
        }
    }
}

impl std::fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bound on the final flush (DISCONNECT, CONNACK refusals).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Outgoing bytes gathered before a write; also bounds one round's work.
const WBUF_HIGH: usize = 64 * 1024;
/// `Conn::quiet_rounds` of a connection that just connected: the first
/// time it waits for the client with nothing to do, it may hibernate at
/// once.
const FRESH: u16 = u16::MAX;

/// Smallest read reservation: small, so that idle connections stay cheap.
const READ_MIN: usize = 512;
/// What `read_buf` reserves in an empty buffer: a quiet connection's read
/// that fills it is a sign of traffic, and grows the next reservation.
const QUIET_READ: usize = 64;
/// A connection that neither read nor wrote for this long releases its
/// buffers (checked through the shared timer, at most once per period).
const TRIM_MS: u64 = 1000;

pub(crate) use hibernate::{wake_all, Home, Parked, Respawn};

/// Serves one client connection until it closes, the protocol ends it, or
/// `shutdown` is cancelled (then 5.0 clients get DISCONNECT 0x8B first).
pub fn serve<S>(
    stream: S,
    info: ConnInfo,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_with(stream, info, broker, shutdown, None)
}

/// [`serve`] for a plain-TCP connection that may hibernate while idle
/// (`limits.hibernate_after_ms`), holding its listener's `home`.
pub(crate) fn serve_tcp(
    stream: tokio::net::TcpStream,
    info: ConnInfo,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    home: Home,
) -> impl Future<Output = ()> + Send {
    serve_with(stream, info, broker, shutdown, Some(home))
}

fn serve_with<S>(
    stream: S,
    info: ConnInfo,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    home: Option<Home>,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let span = tracing::info_span!("conn", peer = %info.peer, listener = info.listener.as_str(), client_id = tracing::field::Empty);
    // The arguments wait boxed (and freed) rather than inline for the
    // connection's whole life.
    let start = Box::new(Start {
        io: stream,
        info,
        broker,
        shutdown,
        home,
    });
    Traced {
        inner: run(start),
        // Boxed, and only where logging wants it: 8 bytes, not 40, inline.
        span: (!span.is_disabled()).then(|| Box::new(span)),
    }
}

pin_project_lite::pin_project! {
    /// The connection's future inside its span, if logging wants one.
    struct Traced<F> {
        #[pin]
        inner: F,
        span: Option<Box<tracing::Span>>,
    }
}

impl<F: Future> Future for Traced<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = this.span.as_ref().map(|s| s.enter());
        this.inner.poll(cx)
    }
}

/// What a connection starts from.
pub(super) struct Start<S> {
    io: S,
    info: ConnInfo,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    home: Option<Home>,
}

/// Why the connection loop stopped.
pub(crate) struct Close {
    pub kind: CloseKind,
    /// 5.0 DISCONNECT reason to send first, if any.
    pub disconnect: Option<u8>,
    pub why: &'static str,
}

impl Close {
    pub(crate) fn protocol(code: u8, why: &'static str) -> Close {
        Close {
            kind: CloseKind::Abnormal,
            disconnect: Some(code),
            why,
        }
    }
}

/// Topic aliases in both directions (boxed: most clients use none).
#[derive(Default)]
pub(crate) struct Aliases {
    pub outbound: HashMap<Arc<str>, u16>,
    pub inbound: HashMap<u16, Arc<str>>,
}

/// State of an accepted connection.
pub(crate) struct Conn<S> {
    pub io: S,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
    pub broker: Arc<Broker>,
    pub protocol: Protocol,
    pub client_id: ClientId,
    pub username: Option<Arc<str>>,
    /// An authorizer that restricts anything: deliveries are checked.
    pub acl: bool,
    /// The client's address (PROXY protocol source or socket peer), for
    /// authorization.
    pub peer: IpAddr,
    pub cell: Arc<SessionCell>,
    pub owner_id: u64,
    pub will: Option<Box<Will>>,
    /// Packet size limits and the in-flight window: `u32`, so that three
    /// of them take the room of two `usize`s in every connection.
    pub max_in_packet: u32,
    pub max_out_packet: u32,
    pub out_window: u32,
    pub out_alias_max: u16,
    pub aliases: Option<Box<Aliases>>,
    read_hint: usize,
    /// The server's shutdown token and, for plain TCP, where the
    /// connection comes back after hibernating (one box for both).
    ctx: Box<Ctx>,
    /// Cancelled on shutdown (a child of `shutdown`) or when another
    /// connection takes the session over: one wait covers both.
    stop: CancellationToken,
    /// 1.5 × the keep-alive in ms (0: none), when the client was last
    /// heard from, and when the shared timer is due to wake us.
    ka_ms: u32,
    ka_heard: u64,
    ka_due: u64,
    /// When the shared timer is due to look at idle buffers (0: not set),
    /// and whether the connection read or wrote since it was set.
    trim_due: u64,
    busy: bool,
    /// Quiet periods in a row (the idle check found it neither read nor
    /// wrote), for hibernation; [`FRESH`] until the loop first waits for
    /// the client (a flag of its own would grow every connection's task).
    quiet_rounds: u16,
    /// Publish rate, backpressure and slow-consumer state.
    pub(crate) throttle: Option<Box<throttle::Throttle>>,
    /// Acknowledgements waiting on remote nodes or the durable store.
    acks: acks::Acks,
}

/// The rarely used part of a connection's context.
pub(crate) struct Ctx {
    shutdown: CancellationToken,
    /// `None`: the connection never hibernates.
    home: Option<Home>,
}

fn run<S>(start: Box<Start<S>>) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    life(Slot::Start(start))
}

/// What a connection task holds: its start, then the connection (inline
/// on purpose: it is the task's long-lived state).
#[allow(clippy::large_enum_variant)]
pub(super) enum Slot<S> {
    Start(Box<Start<S>>),
    Live(Conn<S>),
    Gone,
}

impl<S> Slot<S> {
    fn take(&mut self) -> Option<Conn<S>> {
        match std::mem::replace(self, Slot::Gone) {
            Slot::Live(c) => Some(c),
            _ => None,
        }
    }
}

/// A connection's task: the handshake (from [`Slot::Start`]), or a
/// hibernated connection coming back ([`Slot::Live`]), then serving until
/// it closes or hibernates (the task ends). The connection lives in `slot`
/// and is used in place: moving it through locals or `async fn` arguments
/// would store it twice in the task's future (hence no `async fn`).
#[allow(clippy::manual_async_fn)]
pub(super) fn life<S>(mut slot: Slot<S>) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async move {
        if let Slot::Start(_) = slot {
            let Slot::Start(start) = std::mem::replace(&mut slot, Slot::Gone) else {
                unreachable!()
            };
            // Boxed and dropped once done, so that the long-lived task
            // holds only `Conn` and the loop's state.
            if let Some(conn) = Box::pin(establish(start)).await {
                slot = Slot::Live(conn);
            }
        }
        loop {
            let close = match &mut slot {
                Slot::Live(conn) => conn.serve_loop().await,
                _ => return,
            };
            let Some(close) = close else {
                match hibernate::park(slot.take().expect("serving")) {
                    Ok(()) => return,
                    Err(c) => slot = Slot::Live(c),
                }
                continue;
            };
            let conn = slot.take().expect("serving");
            let close = conn.admin_kicked(close);
            let connections = conn.broker.metrics().connections.clone();
            Box::pin(conn.finish(close)).await;
            connections.dec();
            return;
        }
    }
}

/// Reads CONNECT, runs the handshake and queues CONNACK. Returns the
/// connection, or `None` if it was refused (and answered) or abandoned.
async fn establish<S>(start: Box<Start<S>>) -> Option<Conn<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Start {
        mut io,
        info,
        broker,
        shutdown,
        home,
    } = *start;
    let max_in = broker.config().mqtt.max_packet_size as usize;
    // `limits.connect_timeout_secs`: a socket that sends no CONNECT is closed.
    let connect_timeout = Duration::from_secs(broker.config().limits.connect_timeout_secs);
    let mut rbuf = BytesMut::new();
    let (connect, read) = tokio::select! {
        r = tokio::time::timeout(connect_timeout, read_connect(&mut io, &mut rbuf, max_in)) => match r {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                handshake::refuse_undecodable(&mut io, &rbuf, &e, &broker).await;
                return None;
            }
            Err(_) => {
                tracing::debug!("no CONNECT within {connect_timeout:?}, closing");
                return None;
            }
        },
        _ = shutdown.cancelled() => return None,
    };
    broker.metrics().bytes_in.inc_by(read);
    let protocol = connect.protocol;
    let stop = shutdown.child_token();
    let accepted = match throttle::over_memory(&broker) {
        true => {
            broker.metrics().edge.memory_refused.inc();
            Err(handshake::Refusal {
                code: throttle::busy_code(protocol),
                why: "memory watermark exceeded",
            })
        }
        false => handshake::accept(connect, &info, &broker, stop.clone()).await,
    };
    let accepted = match accepted {
        Ok(a) => a,
        Err(r) => {
            tracing::info!(code = r.code, why = r.why, "CONNECT refused");
            broker.metrics().connections_refused.inc();
            let mut w = BytesMut::new();
            let ack = ConnAck {
                session_present: false,
                code: r.code,
                properties: Properties::default(),
            };
            if codec::encode(&Packet::ConnAck(ack), protocol, &mut w).is_ok() {
                let _ = tokio::time::timeout(FLUSH_TIMEOUT, io.write_all(&w)).await;
            }
            return None;
        }
    };
    tracing::Span::current().record("client_id", &*accepted.client_id);
    tracing::debug!(
        session_present = accepted.connack.session_present,
        keep_alive = accepted.keep_alive,
        "connected"
    );
    if rbuf.is_empty() {
        // The handshake's buffer goes; reads start quiet.
        rbuf = BytesMut::new();
    }
    let mut conn = Conn {
        io,
        rbuf,
        wbuf: BytesMut::new(),
        protocol,
        client_id: accepted.client_id,
        username: accepted.username,
        acl: broker.authz().restricts(),
        peer: info.peer.ip(),
        cell: accepted.attached.cell,
        owner_id: accepted.attached.owner_id,
        will: accepted.will.map(Box::new),
        max_in_packet: u32::try_from(max_in).unwrap_or(u32::MAX),
        max_out_packet: u32::try_from(accepted.max_out_packet).unwrap_or(u32::MAX),
        out_window: u32::try_from(accepted.out_window).unwrap_or(u32::MAX),
        out_alias_max: accepted.out_alias_max,
        aliases: None,
        read_hint: READ_MIN,
        ctx: Box::new(Ctx { shutdown, home }),
        stop,
        ka_ms: u32::from(accepted.keep_alive) * 1500,
        ka_heard: 0,
        ka_due: 0,
        trim_due: 0,
        busy: false,
        quiet_rounds: FRESH,
        throttle: throttle::Throttle::new(&broker.config().limits),
        acks: acks::Acks::default(),
        broker,
    };
    if let Err(close) = conn.send(&Packet::ConnAck(accepted.connack)) {
        Box::pin(conn.finish(close)).await;
        return None;
    }
    conn.broker.metrics().connections.inc();
    conn.broker.metrics().connections_total.inc();
    conn.resend_inflight();
    if conn.ka_ms > 0 {
        conn.ka_heard = keepalive::now_ms();
        conn.ka_due = conn.ka_heard + u64::from(conn.ka_ms);
        keepalive::wake_at(conn.ka_due, &conn.cell);
    }
    Some(conn)
}

/// Reads until a whole first packet is decoded; returns it with the bytes read.
async fn read_connect<S: AsyncRead + Unpin>(
    io: &mut S,
    rbuf: &mut BytesMut,
    max: usize,
) -> Result<(codec::Connect, u64), codec::DecodeError> {
    let mut total = 0u64;
    loop {
        match codec::decode(rbuf, None, max)? {
            Some(Packet::Connect(c)) => return Ok((*c, total)),
            Some(_) => return Err(codec::DecodeError::FirstPacketNotConnect),
            None => {}
        }
        rbuf.reserve(READ_MIN);
        match io.read_buf(rbuf).await {
            Ok(0) | Err(_) => {
                return Err(codec::DecodeError::Malformed(
                    "connection closed before CONNECT",
                ))
            }
            Ok(n) => total += n as u64,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Conn<S> {
    /// Encodes `p` into the write buffer.
    pub(crate) fn send(&mut self, p: &Packet) -> Result<(), Close> {
        codec::encode(p, self.protocol, &mut self.wbuf).map_err(|e| {
            tracing::warn!(error = %e, "cannot encode an outgoing packet");
            Close::protocol(reason::IMPLEMENTATION_SPECIFIC_ERROR, "encode failure")
        })
    }

    /// Why `stop` was cancelled.
    fn stopped(&self) -> Close {
        if self.ctx.shutdown.is_cancelled() {
            shutting_down()
        } else {
            taken_over()
        }
    }

    /// Serves until the connection closes (`Some`) or may hibernate (`None`).
    async fn serve_loop(&mut self) -> Option<Close> {
        loop {
            let more = self.fill_wbuf();
            let stall = match self.stall_check(!self.wbuf.is_empty()) {
                Ok(s) => s,
                Err(close) => return Some(close),
            };
            if !self.wbuf.is_empty() {
                if let Err(close) = self.write_out().await {
                    return Some(close);
                }
            }
            // A released read buffer stays released until bytes arrive:
            // `read_buf` then reserves only 64 bytes, and larger reservations
            // follow once bytes flow (idle connections stay small).
            let quiet = self.rbuf.capacity() == 0;
            if !quiet && self.rbuf.capacity() - self.rbuf.len() < self.read_hint / 2 {
                self.rbuf.reserve(self.read_hint);
            }
            let hold = self.read_hold();
            let backlog = hold.is_none()
                && (self.throttle.as_mut()).is_some_and(|t| std::mem::take(&mut t.backlog));
            if backlog {
                // Input held back by the publish rate comes before new reads.
                if let Err(close) = self.process_all_input().await {
                    return Some(close);
                }
                continue;
            }
            // Not reading on purpose (rate, backpressure, acks): the
            // keep-alive is not held against the client meanwhile.
            let reading = hold.is_none() && !self.acks.is_full();
            let wake = match (hold, stall) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            // Something other than the client is due: not a time to hibernate.
            let timers = wake.is_some() || more;
            if self.quiet_rounds == FRESH {
                self.quiet_rounds = 0;
                // CONNACK is out and the client sent nothing more: most
                // clients then sit idle, so a burst of connects never holds
                // a task per connection (the task's memory stays with the
                // allocator, interleaved with the sessions, once freed).
                if self.may_park(reading, timers, true) {
                    return None;
                }
            }
            if self.trim_due == 0 {
                // Buffers are held, or the connection may hibernate: look
                // again after a quiet period.
                let period = self.idle_period();
                if period > 0 {
                    self.trim_due = keepalive::now_ms() + period;
                    self.busy = false;
                    keepalive::wake_at(self.trim_due, &self.cell);
                }
            }
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Some(self.stopped()),
                _ = self.acks.progress(), if self.acks.waiting() => {
                    if let Err(close) = self.release_acks().await {
                        return Some(close);
                    }
                }
                r = self.io.read_buf(&mut self.rbuf), if reading => match r {
                    Ok(0) => return Some(Close { kind: CloseKind::Abnormal, disconnect: None, why: "closed by client" }),
                    Ok(n) => {
                        self.busy = true;
                        self.broker.metrics().bytes_in.inc_by(n as u64);
                        // Grow reads for busy clients, stay small for quiet ones.
                        self.read_hint = if n >= self.read_hint || (quiet && n >= QUIET_READ) { (self.read_hint * 2).min(64 * 1024) } else { READ_MIN.max(self.read_hint / 2) };
                        if self.ka_ms > 0 {
                            self.ka_heard = keepalive::now_ms();
                        }
                        if let Err(close) = self.process_all_input().await {
                            return Some(close);
                        }
                        if self.rbuf.is_empty() && self.rbuf.capacity() > 64 * 1024 {
                            self.rbuf = BytesMut::new();
                        }
                    }
                    Err(_) => return Some(Close { kind: CloseKind::Abnormal, disconnect: None, why: "read failed" }),
                },
                _ = throttle::timer(&mut self.throttle, wake) => {}
                // New messages, or the shared timer (keep-alive, idle buffers).
                _ = self.cell.notify.notified() => {
                    if let Err(close) = self.keep_alive(reading) {
                        return Some(close);
                    }
                    if self.trim_idle() && self.may_park(reading, timers, false) {
                        return None;
                    }
                }
                _ = std::future::ready(()), if more => {}
            }
        }
    }

    /// The lazy keep-alive check, when the shared timer may have fired: a
    /// client silent for 1.5 × its keep-alive is closed; otherwise the
    /// timer is set again for the new deadline.
    fn keep_alive(&mut self, reading: bool) -> Result<(), Close> {
        if self.ka_ms == 0 {
            return Ok(());
        }
        let now = keepalive::now_ms();
        if now < self.ka_due {
            return Ok(());
        }
        let due = self.ka_heard + u64::from(self.ka_ms);
        if now >= due {
            if reading {
                return Err(Close {
                    kind: CloseKind::Abnormal,
                    disconnect: Some(reason::KEEP_ALIVE_TIMEOUT),
                    why: "keep-alive timeout",
                });
            }
            // Not reading on purpose: the client is not to blame.
            self.ka_heard = now;
        }
        self.ka_due = self.ka_heard + u64::from(self.ka_ms);
        keepalive::wake_at(self.ka_due, &self.cell);
        Ok(())
    }

    /// How long until the next idle check (0: none needed): the buffer
    /// trim period while buffers are held, and no longer than the
    /// hibernation threshold when the connection may hibernate.
    fn idle_period(&self) -> u64 {
        let held = self.rbuf.capacity() > 0 || self.wbuf.capacity() > 0;
        let hibernate = match self.ctx.home {
            Some(_) => self.broker.config().limits.hibernate_after_ms,
            None => 0,
        };
        match (held, hibernate) {
            (_, 0) if held => TRIM_MS,
            (_, 0) => 0,
            (_, h) => h.min(TRIM_MS),
        }
    }

    /// When the shared timer looked in after a quiet period: buffers of a
    /// connection that neither read nor wrote since are released, so an
    /// idle connection holds none (a busy one keeps its capacity). True
    /// when this was such a quiet period.
    fn trim_idle(&mut self) -> bool {
        if self.trim_due == 0 || keepalive::now_ms() < self.trim_due {
            return false;
        }
        self.trim_due = 0;
        if std::mem::take(&mut self.busy) {
            self.quiet_rounds = 0;
            return false;
        }
        self.quiet_rounds = self.quiet_rounds.saturating_add(1);
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
            self.read_hint = READ_MIN;
        }
        if self.wbuf.is_empty() {
            self.wbuf = BytesMut::new();
        }
        true
    }

    /// Writes the write buffer: at once if the socket takes it, else in a
    /// boxed wait (so the long-lived future carries no timer for it).
    async fn write_out(&mut self) -> Result<(), Close> {
        let len = self.wbuf.len();
        let done = std::future::poll_fn(|cx| Poll::Ready(self.write_now(cx))).await?;
        if !done {
            Box::pin(self.write_blocked()).await?;
        }
        self.broker.metrics().bytes_out.inc_by(len as u64);
        self.busy = true;
        if self.wbuf.capacity() > 4 * WBUF_HIGH {
            self.wbuf = BytesMut::new();
        } else {
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Writes as much as the socket takes now; true when all of it went.
    fn write_now(&mut self, cx: &mut std::task::Context<'_>) -> Result<bool, Close> {
        while !self.wbuf.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.wbuf) {
                Poll::Ready(Ok(n)) if n > 0 => bytes::Buf::advance(&mut self.wbuf, n),
                Poll::Ready(_) => return Err(write_failed()),
                Poll::Pending => return Ok(false),
            }
        }
        Ok(true)
    }

    /// The rest of a write the socket did not take at once.
    async fn write_blocked(&mut self) -> Result<(), Close> {
        let slow = self.slow_timeout();
        tokio::select! {
            // Biased so that a write that completes at once never arms the
            // slow-consumer timer.
            biased;
            r = self.io.write_all(&self.wbuf) => r.map_err(|_| write_failed()),
            _ = self.stop.cancelled() => Err(self.stopped()),
            // A client that takes nothing for this long is not reading.
            _ = tokio::time::sleep(slow) => Err(throttle::slow_consumer()),
        }
    }

    /// Decodes and handles complete packets in the read buffer until it
    /// holds no whole packet, the publish rate pauses input,
    /// [`acks::ACKS_MAX`] acknowledgements wait, or a packet waits for its
    /// authorization (returned). Synchronous, so that decoded packets never
    /// live in the task's future.
    fn process_input(&mut self) -> Result<Option<authorize::Pending>, Close> {
        while !self.acks.is_full() {
            if self.rate_paused() {
                return Ok(None);
            }
            match codec::decode(
                &mut self.rbuf,
                Some(self.protocol),
                self.max_in_packet as usize,
            ) {
                Ok(Some(p)) => match self.behind_acks(|c| c.handle(p))? {
                    None => {}
                    Some(authorize::Pending::Ack(ack)) => self.acks.push(ack),
                    Some(held) => return Ok(Some(held)),
                },
                Ok(None) => return Ok(None),
                Err(e) => {
                    self.broker.metrics().protocol_errors.inc();
                    tracing::info!(error = %e, "bad packet, disconnecting");
                    return Err(Close::protocol(e.reason_code(), "bad packet"));
                }
            }
        }
        Ok(None)
    }

    /// Runs `f` with output going behind the waiting acknowledgements (into
    /// the last one's tail), so the client sees packets in order (§4.6).
    fn behind_acks<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        if let Some(tail) = self.acks.tail() {
            std::mem::swap(&mut self.wbuf, tail);
        }
        let r = f(self);
        if let Some(tail) = self.acks.tail() {
            std::mem::swap(&mut self.wbuf, tail);
        }
        r
    }

    /// Processes buffered input, collecting the full QoS 1/2 targets its
    /// publishes ran into (noted thread-locally: nothing yields in between),
    /// and waits for authorizations in order.
    async fn process_all_input(&mut self) -> Result<(), Close> {
        loop {
            crate::limits::clear_full();
            let processed = crate::session::with_batch_clock(|| {
                crate::routes::batched(|| self.process_input())
            });
            // What this batch forwarded to other nodes goes out together.
            self.broker.remote().flush();
            self.collect_full();
            let Some(held) = processed? else {
                return Ok(());
            };
            // Boxed: the wait's state stays out of the long-lived future.
            Box::pin(self.complete(held)).await?;
        }
    }

    /// Writes the completed leading acknowledgements (and what followed
    /// each) and resumes input that waited for room.
    async fn release_acks(&mut self) -> Result<(), Close> {
        let full = self.acks.is_full();
        while let Some((pending, tail)) = self.acks.pop_ready() {
            self.send(&pending.ack())?;
            self.wbuf.extend_from_slice(&tail);
        }
        if full {
            self.process_all_input().await?;
        }
        Ok(())
    }

    /// Ends the connection: a last DISCONNECT (5.0), a bounded flush, and
    /// the session's detach (will, expiry).
    async fn finish(mut self, close: Close) {
        match close.kind {
            CloseKind::Normal => tracing::debug!(why = close.why, "disconnected"),
            _ => tracing::info!(
                why = close.why,
                reason = close.disconnect,
                "connection closed"
            ),
        }
        if let (true, Some(mut code)) = (self.protocol.is_v5(), close.disconnect) {
            let mut properties = Properties::default();
            // A drain can point 5.0 clients at another server (0x9C).
            let reference = &self.broker.config().shutdown.server_reference;
            if code == reason::SERVER_SHUTTING_DOWN && !reference.is_empty() {
                code = reason::USE_ANOTHER_SERVER;
                properties.server_reference = Some(reference.clone());
            }
            let d = Disconnect {
                reason: code,
                properties,
            };
            let _ = self.send(&Packet::Disconnect(d));
        }
        if !self.wbuf.is_empty() {
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, self.io.write_all(&self.wbuf)).await;
        }
        // The session goes offline before the socket closes: a client that
        // sees the close and publishes (or reconnects) at once finds the
        // session offline, its messages queued, not sent to this socket.
        let will = self.will.take().map(|w| *w);
        self.broker
            .detach(&self.cell, self.owner_id, close.kind, will);
        if close.disconnect == Some(reason::QUOTA_EXCEEDED) {
            self.trim_offline_queue();
        }
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, self.io.shutdown()).await;
    }
}

fn write_failed() -> Close {
    Close {
        kind: CloseKind::Abnormal,
        disconnect: None,
        why: "write failed",
    }
}

impl<S> Conn<S> {
    /// A takeover that was really a management request's disconnect:
    /// 5.0 clients are told 0x98 (administrative action).
    fn admin_kicked(&self, close: Close) -> Close {
        let by_admin = self.cell.state.lock().admin_kick.map(|k| k.get()) == Some(self.owner_id);
        match close.kind {
            CloseKind::TakenOver if by_admin => Close {
                kind: CloseKind::Abnormal,
                disconnect: Some(reason::ADMINISTRATIVE_ACTION),
                why: "disconnected by an administrator",
            },
            _ => close,
        }
    }
}

fn taken_over() -> Close {
    Close {
        kind: CloseKind::TakenOver,
        disconnect: Some(reason::SESSION_TAKEN_OVER),
        why: "session taken over",
    }
}

fn shutting_down() -> Close {
    Close {
        kind: CloseKind::Shutdown,
        disconnect: Some(reason::SERVER_SHUTTING_DOWN),
        why: "server shutting down",
    }
}

#[cfg(test)]
mod size_guard {
    /// An idle connection's memory is dominated by its task's future: keep
    /// the long-lived part small (the handshake phase is boxed and freed).
    #[tokio::test]
    async fn idle_connection_future_stays_small() {
        let cfg = std::sync::Arc::new(crate::config::Config::default());
        let b = crate::broker::Broker::new(cfg, crate::metrics::Metrics::default());
        let (a, _z) = tokio::io::duplex(64);
        let info = super::ConnInfo {
            peer: ([127, 0, 0, 1], 1).into(),
            listener: super::ListenerKind::Tcp,
            cert_cn: None,
        };
        let f = super::serve(a, info, b, Default::default());
        let size = std::mem::size_of_val(&f);
        // 600 B before the client's address (for `%a` and webhooks) and
        // the authorization wait joined the loop.
        assert!(size <= 640, "connection future grew to {size} bytes");
    }
}
