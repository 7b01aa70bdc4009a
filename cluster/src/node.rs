//! [`Cluster`]: this node's membership in the mesh. It owns the route
//! tables, the per-peer outboxes and the tasks (listener, one link per
//! peer address, the reaper of peers past their grace), and implements the
//! broker's [`RemoteRoutes`] seam.

use crate::dedup::Dedup;
use crate::local::LocalRoutes;
use crate::options::{new_incarnation, ClusterOptions};
use crate::outbox::Outbox;
use crate::peers::PeerSource;
use crate::remote::RemoteTable;
use crate::transport::{MeshTls, Transport};
use crate::{Error, Result};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};
use tern_broker::admin::{ClusterShow, PeerShow};
use tern_broker::broker::Broker;
use tern_broker::config::{ClusterConfig, SharedPolicy};
use tern_broker::metrics::ClusterMetrics;
use tern_broker::session::now_ms;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// A shared group: (group, filter).
pub(crate) type GroupKey = (Arc<str>, Arc<str>);

/// Link-level state of one peer, by name.
pub(crate) struct PeerState {
    pub address: String,
    pub up: bool,
    pub since_ms: u64,
    pub down_at: Option<Instant>,
    pub incarnation: u64,
    pub rtt: Option<Duration>,
    pub client: Option<crate::link::Client>,
    pub tx: Option<mpsc::Sender<crate::wire::Encoded>>,
    pub link: Option<u64>,
    /// Left gracefully: not counted as down.
    pub left: bool,
}

/// One peer: its link state and its outbox.
pub(crate) struct Peer {
    pub name: Arc<str>,
    pub state: Mutex<PeerState>,
    /// Encoded envelopes ([`crate::wire::put_record`]).
    pub outbox: Mutex<Outbox>,
    pub notify: Notify,
}

/// What this node knows about a peer's links to it.
pub(crate) struct Inbound {
    pub incarnation: u64,
    pub links: usize,
    pub down_at: Option<Instant>,
    pub dedup: Dedup,
    /// The peer's initial sync (routes, retained, clients) has arrived.
    pub synced: bool,
}

pub(crate) struct Inner {
    pub node: Arc<str>,
    pub incarnation: u64,
    pub cfg: ClusterConfig,
    pub policy: SharedPolicy,
    pub retain_available: bool,
    pub broker: OnceLock<Weak<Broker>>,
    pub metrics: OnceLock<ClusterMetrics>,
    pub local: Mutex<LocalRoutes>,
    pub routes_tx: watch::Sender<u64>,
    pub remote: RemoteTable,
    pub peers: Mutex<HashMap<Arc<str>, Arc<Peer>, foldhash::fast::RandomState>>,
    pub links: Mutex<HashMap<String, CancellationToken>>,
    pub inbound: Mutex<HashMap<Arc<str>, Inbound>>,
    pub shared_rr: Mutex<HashMap<GroupKey, usize>>,
    pub transport: Arc<dyn Transport>,
    pub tls: Option<MeshTls>,
    pub shutdown: CancellationToken,
    /// Set by a graceful leave: links end instead of reconnecting.
    pub leaving: CancellationToken,
    pub link_tasks: TaskTracker,
    pub tasks: TaskTracker,
    pub epoch: Instant,
    /// The mesh listener's bound address, announced in Hello.
    pub bound: OnceLock<String>,
    pub next_link: std::sync::atomic::AtomicU64,
    /// Links a peer refused for a wrong secret.
    pub auth_refusals: std::sync::atomic::AtomicU64,
    /// Dials that failed below gRPC (refused, TLS handshake, timeout).
    pub connect_failures: std::sync::atomic::AtomicU64,
    /// The peer addresses the source wants dialed now (readiness).
    pub wanted: Mutex<Vec<String>>,
    /// What the last dial of each address gave (readiness).
    pub dials: Mutex<HashMap<String, crate::ready::DialStatus>>,
    /// Sessions handed off by a drain: client id → where they went.
    pub moved: Mutex<HashMap<String, crate::drain::Moved>>,
}

impl Inner {
    pub fn broker(&self) -> Option<Arc<Broker>> {
        self.broker.get().and_then(Weak::upgrade)
    }

    pub fn metrics(&self) -> ClusterMetrics {
        self.metrics.get().cloned().unwrap_or_default()
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.cfg.heartbeat_ms.max(1))
    }

    pub fn peer_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.peer_timeout_ms.max(2))
    }

    /// How long a QoS 1/2 publisher waits for a peer's ack before relying
    /// on the retry buffer.
    pub fn ack_timeout(&self) -> Duration {
        self.peer_timeout().min(Duration::from_secs(2))
    }

    /// The peer named `name`, created (down, empty) on first use.
    pub fn peer(&self, name: &Arc<str>) -> Arc<Peer> {
        let mut peers = self.peers.lock();
        // Known, the usual case (every forwarded message): no key clone.
        if let Some(p) = peers.get(name) {
            return p.clone();
        }
        peers
            .entry(name.clone())
            .or_insert_with(|| {
                Arc::new(Peer {
                    name: name.clone(),
                    state: Mutex::new(PeerState {
                        address: String::new(),
                        up: false,
                        since_ms: now_ms(),
                        down_at: Some(Instant::now()),
                        incarnation: 0,
                        rtt: None,
                        client: None,
                        tx: None,
                        link: None,
                        left: false,
                    }),
                    outbox: Mutex::new(Outbox::new(self.cfg.buffer_max_messages)),
                    notify: Notify::new(),
                })
            })
            .clone()
    }

    pub fn all_peers(&self) -> Vec<Arc<Peer>> {
        self.peers.lock().values().cloned().collect()
    }

    /// Whether some known peer (not one that left) is unreachable.
    pub fn partitioned(&self) -> bool {
        self.all_peers().iter().any(|p| {
            let st = p.state.lock();
            !st.up && !st.left && !st.address.is_empty()
        })
    }

    pub fn refresh_gauges(&self) {
        let m = self.metrics();
        let peers = self.all_peers();
        let up = peers.iter().filter(|p| p.state.lock().up).count();
        let buffered: usize = peers.iter().map(|p| p.outbox.lock().len()).sum();
        m.peers_up.set(up as i64);
        m.buffered_messages.set(buffered as i64);
    }

    /// Starts dialing `addr` unless it is dialed already.
    pub fn dial(self: &Arc<Self>, addr: &str) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let mut links = self.links.lock();
        if links.contains_key(addr) {
            return;
        }
        let stop = self.shutdown.child_token();
        links.insert(addr.to_string(), stop.clone());
        let inner = self.clone();
        let addr = addr.to_string();
        self.link_tasks
            .spawn(async move { crate::link::run(inner, addr, stop).await });
    }

    /// Stops dialing `addr`.
    pub fn undial(&self, addr: &str) {
        if let Some(t) = self.links.lock().remove(addr) {
            t.cancel();
        }
    }

    /// Drops the routes and the buffer of peers unreachable past the grace.
    fn reap(&self) {
        let grace = Duration::from_secs(self.cfg.route_grace_secs);
        let expired: Vec<Arc<str>> = self
            .inbound
            .lock()
            .iter()
            .filter(|(_, i)| i.links == 0 && i.down_at.is_some_and(|t| t.elapsed() >= grace))
            .map(|(n, _)| n.clone())
            .collect();
        for name in expired {
            self.inbound.lock().remove(&name);
            let routes = self.remote.drop_node(&name);
            let peer = self.peers.lock().get(&name).cloned();
            let dropped = peer.map_or(0, |p| {
                if p.state.lock().up {
                    0
                } else {
                    p.outbox.lock().clear()
                }
            });
            self.metrics().dropped_messages.inc_by(dropped as u64);
            warn!(peer = %name, routes, dropped, "peer unreachable past its grace: routes dropped");
        }
        // A peer that left is forgotten once its link is gone.
        let forgotten = {
            let mut peers = self.peers.lock();
            let before = peers.len();
            peers.retain(|_, p| {
                let st = p.state.lock();
                !st.left || st.up
            });
            peers.len() < before
        };
        if forgotten {
            // Cached routes may hold the forgotten peer.
            self.remote.invalidate();
        }
        self.refresh_gauges();
    }
}

/// This node's membership in the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) inner: Arc<Inner>,
}

impl Cluster {
    /// A cluster member that has not started yet: call
    /// [`attach`](Cluster::attach) with the broker, then [`start`](Cluster::start).
    pub fn new(opts: ClusterOptions, transport: Arc<dyn Transport>) -> Result<Cluster> {
        let tls = MeshTls::from_config(&opts.cluster.tls)?;
        let incarnation = opts.incarnation.unwrap_or_else(new_incarnation);
        Ok(Cluster {
            inner: Arc::new(Inner {
                node: Arc::from(opts.node),
                incarnation,
                policy: opts.shared_policy,
                retain_available: opts.retain_available,
                cfg: opts.cluster,
                broker: OnceLock::new(),
                metrics: OnceLock::new(),
                local: Mutex::new(LocalRoutes::new()),
                routes_tx: watch::Sender::new(0),
                remote: RemoteTable::new(),
                peers: Mutex::new(HashMap::default()),
                links: Mutex::new(HashMap::new()),
                inbound: Mutex::new(HashMap::new()),
                shared_rr: Mutex::new(HashMap::new()),
                transport,
                tls,
                shutdown: CancellationToken::new(),
                leaving: CancellationToken::new(),
                link_tasks: TaskTracker::new(),
                tasks: TaskTracker::new(),
                epoch: Instant::now(),
                bound: OnceLock::new(),
                next_link: std::sync::atomic::AtomicU64::new(1),
                auth_refusals: std::sync::atomic::AtomicU64::new(0),
                connect_failures: std::sync::atomic::AtomicU64::new(0),
                wanted: Mutex::new(Vec::new()),
                dials: Mutex::new(HashMap::new()),
                moved: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Plugs the cluster into `broker` (from `Server::start_with`, before
    /// any client is accepted). Returns false if the broker already had one.
    pub fn attach(&self, broker: &Arc<Broker>) -> bool {
        let _ = self.inner.broker.set(Arc::downgrade(broker));
        let _ = self.inner.metrics.set(broker.metrics().cluster.clone());
        {
            let mut local = self.inner.local.lock();
            for (filter, _) in broker.local_routes() {
                local.add(&filter);
            }
            self.inner.routes_tx.send_replace(local.version());
        }
        broker.set_remote(Arc::new(self.clone()))
    }

    /// Binds the mesh listener on `cluster.bind` (or `bind`, if given),
    /// serves it, and dials every address `peers` yields. Returns the bound
    /// address.
    pub async fn start(&self, bind: Option<&str>, peers: Arc<dyn PeerSource>) -> Result<String> {
        let inner = &self.inner;
        let addr = bind.map_or_else(|| inner.cfg.bind.to_string(), str::to_string);
        let (bound, incoming) = inner
            .transport
            .bind(&addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let _ = inner.bound.set(bound.clone());
        crate::service::spawn(inner.clone(), incoming);
        let mut watch = peers.watch();
        let weak = Arc::downgrade(inner);
        let stop = inner.shutdown.clone();
        inner.tasks.spawn(async move {
            let mut previous: Vec<String> = Vec::new();
            loop {
                let wanted = watch.borrow_and_update().clone();
                let Some(inner) = weak.upgrade() else { return };
                inner.wanted.lock().clone_from(&wanted);
                for gone in previous.iter().filter(|a| !wanted.contains(a)) {
                    inner.undial(gone);
                }
                for a in &wanted {
                    inner.dial(a);
                }
                previous = wanted;
                drop(inner);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = watch.changed() => if r.is_err() { return },
                }
            }
        });
        let weak = Arc::downgrade(inner);
        let stop = inner.shutdown.clone();
        inner.tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => match weak.upgrade() {
                        Some(inner) => inner.reap(),
                        None => return,
                    },
                }
            }
        });
        info!(node = %inner.node, incarnation = inner.incarnation, addr = %bound, "cluster mesh listening");
        Ok(bound)
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.inner.incarnation
    }

    /// How many link attempts peers refused for a wrong secret.
    pub fn auth_refusals(&self) -> u64 {
        self.inner
            .auth_refusals
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many dials failed before gRPC (refused, TLS handshake, timeout).
    pub fn connect_failures(&self) -> u64 {
        self.inner
            .connect_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the link to `node` is up.
    pub fn is_up(&self, node: &str) -> bool {
        let peer = self.inner.peers.lock().get(node).cloned();
        peer.is_some_and(|p| p.state.lock().up)
    }

    /// Routes held for `node` (tests, diagnostics).
    pub fn routes_of(&self, node: &str) -> Vec<String> {
        self.inner.remote.routes_of(node)
    }

    /// The incarnation whose routes are held for `node`.
    pub fn route_incarnation(&self, node: &str) -> Option<u64> {
        self.inner.remote.incarnation(node)
    }

    /// Membership as the admin API shows it.
    pub fn show(&self) -> ClusterShow {
        let mut peers: Vec<PeerShow> = self
            .inner
            .all_peers()
            .iter()
            .filter(|p| !p.state.lock().left)
            .map(|p| {
                let st = p.state.lock();
                PeerShow {
                    node: p.name.to_string(),
                    address: st.address.clone(),
                    state: if st.up { "up" } else { "down" }.to_string(),
                    since_ms: st.since_ms,
                    incarnation: st.incarnation,
                    rtt_ms: st.rtt.map(|d| d.as_secs_f64() * 1000.0),
                }
            })
            .collect();
        peers.sort_by(|a, b| a.node.cmp(&b.node));
        ClusterShow {
            node: self.inner.node.to_string(),
            incarnation: self.inner.incarnation,
            peers,
        }
    }

    /// Stops every task at once (a crash, as far as peers can tell).
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.shutdown.cancel();
        inner.link_tasks.close();
        inner.tasks.close();
        inner.link_tasks.wait().await;
        inner.tasks.wait().await;
    }
}
