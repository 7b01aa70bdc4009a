//! The subscription table: topic filter → subscribers, with `+`, `#`, the
//! `$`-topic rule and shared-subscription groups. Thread-safe through
//! `&self`; sharded so that no single lock serialises the publish path.

use crate::codec::SubOptions;
use std::sync::Arc;

/// A session's key in the table: its client identifier.
pub type ClientId = Arc<str>;

/// What one subscription asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubEntry {
    /// QoS, no-local, retain-as-published, retain handling.
    pub options: SubOptions,
    /// 5.0 subscription identifier.
    pub identifier: Option<u32>,
}

/// One shared-subscription group that matched a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMatch {
    /// Group name.
    pub group: Arc<str>,
    /// The filter inside `$share/{group}/{filter}`.
    pub filter: Arc<str>,
    /// Every member of the group for this filter.
    pub members: Vec<(ClientId, SubEntry)>,
}

/// Result of matching a topic.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Matches {
    /// Ordinary subscriptions; a client appears once per matching filter.
    pub direct: Vec<(ClientId, SubEntry)>,
    /// Shared groups, one entry per (group, filter).
    pub shared: Vec<SharedMatch>,
}

impl Matches {
    /// Empties both lists, keeping their capacity.
    pub fn clear(&mut self) {
        self.direct.clear();
        self.shared.clear();
    }
}

/// The subscription table.
#[derive(Default)]
pub struct SubscriptionTable {}

impl SubscriptionTable {
    /// An empty table.
    pub fn new() -> Self {
        unimplemented!()
    }

    /// Adds or replaces `client`'s subscription to `filter` (a validated
    /// filter, possibly `$share/g/f`). Returns true if it did not exist.
    pub fn subscribe(&self, filter: &str, client: &ClientId, entry: SubEntry) -> bool {
        let _ = (filter, client, entry);
        unimplemented!()
    }

    /// Removes `client`'s subscription to `filter`. Returns true if it existed.
    pub fn unsubscribe(&self, filter: &str, client: &ClientId) -> bool {
        let _ = (filter, client);
        unimplemented!()
    }

    /// Appends every subscription matching `topic` (a valid topic name) to `out`.
    pub fn matches(&self, topic: &str, out: &mut Matches) {
        let _ = (topic, out);
        unimplemented!()
    }

    /// Number of (filter, client) subscriptions.
    pub fn len(&self) -> usize {
        unimplemented!()
    }

    /// True if there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
