//! Whether this node has joined the mesh, for the readiness probe.
//!
//! Ready once every address the peer source wants has been dialed at least
//! once, and with every peer that answered both directions are synced (this
//! node's initial sync is sent, the peer's has arrived). Unreachable
//! addresses do not hold readiness back, but if *no* peer is reachable the
//! node (the first of a cluster) waits `cluster.ready_wait_secs` after start.

use crate::node::Cluster;
use std::sync::Arc;
use std::time::Duration;

/// What the last dial of one address gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DialStatus {
    /// Nothing answered, or the link was refused.
    Unreachable,
    /// The address is this node.
    Itself,
    /// Linked to this node, and this node's initial sync is sent.
    Synced(Arc<str>),
}

impl Cluster {
    /// `Ok` once the mesh is joined (see the module docs), else what is
    /// still missing, for `/ready`'s `waiting` list.
    pub fn sync_status(&self) -> Result<(), String> {
        let inner = &self.inner;
        let wanted = inner.wanted.lock().clone();
        let mut waiting = Vec::new();
        let mut reachable = 0;
        {
            let dials = inner.dials.lock();
            let inbound = inner.inbound.lock();
            for addr in &wanted {
                match dials.get(addr) {
                    None => waiting.push(format!("{addr}: dialing")),
                    Some(DialStatus::Itself | DialStatus::Unreachable) => {}
                    Some(DialStatus::Synced(node)) => {
                        reachable += 1;
                        if !inbound.get(node).is_some_and(|i| i.synced) {
                            waiting.push(format!("{addr} ({node}): initial sync"));
                        }
                    }
                }
            }
        }
        if !waiting.is_empty() {
            return Err(format!("cluster: waiting for {}", waiting.join(", ")));
        }
        let wait = Duration::from_secs(inner.cfg.ready_wait_secs);
        if reachable == 0 && inner.epoch.elapsed() < wait {
            return Err(format!(
                "cluster: no reachable peer yet (ready {}s after start without one)",
                wait.as_secs()
            ));
        }
        Ok(())
    }
}
