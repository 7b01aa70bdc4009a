//! Delivery of a run of messages forwarded by another node (one mesh
//! batch): deliveries gathered per session, then queued session by session.

use super::publish::direct_deliveries;
use super::Broker;
use crate::session::{Delivery, Message};
use crate::trie::{ClientId, Matches};
use std::collections::HashMap;
use std::sync::Arc;

/// Up to this many sessions, a client is found by scanning; beyond, by the
/// index.
const SCAN: usize = 16;

/// The deliveries of a run of forwarded messages, gathered per session
/// ([`Broker::stage_forwarded`]) and queued session by session
/// ([`Broker::flush_fanout`]): one session lookup, lock and wake-up per
/// session and run instead of per message (the connections drain their
/// queues on other threads meanwhile), and one subscription match per run
/// of messages on one topic. Each session gets its messages in order.
#[derive(Default)]
pub struct Fanout {
    /// Sessions in first-seen order, each with its deliveries in order.
    sessions: Vec<(ClientId, Vec<Delivery>)>,
    /// Where a client is in `sessions`, once there are more than [`SCAN`].
    index: HashMap<ClientId, usize>,
    /// The match of `topic`, direct entries sorted by client; valid until
    /// the flush (subscriptions may change between runs).
    matches: Matches,
    topic: Option<Arc<str>>,
}

impl Fanout {
    fn push(&mut self, client: &ClientId, d: Delivery) {
        // One publisher's messages come in runs: the last session first.
        if let Some((c, ds)) = self.sessions.last_mut() {
            // (`Arc<str>`'s `==` compares the pointers first.)
            if c == client {
                ds.push(d);
                return;
            }
        }
        let found = if self.sessions.len() <= SCAN {
            self.sessions.iter().position(|(c, _)| c == client)
        } else {
            if self.index.is_empty() {
                let all = self.sessions.iter().enumerate();
                self.index.extend(all.map(|(i, (c, _))| (c.clone(), i)));
            }
            self.index.get(client).copied()
        };
        match found {
            Some(i) => self.sessions[i].1.push(d),
            None => {
                if !self.index.is_empty() {
                    self.index.insert(client.clone(), self.sessions.len());
                }
                self.sessions.push((client.clone(), vec![d]));
            }
        }
    }
}

impl Broker {
    /// Gathers in `f` the deliveries of `msg`, forwarded by another node:
    /// to local ordinary subscribers if `direct`, and to one local member of
    /// each named shared group `(group, filter)`. Nothing is queued before
    /// [`flush_fanout`](Self::flush_fanout).
    pub fn stage_forwarded(
        &self,
        f: &mut Fanout,
        msg: &Arc<Message>,
        direct: bool,
        shared: &[(Arc<str>, Arc<str>)],
    ) {
        if !direct && shared.is_empty() {
            return;
        }
        if f.topic.as_ref() != Some(&msg.topic) {
            f.matches.clear();
            self.subs.matches(&msg.topic, &mut f.matches);
            f.matches.direct.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            f.topic = Some(msg.topic.clone());
        }
        let matches = std::mem::take(&mut f.matches);
        if direct {
            direct_deliveries(msg, &matches.direct, |client, d| {
                f.push(client, d);
                true
            });
        }
        for group in &matches.shared {
            let named =
                (shared.iter()).any(|(g, filter)| *g == group.group && *filter == group.filter);
            if named {
                if let Some((client, d)) = self.shared_pick(msg, group) {
                    f.push(client, d);
                }
            }
        }
        f.matches = matches;
    }

    /// Queues what `f` gathered, session by session, and empties it.
    /// Returns the number of deliveries taken (see [`Broker::deliver`]).
    pub fn flush_fanout(&self, f: &mut Fanout) -> usize {
        f.topic = None;
        f.matches.clear();
        f.index.clear();
        let mut n = 0;
        for (client, ds) in f.sessions.drain(..) {
            n += self.deliver_all(&client, ds);
        }
        n
    }
}
