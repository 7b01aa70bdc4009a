//! The seam between local routing and the cluster: after matching local
//! subscriptions, the broker hands every message to [`RemoteRoutes`], and
//! tells it when a local session's subscriptions change. A single node
//! uses [`LocalOnly`]; the cluster layer plugs in its route table here.

use crate::auth::BoxFuture;
use crate::session::Message;
use crate::trie::ClientId;
use std::sync::Arc;

/// Remote delivery of messages published on this node.
pub trait RemoteRoutes: Send + Sync + 'static {
    /// Forwards `msg` to every other node with a matching route. The
    /// returned future completes once every target node holds the message;
    /// the publisher's PUBACK/PUBREC waits on it for QoS 1 and 2. `None`
    /// means nothing to wait for.
    fn forward(&self, msg: &Arc<Message>) -> Option<BoxFuture<'static, ()>>;

    /// A local session subscribed to `filter` (as subscribed, `$share/…` included).
    fn route_added(&self, _filter: &str, _client: &ClientId) {}

    /// A local session's subscription to `filter` ended.
    fn route_removed(&self, _filter: &str, _client: &ClientId) {}
}

/// No other nodes.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalOnly;

impl RemoteRoutes for LocalOnly {
    fn forward(&self, _msg: &Arc<Message>) -> Option<BoxFuture<'static, ()>> {
        None
    }
}
