//! The routes of every other node: a [`SubscriptionTable`] whose "client
//! ids" are node names (shared routes stored as `$share/group/filter`),
//! plus, per owner, the incarnation and route version last applied so that
//! a gap in the deltas is noticed and a restarted node's routes replace
//! its old ones.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tern_broker::codec::{QoS, SubOptions};
use tern_broker::topic;
use tern_broker::trie::{Matches, SubEntry, SubscriptionTable};

/// Outcome of applying a delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied (or already known).
    Ok,
    /// The version does not follow the last one: ask for a snapshot.
    Gap,
}

#[derive(Debug, Default)]
struct Owner {
    incarnation: u64,
    version: u64,
    filters: HashSet<String>,
}

/// Routes of other nodes.
pub struct RemoteTable {
    table: SubscriptionTable,
    owners: Mutex<HashMap<Arc<str>, Owner>>,
    /// Changes with every change of the routes (see
    /// [`RemoteTable::generation`]).
    generation: AtomicU64,
}

/// Source of generations: unique across tables, so that a generation
/// names one state of one table (several nodes may share a process).
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, Ordering::Relaxed)
}

impl Default for RemoteTable {
    fn default() -> Self {
        RemoteTable::new()
    }
}

fn entry() -> SubEntry {
    SubEntry {
        options: SubOptions {
            qos: QoS::ExactlyOnce,
            ..SubOptions::default()
        },
        identifier: None,
    }
}

impl RemoteTable {
    /// No routes.
    pub fn new() -> RemoteTable {
        RemoteTable {
            table: SubscriptionTable::new(),
            owners: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(next_generation()),
        }
    }

    /// A value that changes whenever the routes change, and that no other
    /// table takes: a match result computed after reading generation `g`
    /// holds as long as the generation is still `g` (the forwarding path
    /// keeps the last one per thread).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Moves the generation on: after every change of the table, and when
    /// something a cached match result refers to (a peer) is gone.
    pub fn invalidate(&self) {
        self.generation.store(next_generation(), Ordering::Release);
    }

    fn add(&self, owner: &mut Owner, node: &Arc<str>, filter: &str) {
        if topic::valid_topic_filter(filter) && owner.filters.insert(filter.to_string()) {
            self.table.subscribe(filter, node, entry());
            self.invalidate();
        }
    }

    fn remove(&self, owner: &mut Owner, node: &Arc<str>, filter: &str) {
        if owner.filters.remove(filter) {
            self.table.unsubscribe(filter, node);
            self.invalidate();
        }
    }

    fn clear(&self, owner: &mut Owner, node: &Arc<str>) {
        for f in owner.filters.drain() {
            self.table.unsubscribe(&f, node);
        }
        self.invalidate();
    }

    /// Applies one delta of `node`. A delta from another incarnation than
    /// the one known, or that does not follow the last version, is a gap.
    pub fn apply_delta(
        &self,
        node: &Arc<str>,
        incarnation: u64,
        version: u64,
        filter: &str,
        added: bool,
    ) -> Applied {
        let mut owners = self.owners.lock();
        let Some(owner) = owners.get_mut(node) else {
            return Applied::Gap;
        };
        if owner.incarnation != incarnation {
            return Applied::Gap;
        }
        if version <= owner.version {
            return Applied::Ok;
        }
        if version != owner.version + 1 {
            return Applied::Gap;
        }
        owner.version = version;
        if added {
            self.add(owner, node, filter);
        } else {
            self.remove(owner, node, filter);
        }
        Applied::Ok
    }

    /// Replaces every route of `node` with `filters` at `version`.
    pub fn apply_snapshot(
        &self,
        node: &Arc<str>,
        incarnation: u64,
        version: u64,
        filters: &[String],
    ) {
        let mut owners = self.owners.lock();
        let owner = owners.entry(node.clone()).or_default();
        let wanted: HashSet<&str> = filters.iter().map(String::as_str).collect();
        let stale: Vec<String> = owner
            .filters
            .iter()
            .filter(|f| !wanted.contains(f.as_str()))
            .cloned()
            .collect();
        for f in stale {
            self.remove(owner, node, &f);
        }
        for f in filters {
            self.add(owner, node, f);
        }
        owner.incarnation = incarnation;
        owner.version = version;
    }

    /// Adds `filters` to `node`'s routes outside its version stream: a
    /// leaving node's handed-off sessions now live at `node`. The routes
    /// `node` announces itself confirm them (adds are idempotent); an owner
    /// created here has incarnation 0, so `node`'s next delta is a gap and
    /// its snapshot replaces the provisional set.
    pub fn add_provisional(&self, node: &Arc<str>, filters: &[String]) {
        let mut owners = self.owners.lock();
        let owner = owners.entry(node.clone()).or_default();
        for f in filters {
            self.add(owner, node, f);
        }
    }

    /// Forgets every route of `node` (left, restarted, or past its grace);
    /// returns how many there were.
    pub fn drop_node(&self, node: &str) -> usize {
        let mut owners = self.owners.lock();
        match owners.remove_entry(node) {
            Some((name, mut owner)) => {
                let n = owner.filters.len();
                self.clear(&mut owner, &name);
                n
            }
            None => 0,
        }
    }

    /// The incarnation whose routes are held for `node`.
    pub fn incarnation(&self, node: &str) -> Option<u64> {
        self.owners.lock().get(node).map(|o| o.incarnation)
    }

    /// Nodes whose routes are held.
    pub fn nodes(&self) -> Vec<Arc<str>> {
        self.owners.lock().keys().cloned().collect()
    }

    /// Routes held for `node`, sorted.
    pub fn routes_of(&self, node: &str) -> Vec<String> {
        let owners = self.owners.lock();
        let mut f: Vec<String> = owners
            .get(node)
            .map(|o| o.filters.iter().cloned().collect())
            .unwrap_or_default();
        f.sort();
        f
    }

    /// Nodes with a route matching `topic` (in `out.direct`, possibly
    /// repeated) and shared groups with their member nodes (`out.shared`).
    pub fn matches(&self, topic: &str, out: &mut Matches) {
        self.table.matches(topic, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes_for(t: &RemoteTable, topic: &str) -> Vec<String> {
        let mut m = Matches::default();
        t.matches(topic, &mut m);
        let mut v: Vec<String> = m.direct.iter().map(|(n, _)| n.to_string()).collect();
        v.sort();
        v.dedup();
        v
    }

    #[test]
    fn deltas_follow_versions_and_gaps_are_detected() {
        let t = RemoteTable::new();
        let a: Arc<str> = Arc::from("a");
        assert_eq!(
            t.apply_delta(&a, 1, 1, "x/+", true),
            Applied::Gap,
            "no snapshot yet"
        );
        t.apply_snapshot(&a, 1, 0, &[]);
        assert_eq!(t.apply_delta(&a, 1, 1, "x/+", true), Applied::Ok);
        assert_eq!(nodes_for(&t, "x/1"), vec!["a"]);
        assert_eq!(
            t.apply_delta(&a, 1, 1, "x/+", true),
            Applied::Ok,
            "duplicate ignored"
        );
        assert_eq!(t.apply_delta(&a, 1, 3, "y", true), Applied::Gap);
        assert!(nodes_for(&t, "y").is_empty());
        assert_eq!(
            t.apply_delta(&a, 2, 2, "y", true),
            Applied::Gap,
            "other incarnation"
        );
        assert_eq!(t.apply_delta(&a, 1, 2, "x/+", false), Applied::Ok);
        assert!(nodes_for(&t, "x/1").is_empty());
    }

    #[test]
    fn every_change_moves_the_generation_and_tables_never_share_one() {
        let t = RemoteTable::new();
        let other = RemoteTable::new();
        let a: Arc<str> = Arc::from("a");
        let mut seen = vec![t.generation(), other.generation()];
        let mut changed = |t: &RemoteTable, what: &str| {
            let g = t.generation();
            assert!(!seen.contains(&g), "{what}: generation {g} seen before");
            seen.push(g);
        };
        t.apply_snapshot(&a, 1, 0, &["x/+".into()]);
        changed(&t, "snapshot");
        t.apply_delta(&a, 1, 1, "y", true);
        changed(&t, "delta added");
        let g = t.generation();
        t.apply_delta(&a, 1, 1, "y", true);
        assert_eq!(t.generation(), g, "a duplicate changes nothing");
        t.apply_delta(&a, 1, 2, "y", false);
        changed(&t, "delta removed");
        t.add_provisional(&a, &["z".into()]);
        changed(&t, "provisional");
        t.drop_node("a");
        changed(&t, "dropped");
        other.invalidate();
        changed(&other, "invalidated");
    }

    #[test]
    fn snapshot_replaces_routes_and_drop_forgets_them() {
        let t = RemoteTable::new();
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        t.apply_snapshot(&a, 1, 5, &["old".into(), "keep/#".into()]);
        t.apply_snapshot(&b, 9, 1, &["keep/#".into(), "$share/g/s".into()]);
        assert_eq!(nodes_for(&t, "keep/1"), vec!["a", "b"]);
        t.apply_snapshot(&a, 2, 1, &["keep/#".into(), "new".into()]);
        assert!(nodes_for(&t, "old").is_empty());
        assert_eq!(nodes_for(&t, "new"), vec!["a"]);
        assert_eq!(t.incarnation("a"), Some(2));
        let mut m = Matches::default();
        t.matches("s", &mut m);
        assert_eq!(m.shared.len(), 1);
        assert_eq!(&*m.shared[0].members[0].0, "b");
        assert_eq!(t.drop_node("a"), 2);
        assert_eq!(nodes_for(&t, "keep/x"), vec!["b"]);
        assert_eq!(t.drop_node("a"), 0);
    }
}
