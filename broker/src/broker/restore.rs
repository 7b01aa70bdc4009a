//! Start-up from the durable store: sessions (subscriptions back in the
//! table, queue in order up to the in-memory cap — the rest is read back
//! as it drains — in-flight QoS 1/2 with their packet ids, QoS 2 ids
//! received) and retained messages, expired ones purged; and the
//! durability wait the publish path adds to QoS 1/2 acknowledgements.

use super::{Broker, SessionCell};
use crate::auth::BoxFuture;
use crate::codec::QoS;
use crate::session::{now_ms, Inflight, Message, SessionData};
use crate::store::track::Track;
use crate::store::{Loaded, StoredSession};
use crate::topic;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// What [`Broker::restore`] brought back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// Sessions resumed.
    pub sessions: usize,
    /// Messages queued or in flight in them.
    pub messages: usize,
    /// Retained messages.
    pub retained: usize,
    /// Sessions and messages dropped because they had expired.
    pub expired: usize,
}

impl Broker {
    /// Installs the state loaded from the store. Call once, before
    /// clients are served. Expired sessions and messages are deleted.
    pub fn restore(&self, loaded: Loaded) -> Restored {
        let now = now_ms();
        let mut r = Restored::default();
        for m in loaded.retained {
            if m.expired(now) {
                self.store.delete_retained(&m.topic);
                r.expired += 1;
            } else {
                // Tombstones (empty payload) are restored but not counted.
                let live = !m.payload.is_empty();
                self.retained.set(&m.topic.clone(), Arc::new(m));
                if live {
                    self.metrics.retained.inc();
                    r.retained += 1;
                }
            }
        }
        for s in loaded.sessions {
            let meta = &s.meta;
            let since = meta.offline_since.unwrap_or(now);
            let exp = meta.expiry_interval;
            if exp == 0 || (exp != u32::MAX && since.saturating_add(u64::from(exp) * 1000) <= now) {
                self.store.delete_session(&s.client_id);
                r.expired += 1;
                continue;
            }
            r.messages += s.messages.len() + s.spilled;
            r.sessions += 1;
            self.restore_session(s, since, now, &mut r.expired);
        }
        r
    }

    fn restore_session(&self, s: StoredSession, since: u64, now: u64, expired: &mut usize) {
        let client: crate::trie::ClientId = s.client_id.as_str().into();
        let mut data = SessionData::new(client.clone());
        data.subscriptions = s.meta.subscriptions.iter().cloned().collect();
        data.incoming_qos2 = s.meta.incoming_qos2.iter().copied().collect();
        data.will = s.meta.will.clone().map(Box::new);
        data.expiry_interval = s.meta.expiry_interval;
        data.last_pkid = s.meta.last_pkid;
        for pkid in &s.meta.released {
            data.inflight.push_back((*pkid, Inflight::Released));
        }
        let mut queue = VecDeque::new();
        let mut inflight = HashMap::new();
        for (seq, pkid, d) in s.messages {
            if pkid != 0 {
                // Sent before the crash: again first, with DUP and its id.
                inflight.insert(pkid, seq);
                data.inflight.push_back((pkid, Inflight::Sent(d)));
            } else if d.msg.expired(now) {
                self.store.delete_message(&s.client_id, seq);
                *expired += 1;
            } else {
                queue.push_back(Some(seq));
                data.queue.push_back(d);
            }
        }
        let spill = (s.spilled, s.spill_from);
        let track = Track::restored(&self.store, queue, inflight, s.meta, spill);
        let cell = SessionCell::with_track(Some(track), data);
        cell.state.lock().offline_since = std::num::NonZeroU64::new(since);
        let subs: Vec<_> = cell
            .state
            .lock()
            .data
            .subscriptions
            .iter()
            .map(|(f, e)| (f.clone(), e.clone()))
            .collect();
        if self.sessions.insert(client.clone(), cell).is_none() {
            self.metrics.sessions.inc();
        }
        for (f, e) in subs {
            if topic::valid_topic_filter(&f) && self.subs.subscribe(&f, &client, e) {
                self.metrics.subscriptions.inc();
                self.remote().route_added(&f, &client);
            }
        }
    }

    /// The acknowledgement future for a publish of `msg`: the cluster's
    /// (`remote`) and, for QoS 1/2 with a store, the commit of everything
    /// written so far — the message in every local queue it went to.
    pub(super) fn durable_after(
        &self,
        msg: &Message,
        remote: Option<BoxFuture<'static, ()>>,
    ) -> Option<BoxFuture<'static, ()>> {
        if msg.qos == QoS::AtMostOnce {
            return remote;
        }
        let Some(disk) = self.store.durable() else {
            return remote;
        };
        Some(match remote {
            None => disk,
            Some(remote) => Box::pin(async move {
                tokio::join!(remote, disk);
            }),
        })
    }
}
