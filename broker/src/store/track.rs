//! Per-session bookkeeping between a session's in-memory queue and its
//! keys in the store: [`Track`] mirrors `queue` (one sequence number per
//! entry, `None` for entries never written) and maps in-flight packet ids
//! to sequence numbers. The `SessionState` methods here wrap the pure
//! `SessionData` transitions and emit the matching store writes; without
//! a store (`track` is `None`) they are the plain transitions.
//!
//! A session is written only while its expiry interval is non-zero: a
//! session with expiry 0 ends with its connection, so a restart would
//! drop it anyway. A written session keeps at most
//! `storage.max_in_memory_per_session` queued messages in memory; the
//! rest are [`Spill`]ed (store only) and read back as the queue drains.
//!
//! In-flight QoS 1/2 messages are rewritten with their packet id when
//! sent, so that after a crash they are sent again with DUP and the same
//! id, before the queue.

use super::spill::{Queues, Spill};
use super::{SessionMeta, Store};
use crate::broker::SessionState;
use crate::codec::QoS;
use crate::config::DropPolicy;
use crate::session::{now_ms, Delivery, Enqueued, Inflight, PubRecOutcome, SessionData};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// What of a session is in the store, and under which keys.
pub(crate) struct Track {
    store: Arc<dyn Store>,
    /// Written at all (record and messages).
    persisted: bool,
    /// Parallel to `SessionData::queue`: each entry's sequence number.
    queue: VecDeque<Option<u64>>,
    /// In-flight packet id → sequence number of its stored message.
    inflight: HashMap<u16, u64>,
    /// The record last written, to skip unchanged rewrites.
    last: Option<SessionMeta>,
    /// The queue's tail that is in the store only.
    spill: Spill,
}

impl Track {
    /// Bookkeeping for a new session, or `None` when there is no store.
    pub(crate) fn new(store: &Arc<dyn Store>, queued: usize) -> Option<Box<Track>> {
        store.enabled().then(|| {
            Box::new(Track {
                store: store.clone(),
                persisted: false,
                queue: std::iter::repeat_n(None, queued).collect(),
                inflight: HashMap::new(),
                last: None,
                spill: Spill::new(store.memory_cap()),
            })
        })
    }

    /// Reads spilled messages back into `data`'s queue once it is low.
    fn refill_low(&mut self, data: &mut SessionData, now: u64, expired: &mut u64) {
        let q = Queues {
            data: &mut data.queue,
            seqs: &mut self.queue,
        };
        self.spill
            .refill_low(&*self.store, &data.client_id, q, now, expired);
    }

    /// Reads every spilled message back into `data`'s queue.
    fn unspill(&mut self, data: &mut SessionData) {
        let q = Queues {
            data: &mut data.queue,
            seqs: &mut self.queue,
        };
        let mut expired = 0;
        self.spill.refill(
            &*self.store,
            &data.client_id,
            q,
            usize::MAX,
            now_ms(),
            &mut expired,
        );
    }

    fn drop_front(&mut self, client: &str) {
        if let Some(Some(seq)) = self.queue.pop_front() {
            self.store.delete_message(client, seq);
        }
    }

    fn push(&mut self, client: &str, d: &Delivery) {
        let seq = (self.persisted && d.qos != QoS::AtMostOnce).then(|| {
            let seq = self.store.next_seq();
            self.store.put_message(client, seq, 0, d);
            seq
        });
        self.queue.push_back(seq);
    }

    fn forget(&mut self, client: &str, pkid: u16) {
        if let Some(seq) = self.inflight.remove(&pkid) {
            self.store.delete_message(client, seq);
        }
    }
}

impl SessionState {
    /// Messages queued: in memory and spilled to the store.
    pub(crate) fn queue_len(&self) -> usize {
        self.data.queue.len() + self.track.as_ref().map_or(0, |t| t.spill.len)
    }

    /// [`SessionData::enqueue`](crate::session::SessionData::enqueue), written
    /// through; past the in-memory cap the message goes to the store only.
    pub(crate) fn enqueue(
        &mut self,
        d: Delivery,
        online: bool,
        limit: usize,
        policy: DropPolicy,
    ) -> Enqueued {
        let spilling = self
            .track
            .as_deref()
            .is_some_and(|t| t.persisted && t.spill.active(self.data.queue.len()));
        if spilling {
            return self.enqueue_spilled(d, online, limit, policy);
        }
        let before = self.data.queue.len();
        let outcome = self.data.enqueue(d, online, limit, policy);
        let Some(t) = self.track.as_deref_mut() else {
            return outcome;
        };
        let client = &*self.data.client_id;
        let added = match outcome {
            Enqueued::Queued => true,
            Enqueued::Dropped if policy == DropPolicy::DropOldest => {
                if before > 0 {
                    t.drop_front(client);
                }
                true
            }
            _ => false,
        };
        if let (true, Some(back)) = (added, self.data.queue.back()) {
            t.push(client, back);
        }
        outcome
    }

    /// `enqueue` while the queue's tail is in the store: the same limits
    /// and drop policies over the whole queue; the message is written
    /// behind the spilled ones (QoS 0 too, to keep the order).
    fn enqueue_spilled(
        &mut self,
        d: Delivery,
        online: bool,
        limit: usize,
        policy: DropPolicy,
    ) -> Enqueued {
        if !online && d.qos == QoS::AtMostOnce {
            return Enqueued::Skipped;
        }
        let full = self.queue_len() >= limit;
        let Some(t) = self.track.as_deref_mut() else {
            return Enqueued::Skipped;
        };
        if full && policy == DropPolicy::DropNewest {
            return Enqueued::Dropped;
        }
        if full {
            self.data.queue.pop_front();
            t.drop_front(&self.data.client_id);
        }
        t.spill.push(&*t.store, &self.data.client_id, &d);
        if self.data.queue.is_empty() {
            t.refill_low(&mut self.data, now_ms(), &mut 0);
        }
        if full {
            Enqueued::Dropped
        } else {
            Enqueued::Queued
        }
    }

    /// Drops the newest queued messages beyond `max` (spilled ones
    /// first); returns how many.
    pub(crate) fn trim_queue(&mut self, max: usize) -> usize {
        let in_memory = self.data.queue.len();
        let mut dropped = in_memory.saturating_sub(max);
        if let Some(t) = self.track.as_deref_mut() {
            let client = &*self.data.client_id;
            let keep = max.saturating_sub(in_memory);
            dropped += t.spill.truncate(&*t.store, client, keep);
            for seq in t.queue.drain(max.min(t.queue.len())..).flatten() {
                t.store.delete_message(client, seq);
            }
        }
        self.data.queue.truncate(max);
        dropped
    }

    /// The session's exportable state, spilled messages included.
    pub(crate) fn export(&self) -> SessionData {
        let mut data = self.data.clone();
        if let Some(t) = self.track.as_deref().filter(|t| t.spill.len > 0) {
            data.queue
                .extend(t.spill.read_all(&*t.store, &self.data.client_id));
        }
        data
    }

    /// [`SessionData::next_sendable`](crate::session::SessionData::next_sendable),
    /// written through; reads spilled messages back as the queue drains.
    pub(crate) fn next_sendable(
        &mut self,
        window: usize,
        now: u64,
        expired: &mut u64,
    ) -> Option<(Delivery, u16)> {
        let Some(t) = self.track.as_deref_mut() else {
            return self.data.next_sendable(window, now, expired);
        };
        loop {
            t.refill_low(&mut self.data, now, expired);
            let before = self.data.queue.len();
            let next = self.data.next_sendable(window, now, expired);
            let client = &*self.data.client_id;
            let popped = before - self.data.queue.len();
            let dropped = popped - usize::from(next.is_some());
            for _ in 0..dropped {
                t.drop_front(client);
            }
            if let Some((d, pkid)) = &next {
                match t.queue.pop_front().flatten() {
                    Some(seq) if *pkid != 0 => {
                        // Rewritten with its packet id: after a crash it
                        // is sent again with DUP and the same id (for QoS 2
                        // a new id would be a second message).
                        t.store.put_message(client, seq, *pkid, d);
                        t.inflight.insert(*pkid, seq);
                    }
                    Some(seq) => t.store.delete_message(client, seq),
                    None => {}
                }
            }
            // Everything in memory expired while more waits in the store:
            // read the next batch.
            if next.is_some() || !self.data.queue.is_empty() || t.spill.len == 0 || dropped == 0 {
                return next;
            }
        }
    }

    /// [`SessionData::puback`](crate::session::SessionData::puback), written through.
    pub(crate) fn puback(&mut self, pkid: u16) -> bool {
        let done = self.data.puback(pkid);
        if let (true, Some(t)) = (done, self.track.as_deref_mut()) {
            t.forget(&self.data.client_id, pkid);
        }
        done
    }

    /// [`SessionData::pubrec`](crate::session::SessionData::pubrec), written through.
    pub(crate) fn pubrec(&mut self, pkid: u16, reason: u8) -> PubRecOutcome {
        let outcome = self.data.pubrec(pkid, reason);
        if outcome != PubRecOutcome::Unknown {
            if let Some(t) = self.track.as_deref_mut() {
                t.forget(&self.data.client_id, pkid);
            }
            self.save();
        }
        outcome
    }

    /// [`SessionData::pubcomp`](crate::session::SessionData::pubcomp), written through.
    pub(crate) fn pubcomp(&mut self, pkid: u16) -> bool {
        let done = self.data.pubcomp(pkid);
        if done {
            self.save();
        }
        done
    }

    /// [`SessionData::abandon`](crate::session::SessionData::abandon), written through.
    pub(crate) fn abandon(&mut self, pkid: u16) {
        self.data.abandon(pkid);
        if let Some(t) = self.track.as_deref_mut() {
            t.forget(&self.data.client_id, pkid);
        }
    }

    /// The session's record as it stands.
    fn meta(&self) -> SessionMeta {
        let mut subscriptions: Vec<_> = self
            .data
            .subscriptions
            .iter()
            .map(|(f, e)| (f.clone(), e.clone()))
            .collect();
        subscriptions.sort_by(|a, b| a.0.cmp(&b.0));
        let mut incoming_qos2: Vec<u16> = self.data.incoming_qos2.iter().copied().collect();
        incoming_qos2.sort_unstable();
        SessionMeta {
            expiry_interval: self.data.expiry_interval,
            last_pkid: self.data.last_pkid,
            offline_since: self.offline_since.map(|s| s.get()),
            subscriptions,
            incoming_qos2,
            released: self
                .data
                .inflight
                .iter()
                .filter(|(_, f)| *f == Inflight::Released)
                .map(|(p, _)| *p)
                .collect(),
            will: self.data.will.as_deref().cloned(),
        }
    }

    /// Writes the session's record if it changed: everything, the first
    /// time; a deletion once the session ended or its expiry became 0.
    /// Call after changing anything of the session but its queue.
    pub(crate) fn save(&mut self) {
        if self.track.is_none() {
            return;
        }
        let gone = self.ended || self.data.expiry_interval == 0;
        let meta = (!gone).then(|| self.meta());
        let Some(t) = self.track.as_deref_mut() else {
            return;
        };
        let client = &*self.data.client_id;
        let Some(meta) = meta else {
            if t.persisted {
                if !self.ended && t.spill.len > 0 {
                    // Still served (expiry now 0): its queue goes back to memory.
                    t.unspill(&mut self.data);
                }
                let client = &*self.data.client_id;
                t.spill = Spill::new(t.spill.cap);
                t.store.delete_session(client);
                t.persisted = false;
                t.queue.iter_mut().for_each(|s| *s = None);
                t.inflight.clear();
                t.last = None;
            }
            return;
        };
        if t.last.as_ref() != Some(&meta) {
            t.store.put_session(client, &meta);
        }
        t.last = Some(meta);
        if !t.persisted {
            t.persisted = true;
            // In-flight first: sequence order is send order at restart.
            for (pkid, f) in &self.data.inflight {
                if let Inflight::Sent(d) = f {
                    let seq = t.store.next_seq();
                    t.store.put_message(client, seq, *pkid, d);
                    t.inflight.insert(*pkid, seq);
                }
            }
            t.queue.clear();
            let cap = t.spill.cap;
            for (i, d) in self.data.queue.iter().enumerate() {
                if i < cap {
                    t.push(client, d);
                } else {
                    t.spill.push(&*t.store, client, d);
                }
            }
            self.data.queue.truncate(cap);
        }
    }
}

impl Track {
    /// Bookkeeping for a session loaded from the store: its queue's
    /// sequence numbers, in-flight ids' sequence numbers, and its record.
    pub(crate) fn restored(
        store: &Arc<dyn Store>,
        queue: VecDeque<Option<u64>>,
        inflight: HashMap<u16, u64>,
        last: SessionMeta,
        (spilled, spill_from): (usize, u64),
    ) -> Box<Track> {
        let mut spill = Spill::new(store.memory_cap());
        spill.len = spilled;
        spill.from = spill_from;
        Box::new(Track {
            store: store.clone(),
            persisted: true,
            queue,
            inflight,
            last: Some(last),
            spill,
        })
    }
}
