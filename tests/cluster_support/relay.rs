//! An in-test TCP relay for one directed mesh link (node i → node j).
//!
//! Node i is told that node j lives at the relay's address; the relay
//! forwards every accepted connection to node j's real mesh address.
//! [`Relay::cut`] closes every relayed connection and refuses new ones
//! (they are accepted and closed at once) until [`Relay::heal`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Default)]
struct State {
    target: Mutex<Option<SocketAddr>>,
    cut: AtomicBool,
    conns: Mutex<Vec<JoinHandle<()>>>,
    /// Connections forwarded so far (for diagnostics).
    forwarded: AtomicU64,
    /// Connections refused because the link was cut or had no target.
    refused: AtomicU64,
}

/// One directed link.
pub struct Relay {
    /// Where node i should dial to reach node j.
    pub addr: SocketAddr,
    /// A label for messages, e.g. `n1->n2`.
    pub label: String,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// Binds 127.0.0.1:0 and starts accepting; no target yet (connections
    /// are closed until [`Relay::set_target`]).
    pub async fn start(label: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind relay listener");
        let addr = listener.local_addr().expect("relay addr");
        let state = Arc::new(State::default());
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let target = *st.target.lock().unwrap();
                let target = match target {
                    Some(t) if !st.cut.load(Ordering::SeqCst) => t,
                    _ => {
                        st.refused.fetch_add(1, Ordering::Relaxed);
                        drop(inbound);
                        continue;
                    }
                };
                let st2 = st.clone();
                let task = tokio::spawn(async move {
                    let outbound = match tokio::time::timeout(
                        Duration::from_secs(2),
                        TcpStream::connect(target),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        _ => return,
                    };
                    if st2.cut.load(Ordering::SeqCst) {
                        return;
                    }
                    st2.forwarded.fetch_add(1, Ordering::Relaxed);
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (mut a, mut b) = (inbound, outbound);
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                });
                let mut conns = st.conns.lock().unwrap();
                conns.retain(|h| !h.is_finished());
                conns.push(task);
                // A cut that raced with this accept: close this one too.
                if st.cut.load(Ordering::SeqCst) {
                    for h in conns.drain(..) {
                        h.abort();
                    }
                }
            }
        });
        Relay {
            addr,
            label: label.to_string(),
            state,
            accept,
        }
    }

    /// Where accepted connections go (node j's real mesh address).
    pub fn set_target(&self, target: SocketAddr) {
        *self.state.target.lock().unwrap() = Some(target);
    }

    /// Closes every relayed connection (both sockets are dropped) and
    /// refuses new ones.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        for h in self.state.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    /// Forwards new connections again.
    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    pub fn is_cut(&self) -> bool {
        self.state.cut.load(Ordering::SeqCst)
    }

    /// `label: forwarded N, refused M, cut?` for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{} via {} -> {:?}: forwarded {}, refused {}, {}",
            self.label,
            self.addr,
            *self.state.target.lock().unwrap(),
            self.state.forwarded.load(Ordering::Relaxed),
            self.state.refused.load(Ordering::Relaxed),
            if self.is_cut() { "CUT" } else { "open" }
        )
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        for h in self.state.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}
