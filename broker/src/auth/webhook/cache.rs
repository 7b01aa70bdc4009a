//! The decision cache of one webhook: answers kept for a time-to-live,
//! the oldest dropped first when the bound is reached. Pure: the caller
//! passes the time.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Answers by key, each until its expiry, at most `max` of them.
#[derive(Debug)]
pub struct Cache<K, V> {
    /// Key → (expiry, insertion number, answer).
    entries: HashMap<K, (Instant, u64, V)>,
    /// Keys in insertion order with their insertion number; an element
    /// whose number is no longer the map's is stale (the key was re-inserted).
    order: VecDeque<(K, u64)>,
    inserted: u64,
    max: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> Cache<K, V> {
    /// An empty cache holding at most `max` entries (at least one).
    pub fn new(max: usize) -> Self {
        Cache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            inserted: 0,
            max: max.max(1),
        }
    }

    /// The live answer for `key`; an expired one is dropped.
    pub fn get(&mut self, key: &K, now: Instant) -> Option<V> {
        match self.entries.get(key) {
            Some((until, _, v)) if *until > now => Some(v.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `value` for `ttl` (a zero TTL keeps nothing). Expired entries
    /// go first, then the oldest, to stay within the bound.
    pub fn insert(&mut self, key: K, value: V, ttl: Duration, now: Instant) {
        if ttl.is_zero() {
            return;
        }
        while self.entries.len() >= self.max && !self.entries.contains_key(&key) {
            let Some((old, n)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&old).is_some_and(|e| e.1 == n) {
                self.entries.remove(&old);
            }
        }
        self.inserted += 1;
        self.entries
            .insert(key.clone(), (now + ttl, self.inserted, value));
        self.order.push_back((key, self.inserted));
        if self.order.len() > 2 * self.max {
            // Re-inserted keys leave stale elements behind: drop them.
            let entries = &self.entries;
            self.order
                .retain(|(k, n)| entries.get(k).is_some_and(|e| e.1 == *n));
        }
        self.drop_expired(now);
    }

    /// Drops expired entries from the front of the insertion order.
    fn drop_expired(&mut self, now: Instant) {
        while let Some((k, n)) = self.order.front() {
            match self.entries.get(k) {
                Some(e) if e.1 == *n && e.0 > now => break,
                Some(e) if e.1 == *n => {
                    self.entries.remove(k);
                }
                _ => {}
            }
            self.order.pop_front();
        }
    }
}

/// How long an answer may be kept: `no-store` / `no-cache` keep nothing,
/// `max-age=N` keeps it N seconds, and otherwise `default` applies.
pub fn ttl(cache_control: Option<&str>, default: Duration) -> Duration {
    let Some(header) = cache_control else {
        return default;
    };
    let mut ttl = default;
    for directive in header.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Duration::ZERO;
        }
        if let Some(n) = lower.strip_prefix("max-age=") {
            match n.trim_matches('"').parse::<u64>() {
                Ok(secs) => ttl = Duration::from_secs(secs),
                // A malformed max-age means "stale" (RFC 9111 §4.2.1).
                Err(_) => return Duration::ZERO,
            }
        }
    }
    ttl
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn entries_live_for_their_ttl() {
        let t0 = Instant::now();
        let mut c = Cache::new(10);
        c.insert("a", 1, 10 * S, t0);
        c.insert("b", 2, Duration::ZERO, t0);
        assert_eq!(c.get(&"a", t0 + 9 * S), Some(1));
        assert_eq!(c.get(&"b", t0), None, "a zero TTL caches nothing");
        assert_eq!(c.get(&"a", t0 + 10 * S), None, "expired");
        assert_eq!(c.entries.len(), 0, "and dropped");
    }

    #[test]
    fn the_bound_drops_the_oldest_first() {
        let t0 = Instant::now();
        let mut c = Cache::new(3);
        for (i, k) in ["a", "b", "c", "d"].into_iter().enumerate() {
            c.insert(k, i, 60 * S, t0);
        }
        assert_eq!(c.entries.len(), 3);
        assert_eq!(c.get(&"a", t0), None, "oldest evicted");
        assert_eq!(c.get(&"d", t0), Some(3));
        // Re-inserting a key refreshes it rather than evicting another.
        c.insert("b", 10, 60 * S, t0 + S);
        assert_eq!(c.entries.len(), 3);
        c.insert("e", 4, 60 * S, t0 + S);
        assert_eq!(c.get(&"b", t0 + S), Some(10), "refreshed b survives");
        assert_eq!(c.get(&"c", t0 + S), None, "c was the oldest live entry");
        for i in 0..1000 {
            c.insert("x", i, 60 * S, t0);
        }
        assert!(c.order.len() <= 6, "stale order elements are compacted");
    }

    #[test]
    fn expired_entries_make_room_before_live_ones() {
        let t0 = Instant::now();
        let mut c = Cache::new(2);
        c.insert("short", 0, S, t0);
        c.insert("long", 1, 60 * S, t0);
        c.insert("new", 2, 60 * S, t0 + 2 * S);
        assert_eq!(c.get(&"long", t0 + 2 * S), Some(1));
        assert_eq!(c.get(&"new", t0 + 2 * S), Some(2));
    }

    #[test]
    fn cache_control_sets_the_ttl() {
        let d = 5 * S;
        assert_eq!(ttl(None, d), d);
        assert_eq!(ttl(Some("max-age=300"), d), 300 * S);
        assert_eq!(ttl(Some("public, Max-Age=7"), d), 7 * S);
        assert_eq!(ttl(Some("max-age=0"), d), Duration::ZERO);
        assert_eq!(ttl(Some("no-store"), d), Duration::ZERO);
        assert_eq!(ttl(Some("max-age=60, no-cache"), d), Duration::ZERO);
        assert_eq!(ttl(Some("max-age=soon"), d), Duration::ZERO);
        assert_eq!(ttl(Some("private"), d), d);
    }
}
