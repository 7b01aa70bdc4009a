//! The receiver's duplicate filter for one origin incarnation: the highest
//! contiguous sequence seen plus a small set of sequences above it.
//! Resends after a reconnect reuse their sequence numbers, so a message
//! already delivered is acknowledged again but not delivered twice.

use std::collections::BTreeSet;

/// Sequences above the contiguous floor remembered at most.
pub const WINDOW: usize = 4096;

/// Which sequences of one origin incarnation were already delivered.
#[derive(Debug, Default, Clone)]
pub struct Dedup {
    /// Every sequence `<= floor` was seen (or is too old to matter).
    floor: Option<u64>,
    above: BTreeSet<u64>,
}

impl Dedup {
    /// Nothing seen yet.
    pub fn new() -> Dedup {
        Dedup::default()
    }

    /// Records `seq`; true if it was not seen before (deliver it).
    pub fn accept(&mut self, seq: u64) -> bool {
        let floor = *self.floor.get_or_insert(seq.saturating_sub(1));
        if seq == floor + 1 && self.above.is_empty() {
            // In order, the usual case: no set node allocated and freed.
            self.floor = Some(seq);
            return true;
        }
        if seq <= floor || !self.above.insert(seq) {
            return false;
        }
        let mut floor = floor;
        while self.above.first() == Some(&(floor + 1)) {
            self.above.pop_first();
            floor += 1;
        }
        // A hole that never fills must not grow the set without bound.
        while self.above.len() > WINDOW {
            if let Some(low) = self.above.pop_first() {
                floor = low;
            }
        }
        self.floor = Some(floor);
        true
    }

    /// The highest contiguous sequence seen.
    pub fn floor(&self) -> Option<u64> {
        self.floor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused_and_holes_tracked() {
        let mut d = Dedup::new();
        assert!(d.accept(5), "first sequence seen starts the window");
        assert!(!d.accept(5));
        assert!(!d.accept(3), "older than the start");
        assert!(d.accept(7));
        assert_eq!(d.floor(), Some(5));
        assert!(d.accept(6));
        assert_eq!(d.floor(), Some(7));
        assert!(!d.accept(7));
        assert!(!d.accept(6));
        assert!(d.accept(8));
    }

    #[test]
    fn window_is_bounded() {
        let mut d = Dedup::new();
        assert!(d.accept(1));
        for s in 3..(WINDOW as u64 + 10) {
            assert!(d.accept(s));
        }
        assert!(d.above.len() <= WINDOW);
        assert!(!d.accept(2), "the hole was given up on");
    }
}
