//! One FIFO retry buffer per peer. Every record (a forwarded message's
//! envelope, framed as one element of `PublishBatch.envelopes`) gets the
//! next sequence number of the link; it stays buffered until the peer
//! acknowledges it (cumulatively) and is resent, same sequence and same
//! order, after a reconnect. The buffer is bounded: overflow is dropped and
//! counted, and the dropped message's waiter is released at once.
//!
//! Records are written one after the other into chunks of [`CHUNK`]
//! bytes: forwarding allocates once per chunk, not once per message, and
//! what the link takes for a frame is a few slices of chunks (a reference
//! count per chunk, not per record). A chunk holds one peer's records,
//! acknowledged in order, so it is freed once its last record is
//! acknowledged: what stays allocated is about what the peer has not
//! acknowledged, plus a chunk.

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use tokio::sync::oneshot;

/// Bytes of one chunk of records.
pub const CHUNK: usize = 64 << 10;

/// A record longer than this gets a buffer of its own rather than most of
/// a chunk.
const OWN_BUFFER: usize = CHUNK / 4;

struct Pending {
    seq: u64,
    len: usize,
    waiter: Option<oneshot::Sender<()>>,
}

/// A bounded, ordered retry buffer of encoded records.
pub struct Outbox {
    next_seq: u64,
    pending: VecDeque<Pending>,
    /// `pending[..sent]` went out on the current link.
    sent: usize,
    /// Their bytes.
    sent_bytes: usize,
    max: usize,
    dropped: u64,
    /// The records of `pending`, in order: these, then what `open` holds.
    segments: VecDeque<Bytes>,
    /// Bytes at the front of `segments[0]` already acknowledged.
    front: usize,
    /// The chunk being written.
    open: BytesMut,
}

/// Records taken for one frame (see [`Outbox::take`]).
#[derive(Debug)]
pub struct Taken {
    /// How many.
    pub count: usize,
    /// Their bytes, all together.
    pub bytes: usize,
    /// The same bytes as slices of the chunks, in order.
    pub slices: Vec<Bytes>,
}

/// The buffer was full; the item was dropped (and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

impl Outbox {
    /// An empty buffer holding at most `max` records.
    pub fn new(max: usize) -> Outbox {
        Outbox {
            next_seq: 1,
            pending: VecDeque::new(),
            sent: 0,
            sent_bytes: 0,
            max: max.max(1),
            dropped: 0,
            segments: VecDeque::new(),
            front: 0,
            open: BytesMut::new(),
        }
    }

    /// The sequence number the next record pushed gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends a record of `len` bytes, which `write` appends to the
    /// buffer it is given; `waiter` fires when the peer acknowledges it.
    pub fn push(
        &mut self,
        len: usize,
        write: impl FnOnce(&mut BytesMut),
        waiter: Option<oneshot::Sender<()>>,
    ) -> Result<u64, Overflow> {
        if self.pending.len() >= self.max {
            self.dropped += 1;
            // Dropping the sender wakes the waiting publisher.
            return Err(Overflow);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if len > OWN_BUFFER {
            self.seal();
            let mut own = BytesMut::with_capacity(len);
            write(&mut own);
            debug_assert_eq!(own.len(), len, "record length");
            self.segments.push_back(own.freeze());
        } else {
            if self.open.capacity() - self.open.len() < len {
                // The old chunk stays alive with the records sealed in it.
                self.seal();
                self.open = BytesMut::with_capacity(CHUNK);
            }
            let before = self.open.len();
            write(&mut self.open);
            debug_assert_eq!(self.open.len() - before, len, "record length");
        }
        self.pending.push_back(Pending { seq, len, waiter });
        Ok(seq)
    }

    /// Moves what the open chunk holds to `segments` (the chunk's rest
    /// stays open for later records).
    fn seal(&mut self) {
        if !self.open.is_empty() {
            self.segments.push_back(self.open.split().freeze());
        }
    }

    /// Takes the next records not yet sent on the current link: at most
    /// `max`, within about [`BATCH_BYTES`](crate::wire::BATCH_BYTES), at
    /// least one. `None` when all went out.
    pub fn take(&mut self, max: usize) -> Option<Taken> {
        let unsent = self.pending.range(self.sent..).take(max);
        let count = crate::wire::fits_in_batch(unsent.map(|p| p.len));
        if count == 0 {
            return None;
        }
        let bytes: usize = self
            .pending
            .range(self.sent..self.sent + count)
            .map(|p| p.len)
            .sum();
        self.seal();
        let mut skip = self.front + self.sent_bytes;
        let mut want = bytes;
        let mut slices = Vec::new();
        for seg in &self.segments {
            if skip >= seg.len() {
                skip -= seg.len();
                continue;
            }
            let end = seg.len().min(skip + want);
            slices.push(seg.slice(skip..end));
            want -= end - skip;
            skip = 0;
            if want == 0 {
                break;
            }
        }
        debug_assert_eq!(want, 0, "the segments hold every pending record");
        self.sent += count;
        self.sent_bytes += bytes;
        Some(Taken {
            count,
            bytes,
            slices,
        })
    }

    /// Whether records wait to be sent on the current link.
    pub fn has_unsent(&self) -> bool {
        self.sent < self.pending.len()
    }

    /// The peer processed every record up to `upto`: forget them, release
    /// their waiters and free the chunks they emptied. Returns how many
    /// were acknowledged.
    pub fn ack(&mut self, upto: u64) -> usize {
        let (mut n, mut bytes) = (0, 0);
        while self.pending.front().is_some_and(|p| p.seq <= upto) {
            let Some(mut p) = self.pending.pop_front() else {
                break;
            };
            if let Some(w) = p.waiter.take() {
                let _ = w.send(());
            }
            n += 1;
            bytes += p.len;
        }
        if n == 0 {
            return 0;
        }
        if n <= self.sent {
            self.sent -= n;
            self.sent_bytes -= bytes;
        } else {
            self.sent = 0;
            self.sent_bytes = 0;
        }
        // Acknowledged records are normally sealed (they were taken);
        // sealing first keeps the count right whatever the peer says.
        self.seal();
        self.front += bytes;
        while let Some(seg) = self.segments.front() {
            if self.front < seg.len() {
                break;
            }
            self.front -= seg.len();
            self.segments.pop_front();
        }
        n
    }

    /// The link went down: everything unacknowledged is sent again on the
    /// next one, from the oldest.
    pub fn rewind(&mut self) {
        self.sent = 0;
        self.sent_bytes = 0;
    }

    /// Drops everything buffered (the peer is gone for good), counting it;
    /// returns how many.
    pub fn clear(&mut self) -> usize {
        let n = self.pending.len();
        self.dropped += n as u64;
        self.pending.clear();
        self.sent = 0;
        self.sent_bytes = 0;
        self.segments.clear();
        self.front = 0;
        self.open = BytesMut::new();
        n
    }

    /// Records buffered (sent or not, unacknowledged).
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Records dropped since creation.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Bytes held in chunks for the records not yet acknowledged (the
    /// sealed ones; tests check that acknowledged chunks are freed).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.segments.iter().map(Bytes::len).sum::<usize>() - self.front
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    /// Pushes a record of `len` bytes, each its sequence number's low byte.
    fn push(
        o: &mut Outbox,
        len: usize,
        waiter: Option<oneshot::Sender<()>>,
    ) -> Result<u64, Overflow> {
        let fill = o.next_seq() as u8;
        o.push(len, |b| b.put_bytes(fill, len), waiter)
    }

    /// The records of a taken frame, split by the given lengths.
    fn records(t: &Taken, lens: &[usize]) -> Vec<Vec<u8>> {
        let all: Vec<u8> = t.slices.iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(all.len(), t.bytes);
        let mut rest = &all[..];
        lens.iter()
            .map(|&l| {
                let (r, tail) = rest.split_at(l);
                rest = tail;
                r.to_vec()
            })
            .collect()
    }

    #[test]
    fn bounded_and_counted() {
        let mut o = Outbox::new(2);
        assert_eq!(push(&mut o, 3, None), Ok(1));
        assert_eq!(push(&mut o, 3, None), Ok(2));
        let (tx, mut rx) = oneshot::channel();
        assert_eq!(push(&mut o, 3, Some(tx)), Err(Overflow));
        assert!(
            rx.try_recv().is_err(),
            "waiter released (closed), not acked"
        );
        assert_eq!(o.dropped(), 1);
        assert_eq!(o.len(), 2);
        o.ack(1);
        assert_eq!(
            push(&mut o, 3, None),
            Ok(3),
            "room again; sequences stay contiguous"
        );
        assert_eq!(o.clear(), 2);
        assert_eq!(o.dropped(), 3);
        assert_eq!(o.held(), 0);
    }

    #[test]
    fn resend_after_rewind_keeps_order_and_sequence() {
        let mut o = Outbox::new(10);
        let (tx, mut rx) = oneshot::channel();
        push(&mut o, 2, Some(tx)).expect("room");
        push(&mut o, 3, None).expect("room");
        let t = o.take(10).expect("two");
        assert_eq!(t.count, 2);
        assert_eq!(records(&t, &[2, 3]), vec![vec![1; 2], vec![2; 3]]);
        assert!(o.take(10).is_none());
        push(&mut o, 4, None).expect("room");
        o.rewind();
        let t = o.take(2).expect("the first two again");
        assert_eq!(records(&t, &[2, 3]), vec![vec![1; 2], vec![2; 3]]);
        assert_eq!(o.ack(1), 1);
        assert_eq!(rx.try_recv(), Ok(()));
        let t = o.take(10).expect("the third");
        assert_eq!(records(&t, &[4]), vec![vec![3; 4]]);
        assert_eq!(o.ack(3), 2);
        assert!(o.is_empty() && !o.has_unsent());
        assert_eq!(o.held(), 0);
    }

    #[test]
    fn records_across_chunks_keep_their_bytes_and_free_them_when_acked() {
        // Records of every size from small to own-buffer, past several
        // chunks; taken in frames of at most 7, checked after all were
        // written, then acknowledged in steps.
        let mut o = Outbox::new(100_000);
        let lens: Vec<usize> = (0..3_000)
            .map(|i| 1 + (i * 37) % 900)
            .chain([CHUNK, 5])
            .collect();
        for &l in &lens {
            push(&mut o, l, None).expect("room");
        }
        let mut got = Vec::new();
        let mut at = 0;
        while let Some(t) = o.take(7) {
            assert!(t.count <= 7);
            got.extend(records(&t, &lens[at..at + t.count]));
            at += t.count;
        }
        assert_eq!(at, lens.len());
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r, &vec![(i + 1) as u8; lens[i]], "record {}", i + 1);
        }
        let total: usize = lens.iter().sum();
        assert_eq!(o.held(), total);
        o.ack(1_000);
        assert_eq!(o.held(), lens[1_000..].iter().sum::<usize>());
        // A rewind resends from the first unacknowledged record.
        o.rewind();
        let t = o.take(1).expect("one");
        assert_eq!(
            records(&t, &[lens[1_000]]),
            vec![vec![1_001u64 as u8; lens[1_000]]]
        );
        o.ack(lens.len() as u64);
        assert!(o.is_empty());
        assert!(
            o.segments.len() <= 1 && o.held() == 0,
            "every chunk freed but the open one"
        );
    }
}
