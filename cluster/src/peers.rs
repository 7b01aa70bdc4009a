//! Where peer addresses come from. A [`PeerSource`] yields the full peer
//! set whenever it changes; the mesh dials addresses that appear and stops
//! dialing those that go. [`StaticPeers`] serves `cluster.peers` (and can
//! be changed by hand, e.g. by a test); DNS and Kubernetes sources plug in
//! behind the same trait.

use tokio::sync::watch;

/// A source of the full set of peer addresses (`host:port`).
pub trait PeerSource: Send + Sync + 'static {
    /// The current set, updated as it changes.
    fn watch(&self) -> watch::Receiver<Vec<String>>;
}

/// A fixed list of peers, replaceable with [`set`](StaticPeers::set).
#[derive(Debug, Clone)]
pub struct StaticPeers {
    tx: watch::Sender<Vec<String>>,
}

impl StaticPeers {
    /// The given addresses.
    pub fn new(peers: Vec<String>) -> StaticPeers {
        StaticPeers {
            tx: watch::Sender::new(peers),
        }
    }

    /// Replaces the set.
    pub fn set(&self, peers: Vec<String>) {
        self.tx.send_replace(peers);
    }
}

impl PeerSource for StaticPeers {
    fn watch(&self) -> watch::Receiver<Vec<String>> {
        self.tx.subscribe()
    }
}
