//! One client listener's accept loop and connection tasks, generic over the
//! protocol handler so they are testable without a broker.

use crate::admin::Health;
use crate::connection::ConnInfo;
use crate::metrics::Metrics;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

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
    ) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static;
}

/// Everything an accept loop and its connection tasks share.
pub(crate) struct Listener<H> {
    /// "tcp" or "tls", for logs, [`ConnInfo`] and `/health`.
    pub name: &'static str,
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
        self.health.set(self.name, true);
        tokio::spawn(Arc::new(self).accept_loop(socket))
    }

    async fn accept_loop(self: Arc<Self>, socket: TcpListener) {
        // Semaphore::new panics above MAX_PERMITS; no config may cause that.
        let permits = self.max_connections.min(Semaphore::MAX_PERMITS);
        let limit = Arc::new(Semaphore::new(permits));
        let (mut full_log, mut error_log) = (LogLimit::default(), LogLimit::default());
        loop {
            let accepted = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                accepted = socket.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) if is_per_connection(&e) => {
                    debug!(listener = self.name, error = %e, "accept failed");
                    continue;
                }
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS…: resources may come back.
                    if let Some(suppressed) = error_log.allow() {
                        warn!(listener = self.name, error = %e, suppressed, "accept failed; backing off");
                    }
                    tokio::select! {
                        _ = self.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                // Over the cap: dropping the stream closes it at once.
                self.metrics.connections_refused.inc();
                if let Some(suppressed) = full_log.allow() {
                    warn!(listener = self.name, %peer, max = self.max_connections, suppressed,
                        "connection limit reached; refusing connection");
                }
                drop(stream);
                continue;
            };
            if let Err(e) = stream.set_nodelay(true) {
                debug!(listener = self.name, %peer, error = %e, "cannot set TCP_NODELAY");
            }
            let this = self.clone();
            self.tracker
                .spawn(async move { this.connection(stream, peer, permit).await });
        }
        self.health.set(self.name, false);
        debug!(listener = self.name, "accept loop stopped");
    }

    /// One connection task: TLS handshake (if any), then the handler; the
    /// whole task is dropped if the grace period runs out.
    async fn connection(&self, stream: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit) {
        let _permit = permit;
        tokio::select! {
            biased;
            _ = self.kill.cancelled() => debug!(listener = self.name, %peer, "connection aborted after grace period"),
            _ = self.serve(stream, peer) => {}
        }
    }

    async fn serve(&self, stream: TcpStream, peer: SocketAddr) {
        let token = self.shutdown.child_token();
        match &self.tls {
            None => {
                let info = ConnInfo {
                    peer,
                    listener: self.name,
                    cert_cn: None,
                };
                self.handler.handle(stream, info, token).await
            }
            // Boxed as a whole, so that plain-TCP connection tasks carry
            // neither the TLS state machines nor the TLS stream (which
            // doubled an idle connection's task).
            Some(acceptor) => Box::pin(self.serve_tls(acceptor, stream, peer, token)).await,
        }
    }

    async fn serve_tls(
        &self,
        acceptor: &TlsAcceptor,
        stream: TcpStream,
        peer: SocketAddr,
        token: CancellationToken,
    ) {
        let handshake = tokio::select! {
            _ = token.cancelled() => return,
            r = Box::pin(tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))) => r,
        };
        match handshake {
            Ok(Ok(tls)) => {
                let cert_cn = crate::tls::peer_common_name(tls.get_ref().1);
                let info = ConnInfo {
                    peer,
                    listener: self.name,
                    cert_cn,
                };
                Box::pin(self.handler.handle(tls, info, token)).await;
            }
            Ok(Err(e)) => debug!(listener = self.name, %peer, error = %e, "TLS handshake failed"),
            Err(_) => debug!(listener = self.name, %peer, "TLS handshake timed out"),
        }
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
