//! The seam between this node and the cluster. The broker hands every
//! message it publishes to [`RemoteRoutes::forward`], tells it when local
//! subscriptions change, and asks it to [`claim`](RemoteRoutes::claim) a
//! client id before accepting a CONNECT. A single node uses [`LocalOnly`];
//! the cluster layer implements the trait and calls back into the broker's
//! `deliver_forwarded`, `apply_retained` and `take_session`.

use crate::admin::{AdminQuery, PeerReply};
use crate::auth::BoxFuture;
use crate::session::{Message, SessionData};
use crate::trie::{ClientId, SharedMatch};
use std::cell::Cell;
use std::sync::Arc;

thread_local! {
    /// Inside [`batched`] on this thread.
    static BATCHED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (synchronous: a connection handling what one read brought) as
/// one batch of publishes: a [`RemoteRoutes`] implementation may stage
/// what [`RemoteRoutes::forward`] hands it meanwhile and send it all at
/// [`RemoteRoutes::flush`], which the caller must call right after (one
/// lock, one wake-up and one count per peer and batch, not per message).
pub fn batched<R>(f: impl FnOnce() -> R) -> R {
    /// Restores the flag even if `f` unwinds.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            BATCHED.set(self.0);
        }
    }
    let _restore = Restore(BATCHED.replace(true));
    f()
}

/// Whether this thread is inside [`batched`]: forwards may be staged
/// until [`RemoteRoutes::flush`].
pub fn batching() -> bool {
    BATCHED.get()
}

/// An operation the cluster may refuse while it is partitioned (for users
/// who prefer consistency, like VerneMQ's `allow_*_during_netsplit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Accepting a CONNECT.
    Register,
    /// Accepting a PUBLISH.
    Publish,
    /// Accepting a SUBSCRIBE.
    Subscribe,
}

/// The cluster could not decide (a peer that must be asked is unreachable
/// and the configuration prefers consistency).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster unavailable: {0}")]
pub struct Unavailable(pub String);

/// Remote delivery and cluster-wide session ownership.
pub trait RemoteRoutes: Send + Sync + 'static {
    /// Forwards `msg` to every other node with a matching route.
    ///
    /// `local_shared` lists the shared groups that have members on this
    /// node for `msg`'s topic; the implementation picks one member node per
    /// group cluster-wide and sets `deliver_locally[i] = false` for each
    /// local group it sends elsewhere (all are `true` on entry).
    ///
    /// The returned future completes once every target node holds the
    /// message (or it sits in the bounded retry buffer of an unreachable
    /// one); the publisher's PUBACK/PUBREC waits on it. `None`: nothing to wait for.
    fn forward(
        &self,
        msg: &Arc<Message>,
        local_shared: &[SharedMatch],
        deliver_locally: &mut [bool],
    ) -> Option<BoxFuture<'static, ()>>;

    /// Sends what [`forward`](RemoteRoutes::forward) staged on this thread
    /// inside [`batched`]. Called after every batch; a no-op when nothing
    /// was staged.
    fn flush(&self) {}

    /// A local session subscribed to `filter` (as subscribed, `$share/…` included).
    fn route_added(&self, _filter: &str, _client: &ClientId) {}

    /// A local session's subscription to `filter` ended.
    fn route_removed(&self, _filter: &str, _client: &ClientId) {}

    /// Before a CONNECT is accepted here: every other node closes its
    /// connection for `client_id` (DISCONNECT 0x8E) and hands its session
    /// over (`clean_start == false`) or discards it. Returns the session
    /// moved from another node, if any.
    fn claim(
        &self,
        _client_id: &ClientId,
        _clean_start: bool,
    ) -> BoxFuture<'static, Result<Option<SessionData>, Unavailable>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Whether `op` is allowed now (false only while partitioned, and only
    /// if configured so).
    fn allows(&self, _op: Operation) -> bool {
        true
    }

    /// The cluster's membership as the admin API shows it; `None` for a
    /// single node.
    fn show(&self) -> Option<crate::admin::ClusterShow> {
        None
    }

    /// Sends a management query to every other known node and collects
    /// their answers; a peer that is down or does not answer in time is
    /// listed with the reason, never waited for beyond that. A single node
    /// has no peers.
    fn admin(&self, _query: &AdminQuery) -> BoxFuture<'static, Vec<PeerReply>> {
        Box::pin(std::future::ready(Vec::new()))
    }
}

/// No other nodes.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalOnly;

impl RemoteRoutes for LocalOnly {
    fn forward(
        &self,
        _msg: &Arc<Message>,
        _shared: &[SharedMatch],
        _local: &mut [bool],
    ) -> Option<BoxFuture<'static, ()>> {
        None
    }
}
