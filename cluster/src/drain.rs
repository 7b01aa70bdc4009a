//! Graceful drain: hand every persistent session to the remaining nodes,
//! then leave the mesh, losing no message published meanwhile.
//!
//! The order ([`Cluster::drain`]; clients are already disconnected, so
//! every session here is offline and still subscribed):
//!
//! 1. **Hand-off.** Each persistent session (expiry > 0) is exported and
//!    sent with `Handoff` to a peer picked by a hash of its client id among
//!    the up peers (the next one on failure). The receiver imports it and
//!    announces its routes, then acks. The session *stays subscribed here*:
//!    what is published meanwhile still lands in its queue here.
//! 2. **Leave.** `Leave` lists each new home with the filters it took
//!    over. A peer routes those filters to the new home *before* dropping
//!    this node's routes, so every publish matches one or the other; what
//!    it had already buffered for this node still comes here, after which
//!    it closes its link. Links to this node are refused from now on.
//! 3. **Wait** until every peer has closed its link to this node (bounded
//!    by the grace period): nothing more can arrive.
//! 4. **Append.** Each handed-off session is removed here; the messages
//!    that reached it after its export go to its new home with an
//!    `append` hand-off.
//!
//! Guarantee: a message published anywhere after the export either
//! matched the new home's route (delivered there) or this node's (queued
//! here, then appended there); duplicates are possible, losses are not,
//! as long as the drain finishes within the grace period. A session whose
//! hand-off failed on every peer stays here and is reported.

use crate::convert::{session_from_pb, session_to_pb};
use crate::link::Client;
use crate::node::{Cluster, Inner};
use crate::pb;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tonic::Status;
use tracing::{info, warn};

/// Longest single `Handoff` call.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(5);

/// A session this node handed off while draining.
pub(crate) struct Moved {
    /// Its new home.
    pub node: Arc<str>,
    /// How many queued messages the export carried.
    pub exported: usize,
    /// Its filters, announced in `Leave`.
    pub filters: Vec<String>,
    /// A client of the new home, for the append.
    pub client: Client,
}

/// What a drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Sessions imported by another node.
    pub handed_off: usize,
    /// Messages that reached a session after its export, sent on.
    pub appended: usize,
    /// Sessions no peer took (left in place; lost when the process exits).
    pub failed: Vec<String>,
}

/// FNV-1a, to spread sessions over peers the same way on every run.
fn spread(client_id: &str) -> usize {
    client_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) as usize
}

async fn call(client: &Client, req: pb::HandoffRequest, deadline: Instant) -> Result<bool, String> {
    let mut client = client.clone();
    let limit = deadline.min(Instant::now() + HANDOFF_TIMEOUT);
    match tokio::time::timeout_at(limit, client.handoff(req)).await {
        Ok(Ok(ack)) => Ok(ack.into_inner().imported),
        Ok(Err(status)) => Err(status.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

impl Cluster {
    /// Drains this node (see the module docs) within `deadline`, then stops
    /// every task. Call after client connections are closed.
    pub async fn drain(&self, deadline: Instant) -> DrainReport {
        let inner = &self.inner;
        let mut report = DrainReport::default();
        if let Some(broker) = inner.broker() {
            let mut targets: Vec<(Arc<str>, Client)> = inner
                .all_peers()
                .iter()
                .filter_map(|p| {
                    let st = p.state.lock();
                    let client = st.client.clone().filter(|_| st.up && !st.left)?;
                    Some((p.name.clone(), client))
                })
                .collect();
            targets.sort_by(|a, b| a.0.cmp(&b.0));
            for id in broker.persistent_offline_sessions() {
                let Some(data) = broker.export_session(&id) else {
                    continue; // claimed by a reconnecting client meanwhile
                };
                if targets.is_empty() || Instant::now() >= deadline {
                    report.failed.push(id.to_string());
                    continue;
                }
                let req = pb::HandoffRequest {
                    session: Some(session_to_pb(&data, &inner.node)),
                    append: false,
                    from: inner.node.to_string(),
                };
                let start = spread(&id);
                let mut home = None;
                for k in 0..targets.len() {
                    let (node, client) = &targets[(start + k) % targets.len()];
                    match call(client, req.clone(), deadline).await {
                        Ok(_) => {
                            home = Some((node.clone(), client.clone()));
                            break;
                        }
                        Err(e) => {
                            warn!(client_id = %id, peer = %node, error = %e, "hand-off failed")
                        }
                    }
                }
                match home {
                    Some((node, client)) => {
                        report.handed_off += 1;
                        let moved = Moved {
                            node,
                            exported: data.queue.len(),
                            filters: data.subscriptions.keys().cloned().collect(),
                            client,
                        };
                        inner.moved.lock().insert(id.to_string(), moved);
                    }
                    None => report.failed.push(id.to_string()),
                }
            }
        }
        self.leave_at(deadline).await;
        report.appended = append(inner, deadline).await;
        if !report.failed.is_empty() {
            warn!(sessions = ?report.failed, "sessions not handed off");
        }
        info!(
            handed_off = report.handed_off,
            appended = report.appended,
            failed = report.failed.len(),
            "drain complete"
        );
        self.shutdown().await;
        report
    }

    /// Graceful leave without hand-off (bounded by `grace`): peers drop
    /// this node's routes at once instead of after the route grace.
    pub async fn leave(&self, grace: Duration) {
        self.leave_at(Instant::now() + grace).await;
        self.shutdown().await;
    }

    /// Steps 2 and 3: `Leave` (with the moved filters) to every peer, then
    /// wait until every link, in either direction, has ended.
    async fn leave_at(&self, deadline: Instant) {
        let inner = &self.inner;
        inner.leaving.cancel();
        let mut by_node: BTreeMap<Arc<str>, BTreeSet<String>> = BTreeMap::new();
        for m in inner.moved.lock().values() {
            by_node
                .entry(m.node.clone())
                .or_default()
                .extend(m.filters.iter().cloned());
        }
        let moved: Vec<pb::Moved> = by_node
            .into_iter()
            .map(|(node, filters)| pb::Moved {
                node: node.to_string(),
                filters: filters.into_iter().collect(),
            })
            .collect();
        let txs: Vec<_> = inner
            .all_peers()
            .iter()
            .filter_map(|p| p.state.lock().tx.clone())
            .collect();
        for tx in txs {
            let frame = crate::wire::Encoded::frame(pb::frame::Kind::Leave(pb::Leave {
                moved: moved.clone(),
            }));
            let _ = tokio::time::timeout_at(deadline, tx.send(frame)).await;
        }
        // Our links end when peers close them after Leave; theirs when
        // they have delivered what they buffered for us.
        inner.link_tasks.close();
        let _ = tokio::time::timeout_at(deadline, inner.link_tasks.wait()).await;
        while Instant::now() < deadline && inner.inbound.lock().values().any(|i| i.links > 0) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Step 4: sends each moved session's messages queued after its export.
async fn append(inner: &Inner, deadline: Instant) -> usize {
    let Some(broker) = inner.broker() else {
        return 0;
    };
    let moved: Vec<(String, Moved)> = inner.moved.lock().drain().collect();
    let mut appended = 0;
    for (id, m) in moved {
        let Some(mut data) = broker.take_session(&id, true) else {
            continue;
        };
        data.queue = data.queue.into_iter().skip(m.exported).collect();
        if data.queue.is_empty() {
            continue;
        }
        let n = data.queue.len();
        let req = pb::HandoffRequest {
            session: Some(session_to_pb(&data, &inner.node)),
            append: true,
            from: inner.node.to_string(),
        };
        match call(&m.client, req, deadline).await {
            Ok(_) => appended += n,
            Err(e) => warn!(client_id = %id, peer = %m.node, error = %e, lost = n, "append failed"),
        }
    }
    appended
}

/// The receiver of `Handoff`: imports the session (announcing its routes)
/// or, with `append`, queues its messages for the session here.
pub(crate) fn on_handoff(inner: &Inner, req: pb::HandoffRequest) -> Result<pb::HandoffAck, Status> {
    if inner.leaving.is_cancelled() {
        return Err(Status::unavailable("this node is leaving"));
    }
    let broker = inner
        .broker()
        .ok_or_else(|| Status::unavailable("broker gone"))?;
    let session = req
        .session
        .ok_or_else(|| Status::invalid_argument("no session"))?;
    let data = session_from_pb(session).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let id = data.client_id.clone();
    if req.append {
        let n = data.queue.len();
        let queued = data
            .queue
            .into_iter()
            .filter(|d| broker.deliver(&id, d.clone()))
            .count();
        info!(client_id = %id, from = %req.from, queued, of = n, "messages appended to a handed-off session");
        return Ok(pb::HandoffAck {
            imported: queued > 0,
        });
    }
    let imported = broker.import_session(data);
    info!(client_id = %id, from = %req.from, imported, "session handed off to this node");
    Ok(pb::HandoffAck { imported })
}
