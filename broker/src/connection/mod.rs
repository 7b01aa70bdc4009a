//! One client connection: a single task that owns the socket, reads and
//! decodes packets, drains the session's queue into a write buffer, and
//! writes that buffer in one call per round (batching many packets per
//! syscall). Keep-alive, takeover and shutdown are branches of one `select!`.

mod handshake;
mod inbound;
mod outbound;
mod throttle;

use crate::broker::{Broker, CloseKind, SessionCell};
use crate::codec::{self, reason, ConnAck, Disconnect, Packet, Properties, Protocol};
use crate::session::Will;
use crate::trie::ClientId;
use bytes::BytesMut;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What the listener knows about a connection before CONNECT.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Remote address.
    pub peer: SocketAddr,
    /// Listener name, for logs and metrics ("tcp", "tls", "ws", "wss").
    pub listener: &'static str,
    /// Common name of a verified TLS client certificate.
    pub cert_cn: Option<String>,
}

/// Bound on the final flush (DISCONNECT, CONNACK refusals).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Outgoing bytes gathered before a write; also bounds one round's work.
const WBUF_HIGH: usize = 64 * 1024;
/// Smallest read reservation: small, so that idle connections stay cheap.
const READ_MIN: usize = 512;

/// Serves one client connection until it closes, the protocol ends it, or
/// `shutdown` is cancelled (then 5.0 clients get DISCONNECT 0x8B first).
pub async fn serve<S>(stream: S, info: ConnInfo, broker: Arc<Broker>, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let span = tracing::info_span!("conn", peer = %info.peer, listener = info.listener, client_id = tracing::field::Empty);
    run(stream, info, broker, shutdown).instrument(span).await
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

/// State of an accepted connection.
pub(crate) struct Conn<S> {
    pub io: S,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
    pub broker: Arc<Broker>,
    pub protocol: Protocol,
    pub client_id: ClientId,
    pub username: Option<String>,
    /// An authorizer that restricts anything: deliveries are checked.
    pub acl: bool,
    pub cell: Arc<SessionCell>,
    pub owner_id: u64,
    pub will: Option<Will>,
    pub max_in_packet: usize,
    pub max_out_packet: usize,
    pub out_window: usize,
    pub out_alias_max: u16,
    pub out_aliases: HashMap<Arc<str>, u16>,
    pub in_aliases: HashMap<u16, Arc<str>>,
    read_hint: usize,
    /// Publish rate, backpressure and slow-consumer state.
    pub(crate) throttle: Box<throttle::Throttle>,
}

async fn run<S>(io: S, info: ConnInfo, broker: Arc<Broker>, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Boxed and dropped once done, so that the long-lived task holds only
    // `Conn` and the loop's state: idle connections stay small.
    let Some((mut conn, keep_alive, kicked)) =
        Box::pin(establish(io, info, broker, &shutdown)).await
    else {
        return;
    };
    let metrics = conn.broker.metrics().clone();
    metrics.connections.inc();
    metrics.connections_total.inc();
    conn.resend_inflight();
    let close = conn.serve_loop(keep_alive, &kicked, &shutdown).await;
    Box::pin(conn.finish(close)).await;
    metrics.connections.dec();
}

/// Reads CONNECT, runs the handshake and queues CONNACK. Returns the
/// connection with its keep-alive and takeover token, or `None` if it was
/// refused (and answered) or abandoned.
async fn establish<S>(
    mut io: S,
    info: ConnInfo,
    broker: Arc<Broker>,
    shutdown: &CancellationToken,
) -> Option<(Conn<S>, u16, CancellationToken)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
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
    let accepted = match throttle::over_memory(&broker) {
        true => {
            broker.metrics().edge.memory_refused.inc();
            Err(handshake::Refusal {
                code: throttle::busy_code(protocol),
                why: "memory watermark exceeded",
            })
        }
        false => handshake::accept(connect, &info, &broker).await,
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
    let kicked = accepted.attached.kicked.clone();
    let mut conn = Conn {
        io,
        rbuf,
        wbuf: BytesMut::new(),
        protocol,
        client_id: accepted.client_id,
        username: accepted.username,
        acl: broker.authz().restricts(),
        cell: accepted.attached.cell,
        owner_id: accepted.attached.owner_id,
        will: accepted.will,
        max_in_packet: max_in,
        max_out_packet: accepted.max_out_packet,
        out_window: accepted.out_window,
        out_alias_max: accepted.out_alias_max,
        out_aliases: HashMap::new(),
        in_aliases: HashMap::new(),
        read_hint: READ_MIN,
        throttle: throttle::Throttle::new(&broker.config().limits),
        broker,
    };
    if let Err(close) = conn.send(&Packet::ConnAck(accepted.connack)) {
        Box::pin(conn.finish(close)).await;
        return None;
    }
    Some((conn, accepted.keep_alive, kicked))
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

    async fn serve_loop(
        &mut self,
        keep_alive: u16,
        kicked: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Close {
        // A client must send something within 1.5 × its keep-alive.
        let ka = (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        let far = Duration::from_secs(86_400 * 365);
        let ka_sleep = tokio::time::sleep(ka.unwrap_or(far));
        tokio::pin!(ka_sleep);
        loop {
            let more = self.fill_wbuf();
            let stall = match self.stall_check(!self.wbuf.is_empty()) {
                Ok(s) => s,
                Err(close) => return close,
            };
            if !self.wbuf.is_empty() {
                let slow = self.slow_timeout();
                tokio::select! {
                    // Biased so that a write that completes at once never
                    // arms the slow-consumer timer.
                    biased;
                    r = self.io.write_all(&self.wbuf) => match r {
                        Ok(()) => {
                            self.broker.metrics().bytes_out.inc_by(self.wbuf.len() as u64);
                            self.wbuf.clear();
                            if self.wbuf.capacity() > 4 * WBUF_HIGH {
                                self.wbuf = BytesMut::new();
                            }
                        }
                        Err(_) => return Close { kind: CloseKind::Abnormal, disconnect: None, why: "write failed" },
                    },
                    _ = kicked.cancelled() => return taken_over(),
                    _ = shutdown.cancelled() => return shutting_down(),
                    // A client that takes nothing for this long is not reading.
                    _ = tokio::time::sleep(slow) => return throttle::slow_consumer(),
                }
            }
            if self.rbuf.capacity() - self.rbuf.len() < self.read_hint / 2 {
                self.rbuf.reserve(self.read_hint);
            }
            let hold = self.read_hold();
            if hold.is_none() && std::mem::take(&mut self.throttle.backlog) {
                // Input held back by the publish rate comes before new reads.
                if let Err(close) = self.process_all_input().await {
                    return close;
                }
                continue;
            }
            let wake = match (hold, stall) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return shutting_down(),
                _ = kicked.cancelled() => return taken_over(),
                r = self.io.read_buf(&mut self.rbuf), if hold.is_none() => match r {
                    Ok(0) => return Close { kind: CloseKind::Abnormal, disconnect: None, why: "closed by client" },
                    Ok(n) => {
                        self.broker.metrics().bytes_in.inc_by(n as u64);
                        // Grow reads for busy clients, stay small for quiet ones.
                        self.read_hint = if n >= self.read_hint { (self.read_hint * 2).min(64 * 1024) } else { READ_MIN.max(self.read_hint / 2) };
                        if let Some(ka) = ka {
                            ka_sleep.as_mut().reset(Instant::now() + ka);
                        }
                        if let Err(close) = self.process_all_input().await {
                            return close;
                        }
                        if self.rbuf.is_empty() && self.rbuf.capacity() > 64 * 1024 {
                            self.rbuf = BytesMut::new();
                        }
                    }
                    Err(_) => return Close { kind: CloseKind::Abnormal, disconnect: None, why: "read failed" },
                },
                _ = &mut ka_sleep => match (hold, ka) {
                    // Not reading on purpose: the client is not to blame.
                    (Some(_), Some(ka)) => ka_sleep.as_mut().reset(Instant::now() + ka),
                    _ => return Close { kind: CloseKind::Abnormal, disconnect: Some(reason::KEEP_ALIVE_TIMEOUT), why: "keep-alive timeout" },
                },
                _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
                _ = self.cell.notify.notified() => {}
                _ = std::future::ready(()), if more => {}
            }
        }
    }

    /// Decodes and handles complete packets in the read buffer until it
    /// holds no whole packet, or one needs to wait for remote nodes.
    /// Synchronous, so that decoded packets never live in the task's future.
    fn process_input(&mut self) -> Result<Option<inbound::Pending>, Close> {
        loop {
            if self.rate_paused() {
                return Ok(None);
            }
            match codec::decode(&mut self.rbuf, Some(self.protocol), self.max_in_packet) {
                Ok(Some(p)) => {
                    if let Some(pending) = self.handle(p)? {
                        return Ok(Some(pending));
                    }
                }
                Ok(None) => return Ok(None),
                Err(e) => {
                    self.broker.metrics().protocol_errors.inc();
                    tracing::info!(error = %e, "bad packet, disconnecting");
                    return Err(Close::protocol(e.reason_code(), "bad packet"));
                }
            }
        }
    }

    /// Processes input, waiting on remote acknowledgements in order.
    async fn process_all_input(&mut self) -> Result<(), Close> {
        loop {
            crate::limits::clear_full();
            let processed = self.process_input();
            // Before any await: the publish path's notes are thread-local.
            self.collect_full();
            let Some(mut pending) = processed? else {
                return Ok(());
            };
            (&mut pending.remote).await;
            self.send(&pending.ack())?;
        }
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
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, self.io.shutdown()).await;
        let will = self.will.take();
        self.broker
            .detach(&self.cell, self.owner_id, close.kind, will);
        if close.disconnect == Some(reason::QUOTA_EXCEEDED) {
            self.trim_offline_queue();
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
            listener: "tcp",
            cert_cn: None,
        };
        let f = super::serve(a, info, b, Default::default());
        let size = std::mem::size_of_val(&f);
        assert!(size <= 2048, "connection future grew to {size} bytes");
    }
}
