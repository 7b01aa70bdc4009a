//! One client listener's accept loop and connection tasks, generic over the
//! protocol handler so they are testable without a broker.

use crate::admin::Health;
use crate::connection::{ConnInfo, Home, ListenerKind, Respawn};
use crate::limits::TokenBucket;
use crate::metrics::Metrics;
use pin_project_lite::pin_project;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// A TLS client must finish its handshake within this time.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after an accept error such as EMFILE, so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long aborted connection tasks get to unwind after the grace period.
const ABORT_WAIT: Duration = Duration::from_secs(1);

/// Serves one accepted (and, for TLS, handshaken) client stream.
pub(crate) trait Handler: Clone + Send + Sync + 'static {
    /// Runs the protocol until the connection ends or `shutdown` fires.
    fn handle<S>(
        &self,
        stream: S,
        info: ConnInfo,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + use<Self, S>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// [`handle`](Handler::handle) for a plain-TCP stream, holding `home`
    /// (the connection permit, and what a hibernated connection needs to
    /// come back) for the connection's whole life.
    fn handle_tcp(
        &self,
        stream: TcpStream,
        info: ConnInfo,
        shutdown: CancellationToken,
        home: Home,
    ) -> impl Future<Output = ()> + Send + use<Self> {
        let serve = self.handle(stream, info, shutdown);
        async move {
            let _home = home;
            serve.await
        }
    }
}

/// Everything an accept loop and its connection tasks share.
pub(crate) struct Listener<H> {
    /// Its kind; its name in logs and `/health`.
    pub kind: ListenerKind,
    /// Present for the TLS listener.
    pub tls: Option<TlsAcceptor>,
    /// Open connections allowed at once.
    pub max_connections: usize,
    /// The protocol handler.
    pub handler: H,
    /// Where refused connections are counted.
    pub metrics: Metrics,
    /// Where liveness is reported.
    pub health: Health,
    /// Tracks connection tasks so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Cancelled when shutdown begins: stop accepting, ask connections to end.
    pub shutdown: CancellationToken,
    /// Cancelled when the grace period is over: drop connection tasks.
    pub kill: CancellationToken,
    /// WebSocket, PROXY protocol and connect-rate settings.
    pub edge: Edge,
}

/// What a listener does between accept and MQTT besides TLS: a PROXY
/// header, a WebSocket upgrade, and a connect-rate cap.
#[derive(Debug, Clone)]
pub(crate) struct Edge {
    /// Upgrade to WebSocket on this path (after TLS, if any).
    pub ws_path: Option<Arc<str>>,
    /// Largest WebSocket frame or message.
    pub ws_max_message: usize,
    /// Expect a PROXY protocol header first.
    pub proxy: bool,
    /// Take a v2 SSL TLV's CN as the certificate CN.
    pub proxy_use_cn: bool,
    /// The PROXY header must arrive within this time.
    pub proxy_timeout: Duration,
    /// New connections per second (0: no cap) and the burst allowed.
    pub connect_rate: (u32, u32),
}

impl Default for Edge {
    fn default() -> Self {
        Edge {
            ws_path: None,
            ws_max_message: 1024 * 1024,
            proxy: false,
            proxy_use_cn: false,
            proxy_timeout: Duration::from_secs(5),
            connect_rate: (0, 1),
        }
    }
}

/// Logs at most once per second, counting what it held back.
#[derive(Default)]
struct LogLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// `Some(suppressed since the last log)` when it is time to log again.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Errors about one incoming connection, not about the listening socket.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

impl<H: Handler> Listener<H> {
    /// Marks the listener up and spawns its accept loop.
    pub(crate) fn spawn(self, socket: TcpListener) -> JoinHandle<()> {
        self.health.set(self.kind.as_str(), true);
        tokio::spawn(Arc::new(self).accept_loop(socket))
    }

    async fn accept_loop(self: Arc<Self>, socket: TcpListener) {
        // Semaphore::new panics above MAX_PERMITS; no config may cause that.
        let permits = self.max_connections.min(Semaphore::MAX_PERMITS);
        let limit = Arc::new(Semaphore::new(permits));
        let (mut full_log, mut error_log) = (LogLimit::default(), LogLimit::default());
        let mut rate_log = LogLimit::default();
        let (rate, burst) = self.edge.connect_rate;
        let respawn = Arc::new(Respawn {
            handle: tokio::runtime::Handle::current(),
            tracker: self.tracker.clone(),
            shutdown: self.shutdown.clone(),
            kill: self.kill.clone(),
            limit: limit.clone(),
        });
        let mut bucket = (rate > 0).then(|| {
            TokenBucket::new(
                f64::from(rate),
                f64::from(burst.max(1)),
                tokio::time::Instant::now(),
            )
        });
        loop {
            let accepted = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                accepted = socket.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) if is_per_connection(&e) => {
                    debug!(listener = self.kind.as_str(), error = %e, "accept failed");
                    continue;
                }
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS…: resources may come back.
                    if let Some(suppressed) = error_log.allow() {
                        warn!(listener = self.kind.as_str(), error = %e, suppressed, "accept failed; backing off");
                    }
                    tokio::select! {
                        _ = self.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            };
            if let Some(b) = &mut bucket {
                if !b.try_take(tokio::time::Instant::now()) {
                    self.metrics.edge.connect_rate_refused.inc();
                    if let Some(suppressed) = rate_log.allow() {
                        warn!(listener = self.kind.as_str(), %peer, rate, suppressed,
                            "connect rate exceeded; closing connection");
                    }
                    drop(stream);
                    continue;
                }
            }
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                // Over the cap: dropping the stream closes it at once.
                self.metrics.connections_refused.inc();
                if let Some(suppressed) = full_log.allow() {
                    warn!(listener = self.kind.as_str(), %peer, max = self.max_connections, suppressed,
                        "connection limit reached; refusing connection");
                }
                drop(stream);
                continue;
            };
            if let Err(e) = stream.set_nodelay(true) {
                debug!(listener = self.kind.as_str(), %peer, error = %e, "cannot set TCP_NODELAY");
            }
            self.tracker
                .spawn(self.task(stream, peer, permit, &respawn));
        }
        // Hibernated connections have no task to see the shutdown token:
        // they are woken to say goodbye (DISCONNECT 0x8B) like the others.
        crate::connection::wake_all(&respawn);
        self.health.set(self.kind.as_str(), false);
        debug!(listener = self.kind.as_str(), "accept loop stopped");
    }

    /// The future of one connection task, as spawned: built by a plain
    /// function so that the stream, address and tokens are stored once, in
    /// the handler's future, and not again at each layer.
    pub(crate) fn task(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
        respawn: &Arc<Respawn>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let token = self.shutdown.clone();
        // The permit is held by the handler (a hibernating connection
        // keeps it beyond its task) or by the boxed edge future.
        let serve = if self.tls.is_none() && !self.edge.proxy && self.edge.ws_path.is_none() {
            let info = ConnInfo {
                peer,
                listener: self.kind,
                cert_cn: None,
            };
            let home = Home::new(respawn.clone(), permit);
            Either::Left(self.handler.handle_tcp(stream, info, token, home))
        } else {
            // Boxed as a whole, so that plain-TCP connection tasks carry
            // neither the PROXY, TLS and WebSocket state machines nor their
            // streams.
            let edge = self.clone().serve_edge(stream, peer, token);
            Either::Right(Box::pin(async move {
                let _permit = permit;
                edge.await
            }))
        };
        Task::new(&self.kill, serve)
    }

    /// PROXY header, TLS and WebSocket, whichever the listener has, then
    /// the handler.
    async fn serve_edge(
        self: Arc<Self>,
        mut stream: TcpStream,
        mut peer: SocketAddr,
        token: CancellationToken,
    ) {
        let mut proxy_cn = None;
        if self.edge.proxy {
            let read = crate::proxy::read_header(&mut stream);
            let header = tokio::select! {
                _ = token.cancelled() => return,
                r = Box::pin(tokio::time::timeout(self.edge.proxy_timeout, read)) => r,
            };
            match header {
                Ok(Ok(h)) => {
                    if let Some(source) = h.source {
                        debug!(listener = self.kind.as_str(), proxy = %peer, client = %source, "PROXY header");
                        peer = source;
                    }
                    if self.edge.proxy_use_cn {
                        proxy_cn = h.cert_cn;
                    }
                }
                Ok(Err(e)) => {
                    self.metrics.edge.proxy_errors.inc();
                    info!(listener = self.kind.as_str(), %peer, error = %e, "PROXY header refused; closing");
                    return;
                }
                Err(_) => {
                    self.metrics.edge.proxy_errors.inc();
                    info!(listener = self.kind.as_str(), %peer, "no PROXY header in time; closing");
                    return;
                }
            }
        }
        let info = |cert_cn| ConnInfo {
            peer,
            listener: self.kind,
            cert_cn,
        };
        let Some(acceptor) = &self.tls else {
            if self.edge.ws_path.is_some() {
                return Box::pin(self.upgrade(stream, info(proxy_cn), token)).await;
            }
            return self.handler.handle(stream, info(proxy_cn), token).await;
        };
        let handshake = tokio::select! {
            _ = token.cancelled() => return,
            r = Box::pin(tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))) => r,
        };
        match handshake {
            Ok(Ok(tls)) => {
                let cn = crate::tls::peer_common_name(tls.get_ref().1).or(proxy_cn);
                if self.edge.ws_path.is_some() {
                    Box::pin(self.upgrade(tls, info(cn), token)).await;
                } else {
                    Box::pin(self.handler.handle(tls, info(cn), token)).await;
                }
            }
            Ok(Err(e)) => {
                debug!(listener = self.kind.as_str(), %peer, error = %e, "TLS handshake failed")
            }
            Err(_) => debug!(listener = self.kind.as_str(), %peer, "TLS handshake timed out"),
        }
    }

    /// The WebSocket upgrade, then the handler over the message stream.
    async fn upgrade<S>(&self, stream: S, info: ConnInfo, token: CancellationToken)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let path = self.edge.ws_path.as_deref().unwrap_or("/");
        let errors = self.metrics.edge.ws_errors.clone();
        let accept = crate::ws::accept(stream, path, self.edge.ws_max_message, errors);
        let upgraded = tokio::select! {
            _ = token.cancelled() => return,
            r = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept) => r,
        };
        match upgraded {
            Ok(Ok(ws)) => self.handler.handle(ws, info, token).await,
            Ok(Err(e)) => {
                self.metrics.edge.ws_errors.inc();
                info!(listener = self.kind.as_str(), peer = %info.peer, error = %e, "WebSocket upgrade refused");
            }
            Err(_) => {
                debug!(listener = self.kind.as_str(), peer = %info.peer, "WebSocket upgrade timed out")
            }
        }
    }
}

pin_project! {
    /// One connection task: the handler's future (which holds the
    /// connection-limit permit), dropped at once when the grace period
    /// runs out (`kill`). A hibernated connection resumes in one too.
    pub(crate) struct Task<F> {
        #[pin]
        kill: WaitForCancellationFutureOwned,
        #[pin]
        serve: F,
    }
}

impl<F> Task<F> {
    /// `serve`, dropped when `kill` is cancelled.
    pub(crate) fn new(kill: &CancellationToken, serve: F) -> Self {
        Task {
            kill: kill.clone().cancelled_owned(),
            serve,
        }
    }
}

impl<F: Future<Output = ()>> Future for Task<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.kill.poll(cx).is_ready() {
            debug!("connection aborted after grace period");
            return Poll::Ready(());
        }
        this.serve.poll(cx)
    }
}

/// Waits for tracked connection tasks until `deadline`, then cancels
/// `kill` and gives them [`ABORT_WAIT`] to unwind. Returns how many tasks
/// were still running at the deadline.
pub(crate) async fn drain(
    tracker: &TaskTracker,
    kill: &CancellationToken,
    deadline: tokio::time::Instant,
) -> usize {
    tracker.close();
    if tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .is_ok()
    {
        return 0;
    }
    let remaining = tracker.len();
    kill.cancel();
    if tokio::time::timeout(ABORT_WAIT, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            remaining = tracker.len(),
            "connection tasks still running after abort"
        );
    }
    remaining
}

#[cfg(test)]
#[path = "listener_tests.rs"]
mod tests;
