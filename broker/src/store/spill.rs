//! The tail of a persistent session's queue kept only in the store.
//!
//! Past `storage.max_in_memory_per_session` queued messages, new ones are
//! written to the store without a copy in memory ("spilled") and read back
//! in batches, in order, as the in-memory part drains. Sequence numbers
//! only grow and every message is queued behind the spilled ones while
//! there are any, so the spilled messages are exactly the session's keys
//! from [`Spill::from`] on: reading them back is one range scan.

use super::Store;
use crate::session::Delivery;
use std::collections::VecDeque;

/// How many messages a read for an export asks for at a time.
const EXPORT_BATCH: usize = 4096;

/// The spilled part of one session's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spill {
    /// Messages kept in memory at most.
    pub(crate) cap: usize,
    /// Messages in the store only, behind the in-memory queue.
    pub(crate) len: usize,
    /// The first spilled message's sequence number: reads start here.
    pub(crate) from: u64,
}

/// The in-memory queue and its parallel sequence numbers, refilled together.
pub(crate) struct Queues<'a> {
    /// `SessionData::queue`.
    pub(crate) data: &'a mut VecDeque<Delivery>,
    /// `Track`'s sequence numbers, one per entry of `data`.
    pub(crate) seqs: &'a mut VecDeque<Option<u64>>,
}

impl Spill {
    /// No spilled messages; at most `cap` in memory.
    pub(crate) fn new(cap: usize) -> Spill {
        Spill {
            cap: cap.max(1),
            len: 0,
            from: 0,
        }
    }

    /// True if a new message must go to the store only: some already
    /// are there (order), or memory holds `cap`.
    pub(crate) fn active(&self, in_memory: usize) -> bool {
        self.len > 0 || in_memory >= self.cap
    }

    /// Writes `d` behind everything queued, without keeping it in memory.
    pub(crate) fn push(&mut self, store: &dyn Store, client: &str, d: &Delivery) {
        let seq = store.next_seq();
        store.put_message(client, seq, 0, d);
        if self.len == 0 {
            self.from = seq;
        }
        self.len += 1;
    }

    /// Refills memory up to `cap` once it has drained to half of it.
    pub(crate) fn refill_low(
        &mut self,
        store: &dyn Store,
        client: &str,
        q: Queues<'_>,
        now: u64,
        expired: &mut u64,
    ) {
        if self.len > 0 && q.data.len() <= self.cap / 2 {
            self.refill(store, client, q, self.cap, now, expired);
        }
    }

    /// Reads spilled messages back into memory, in order, until memory
    /// holds `target` or nothing is left in the store. Expired ones are
    /// deleted and counted in `expired`.
    pub(crate) fn refill(
        &mut self,
        store: &dyn Store,
        client: &str,
        q: Queues<'_>,
        target: usize,
        now: u64,
        expired: &mut u64,
    ) {
        while self.len > 0 && q.data.len() < target {
            let want = (target - q.data.len()).min(self.len);
            let batch = store.read_messages(client, self.from, want);
            self.from = batch.next;
            let read = batch.messages.len();
            for (seq, pkid, d) in batch.messages {
                if pkid != 0 {
                    // Already in flight (restored with its packet id).
                    continue;
                }
                self.len = self.len.saturating_sub(1);
                if d.msg.expired(now) {
                    store.delete_message(client, seq);
                    *expired += 1;
                    continue;
                }
                q.data.push_back(d);
                q.seqs.push_back(Some(seq));
            }
            if batch.end {
                if self.len > 0 {
                    tracing::warn!(
                        client_id = client,
                        missing = self.len,
                        "spilled messages not found in the store"
                    );
                }
                self.len = 0;
            }
            if read == 0 && !batch.end {
                // A read error (logged by the store): try again later.
                return;
            }
        }
    }

    /// Copies of every spilled message, in order (for an export).
    pub(crate) fn read_all(&self, store: &dyn Store, client: &str) -> Vec<Delivery> {
        let mut out = Vec::with_capacity(self.len);
        let mut from = self.from;
        while out.len() < self.len {
            let batch = store.read_messages(client, from, EXPORT_BATCH);
            from = batch.next;
            let read = batch.messages.len();
            out.extend(
                batch
                    .messages
                    .into_iter()
                    .filter(|(_, pkid, _)| *pkid == 0)
                    .map(|(_, _, d)| d),
            );
            if batch.end || read == 0 {
                break;
            }
        }
        out
    }

    /// Keeps the oldest `keep` spilled messages and deletes the rest;
    /// returns how many were deleted.
    pub(crate) fn truncate(&mut self, store: &dyn Store, client: &str, keep: usize) -> usize {
        if self.len <= keep {
            return 0;
        }
        let gone = store.truncate_messages(client, self.from, keep);
        self.len = keep;
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_once_full_or_while_anything_is_spilled() {
        let mut s = Spill::new(2);
        assert!(!s.active(1));
        assert!(s.active(2));
        s.len = 1;
        assert!(s.active(0), "order: new messages go behind spilled ones");
        assert_eq!(Spill::new(0).cap, 1, "at least one message in memory");
    }
}
