//! An in-memory network: nodes listen on names, connections are
//! `tokio::io::duplex` pipes, and a test can cut the link between two
//! nodes (open connections fail, new dials are refused), heal it, or kill
//! a node (every connection to it fails, its listener disappears).

use super::{BoxFut, Incoming, Io, Transport};
use futures_util::StreamExt;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

#[derive(Default)]
struct State {
    listeners: HashMap<String, mpsc::UnboundedSender<io::Result<Io>>>,
    cuts: HashSet<(String, String)>,
    conns: Vec<(String, String, CancellationToken)>,
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

/// The shared in-memory network.
#[derive(Clone, Default)]
pub struct MemNetwork {
    state: Arc<Mutex<State>>,
}

impl MemNetwork {
    /// An empty network.
    pub fn new() -> MemNetwork {
        MemNetwork::default()
    }

    /// The transport of the node at `local` (its dials come from there).
    pub fn transport(&self, local: &str) -> MemTransport {
        MemTransport {
            net: self.clone(),
            local: local.to_string(),
        }
    }

    fn break_where(&self, f: impl Fn(&str, &str) -> bool) {
        let mut st = self.state.lock();
        st.conns.retain(|(a, b, t)| {
            if f(a, b) {
                t.cancel();
                false
            } else {
                !t.is_cancelled()
            }
        });
    }

    /// Cuts the link between `a` and `b` both ways.
    pub fn cut(&self, a: &str, b: &str) {
        self.state.lock().cuts.insert(pair(a, b));
        let p = pair(a, b);
        self.break_where(|x, y| pair(x, y) == p);
    }

    /// Restores the link between `a` and `b`.
    pub fn heal(&self, a: &str, b: &str) {
        self.state.lock().cuts.remove(&pair(a, b));
    }

    /// Kills the node at `addr`: its listener goes and its connections fail.
    pub fn kill(&self, addr: &str) {
        self.state.lock().listeners.remove(addr);
        self.break_where(|x, y| x == addr || y == addr);
    }
}

/// One node's view of a [`MemNetwork`].
#[derive(Clone)]
pub struct MemTransport {
    net: MemNetwork,
    local: String,
}

impl Transport for MemTransport {
    fn bind(&self, addr: &str) -> BoxFut<io::Result<(String, Incoming)>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let addr = if addr.is_empty() {
            self.local.clone()
        } else {
            addr.to_string()
        };
        self.net.state.lock().listeners.insert(addr.clone(), tx);
        let incoming: Incoming = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed();
        Box::pin(std::future::ready(Ok((addr, incoming))))
    }

    fn connect(&self, addr: &str) -> BoxFut<io::Result<Io>> {
        let result = (|| {
            let mut st = self.net.state.lock();
            if st.cuts.contains(&pair(&self.local, addr)) {
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "link cut"));
            }
            let listener = st
                .listeners
                .get(addr)
                .filter(|l| !l.is_closed())
                .cloned()
                .ok_or_else(|| io::Error::new(io::ErrorKind::ConnectionRefused, "no listener"))?;
            let token = CancellationToken::new();
            let (client, server) = tokio::io::duplex(256 * 1024);
            listener
                .send(Ok(Io::new(Cuttable::new(server, &token), None)))
                .map_err(|_| io::Error::new(io::ErrorKind::ConnectionRefused, "listener gone"))?;
            st.conns
                .push((self.local.clone(), addr.to_string(), token.clone()));
            Ok(Io::new(Cuttable::new(client, &token), None))
        })();
        Box::pin(std::future::ready(result))
    }
}

/// A pipe end that fails once its link is cut.
struct Cuttable {
    inner: DuplexStream,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Cuttable {
    fn new(inner: DuplexStream, token: &CancellationToken) -> Cuttable {
        Cuttable {
            inner,
            cut: Box::pin(token.clone().cancelled_owned()),
        }
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.cut.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(io::ErrorKind::BrokenPipe, "link cut")),
            Poll::Pending => Ok(()),
        }
    }
}

impl AsyncRead for Cuttable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Cuttable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
