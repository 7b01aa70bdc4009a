//! The node's shared state: the session registry (takeover, expiry,
//! export/import), the subscription table, retained messages, wills, and
//! the publish path: local matching plus [`RemoteRoutes`].
//!
//! Locking: every session has its own mutex; there is no lock shared by all
//! publishes. Order is always registry shard → session → table shard, and
//! the publish path never holds two of them at once.

use crate::auth::{AllowAll, AnonymousAuth, Authenticator, Authorizer};
use crate::config::Config;
use crate::knobs::Knobs;
use crate::metrics::Metrics;
use crate::retained::RetainedStore;
use crate::routes::{LocalOnly, RemoteRoutes};
use crate::session::{now_ms, Message, SessionData, Will};
use crate::store::track::Track;
use crate::store::{NoStore, Store};
use crate::trie::{ClientId, Matches, SubEntry, SubscriptionTable};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use parking_lot::Mutex;
use std::cell::RefCell;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

mod fanout;
mod manage;
mod publish;
mod restore;
mod stats;
mod transfer;

pub use fanout::Fanout;
pub use restore::Restored;
pub use stats::SessionStats;

use transfer::housekeeping;

/// A session shared between its connection and the publishers feeding it.
pub struct SessionCell {
    /// Client identifier.
    pub client_id: ClientId,
    pub(crate) state: Mutex<SessionState>,
    /// Wakes the connection when the queue grows.
    pub(crate) notify: Notify,
    /// Cheap "has a connection" flag for shared-subscription picks.
    online: AtomicBool,
    /// Set while `state.parked` holds a hibernated connection.
    pub(crate) parked: AtomicBool,
}

pub(crate) struct SessionState {
    pub data: SessionData,
    /// The connection that owns the session, if any.
    pub owner: Option<Owner>,
    /// Replaced by a clean start, or expired: its connection must stop.
    pub ended: bool,
    /// When the last connection left (ms since epoch; never 0, so the
    /// option costs no tag).
    pub offline_since: Option<NonZeroU64>,
    /// When the current connection attached (ms since epoch).
    pub connected_at: u64,
    /// What of the session is in the durable store (`None`: no store).
    pub(crate) track: Option<Box<Track>>,
    /// The current (or last) connection, as the admin API shows it.
    pub conn: Option<ConnMeta>,
    /// The owner a management request disconnected (its connection closes
    /// with 0x98 administrative action rather than 0x8E).
    pub admin_kick: Option<NonZeroU64>,
    /// The owner's connection, while it hibernates.
    pub(crate) parked: Option<Box<crate::connection::Parked>>,
}

/// What the admin API shows of a session's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnMeta {
    /// The authenticated user name.
    pub username: Option<Arc<str>>,
    /// The client's address (forwarded by a PROXY header, if any).
    pub peer: PeerAddr,
    /// The listener it came through (one byte, where a name took 16).
    pub listener: crate::connection::ListenerKind,
    /// Protocol level: 3 (3.1), 4 (3.1.1) or 5.
    pub protocol: u8,
    /// The CONNECT's clean start / clean session flag.
    pub clean_start: bool,
}

/// A client's address as the admin API shows it: IP and port in 20 bytes,
/// where a `SocketAddr` takes 32 (an IPv6 address's flow info and scope id
/// are not shown). Every session keeps one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr {
    /// The IP address.
    pub ip: std::net::IpAddr,
    /// The port.
    pub port: u16,
}

impl From<std::net::SocketAddr> for PeerAddr {
    fn from(a: std::net::SocketAddr) -> PeerAddr {
        PeerAddr {
            ip: a.ip(),
            port: a.port(),
        }
    }
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::net::SocketAddr::new(self.ip, self.port).fmt(f)
    }
}

pub(crate) struct Owner {
    /// Never 0, so `Option<Owner>` costs no tag.
    pub id: NonZeroU64,
    /// Cancelled when another connection takes the session over; `None`
    /// while the connection hibernates (it is resumed instead, see
    /// `SessionState::take_parked`).
    pub kick: Option<CancellationToken>,
}

impl Owner {
    /// Tells the owner's live connection to stop (a hibernated one has no
    /// token: the caller resumes it).
    pub(crate) fn kick(&self) {
        if let Some(k) = &self.kick {
            k.cancel();
        }
    }
}

impl SessionCell {
    fn new(data: SessionData, store: &Arc<dyn Store>) -> Arc<SessionCell> {
        SessionCell::with_track(Track::new(store, data.queue.len()), data)
    }

    pub(crate) fn with_track(track: Option<Box<Track>>, data: SessionData) -> Arc<SessionCell> {
        Arc::new(SessionCell {
            client_id: data.client_id.clone(),
            state: Mutex::new(SessionState {
                track,
                data,
                owner: None,
                ended: false,
                offline_since: NonZeroU64::new(now_ms()),
                connected_at: 0,
                conn: None,
                admin_kick: None,
                parked: None,
            }),
            notify: Notify::new(),
            online: AtomicBool::new(false),
            parked: AtomicBool::new(false),
        })
    }

    /// A copy of the session's exportable state, its whole queue
    /// included (messages spilled to the store are read back).
    pub fn export(&self) -> SessionData {
        self.state.lock().export()
    }

    /// True while a connection owns the session.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }
}

/// A connection's claim on a session, from [`Broker::attach`].
pub struct Attached {
    /// The session.
    pub cell: Arc<SessionCell>,
    /// CONNACK's session-present flag.
    pub session_present: bool,
    /// This connection's owner id.
    pub owner_id: u64,
    /// Cancelled if another connection takes the session over.
    pub kicked: CancellationToken,
}

/// How a connection ended, for the will and the session's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// DISCONNECT with reason 0: the will is discarded.
    Normal,
    /// DISCONNECT 0x04, a dropped socket, a protocol error or a keep-alive
    /// timeout: the will is published (after its delay).
    Abnormal,
    /// Another connection took the session over: the will is published
    /// only if it has no delay (the new connection cancels delayed ones).
    TakenOver,
    /// The server is shutting down: the session stays for the client's
    /// return (here or on another node); no will.
    Shutdown,
}

thread_local! {
    // Reused per thread so that matching allocates nothing in steady state.
    static MATCHES: RefCell<Matches> = RefCell::new(Matches::default());
}

/// Shared state of one broker node.
pub struct Broker {
    config: Arc<Config>,
    metrics: Metrics,
    /// foldhash, randomly seeded per map: looked up on every delivery.
    sessions: DashMap<ClientId, Arc<SessionCell>, foldhash::fast::RandomState>,
    subs: SubscriptionTable,
    retained: RetainedStore<Arc<Message>>,
    remote: OnceLock<Arc<dyn RemoteRoutes>>,
    node: Arc<str>,
    auth: Arc<dyn Authenticator>,
    authz: Arc<dyn Authorizer>,
    pending_wills: DashMap<ClientId, CancellationToken>,
    shared_rr: DashMap<(Arc<str>, Arc<str>), AtomicUsize>,
    next_owner: AtomicU64,
    store: Arc<dyn Store>,
    knobs: Knobs,
    listeners: OnceLock<crate::admin::Listeners>,
    status_sampler: OnceLock<crate::admin::status::Sampler>,
}

impl Broker {
    /// A broker with no sessions, anonymous access as configured, no ACL
    /// and no peers (files named under `[auth]` are loaded by the server,
    /// through [`with_parts`](Broker::with_parts)).
    pub fn new(config: Arc<Config>, metrics: Metrics) -> Arc<Broker> {
        let auth = Arc::new(AnonymousAuth {
            allow_anonymous: config.auth.allow_anonymous,
        });
        Broker::with_parts(config, metrics, auth, Arc::new(AllowAll))
    }

    /// A broker with the given authenticator and authorizer. Starts the
    /// housekeeping task (session expiry) when called inside a runtime.
    pub fn with_parts(
        config: Arc<Config>,
        metrics: Metrics,
        auth: Arc<dyn Authenticator>,
        authz: Arc<dyn Authorizer>,
    ) -> Arc<Broker> {
        Broker::with_store(config, metrics, auth, authz, Arc::new(NoStore))
    }

    /// A broker writing its durable state to `store` (recovered state is
    /// installed with [`restore`](Broker::restore) before clients are served).
    pub fn with_store(
        config: Arc<Config>,
        metrics: Metrics,
        auth: Arc<dyn Authenticator>,
        authz: Arc<dyn Authorizer>,
        store: Arc<dyn Store>,
    ) -> Arc<Broker> {
        let broker = Arc::new(Broker {
            node: Arc::from(config.node_name()),
            knobs: Knobs::new(&config),
            listeners: OnceLock::new(),
            status_sampler: OnceLock::new(),
            config,
            metrics,
            sessions: DashMap::with_hasher(Default::default()),
            subs: SubscriptionTable::new(),
            retained: RetainedStore::new(),
            remote: OnceLock::new(),
            auth,
            authz,
            pending_wills: DashMap::new(),
            shared_rr: DashMap::new(),
            next_owner: AtomicU64::new(0),
            store,
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(housekeeping(Arc::downgrade(&broker)));
        }
        broker
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The runtime knobs (`POST /api/v1/set`).
    pub fn knobs(&self) -> &Knobs {
        &self.knobs
    }

    /// Registers the client listeners (once, by the server), for the admin API.
    pub fn set_listeners(&self, listeners: crate::admin::Listeners) {
        let _ = self.listeners.set(listeners);
    }

    /// Registers the status page's rate sampler, so that peers asking over
    /// the mesh get this node's numbers (first registration wins).
    pub fn set_status_sampler(&self, sampler: crate::admin::status::Sampler) {
        let _ = self.status_sampler.set(sampler);
    }

    /// The status page's rate sampler, if the admin listener runs.
    pub fn status_sampler(&self) -> Option<&crate::admin::status::Sampler> {
        self.status_sampler.get()
    }

    /// The client listeners, if a server registered them.
    pub fn listeners(&self) -> Option<&crate::admin::Listeners> {
        self.listeners.get()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The durable store ([`NoStore`] unless `storage.dir` is set).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The authenticator.
    pub fn auth(&self) -> &dyn Authenticator {
        &*self.auth
    }

    /// The authorizer.
    pub fn authz(&self) -> &dyn Authorizer {
        &*self.authz
    }

    /// Attaches the cluster. Once only, before clients are served; returns
    /// false if remote routes were already set.
    pub fn set_remote(&self, remote: Arc<dyn RemoteRoutes>) -> bool {
        self.remote.set(remote).is_ok()
    }

    /// The remote routes in force ([`LocalOnly`] until a cluster is attached).
    pub fn remote(&self) -> &dyn RemoteRoutes {
        static LOCAL: LocalOnly = LocalOnly;
        match self.remote.get() {
            Some(r) => &**r,
            None => &LOCAL,
        }
    }

    /// This node's name.
    pub fn node_name(&self) -> &Arc<str> {
        &self.node
    }

    /// Number of sessions, online and offline.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The session of `client_id`, if any.
    pub fn session(&self, client_id: &str) -> Option<Arc<SessionCell>> {
        self.sessions.get(client_id).map(|e| e.value().clone())
    }

    /// Claims the session of `client_id` for a new connection: takes it
    /// over from a live connection (kicking it), discards it on clean start,
    /// or resumes it. Cancels a pending delayed will.
    pub fn attach(&self, client_id: &ClientId, clean_start: bool) -> Attached {
        self.attach_with(client_id, clean_start, CancellationToken::new())
    }

    /// [`attach`](Self::attach) with the token to cancel when the session
    /// is taken over: a connection passes one it already waits on (a child
    /// of the server's shutdown token), so it needs no second one.
    pub fn attach_with(
        &self,
        client_id: &ClientId,
        clean_start: bool,
        kicked: CancellationToken,
    ) -> Attached {
        if let Some((_, token)) = self.pending_wills.remove(client_id) {
            token.cancel();
        }
        let id = NonZeroU64::MIN.saturating_add(self.next_owner.fetch_add(1, Ordering::Relaxed));
        let owner_id = id.get();
        let owner = Owner {
            id,
            kick: Some(kicked.clone()),
        };
        let (cell, session_present) = match self.sessions.entry(client_id.clone()) {
            Entry::Occupied(mut e) => {
                let old = e.get().clone();
                let mut st = old.state.lock();
                if let Some(prev) = st.owner.take() {
                    prev.kick();
                    st.resume_parked(&old);
                }
                if clean_start || st.ended {
                    st.ended = true;
                    self.drop_subscriptions(&mut st.data);
                    st.save();
                    drop(st);
                    old.online.store(false, Ordering::Relaxed);
                    let cell = SessionCell::new(SessionData::new(client_id.clone()), &self.store);
                    e.insert(cell.clone());
                    (cell, false)
                } else {
                    st.owner = Some(owner);
                    st.offline_since = None;
                    st.connected_at = now_ms();
                    st.save();
                    drop(st);
                    old.online.store(true, Ordering::Relaxed);
                    return Attached {
                        cell: old,
                        session_present: true,
                        owner_id,
                        kicked,
                    };
                }
            }
            Entry::Vacant(v) => {
                let cell = SessionCell::new(SessionData::new(client_id.clone()), &self.store);
                v.insert(cell.clone());
                self.metrics.sessions.inc();
                (cell, false)
            }
        };
        {
            let mut st = cell.state.lock();
            st.owner = Some(owner);
            st.offline_since = None;
            st.connected_at = now_ms();
        }
        cell.online.store(true, Ordering::Relaxed);
        Attached {
            cell,
            session_present,
            owner_id,
            kicked,
        }
    }

    /// The connection `owner_id` of `cell` ended as `kind`, holding `will`
    /// (the will is the connection's: a session taken over keeps the new
    /// connection's). Publishes or schedules the will, and ends a session
    /// whose expiry is 0.
    pub fn detach(
        self: &Arc<Self>,
        cell: &Arc<SessionCell>,
        owner_id: u64,
        kind: CloseKind,
        will: Option<Will>,
    ) {
        let will = match kind {
            CloseKind::Abnormal | CloseKind::TakenOver => will,
            CloseKind::Normal | CloseKind::Shutdown => None,
        };
        let (expiry, ended) = {
            let mut st = cell.state.lock();
            if st.owner.as_ref().is_none_or(|o| o.id.get() != owner_id) {
                // Taken over: a new connection is present, so only an
                // undelayed will goes out.
                drop(st);
                if let Some(w) = will.filter(|w| w.delay == 0) {
                    self.publish(Arc::new(w.to_message()));
                }
                return;
            }
            st.owner = None;
            st.data.will = None;
            cell.online.store(false, Ordering::Relaxed);
            let expiry = st.data.expiry_interval;
            let ended = expiry == 0;
            if ended {
                st.ended = true;
                self.drop_subscriptions(&mut st.data);
            } else {
                st.offline_since = NonZeroU64::new(now_ms());
            }
            st.save();
            (expiry, ended)
        };
        if ended
            && self
                .sessions
                .remove_if(&cell.client_id, |_, v| Arc::ptr_eq(v, cell))
                .is_some()
        {
            self.metrics.sessions.dec();
        }
        if let Some(w) = will {
            // The will goes out at the earlier of its delay and the session's end.
            let delay = w.delay.min(expiry);
            if delay == 0 {
                self.publish(Arc::new(w.to_message()));
            } else {
                self.schedule_will(cell.client_id.clone(), w, delay);
            }
        }
    }

    fn schedule_will(self: &Arc<Self>, client: ClientId, will: Will, delay_secs: u32) {
        let token = CancellationToken::new();
        if let Some(old) = self.pending_wills.insert(client.clone(), token.clone()) {
            old.cancel();
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_secs(u64::from(delay_secs))) => {
                    if let Some(b) = weak.upgrade() {
                        b.pending_wills.remove_if(&client, |_, t| t.is_cancelled() || std::ptr::eq(t, &token));
                        b.publish(Arc::new(will.to_message()));
                    }
                }
            }
        });
    }

    /// Removes every subscription of a session from the table.
    fn drop_subscriptions(&self, data: &mut SessionData) {
        for filter in data.subscriptions.keys() {
            if self.subs.unsubscribe(filter, &data.client_id) {
                self.metrics.subscriptions.dec();
                self.remote().route_removed(filter, &data.client_id);
            }
        }
        data.subscriptions.clear();
    }

    /// Adds a subscription of `cell`'s session. Returns whether it is new,
    /// or `None` if the session has ended (taken over by a clean start).
    pub fn subscribe(
        &self,
        cell: &SessionCell,
        owner_id: u64,
        filter: &str,
        entry: SubEntry,
    ) -> Option<bool> {
        let mut st = cell.state.lock();
        if st.ended || st.owner.as_ref().is_none_or(|o| o.id.get() != owner_id) {
            return None;
        }
        st.data
            .subscriptions
            .insert(filter.to_owned(), entry.clone());
        st.save();
        let new = self.subs.subscribe(filter, &cell.client_id, entry);
        if new {
            self.metrics.subscriptions.inc();
            self.remote().route_added(filter, &cell.client_id);
        }
        Some(new)
    }

    /// Removes a subscription; true if it existed.
    pub fn unsubscribe(&self, cell: &SessionCell, owner_id: u64, filter: &str) -> bool {
        let mut st = cell.state.lock();
        if st.ended || st.owner.as_ref().is_none_or(|o| o.id.get() != owner_id) {
            return false;
        }
        let existed = st.data.subscriptions.remove(filter).is_some();
        st.save();
        if self.subs.unsubscribe(filter, &cell.client_id) {
            self.metrics.subscriptions.dec();
            self.remote().route_removed(filter, &cell.client_id);
        }
        existed
    }
}

/// Runs `f` with a cleared, reused match buffer (a fresh one if the
/// thread's buffer is already in use, e.g. by a re-entrant call).
pub(crate) fn with_matches<R>(f: impl FnOnce(&mut Matches) -> R) -> R {
    MATCHES.with(|cell| match cell.try_borrow_mut() {
        Ok(mut m) => {
            m.clear();
            f(&mut m)
        }
        Err(_) => f(&mut Matches::default()),
    })
}

#[cfg(test)]
mod spill_tests;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod size_guard {
    use super::*;

    /// Every session holds a cell, idle ones included: its `Arc` allocation
    /// (the cell plus two counters) is the largest part of an idle
    /// connection's memory.
    #[test]
    fn session_cell_stays_small() {
        use std::mem::size_of;
        println!(
            "SessionCell {} (state {}, data {}, conn meta {}, owner {}, notify {})",
            size_of::<SessionCell>(),
            size_of::<SessionState>(),
            size_of::<SessionData>(),
            size_of::<Option<ConnMeta>>(),
            size_of::<Option<Owner>>(),
            size_of::<Notify>(),
        );
        let size = size_of::<SessionCell>();
        // 312 + the Arc's counters fill a 336-byte malloc chunk exactly.
        assert!(size <= 312, "SessionCell grew to {size} bytes");
    }
}
