//! A snapshot of the session registry for the status page: how many
//! sessions are online and offline, and how many messages wait in them.

use super::Broker;

/// Session counts at one instant (see [`Broker::session_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Sessions with a live connection here.
    pub online: u64,
    /// Sessions kept without a connection (persistent, or awaiting expiry).
    pub offline: u64,
    /// Messages queued in sessions, not yet sent.
    pub queued: u64,
    /// QoS 1/2 messages sent and awaiting their acknowledgement.
    pub inflight: u64,
}

impl Broker {
    /// Counts sessions and their queues. Locks each session briefly, one
    /// at a time: O(sessions), meant for an admin request, not the hot path.
    pub fn session_stats(&self) -> SessionStats {
        let mut s = SessionStats::default();
        for e in self.sessions.iter() {
            let st = e.value().state.lock();
            if st.ended {
                continue;
            }
            match st.owner {
                Some(_) => s.online += 1,
                None => s.offline += 1,
            }
            s.queued += st.data.queue.len() as u64;
            s.inflight += st.data.inflight.len() as u64;
        }
        s
    }
}
