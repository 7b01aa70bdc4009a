//! The publish path: the retained store, local matching and delivery
//! (one delivery per client; one member per shared group), and the
//! cluster's plan for shared groups and remote forwarding.

use super::{with_matches, Broker, Fanout};
use crate::auth::BoxFuture;
use crate::codec::QoS;
use crate::config::SharedPolicy;
use crate::session::{now_ms, Delivery, Enqueued, Message};
use crate::trie::{ClientId, SharedMatch, SubEntry};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// How long a retained deletion is remembered, so that stale copies from
/// other nodes do not resurrect it.
pub const TOMBSTONE_TTL_MS: u64 = 3_600_000;

impl Broker {
    /// Retained messages matching a plain `filter`, expired ones left out.
    pub fn retained_for(&self, filter: &str) -> Vec<(String, Arc<Message>)> {
        let mut out = Vec::new();
        self.retained.matching(filter, &mut out);
        let now = now_ms();
        out.retain(|(_, m)| !m.payload.is_empty() && !m.expired(now));
        out
    }

    /// Number of retained messages (deletion markers not counted).
    pub fn retained_count(&self) -> usize {
        usize::try_from(self.metrics.retained.get()).unwrap_or(0)
    }

    /// Publishes `msg` on this node: updates the retained store, delivers
    /// to local subscribers and forwards to remote routes. Returns the
    /// number of local sessions it reached and the remote acknowledgement
    /// to wait on (for QoS 1/2).
    pub fn publish(&self, mut msg: Arc<Message>) -> (usize, Option<BoxFuture<'static, ()>>) {
        if msg.retain && self.config.mqtt.retain_available {
            // Newer than what this node holds: clock readings repeat within
            // a millisecond, and other nodes keep the greater (timestamp,
            // node), so equal stamps would leave them on an older write.
            let held = self.retained.get(&msg.topic);
            if let Some(t) = held.as_ref().map(|m| m.timestamp) {
                if t >= msg.timestamp {
                    Arc::make_mut(&mut msg).timestamp = t.saturating_add(1);
                }
            }
            self.store_retained(&msg, held.as_deref());
        }
        with_matches(|m| {
            self.subs.matches(&msg.topic, m);
            let mut local = vec![true; m.shared.len()];
            let remote = self.remote().forward(&msg, &m.shared, &mut local);
            let mut n = self.deliver_direct(&msg, &mut m.direct);
            for (group, keep) in m.shared.iter().zip(local) {
                if keep {
                    n += usize::from(self.deliver_shared(&msg, group));
                }
            }
            (n, self.durable_after(&msg, remote))
        })
    }

    /// Delivers a message forwarded by another node: to local ordinary
    /// subscribers if `direct`, and to one local member of each named
    /// shared group `(group, filter)`. Neither forwarded again nor stored
    /// as retained (the origin replicates retained messages separately).
    /// Returns the number of sessions reached. A run of forwarded messages
    /// goes through a [`Fanout`] instead.
    pub fn deliver_forwarded(
        &self,
        msg: &Arc<Message>,
        direct: bool,
        shared: &[(Arc<str>, Arc<str>)],
    ) -> usize {
        let mut fanout = Fanout::default();
        self.stage_forwarded(&mut fanout, msg, direct, shared);
        self.flush_fanout(&mut fanout)
    }

    /// Stores a retained message, or a deletion (empty payload) as a
    /// tombstone: never delivered, but it carries its (timestamp, node) so
    /// that a stale copy arriving later from another node (a snapshot taken
    /// before the delete, or from the other side of a partition) cannot
    /// bring the message back. Tombstones expire after [`TOMBSTONE_TTL_MS`].
    /// `held` is what the store holds for the topic (looked up by the caller).
    fn store_retained(&self, msg: &Arc<Message>, held: Option<&Message>) {
        let was_live = held.is_some_and(|m| !m.payload.is_empty());
        let tombstone = msg.payload.is_empty();
        let stored = if tombstone {
            let mut t = (**msg).clone();
            t.expires_at = Some(now_ms().saturating_add(TOMBSTONE_TTL_MS));
            Arc::new(t)
        } else {
            msg.clone()
        };
        // Tombstones are stored too: they stop stale snapshots resurrecting
        // a deleted message after a restart as before it.
        self.store.put_retained(&stored);
        self.retained.set(&msg.topic, stored);
        match (was_live, tombstone) {
            (false, false) => {
                self.metrics.retained.inc();
            }
            (true, true) => {
                self.metrics.retained.dec();
            }
            _ => {}
        }
    }

    /// Applies a retained message (or deletion, if the payload is empty)
    /// replicated from another node. Concurrent writes converge: the last
    /// writer by (timestamp, node name) wins. Returns whether it applied.
    pub fn apply_retained(&self, msg: Arc<Message>) -> bool {
        let key = |m: &Message| {
            (
                m.timestamp,
                m.origin_node.clone().unwrap_or_else(|| self.node.clone()),
            )
        };
        let current = self.retained.get(&msg.topic);
        if current.as_ref().is_some_and(|c| key(c) >= key(&msg)) {
            return false;
        }
        self.store_retained(&msg, current.as_deref());
        true
    }

    /// Every retained message and deletion tombstone, for a node that joins
    /// or a link that comes back.
    pub fn retained_snapshot(&self) -> Vec<Arc<Message>> {
        // A visit of every entry (`#` would skip `$` topics).
        let now = now_ms();
        let mut all = Vec::new();
        self.retained.retain_where(|_, m| {
            if !m.expired(now) {
                all.push(m.clone());
            }
            true
        });
        all
    }

    /// One delivery per client however many of its subscriptions match:
    /// the highest QoS, and (5.0) every subscription identifier.
    fn deliver_direct(&self, msg: &Arc<Message>, direct: &mut [(ClientId, SubEntry)]) -> usize {
        direct.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        direct_deliveries(msg, direct, |client, d| self.deliver(client, d))
    }

    /// Exactly one member of a shared group gets the message: by the
    /// configured policy, among online members when there are any.
    fn deliver_shared(&self, msg: &Arc<Message>, group: &SharedMatch) -> bool {
        match self.shared_pick(msg, group) {
            Some((client, d)) => self.deliver(client, d),
            None => false,
        }
    }

    /// The member of `group` that gets `msg`, and its delivery.
    pub(super) fn shared_pick<'g>(
        &self,
        msg: &Arc<Message>,
        group: &'g SharedMatch,
    ) -> Option<(&'g ClientId, Delivery)> {
        let members = &group.members;
        if members.is_empty() {
            return None;
        }
        let start = match self.config.mqtt.shared_subscription_policy {
            SharedPolicy::Random => rand::random::<usize>(),
            SharedPolicy::RoundRobin | SharedPolicy::PreferLocal => self
                .shared_rr
                .entry((group.group.clone(), group.filter.clone()))
                .or_default()
                .fetch_add(1, Ordering::Relaxed),
        } % members.len();
        let pick = (0..members.len())
            .map(|i| &members[(start + i) % members.len()])
            .find(|(c, _)| self.session(c).is_some_and(|s| s.is_online()))
            .unwrap_or(&members[start]);
        let (client, e) = pick;
        let d = Delivery {
            msg: msg.clone(),
            qos: msg.qos.min(e.options.qos),
            retain: e.options.retain_as_published && msg.retain,
            sub_ids: e.identifier.into_iter().collect(),
        };
        Some((client, d))
    }

    /// Queues `d` for `client`'s session and wakes its connection.
    pub fn deliver(&self, client: &str, d: Delivery) -> bool {
        self.deliver_all(client, std::iter::once(d)) > 0
    }

    /// Queues `ds` in order for `client`'s session, under one lock, and
    /// wakes its connection once. Returns how many it took (queued, or
    /// dropped by the queue's policy); none when the session is gone.
    pub(super) fn deliver_all(
        &self,
        client: &str,
        ds: impl IntoIterator<Item = Delivery>,
    ) -> usize {
        let Some(cell) = self.session(client) else {
            return 0;
        };
        let mut st = cell.state.lock();
        if st.ended {
            return 0;
        }
        let online = st.owner.is_some();
        let base = if online {
            self.knobs.max_online_messages()
        } else {
            self.knobs.max_offline_messages()
        };
        let (mut taken, mut queued, mut full_queued) = (0, false, false);
        let (mut dropped, mut dropped_qos) = (0u64, QoS::AtMostOnce);
        for d in ds {
            let qos = d.qos;
            // Backpressure (see `limits`): QoS 1/2 to a full online queue
            // is kept, up to the headroom, and the publisher is told to
            // slow down.
            let full = online && qos != QoS::AtMostOnce && st.queue_len() >= base;
            let limit = match full {
                true => base.saturating_add(self.knobs.qos_queue_headroom()),
                false => base,
            };
            match st.enqueue(d, online, limit, self.config.mqtt.queue_drop_policy) {
                Enqueued::Queued => {
                    taken += 1;
                    queued = true;
                    full_queued |= full;
                }
                Enqueued::Dropped => {
                    taken += 1;
                    dropped += 1;
                    dropped_qos = dropped_qos.max(qos);
                }
                Enqueued::Skipped => {}
            }
        }
        drop(st);
        if full_queued {
            crate::limits::note_full(&cell);
        }
        if dropped > 0 {
            self.metrics.queue_drops.inc_by(dropped);
            if dropped_qos == QoS::AtMostOnce {
                tracing::debug!(client_id = %client, dropped, "queue full, message dropped");
            } else {
                tracing::warn!(client_id = %client, online, limit = base, dropped, "queue full, QoS 1/2 message dropped");
            }
        }
        if queued && online {
            cell.wake();
        }
        taken
    }
}

/// The deliveries of `msg` to the clients of `direct` (sorted by client),
/// one per client, given to `sink`; returns how many it took.
pub(super) fn direct_deliveries(
    msg: &Arc<Message>,
    direct: &[(ClientId, SubEntry)],
    mut sink: impl FnMut(&ClientId, Delivery) -> bool,
) -> usize {
    let mut n = 0;
    for group in direct.chunk_by(|a, b| a.0 == b.0) {
        let client = &group[0].0;
        let mut qos = None;
        let mut retain = false;
        let mut sub_ids = Vec::new();
        for (_, e) in group {
            if e.options.no_local && msg.origin.as_ref() == Some(client) {
                continue;
            }
            qos = qos.max(Some(msg.qos.min(e.options.qos)));
            retain |= e.options.retain_as_published && msg.retain;
            sub_ids.extend(e.identifier);
        }
        if let Some(qos) = qos {
            let d = Delivery {
                msg: msg.clone(),
                qos,
                retain,
                sub_ids,
            };
            n += usize::from(sink(client, d));
        }
    }
    n
}
