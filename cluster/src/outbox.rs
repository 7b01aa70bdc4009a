//! One FIFO retry buffer per peer. Every envelope gets the next sequence
//! number of the link; it stays buffered until the peer acknowledges it
//! (cumulatively) and is resent, same sequence and same order, after a
//! reconnect. The buffer is bounded: overflow is dropped and counted, and
//! the dropped message's waiter is released at once.

use bytes::BytesMut;
use std::collections::VecDeque;
use tokio::sync::oneshot;

struct Pending<T> {
    seq: u64,
    item: T,
    waiter: Option<oneshot::Sender<()>>,
}

/// A bounded, ordered retry buffer of items of type `T`.
pub struct Outbox<T> {
    next_seq: u64,
    pending: VecDeque<Pending<T>>,
    /// `pending[..sent]` went out on the current link.
    sent: usize,
    max: usize,
    dropped: u64,
    /// Where the items are encoded (see [`crate::wire::envelope`]): one
    /// peer's, so that its chunks are freed in order as acks come.
    arena: BytesMut,
}

/// The buffer was full; the item was dropped (and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

impl<T: Clone> Outbox<T> {
    /// An empty buffer holding at most `max` items.
    pub fn new(max: usize) -> Outbox<T> {
        Outbox {
            next_seq: 1,
            pending: VecDeque::new(),
            sent: 0,
            max: max.max(1),
            dropped: 0,
            arena: BytesMut::new(),
        }
    }

    /// Appends `item` (built from its sequence number, in the outbox's
    /// arena); `waiter` fires when the peer acknowledges it.
    pub fn push(
        &mut self,
        item: impl FnOnce(u64, &mut BytesMut) -> T,
        waiter: Option<oneshot::Sender<()>>,
    ) -> Result<u64, Overflow> {
        if self.pending.len() >= self.max {
            self.dropped += 1;
            // Dropping the sender wakes the waiting publisher.
            return Err(Overflow);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push_back(Pending {
            seq,
            item: item(seq, &mut self.arena),
            waiter,
        });
        Ok(seq)
    }

    /// Up to `max` items not yet sent on the current link, in order.
    pub fn next_batch(&mut self, max: usize) -> Vec<T> {
        let end = (self.sent + max).min(self.pending.len());
        let batch = self
            .pending
            .range(self.sent..end)
            .map(|p| p.item.clone())
            .collect();
        self.sent = end;
        batch
    }

    /// Up to `max` items not yet sent on the current link, in order, by
    /// reference; [`Outbox::mark_sent`] then counts them as sent.
    pub fn unsent(&self, max: usize) -> impl Iterator<Item = &T> + Clone {
        let end = (self.sent + max).min(self.pending.len());
        self.pending.range(self.sent..end).map(|p| &p.item)
    }

    /// The next `n` unsent items went out (see [`Outbox::unsent`]).
    pub fn mark_sent(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.pending.len());
    }

    /// Whether items wait to be sent on the current link.
    pub fn has_unsent(&self) -> bool {
        self.sent < self.pending.len()
    }

    /// The peer processed every item up to `upto`: forget them and release
    /// their waiters. Returns how many were acknowledged.
    pub fn ack(&mut self, upto: u64) -> usize {
        let mut n = 0;
        while self.pending.front().is_some_and(|p| p.seq <= upto) {
            if let Some(mut p) = self.pending.pop_front() {
                if let Some(w) = p.waiter.take() {
                    let _ = w.send(());
                }
            }
            n += 1;
        }
        self.sent = self.sent.saturating_sub(n);
        n
    }

    /// The link went down: everything unacknowledged is sent again on the
    /// next one, from the oldest.
    pub fn rewind(&mut self) {
        self.sent = 0;
    }

    /// Drops everything buffered (the peer is gone for good), counting it;
    /// returns how many.
    pub fn clear(&mut self) -> usize {
        let n = self.pending.len();
        self.dropped += n as u64;
        self.pending.clear();
        self.sent = 0;
        self.arena = BytesMut::new();
        n
    }

    /// Items buffered (sent or not, unacknowledged).
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Items dropped since creation.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_counted() {
        let mut o = Outbox::new(2);
        assert_eq!(o.push(|s, _| s, None), Ok(1));
        assert_eq!(o.push(|s, _| s, None), Ok(2));
        let (tx, mut rx) = oneshot::channel();
        assert_eq!(o.push(|s, _| s, Some(tx)), Err(Overflow));
        assert!(
            rx.try_recv().is_err(),
            "waiter released (closed), not acked"
        );
        assert_eq!(o.dropped(), 1);
        assert_eq!(o.len(), 2);
        o.ack(1);
        assert_eq!(
            o.push(|s, _| s, None),
            Ok(3),
            "room again; sequences stay contiguous"
        );
        assert_eq!(o.clear(), 2);
        assert_eq!(o.dropped(), 3);
    }

    #[test]
    fn resend_after_rewind_keeps_order_and_sequence() {
        let mut o = Outbox::new(10);
        let (tx, mut rx) = oneshot::channel();
        o.push(|s, _| s * 10, Some(tx)).expect("room");
        o.push(|s, _| s * 10, None).expect("room");
        assert_eq!(o.next_batch(10), vec![10, 20]);
        assert!(o.next_batch(10).is_empty());
        o.push(|s, _| s * 10, None).expect("room");
        o.rewind();
        assert_eq!(o.next_batch(2), vec![10, 20]);
        assert_eq!(o.ack(1), 1);
        assert_eq!(rx.try_recv(), Ok(()));
        assert_eq!(o.next_batch(10), vec![30]);
        assert_eq!(o.ack(3), 2);
        assert!(o.is_empty() && !o.has_unsent());
    }

    #[test]
    fn unsent_by_reference() {
        let mut o = Outbox::new(10);
        for _ in 0..3 {
            o.push(|s, _| s, None).expect("room");
        }
        assert_eq!(o.unsent(2).copied().collect::<Vec<_>>(), vec![1, 2]);
        o.mark_sent(2);
        assert_eq!(o.unsent(5).copied().collect::<Vec<_>>(), vec![3]);
        o.mark_sent(5);
        assert!(!o.has_unsent());
        o.rewind();
        assert_eq!(o.unsent(5).count(), 3);
    }
}
