//! The filter tree of one shard. Only filters with a wildcard live here;
//! exact filters go to the table's hash map.

use super::slot::Slot;
use super::Matches;
use std::collections::HashMap;

/// One level of the filter tree. `+` and `#` have their own fields so that
/// matching does one hash lookup per topic level, not three.
#[derive(Default)]
pub(super) struct Node {
    /// Literal next levels, looked up by `&str` (no allocation when matching);
    /// foldhash: one lookup per topic level on every PUBLISH.
    children: HashMap<Box<str>, Node, foldhash::fast::RandomState>,
    /// The `+` next level.
    plus: Option<Box<Node>>,
    /// Subscriptions to `<this path>/#`; `#` is always last, so a leaf.
    hash: Option<Box<Slot>>,
    /// Subscriptions to exactly this path.
    here: Slot,
}

/// Splits off the first level of `rest`: `("a", Some("b/c"))` for `a/b/c`.
pub(super) fn split_level(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('/') {
        Some((level, next)) => (level, Some(next)),
        None => (rest, None),
    }
}

impl Node {
    /// The slot for `filter` (a valid plain filter), creating the path.
    pub(super) fn slot_mut(&mut self, filter: &str) -> &mut Slot {
        let mut node = self;
        for level in filter.split('/') {
            node = match level {
                "#" => return node.hash.get_or_insert_with(Box::default),
                "+" => node.plus.get_or_insert_with(Box::default),
                _ => {
                    // contains_key first: avoid allocating the key when it exists.
                    if !node.children.contains_key(level) {
                        node.children.insert(level.into(), Node::default());
                    }
                    node.children.get_mut(level).expect("just inserted")
                }
            };
        }
        &mut node.here
    }

    /// Applies `f` to the slot of `rest` (the filter's remaining levels, or
    /// None for this node) if it exists, then prunes every node on the path
    /// left empty. Returns what `f` returned, or false if there is no slot.
    pub(super) fn remove(
        &mut self,
        rest: Option<&str>,
        f: &mut dyn FnMut(&mut Slot) -> bool,
    ) -> bool {
        let Some(rest) = rest else {
            return f(&mut self.here);
        };
        let (level, next) = split_level(rest);
        match level {
            "#" => {
                let Some(slot) = self.hash.as_mut() else {
                    return false;
                };
                let hit = f(slot);
                if slot.is_empty() {
                    self.hash = None;
                }
                hit
            }
            "+" => {
                let Some(child) = self.plus.as_mut() else {
                    return false;
                };
                let hit = child.remove(next, f);
                if child.is_empty() {
                    self.plus = None;
                }
                hit
            }
            _ => {
                let Some(child) = self.children.get_mut(level) else {
                    return false;
                };
                let hit = child.remove(next, f);
                if child.is_empty() {
                    self.children.remove(level);
                    if self.children.capacity() > 64
                        && self.children.len() * 4 < self.children.capacity()
                    {
                        self.children.shrink_to_fit();
                    }
                }
                hit
            }
        }
    }

    /// True if no subscription lives at or below this node.
    pub(super) fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_none()
            && self.here.is_empty()
    }

    /// Appends every subscription at or below this node matching `rest`, the
    /// topic's remaining levels (None: the topic ends at this node). The `$`
    /// rule is the caller's: it never walks a tree of wildcard-first filters
    /// for a `$` topic. Recursion depth is bounded by the filters' depth.
    pub(super) fn collect(&self, rest: Option<&str>, out: &mut Matches) {
        // `#` matches every remaining level, including none (`a/#` matches `a`).
        if let Some(slot) = &self.hash {
            slot.collect(out);
        }
        let Some(rest) = rest else {
            self.here.collect(out);
            return;
        };
        let (level, next) = split_level(rest);
        if let Some(child) = self.children.get(level) {
            child.collect(next, out);
        }
        if let Some(child) = &self.plus {
            child.collect(next, out);
        }
    }

    /// Number of nodes and `#` slots below this one (for leak tests).
    pub(super) fn count(&self) -> usize {
        let below: usize = self.children.values().map(|c| 1 + c.count()).sum();
        below + self.plus.as_ref().map_or(0, |p| 1 + p.count()) + usize::from(self.hash.is_some())
    }
}
