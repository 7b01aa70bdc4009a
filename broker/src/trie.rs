//! The subscription table: topic filter → subscribers, with `+`, `#`, the
//! `$`-topic rule and shared-subscription groups. Thread-safe through
//! `&self`; sharded so that no single lock serialises the publish path.
//!
//! Layout:
//! - Filters without wildcards (the common case) live in a sharded hash map
//!   keyed by the whole filter: matching them is one lookup of the topic.
//! - Filters with a wildcard live in level trees, sharded by their first
//!   level; filters whose first level is `+` or `#` share one extra tree,
//!   which a `$` topic never visits (§4.7.2).
//! - Wildcard filters deeper than [`MAX_TREE_DEPTH`] levels sit in a map
//!   checked filter by filter, so tree recursion stays shallow.
//!
//! Matching a topic therefore takes at most four read locks, one after the
//! other (never nested), and skips trees that hold nothing. Shared
//! subscriptions are stored beside the direct ones of their inner filter.

mod node;
mod slot;
#[cfg(test)]
mod tests;

use crate::codec::SubOptions;
use crate::topic::parse_shared;
use dashmap::DashMap;
use node::{split_level, Node};
use parking_lot::RwLock;
use slot::Slot;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// The tables' hasher: foldhash with a random per-map seed. Topic lookups
/// are on every PUBLISH; SipHash was ~4 % of a forwarding node's CPU.
type FastState = foldhash::fast::RandomState;

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

/// Default number of tree shards for filters with a literal first level.
const DEFAULT_SHARDS: usize = 32;

/// Wildcard filters with more levels than this are kept out of the trees
/// (tree walks recurse once per level, and a 64 KiB filter can have 65k
/// levels: a stack overflow on a publish path thread). Real filters are far
/// shallower; the rare deep ones are checked one by one.
pub const MAX_TREE_DEPTH: usize = 64;

/// One tree of wildcard filters and how many subscriptions it holds.
/// Aligned so that read-locking one shard does not bounce the cache line
/// holding a neighbour's lock word.
#[derive(Default)]
#[repr(align(128))]
struct Shard {
    root: RwLock<Node>,
    /// Lets `matches` skip an empty shard without touching its lock.
    subs: AtomicUsize,
}

impl Shard {
    fn collect(&self, topic: &str, out: &mut Matches) {
        if self.subs.load(Relaxed) != 0 {
            self.root.read().collect(Some(topic), out);
        }
    }
}

/// Wildcard filters deeper than the trees allow, by plain filter.
#[derive(Default)]
struct Deep {
    filters: RwLock<HashMap<Box<str>, Slot>>,
    subs: AtomicUsize,
}

impl Deep {
    fn collect(&self, topic: &str, out: &mut Matches) {
        if self.subs.load(Relaxed) != 0 {
            for (filter, slot) in self.filters.read().iter() {
                // `topic::matches` is iterative and applies the `$` rule.
                if crate::topic::matches(filter, topic) {
                    slot.collect(out);
                }
            }
        }
    }
}

/// The subscription table.
pub struct SubscriptionTable {
    /// Filters without wildcards, by filter.
    exact: DashMap<Box<str>, Slot, FastState>,
    /// Wildcard filters with a literal first level, by hash of that level.
    shards: Box<[Shard]>,
    /// Wildcard filters whose first level is `+` or `#`.
    wild: Shard,
    /// Wildcard filters with more than `max_depth` levels.
    deep: Deep,
    max_depth: usize,
    hasher: FastState,
    len: AtomicUsize,
}

impl Default for SubscriptionTable {
    fn default() -> Self {
        Self::new()
    }
}

impl SubscriptionTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::with_shards(DEFAULT_SHARDS)
    }

    /// An empty table with `shards` (rounded up to a power of two, at least
    /// 1) trees for wildcard filters with a literal first level.
    pub fn with_shards(shards: usize) -> Self {
        Self::with_limits(shards, MAX_TREE_DEPTH)
    }

    /// Like [`Self::with_shards`], keeping wildcard filters of more than
    /// `max_depth` levels (clamped to 1..=[`MAX_TREE_DEPTH`]) out of the trees.
    /// Lowering it is for tests of the deep-filter path.
    #[doc(hidden)]
    pub fn with_limits(shards: usize, max_depth: usize) -> Self {
        let n = shards.max(1).next_power_of_two();
        SubscriptionTable {
            exact: DashMap::with_hasher(FastState::default()),
            shards: (0..n).map(|_| Shard::default()).collect(),
            wild: Shard::default(),
            deep: Deep::default(),
            max_depth: max_depth.clamp(1, MAX_TREE_DEPTH),
            hasher: FastState::default(),
            len: AtomicUsize::new(0),
        }
    }

    /// True if wildcard filter `filter` is too deep for the trees.
    fn is_deep(&self, filter: &str) -> bool {
        filter.bytes().filter(|&b| b == b'/').count() >= self.max_depth
    }

    /// The tree holding `filter`, a plain filter with a wildcard.
    fn shard_for_filter(&self, filter: &str) -> &Shard {
        match split_level(filter).0 {
            "+" | "#" => &self.wild,
            first => self.shard_for_level(first),
        }
    }

    fn shard_for_level(&self, first: &str) -> &Shard {
        // The shard count is a power of two, so masking picks uniformly.
        let i = self.hasher.hash_one(first) as usize & (self.shards.len() - 1);
        &self.shards[i]
    }

    /// Adds or replaces `client`'s subscription to `filter` (a validated
    /// filter, possibly `$share/g/f`). Returns true if it did not exist.
    pub fn subscribe(&self, filter: &str, client: &ClientId, entry: SubEntry) -> bool {
        let (group, plain) = split_shared(filter);
        let new = if is_exact(plain) {
            // Look up first so that an existing filter costs no key allocation.
            if let Some(mut slot) = self.exact.get_mut(plain) {
                slot.insert(group, plain, client, entry)
            } else {
                let mut slot = self.exact.entry(plain.into()).or_default();
                slot.insert(group, plain, client, entry)
            }
        } else if self.is_deep(plain) {
            let mut filters = self.deep.filters.write();
            let slot = filters.entry(plain.into()).or_default();
            let new = slot.insert(group, plain, client, entry);
            if new {
                self.deep.subs.fetch_add(1, Relaxed);
            }
            new
        } else {
            let shard = self.shard_for_filter(plain);
            let mut root = shard.root.write();
            let new = root.slot_mut(plain).insert(group, plain, client, entry);
            if new {
                shard.subs.fetch_add(1, Relaxed);
            }
            new
        };
        if new {
            self.len.fetch_add(1, Relaxed);
        }
        new
    }

    /// Removes `client`'s subscription to `filter` (the same string it
    /// subscribed with). Returns true if it existed. Nodes and map entries
    /// left without subscriptions are freed.
    pub fn unsubscribe(&self, filter: &str, client: &ClientId) -> bool {
        let (group, plain) = split_shared(filter);
        let mut remove = |slot: &mut Slot| slot.remove(group, client);
        let hit = if is_exact(plain) {
            let (hit, empty) = match self.exact.get_mut(plain) {
                Some(mut slot) => (remove(&mut slot), slot.is_empty()),
                None => (false, false),
            };
            if empty {
                // Re-checked under the shard lock: someone may have subscribed since.
                self.exact.remove_if(plain, |_, slot| slot.is_empty());
            }
            hit
        } else if self.is_deep(plain) {
            let mut filters = self.deep.filters.write();
            let Some(slot) = filters.get_mut(plain) else {
                return false;
            };
            let hit = remove(slot);
            if slot.is_empty() {
                filters.remove(plain);
            }
            if hit {
                self.deep.subs.fetch_sub(1, Relaxed);
            }
            hit
        } else {
            let shard = self.shard_for_filter(plain);
            let hit = shard.root.write().remove(Some(plain), &mut remove);
            if hit {
                shard.subs.fetch_sub(1, Relaxed);
            }
            hit
        };
        if hit {
            self.len.fetch_sub(1, Relaxed);
        }
        hit
    }

    /// Appends every subscription matching `topic` (a valid topic name) to `out`.
    pub fn matches(&self, topic: &str, out: &mut Matches) {
        if let Some(slot) = self.exact.get(topic) {
            slot.collect(out);
        }
        // Filters starting with `+` or `#` never match a `$` topic (§4.7.2).
        if !topic.starts_with('$') {
            self.wild.collect(topic, out);
        }
        self.shard_for_level(split_level(topic).0)
            .collect(topic, out);
        self.deep.collect(topic, out);
    }

    /// Number of (filter, client) subscriptions.
    pub fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// True if there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of internal nodes (exact-map entries, tree nodes below the
    /// shard roots, `#` slots): zero once every subscription is gone. For
    /// tests and leak diagnostics; takes every shard lock in turn.
    #[doc(hidden)]
    pub fn node_count(&self) -> usize {
        let trees: usize = self
            .shards
            .iter()
            .chain([&self.wild])
            .map(|s| s.root.read().count())
            .sum();
        self.exact.len() + trees + self.deep.filters.read().len()
    }
}

/// `(Some(group), filter)` for `$share/{group}/{filter}`, else `(None, filter)`.
fn split_shared(filter: &str) -> (Option<&str>, &str) {
    match parse_shared(filter) {
        Some((group, plain)) => (Some(group), plain),
        None => (None, filter),
    }
}

/// True if a valid plain filter has no wildcard level.
fn is_exact(filter: &str) -> bool {
    !filter.contains(['+', '#'])
}
