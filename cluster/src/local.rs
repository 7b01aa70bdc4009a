//! This node's routes as the cluster sees them: one refcount per filter
//! (`$share/group/filter` counted apart from `filter`) of local
//! subscribers. A 0→1 or 1→0 change is a route delta with the next
//! version; links catch up from a bounded log of recent deltas, or with a
//! full snapshot when they are too far behind.

use std::collections::{HashMap, VecDeque};

/// How many deltas are kept for links that are behind.
pub const DELTA_LOG: usize = 4096;

/// One route change: `filter` gained its first (`added`) or lost its last
/// local subscriber, at `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// The version this change produced (previous + 1).
    pub version: u64,
    /// The filter, as subscribed.
    pub filter: String,
    /// First subscriber (true) or last one gone (false).
    pub added: bool,
}

/// What a link must send to bring a peer from a version to the current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Catchup {
    /// Nothing: the peer is current.
    Current,
    /// These deltas, in order.
    Deltas(Vec<Delta>),
    /// Everything: the log no longer covers the peer's version.
    Snapshot {
        /// Current version.
        version: u64,
        /// Every filter with at least one local subscriber.
        filters: Vec<String>,
    },
}

/// Refcounted local routes with versioned deltas.
#[derive(Debug, Default)]
pub struct LocalRoutes {
    counts: HashMap<String, usize>,
    version: u64,
    log: VecDeque<Delta>,
}

impl LocalRoutes {
    /// No routes, version 0.
    pub fn new() -> LocalRoutes {
        LocalRoutes::default()
    }

    /// The current version.
    pub fn version(&self) -> u64 {
        self.version
    }

    fn change(&mut self, filter: &str, added: bool) -> u64 {
        self.version += 1;
        if self.log.len() == DELTA_LOG {
            self.log.pop_front();
        }
        self.log.push_back(Delta {
            version: self.version,
            filter: filter.to_string(),
            added,
        });
        self.version
    }

    /// A local subscriber of `filter` appeared; the new version on 0→1.
    pub fn add(&mut self, filter: &str) -> Option<u64> {
        let count = self.counts.entry(filter.to_string()).or_insert(0);
        *count += 1;
        (*count == 1).then(|| self.change(filter, true))
    }

    /// A local subscriber of `filter` left; the new version on 1→0.
    pub fn remove(&mut self, filter: &str) -> Option<u64> {
        let count = self.counts.get_mut(filter)?;
        *count -= 1;
        if *count > 0 {
            return None;
        }
        self.counts.remove(filter);
        Some(self.change(filter, false))
    }

    /// Every routed filter, sorted.
    pub fn filters(&self) -> Vec<String> {
        let mut f: Vec<String> = self.counts.keys().cloned().collect();
        f.sort();
        f
    }

    /// What a peer at version `known` (`None`: nothing known) needs.
    pub fn catch_up(&self, known: Option<u64>) -> Catchup {
        match known {
            Some(v) if v == self.version => Catchup::Current,
            Some(v) if v < self.version && self.log.front().is_some_and(|d| d.version <= v + 1) => {
                Catchup::Deltas(self.log.iter().filter(|d| d.version > v).cloned().collect())
            }
            _ => Catchup::Snapshot {
                version: self.version,
                filters: self.filters(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refcount_emits_only_on_first_and_last() {
        let mut r = LocalRoutes::new();
        assert_eq!(r.add("a/+"), Some(1));
        assert_eq!(r.add("a/+"), None, "second subscriber: no delta");
        assert_eq!(r.add("$share/g/a/+"), Some(2), "shared counted apart");
        assert_eq!(r.remove("a/+"), None);
        assert_eq!(r.remove("a/+"), Some(3));
        assert_eq!(r.remove("a/+"), None, "unknown filter: nothing");
        assert_eq!(r.filters(), vec!["$share/g/a/+".to_string()]);
    }

    #[test]
    fn catch_up_sends_deltas_then_snapshot_when_log_is_short() {
        let mut r = LocalRoutes::new();
        r.add("a");
        r.add("b");
        r.remove("a");
        assert_eq!(r.catch_up(Some(3)), Catchup::Current);
        let Catchup::Deltas(d) = r.catch_up(Some(1)) else {
            panic!("expected deltas")
        };
        assert_eq!(d.iter().map(|d| d.version).collect::<Vec<_>>(), vec![2, 3]);
        assert!(!d[1].added);
        assert_eq!(
            r.catch_up(None),
            Catchup::Snapshot {
                version: 3,
                filters: vec!["b".into()]
            }
        );
        for i in 0..DELTA_LOG + 10 {
            r.add(&format!("f{i}"));
        }
        assert!(matches!(r.catch_up(Some(1)), Catchup::Snapshot { .. }));
        assert!(matches!(r.catch_up(Some(r.version() - 1)), Catchup::Deltas(d) if d.len() == 1));
    }
}
