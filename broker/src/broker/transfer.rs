//! Moving sessions between nodes and the state the cluster reads:
//! export/import, takeover by another node, connected clients, local
//! routes; and expiry of offline sessions and retained messages.

use super::{Broker, SessionCell};
use crate::session::{now_ms, SessionData};
use crate::topic;
use crate::trie::{ClientId, SubEntry};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

impl Broker {
    /// A copy of `client_id`'s session state, to move it elsewhere.
    pub fn export_session(&self, client_id: &str) -> Option<SessionData> {
        self.session(client_id).map(|c| c.export())
    }

    /// Installs a session (offline) from exported state, replacing any
    /// offline session of the same client. Refused (false) while one is online.
    pub fn import_session(&self, data: SessionData) -> bool {
        let client = data.client_id.clone();
        if self.session(&client).is_some_and(|c| c.is_online()) {
            return false;
        }
        let filters: Vec<(String, SubEntry)> = data
            .subscriptions
            .iter()
            .map(|(f, e)| (f.clone(), e.clone()))
            .collect();
        let cell = SessionCell::new(data, &self.store);
        if let Some(old) = self.sessions.insert(client.clone(), cell.clone()) {
            let mut st = old.state.lock();
            st.ended = true;
            st.save();
            let mut old_data = std::mem::replace(&mut st.data, SessionData::new(client.clone()));
            drop(st);
            self.drop_subscriptions(&mut old_data);
        } else {
            self.metrics.sessions.inc();
        }
        cell.state.lock().save();
        for (f, e) in filters {
            if topic::valid_topic_filter(&f) && self.subs.subscribe(&f, &client, e) {
                self.metrics.subscriptions.inc();
                self.remote().route_added(&f, &client);
            }
        }
        true
    }

    /// Gives up the session of `client_id` to another node: its connection
    /// (if any) is closed with DISCONNECT 0x8E, the session leaves this
    /// node, and its state is returned when `keep` (clean start = false at
    /// the new node); otherwise it is discarded.
    pub fn take_session(&self, client_id: &str, keep: bool) -> Option<SessionData> {
        if let Some((_, token)) = self.pending_wills.remove(client_id) {
            token.cancel();
        }
        let (_, cell) = self.sessions.remove(client_id)?;
        self.metrics.sessions.dec();
        let mut st = cell.state.lock();
        if let Some(owner) = st.owner.take() {
            owner.kick();
            st.resume_parked(&cell);
        }
        cell.online.store(false, Ordering::Relaxed);
        st.ended = true;
        let data = keep.then(|| st.export());
        self.drop_subscriptions(&mut st.data);
        st.save();
        data
    }

    /// Client ids of sessions that outlive their connection (expiry > 0)
    /// and have none now: what a draining node hands to its peers.
    pub fn persistent_offline_sessions(&self) -> Vec<ClientId> {
        self.sessions
            .iter()
            .filter(|e| {
                let st = e.value().state.lock();
                st.owner.is_none() && !st.ended && st.data.expiry_interval > 0
            })
            .map(|e| e.key().clone())
            .collect()
    }

    /// Clients with a live connection here, with when they connected.
    pub fn connected_clients(&self) -> Vec<(ClientId, u64)> {
        self.sessions
            .iter()
            .filter_map(|e| {
                let st = e.value().state.lock();
                st.owner
                    .as_ref()
                    .map(|_| (e.key().clone(), st.connected_at))
            })
            .collect()
    }

    /// Every local subscription as (filter, client): the routes this node owns.
    pub fn local_routes(&self) -> Vec<(String, ClientId)> {
        let mut out = Vec::new();
        for e in self.sessions.iter() {
            let st = e.value().state.lock();
            if !st.ended {
                out.extend(
                    st.data
                        .subscriptions
                        .keys()
                        .map(|f| (f.clone(), e.key().clone())),
                );
            }
        }
        out
    }

    /// Ends offline sessions whose expiry has passed; returns how many.
    pub fn expire_sessions(&self, now: u64) -> usize {
        let mut expired = Vec::new();
        for e in self.sessions.iter() {
            let st = e.value().state.lock();
            if let (None, Some(since)) = (&st.owner, st.offline_since.map(|s| s.get())) {
                let exp = st.data.expiry_interval;
                if exp != u32::MAX && since.saturating_add(u64::from(exp) * 1000) <= now {
                    expired.push(e.value().clone());
                }
            }
        }
        let mut n = 0;
        for cell in expired {
            let removed = self.sessions.remove_if(&cell.client_id, |_, v| {
                Arc::ptr_eq(v, &cell) && v.state.lock().owner.is_none()
            });
            if removed.is_some() {
                let mut st = cell.state.lock();
                st.ended = true;
                self.drop_subscriptions(&mut st.data);
                st.save();
                self.metrics.sessions.dec();
                n += 1;
            }
        }
        n
    }

    /// Drops retained messages whose expiry has passed.
    pub fn expire_retained(&self, now: u64) -> usize {
        // Expired tombstones go too, but only live messages were counted.
        let mut live = 0;
        let n = self.retained.retain_where(|topic, m| {
            let keep = !m.expired(now);
            if !keep {
                self.store.delete_retained(topic);
                if !m.payload.is_empty() {
                    live += 1;
                }
            }
            keep
        });
        for _ in 0..live {
            self.metrics.retained.dec();
        }
        n
    }
}

/// Periodic work: session and retained-message expiry. Ends with the broker.
pub(super) async fn housekeeping(broker: Weak<Broker>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds: u64 = 0;
    loop {
        tick.tick().await;
        let Some(b) = broker.upgrade() else { return };
        let now = now_ms();
        b.expire_sessions(now);
        rounds += 1;
        if rounds.is_multiple_of(40) {
            b.expire_retained(now);
        }
    }
}
