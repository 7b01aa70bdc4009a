//! What the management API does to the broker's state: listing sessions,
//! disconnecting a client (DISCONNECT 0x98 to 5.0 clients), and deleting a
//! retained message with a tombstone that replicates like any retained write.

use super::{Broker, SessionCell};
use crate::codec::{Properties, QoS};
use crate::session::{now_ms, Message};
use bytes::Bytes;
use std::sync::Arc;

impl Broker {
    /// Every session here, online and offline.
    pub fn all_sessions(&self) -> Vec<Arc<SessionCell>> {
        self.sessions.iter().map(|e| e.value().clone()).collect()
    }

    /// Disconnects `client_id`'s connection here, if any (5.0 clients get
    /// DISCONNECT 0x98; 3.x sockets are closed); with `cleanup` the session
    /// and its queue are deleted too. False if this node has no such session.
    pub fn admin_disconnect(&self, client_id: &str, cleanup: bool) -> bool {
        let Some(cell) = self.session(client_id) else {
            return false;
        };
        {
            let mut st = cell.state.lock();
            if let Some(owner) = &st.owner {
                let id = owner.id;
                owner.kick();
                st.admin_kick = Some(id);
                st.resume_parked(&cell);
            }
        }
        if cleanup {
            self.take_session(client_id, false);
        }
        true
    }

    /// A deletion marker for the retained message on `topic`, newer than
    /// whatever this node holds, written by this node: apply it here and on
    /// every peer with [`apply_retained`](Broker::apply_retained), and the
    /// last-writer-wins rule carries it like a client's empty retained publish.
    pub fn retained_tombstone(&self, topic: &str) -> Message {
        let mut msg = Message::new(
            Arc::from(topic),
            Bytes::new(),
            QoS::AtMostOnce,
            true,
            &Properties::default(),
        );
        let newer = self.retained.get(topic).map_or(0, |m| m.timestamp + 1);
        msg.timestamp = now_ms().max(newer);
        msg.origin_node = Some(self.node.clone());
        msg
    }

    /// Whether a live (non-deleted, unexpired) retained message is on `topic`.
    pub fn has_retained(&self, topic: &str) -> bool {
        self.retained
            .get(topic)
            .is_some_and(|m| !m.payload.is_empty() && !m.expired(now_ms()))
    }
}
