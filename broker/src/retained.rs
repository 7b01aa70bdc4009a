//! The retained-message store: topic name → last retained message, with
//! lookup by topic filter for delivery on subscribe.
//!
//! Messages live in level trees sharded by the topic's first level, each
//! behind its own `RwLock`: a filter with a literal first level reads one
//! shard, a filter without wildcards is a walk down its own levels (no scan),
//! and only a filter starting with `+` or `#` visits every shard.
//!
//! Topics deeper than [`MAX_TREE_DEPTH`] levels sit in a flat map instead,
//! scanned for wildcard filters: tree walks recurse once per level, and a
//! 64 KiB topic can have 65k levels.

#[cfg(test)]
mod tests;

use parking_lot::RwLock;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Default number of shards.
const DEFAULT_SHARDS: usize = 32;

/// Topics with more levels than this are kept out of the trees.
pub const MAX_TREE_DEPTH: usize = 64;

/// One topic level; the root of a shard stands for "no level yet".
struct Node<T> {
    children: HashMap<Box<str>, Node<T>>,
    msg: Option<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            children: HashMap::new(),
            msg: None,
        }
    }
}

/// Splits off the first level of `rest`: `("a", Some("b/c"))` for `a/b/c`.
fn split_level(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('/') {
        Some((level, next)) => (level, Some(next)),
        None => (rest, None),
    }
}

/// Appends `level` to the topic being rebuilt in `path` (`root`: first level).
fn push_level(path: &mut String, root: bool, level: &str) {
    if !root {
        path.push('/');
    }
    path.push_str(level);
}

impl<T: Clone> Node<T> {
    fn is_empty(&self) -> bool {
        self.msg.is_none() && self.children.is_empty()
    }

    /// Drops the child `level` if it holds nothing, giving memory back after
    /// mass removals.
    fn prune(&mut self, level: &str) {
        if self.children.get(level).is_some_and(Node::is_empty) {
            self.children.remove(level);
            if self.children.capacity() > 64 && self.children.len() * 4 < self.children.capacity() {
                self.children.shrink_to_fit();
            }
        }
    }

    /// Removes the message at `rest` below this node, pruning empty nodes.
    fn remove(&mut self, rest: &str) -> bool {
        let (level, next) = split_level(rest);
        let Some(child) = self.children.get_mut(level) else {
            return false;
        };
        let hit = match next {
            Some(next) => child.remove(next),
            None => child.msg.take().is_some(),
        };
        self.prune(level);
        hit
    }

    /// Appends messages matching `rest` (remaining filter levels; None: the
    /// filter ends here). `path` is this node's topic; `root` is true at a
    /// shard root, where `+` and `#` skip `$` topics.
    fn collect(
        &self,
        rest: Option<&str>,
        root: bool,
        path: &mut String,
        out: &mut Vec<(String, T)>,
    ) {
        let Some(rest) = rest else {
            if let Some(msg) = &self.msg {
                out.push((path.clone(), msg.clone()));
            }
            return;
        };
        let (level, next) = split_level(rest);
        match level {
            "#" => self.collect_all(root, path, out),
            "+" => {
                for (key, child) in &self.children {
                    if !(root && key.starts_with('$')) {
                        let len = path.len();
                        push_level(path, root, key);
                        child.collect(next, false, path, out);
                        path.truncate(len);
                    }
                }
            }
            _ => {
                if let Some(child) = self.children.get(level) {
                    let len = path.len();
                    push_level(path, root, level);
                    child.collect(next, false, path, out);
                    path.truncate(len);
                }
            }
        }
    }

    /// Appends this node's message (`a/#` matches `a`) and every one below.
    fn collect_all(&self, root: bool, path: &mut String, out: &mut Vec<(String, T)>) {
        if let Some(msg) = &self.msg {
            out.push((path.clone(), msg.clone()));
        }
        for (key, child) in &self.children {
            if !(root && key.starts_with('$')) {
                let len = path.len();
                push_level(path, root, key);
                child.collect_all(false, path, out);
                path.truncate(len);
            }
        }
    }

    /// Drops messages `keep` rejects, pruning empty nodes; returns how many.
    fn retain(
        &mut self,
        root: bool,
        path: &mut String,
        keep: &mut dyn FnMut(&str, &T) -> bool,
    ) -> usize {
        let mut removed = 0;
        if self.msg.as_ref().is_some_and(|m| !keep(path, m)) {
            self.msg = None;
            removed += 1;
        }
        self.children.retain(|key, child| {
            let len = path.len();
            push_level(path, root, key);
            removed += child.retain(false, path, keep);
            path.truncate(len);
            !child.is_empty()
        });
        removed
    }

    /// Number of nodes below this one (for leak tests).
    fn count(&self) -> usize {
        self.children.values().map(|c| 1 + c.count()).sum()
    }
}

/// Retained messages of type `T`, keyed by topic name. Thread-safe through `&self`.
pub struct RetainedStore<T> {
    shards: Box<[RwLock<Node<T>>]>,
    /// Topics with more than `max_depth` levels, by topic.
    deep: RwLock<HashMap<Box<str>, T>>,
    max_depth: usize,
    hasher: RandomState,
    len: AtomicUsize,
}

impl<T: Clone> Default for RetainedStore<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone> RetainedStore<T> {
    /// An empty store.
    pub fn new() -> Self {
        Self::with_shards(DEFAULT_SHARDS)
    }

    /// An empty store with `shards` (rounded up to a power of two, at least 1) shards.
    pub fn with_shards(shards: usize) -> Self {
        Self::with_limits(shards, MAX_TREE_DEPTH)
    }

    /// Like [`Self::with_shards`], keeping topics of more than `max_depth`
    /// levels (clamped to 1..=[`MAX_TREE_DEPTH`]) out of the trees. Lowering
    /// it is for tests of the deep-topic path.
    #[doc(hidden)]
    pub fn with_limits(shards: usize, max_depth: usize) -> Self {
        let n = shards.max(1).next_power_of_two();
        RetainedStore {
            shards: (0..n).map(|_| RwLock::default()).collect(),
            deep: RwLock::default(),
            max_depth: max_depth.clamp(1, MAX_TREE_DEPTH),
            hasher: RandomState::new(),
            len: AtomicUsize::new(0),
        }
    }

    /// True if `topic` is too deep for the trees.
    fn is_deep(&self, topic: &str) -> bool {
        topic.bytes().filter(|&b| b == b'/').count() >= self.max_depth
    }

    /// The shard of topics whose first level is `first`.
    fn shard(&self, first: &str) -> &RwLock<Node<T>> {
        let i = self.hasher.hash_one(first) as usize & (self.shards.len() - 1);
        &self.shards[i]
    }

    /// Stores `msg` as the retained message of `topic`, replacing any.
    /// Returns true if the topic had none before.
    pub fn set(&self, topic: &str, msg: T) -> bool {
        let old = if self.is_deep(topic) {
            self.deep.write().insert(topic.into(), msg)
        } else {
            let mut root = self.shard(split_level(topic).0).write();
            let mut node = &mut *root;
            for level in topic.split('/') {
                // contains_key first: avoid allocating the key when it exists.
                if !node.children.contains_key(level) {
                    node.children.insert(level.into(), Node::default());
                }
                node = node.children.get_mut(level).expect("just inserted");
            }
            node.msg.replace(msg)
        };
        // `old` is dropped here, outside the lock.
        let new = old.is_none();
        if new {
            self.len.fetch_add(1, Relaxed);
        }
        new
    }

    /// Removes `topic`'s retained message. Returns true if there was one.
    pub fn remove(&self, topic: &str) -> bool {
        let hit = if self.is_deep(topic) {
            self.deep.write().remove(topic).is_some()
        } else {
            self.shard(split_level(topic).0).write().remove(topic)
        };
        if hit {
            self.len.fetch_sub(1, Relaxed);
        }
        hit
    }

    /// The retained message of `topic`, if any.
    pub fn get(&self, topic: &str) -> Option<T> {
        if self.is_deep(topic) {
            return self.deep.read().get(topic).cloned();
        }
        let root = self.shard(split_level(topic).0).read();
        let mut node = &*root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.msg.clone()
    }

    /// Appends `(topic, message)` for every retained message whose topic
    /// matches `filter` (a valid plain filter, `$` rule included).
    pub fn matching(&self, filter: &str, out: &mut Vec<(String, T)>) {
        if !filter.contains(['+', '#']) {
            if let Some(msg) = self.get(filter) {
                out.push((filter.to_owned(), msg));
            }
            return;
        }
        let mut path = String::new();
        match split_level(filter).0 {
            "+" | "#" => {
                for shard in self.shards.iter() {
                    shard.read().collect(Some(filter), true, &mut path, out);
                }
            }
            first => self
                .shard(first)
                .read()
                .collect(Some(filter), true, &mut path, out),
        }
        let deep = self.deep.read();
        // `topic::matches` is iterative and applies the `$` rule.
        let hits = deep
            .iter()
            .filter(|(t, _)| crate::topic::matches(filter, t));
        out.extend(hits.map(|(t, m)| (t.to_string(), m.clone())));
    }

    /// Removes every entry for which `keep` returns false; returns how many.
    /// Takes each shard's write lock in turn, so `keep` must be cheap.
    pub fn retain_where(&self, mut keep: impl FnMut(&str, &T) -> bool) -> usize {
        let mut path = String::new();
        let mut removed = 0;
        for shard in self.shards.iter() {
            removed += shard.write().retain(true, &mut path, &mut keep);
        }
        let mut deep = self.deep.write();
        let before = deep.len();
        deep.retain(|t, m| keep(t, m));
        removed += before - deep.len();
        self.len.fetch_sub(removed, Relaxed);
        removed
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of tree nodes below the shard roots: zero once every message
    /// is gone. For tests and leak diagnostics.
    #[doc(hidden)]
    pub fn node_count(&self) -> usize {
        let trees: usize = self.shards.iter().map(|s| s.read().count()).sum();
        trees + self.deep.read().len()
    }
}
