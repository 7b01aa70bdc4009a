//! The [`RemoteRoutes`] implementation: forwarding (one envelope per target
//! node, batched through its outbox), cluster-wide shared-group picks,
//! retained replication, route refcounts, claims and netsplit knobs.

use crate::convert::{message_to_pb, session_from_pb};
use crate::node::Cluster;
use crate::pb;
use crate::shared::{pick, Pick};
use futures_util::future::join_all;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tern_broker::admin::ClusterShow;
use tern_broker::auth::BoxFuture;
use tern_broker::codec::QoS;
use tern_broker::routes::{Operation, RemoteRoutes, Unavailable};
use tern_broker::session::{now_ms, Message, SessionData};
use tern_broker::trie::{ClientId, Matches, SharedMatch};
use tokio::sync::oneshot;
use tracing::{debug, warn};

/// Timeout of one `Claim` call.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Target {
    direct: bool,
    groups: Vec<pb::SharedGroup>,
    retained: bool,
}

impl Cluster {
    /// Target nodes of `msg` with what each must do; adjusts `deliver_locally`.
    fn targets(
        &self,
        msg: &Message,
        local_shared: &[SharedMatch],
        deliver_locally: &mut [bool],
    ) -> BTreeMap<Arc<str>, Target> {
        let inner = &self.inner;
        let mut m = Matches::default();
        inner.remote.matches(&msg.topic, &mut m);
        let mut targets: BTreeMap<Arc<str>, Target> = BTreeMap::new();
        for (node, _) in &m.direct {
            if *node != inner.node {
                targets.entry(node.clone()).or_default().direct = true;
            }
        }
        for sm in &m.shared {
            let mut nodes: Vec<Arc<str>> = sm
                .members
                .iter()
                .map(|(n, _)| n.clone())
                .filter(|n| *n != inner.node)
                .collect();
            nodes.sort();
            nodes.dedup();
            let local = local_shared
                .iter()
                .position(|l| l.group == sm.group && l.filter == sm.filter);
            let turn = {
                let mut rr = inner.shared_rr.lock();
                let c = rr.entry((sm.group.clone(), sm.filter.clone())).or_insert(0);
                *c = c.wrapping_add(1);
                *c - 1
            };
            let choice = pick(inner.policy, local.is_some(), &nodes, turn, rand::random());
            if let Some(Pick::Remote(node)) = choice {
                if let Some(flag) = local.and_then(|i| deliver_locally.get_mut(i)) {
                    *flag = false;
                }
                targets
                    .entry(node)
                    .or_default()
                    .groups
                    .push(pb::SharedGroup {
                        group: sm.group.to_string(),
                        filter: sm.filter.to_string(),
                    });
            }
        }
        if msg.retain && inner.retain_available {
            for p in inner.all_peers() {
                if p.state.lock().up {
                    targets.entry(p.name.clone()).or_default().retained = true;
                }
            }
        }
        targets
    }
}

impl RemoteRoutes for Cluster {
    fn forward(
        &self,
        msg: &Arc<Message>,
        local_shared: &[SharedMatch],
        deliver_locally: &mut [bool],
    ) -> Option<BoxFuture<'static, ()>> {
        let inner = &self.inner;
        let targets = self.targets(msg, local_shared, deliver_locally);
        if targets.is_empty() {
            return None;
        }
        let wire = message_to_pb(msg, &inner.node);
        let wait = msg.qos != QoS::AtMostOnce;
        let metrics = inner.metrics();
        let mut acks = Vec::new();
        for (node, t) in targets {
            let peer = inner.peer(&node);
            let (tx, rx) = match wait && peer.state.lock().up {
                true => {
                    let (tx, rx) = oneshot::channel();
                    (Some(tx), Some(rx))
                }
                false => (None, None),
            };
            let pushed = peer.outbox.lock().push(
                |seq| pb::Envelope {
                    seq,
                    message: Some(wire.clone()),
                    direct: t.direct,
                    groups: t.groups,
                    retained: t.retained,
                },
                tx,
            );
            match pushed {
                Ok(_) => {
                    metrics.forwarded_messages.inc();
                    metrics.forwarded_bytes.inc_by(msg.payload.len() as u64);
                    acks.extend(rx);
                    peer.notify.notify_one();
                }
                Err(_) => {
                    metrics.dropped_messages.inc();
                    debug!(peer = %node, "cluster buffer full: message dropped");
                }
            }
        }
        if acks.is_empty() {
            return None;
        }
        let timeout = inner.ack_timeout();
        Some(Box::pin(async move {
            // A peer that does not ack in time keeps the message in its
            // retry buffer; the publisher is not held longer.
            let _ = tokio::time::timeout(timeout, join_all(acks)).await;
        }))
    }

    fn route_added(&self, filter: &str, _client: &ClientId) {
        let mut local = self.inner.local.lock();
        if let Some(v) = local.add(filter) {
            self.inner.routes_tx.send_replace(v);
        }
    }

    fn route_removed(&self, filter: &str, _client: &ClientId) {
        let mut local = self.inner.local.lock();
        if let Some(v) = local.remove(filter) {
            self.inner.routes_tx.send_replace(v);
        }
    }

    fn claim(
        &self,
        client_id: &ClientId,
        clean_start: bool,
    ) -> BoxFuture<'static, Result<Option<SessionData>, Unavailable>> {
        let inner = self.inner.clone();
        let client_id = client_id.clone();
        Box::pin(async move {
            if !inner.cfg.allow_register_during_netsplit && inner.partitioned() {
                return Err(Unavailable("a cluster peer is unreachable".into()));
            }
            let clients: Vec<_> = inner
                .all_peers()
                .iter()
                .filter_map(|p| {
                    let st = p.state.lock();
                    st.client
                        .clone()
                        .filter(|_| st.up)
                        .map(|c| (p.name.clone(), c))
                })
                .collect();
            let request = pb::ClaimRequest {
                client_id: client_id.to_string(),
                clean_start,
                node: inner.node.to_string(),
                incarnation: inner.incarnation,
                connected_at: now_ms(),
            };
            let calls = clients.into_iter().map(|(name, mut c)| {
                let request = request.clone();
                async move {
                    match tokio::time::timeout(CLAIM_TIMEOUT, c.claim(request)).await {
                        Ok(Ok(reply)) => reply.into_inner().session,
                        Ok(Err(status)) => {
                            warn!(peer = %name, %status, "claim failed; peer skipped");
                            None
                        }
                        Err(_) => {
                            warn!(peer = %name, "claim timed out; peer skipped");
                            None
                        }
                    }
                }
            });
            let mut moved = None;
            for session in join_all(calls).await.into_iter().flatten() {
                match session_from_pb(session) {
                    Ok(s) if moved.is_none() => moved = Some(s),
                    Ok(_) => warn!(client_id = %client_id, "two nodes held the session; one kept"),
                    Err(e) => warn!(error = %e, "undecodable session from a peer"),
                }
            }
            Ok(moved)
        })
    }

    fn allows(&self, op: Operation) -> bool {
        let cfg = &self.inner.cfg;
        let allowed = match op {
            Operation::Register => cfg.allow_register_during_netsplit,
            Operation::Publish => cfg.allow_publish_during_netsplit,
            Operation::Subscribe => cfg.allow_subscribe_during_netsplit,
        };
        allowed || !self.inner.partitioned()
    }

    fn show(&self) -> Option<ClusterShow> {
        Some(Cluster::show(self))
    }
}
