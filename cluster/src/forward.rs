//! The [`RemoteRoutes`] implementation: forwarding (one envelope per target
//! node, batched through its outbox), cluster-wide shared-group picks,
//! retained replication, route refcounts, claims and netsplit knobs.

use crate::convert::session_from_pb;
use crate::node::{Cluster, Inner, Peer};
use crate::pb;
use crate::shared::{pick, Pick};
use crate::wire::{put_record, put_record_of, put_rest, record_len, rest_len, EnvelopeMeta};
use futures_util::future::join_all;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;
use tern_broker::admin::{AdminAnswer, AdminQuery, ClusterShow, PeerReply};
use tern_broker::auth::BoxFuture;
use tern_broker::codec::QoS;
use tern_broker::routes::{Operation, RemoteRoutes, Unavailable};
use tern_broker::session::{now_ms, Message, SessionData};
use tern_broker::trie::{ClientId, Matches, SharedMatch};
use tokio::sync::oneshot;
use tracing::{debug, warn};

/// Timeout of one `Claim` call.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(2);

/// Timeout of one `Admin` call: a slow peer is listed as missing.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Default, Clone)]
struct Target {
    direct: bool,
    /// (group, filter) pairs.
    groups: Vec<(Arc<str>, Arc<str>)>,
    retained: bool,
}

impl Target {
    /// The envelope's fields besides its message and sequence number. The
    /// origin node is left out for a local publish: the receiver takes the
    /// link's peer.
    fn meta(&self) -> EnvelopeMeta<'_> {
        EnvelopeMeta {
            seq: 0,
            direct: self.direct,
            groups: &self.groups,
            retained: self.retained,
        }
    }
}

/// The peers a topic's ordinary routes lead to, as of one generation of
/// the remote table. Publishers mostly repeat their topic, message after
/// message: the last result is kept per thread and reused while the
/// table's generation has not moved, which saves the match and the peer
/// lookups. Not kept for a topic that matches shared groups (each message
/// picks its member anew).
struct Memo {
    generation: u64,
    topic: Arc<str>,
    peers: Vec<Arc<Peer>>,
}

thread_local! {
    /// The remote table's matches, reused: forwarding a message allocates
    /// no match list.
    static MATCHES: RefCell<Matches> = RefCell::new(Matches::default());
    /// The target list, reused the same way.
    static TARGETS: RefCell<Vec<(Arc<Peer>, Target)>> = const { RefCell::new(Vec::new()) };
    /// The last topic's ordinary routes.
    static MEMO: RefCell<Option<Memo>> = const { RefCell::new(None) };
    /// Forwards staged by this thread inside a publish batch
    /// (`tern_broker::routes::batched`), until the batch's flush.
    static STAGED: RefCell<Staging> = const { RefCell::new(Staging::new()) };
}

/// This thread's staged forwards: the batch's target peers, each held
/// once (a reference count per message on a peer that every publisher
/// thread shares would move its cache line between threads), and the
/// envelopes in order, already encoded but for their sequence numbers
/// (which the outbox gives at the flush). The messages are not kept: the
/// publisher's connection frees each one as soon as it is published, so
/// the allocator hands the same memory to the next (freed in a batch at
/// the flush, hundreds of messages overflowed its per-thread cache).
struct Staging {
    peers: Vec<Arc<Peer>>,
    entries: Vec<Staged>,
    /// The envelopes' rests ([`put_rest`]), one after the other.
    rests: Vec<u8>,
}

/// One envelope for one peer (an index into [`Staging::peers`]).
struct Staged {
    peer: usize,
    body: Body,
    /// Payload bytes, for the metrics.
    payload: usize,
    waiter: Option<oneshot::Sender<()>>,
}

enum Body {
    /// Its rest, in [`Staging::rests`].
    Rest { start: usize, end: usize },
    /// A large message, written once, at the flush, straight into the
    /// outbox (not copied twice through a rest).
    Large { msg: Arc<Message>, target: Target },
}

/// Payloads from this size on are staged as [`Body::Large`].
const LARGE: usize = 4096;

impl Staging {
    const fn new() -> Staging {
        Staging {
            peers: Vec::new(),
            entries: Vec::new(),
            rests: Vec::new(),
        }
    }

    /// Stages `msg` for `peer`; its ack to wait for (QoS 1/2).
    fn add(
        &mut self,
        peer: &Arc<Peer>,
        msg: &Arc<Message>,
        target: &Target,
    ) -> Option<oneshot::Receiver<()>> {
        let index = match self.peers.iter().position(|p| Arc::ptr_eq(p, peer)) {
            Some(i) => i,
            None => {
                self.peers.push(peer.clone());
                self.peers.len() - 1
            }
        };
        let (waiter, ack) = match msg.qos {
            QoS::AtMostOnce => (None, None),
            _ => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
        };
        let body = if msg.payload.len() >= LARGE {
            Body::Large {
                msg: msg.clone(),
                target: target.clone(),
            }
        } else {
            let start = self.rests.len();
            put_rest(&target.meta(), msg, &mut self.rests);
            Body::Rest {
                start,
                end: self.rests.len(),
            }
        };
        self.entries.push(Staged {
            peer: index,
            body,
            payload: msg.payload.len(),
            waiter,
        });
        ack
    }
}

/// Staged entries whose room the list keeps between batches.
const STAGED_KEEP: usize = 4096;
/// Bytes of staged rests whose room is kept between batches.
const RESTS_KEEP: usize = 1 << 20;

/// `node`'s target in `targets`, added if absent.
fn entry<'a>(
    targets: &'a mut Vec<(Arc<Peer>, Target)>,
    inner: &Inner,
    node: &Arc<str>,
) -> &'a mut Target {
    let i = match targets.iter().position(|(p, _)| p.name == *node) {
        Some(i) => i,
        None => {
            targets.push((inner.peer(node), Target::default()));
            targets.len() - 1
        }
    };
    &mut targets[i].1
}

impl Cluster {
    /// Target nodes of `msg` with what each must do, into `targets`
    /// (empty); adjusts `deliver_locally`.
    fn targets(
        &self,
        msg: &Message,
        local_shared: &[SharedMatch],
        deliver_locally: &mut [bool],
        targets: &mut Vec<(Arc<Peer>, Target)>,
    ) {
        let inner = &self.inner;
        // Read before matching: a change during the match moves it, and
        // the result is then not reused.
        let generation = inner.remote.generation();
        let shared = self.match_remote(msg, local_shared, deliver_locally, targets);
        let memo = (!shared).then(|| {
            // Without shared groups, `targets` holds direct ones only.
            let peers = targets.iter().map(|(p, _)| p.clone()).collect();
            Memo {
                generation,
                topic: msg.topic.clone(),
                peers,
            }
        });
        MEMO.with(|m| *m.borrow_mut() = memo);
        if msg.retain && inner.retain_available {
            for p in inner.all_peers() {
                if p.state.lock().up {
                    entry(targets, inner, &p.name).retained = true;
                }
            }
        }
    }

    /// The remote table's routes for `msg`: ordinary ones, and a pick per
    /// shared group (here or on another node). Whether shared groups
    /// matched.
    fn match_remote(
        &self,
        msg: &Message,
        local_shared: &[SharedMatch],
        deliver_locally: &mut [bool],
        targets: &mut Vec<(Arc<Peer>, Target)>,
    ) -> bool {
        let inner = &self.inner;
        MATCHES.with(|m| {
            let mut m = m.borrow_mut();
            m.clear();
            inner.remote.matches(&msg.topic, &mut m);
            for (node, _) in &m.direct {
                if *node != inner.node {
                    entry(targets, inner, node).direct = true;
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
                    entry(targets, inner, &node)
                        .groups
                        .push((sm.group.clone(), sm.filter.clone()));
                }
            }
            !m.shared.is_empty()
        })
    }

    /// Stages `msg` for the peers of its topic's memo, if the memo holds
    /// for it (see [`Memo`]); the acks to wait for. `None`: the memo does
    /// not apply.
    fn stage_memo(&self, msg: &Arc<Message>) -> Option<Vec<oneshot::Receiver<()>>> {
        if msg.retain && self.inner.retain_available {
            return None;
        }
        let generation = self.inner.remote.generation();
        MEMO.with(|memo| match &*memo.borrow() {
            Some(m) if m.generation == generation && m.topic == msg.topic => {
                let mut acks = Vec::new();
                STAGED.with(|staged| {
                    let mut staged = staged.borrow_mut();
                    for p in &m.peers {
                        let t = Target {
                            direct: true,
                            ..Target::default()
                        };
                        acks.extend(staged.add(p, msg, &t));
                    }
                });
                Some(acks)
            }
            _ => None,
        })
    }

    /// Stages `msg` for each target (emptying `targets`); the acks to wait
    /// for (QoS 1/2; released at once if the peer is down at the flush).
    fn stage(
        &self,
        msg: &Arc<Message>,
        targets: &mut Vec<(Arc<Peer>, Target)>,
    ) -> Vec<oneshot::Receiver<()>> {
        let mut acks = Vec::new();
        STAGED.with(|staged| {
            let mut staged = staged.borrow_mut();
            for (peer, target) in targets.drain(..) {
                acks.extend(staged.add(&peer, msg, &target));
            }
        });
        acks
    }

    /// Pushes what this thread staged into the target peers' outboxes: one
    /// lock, one wake-up and one metrics update per peer.
    fn flush_staged(&self) {
        // Taken only when there is something to push: a flush after a read
        // that forwarded nothing (a subscriber's PUBACKs) keeps the lists'
        // room for the next publisher's batch on this thread.
        let staged = STAGED.with(|s| {
            let mut s = s.borrow_mut();
            (!s.entries.is_empty()).then(|| std::mem::replace(&mut *s, Staging::new()))
        });
        let Some(mut staged) = staged else {
            return;
        };
        let metrics = self.inner.metrics.get();
        for (index, peer) in staged.peers.iter().enumerate() {
            // A down peer holds no publisher: its waiters are dropped,
            // which releases them, and the message waits in its outbox.
            let up = peer.state.lock().up;
            let (mut pushed, mut bytes, mut dropped) = (0u64, 0u64, 0u64);
            {
                let mut outbox = peer.outbox.lock();
                // Numbered and framed in the order staged.
                for s in staged.entries.iter_mut().filter(|s| s.peer == index) {
                    let waiter = s.waiter.take().filter(|_| up);
                    let seq = outbox.next_seq();
                    let pushed_one = match &s.body {
                        Body::Rest { start, end } => {
                            let rest = &staged.rests[*start..*end];
                            let write = |buf: &mut _| put_record(seq, rest, buf);
                            outbox.push(record_len(seq, rest.len()), write, waiter)
                        }
                        Body::Large { msg, target } => {
                            let meta = target.meta();
                            let len = rest_len(&meta, msg);
                            let write = |buf: &mut _| put_record_of(seq, &meta, msg, len, buf);
                            outbox.push(record_len(seq, len.rest), write, waiter)
                        }
                    };
                    match pushed_one {
                        Ok(_) => {
                            pushed += 1;
                            bytes += s.payload as u64;
                        }
                        Err(_) => dropped += 1,
                    }
                }
            }
            if pushed > 0 {
                peer.notify.notify_one();
            }
            if let Some(m) = metrics {
                m.forwarded_messages.inc_by(pushed);
                m.forwarded_bytes.inc_by(bytes);
                m.dropped_messages.inc_by(dropped);
            }
            if dropped > 0 {
                debug!(peer = %peer.name, dropped, "cluster buffer full: messages dropped");
            }
        }
        staged.peers.clear();
        staged.entries.clear();
        staged.rests.clear();
        // The lists keep their room for the next batch, unless a burst
        // made them large.
        if staged.entries.capacity() <= STAGED_KEEP && staged.rests.capacity() <= RESTS_KEEP {
            STAGED.with(|s| {
                let mut s = s.borrow_mut();
                if s.entries.is_empty() {
                    *s = staged;
                }
            });
        }
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
        let mut acks = match self.stage_memo(msg) {
            Some(acks) => acks,
            None => {
                // Taken out of the thread-local for the call (so nothing
                // stays borrowed meanwhile) and put back with its capacity.
                let mut targets = TARGETS.with(|t| std::mem::take(&mut *t.borrow_mut()));
                self.targets(msg, local_shared, deliver_locally, &mut targets);
                let acks = self.stage(msg, &mut targets);
                TARGETS.with(|t| *t.borrow_mut() = targets);
                acks
            }
        };
        if !tern_broker::routes::batching() {
            self.flush_staged();
        }
        // A peer that does not ack in time keeps the message in its retry
        // buffer; the publisher is not held longer.
        let timeout = inner.ack_timeout();
        match acks.len() {
            0 => None,
            1 => {
                let ack = acks.pop()?;
                Some(Box::pin(async move {
                    let _ = tokio::time::timeout(timeout, ack).await;
                }))
            }
            _ => Some(Box::pin(async move {
                let _ = tokio::time::timeout(timeout, join_all(acks)).await;
            })),
        }
    }

    fn flush(&self) {
        self.flush_staged();
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

    fn admin(&self, query: &AdminQuery) -> BoxFuture<'static, Vec<PeerReply>> {
        let peers: Vec<_> = self
            .inner
            .all_peers()
            .iter()
            .filter_map(|p| {
                let st = p.state.lock();
                // A peer that left is no longer a member.
                (!st.left).then(|| (p.name.to_string(), st.client.clone().filter(|_| st.up)))
            })
            .collect();
        let query_json = bytes::Bytes::from(serde_json::to_vec(query).unwrap_or_default());
        Box::pin(async move {
            let calls = peers.into_iter().map(|(node, client)| {
                let request = pb::AdminRequest {
                    query_json: query_json.clone(),
                };
                async move {
                    let answer = match client {
                        None => Err("down".to_string()),
                        Some(mut c) => admin_call(&mut c, request).await,
                    };
                    PeerReply { node, answer }
                }
            });
            let mut replies = join_all(calls).await;
            replies.sort_by(|a, b| a.node.cmp(&b.node));
            replies
        })
    }
}

/// One `Admin` call, bounded by [`ADMIN_TIMEOUT`].
async fn admin_call(
    client: &mut crate::link::Client,
    request: pb::AdminRequest,
) -> Result<AdminAnswer, String> {
    match tokio::time::timeout(ADMIN_TIMEOUT, client.admin(request)).await {
        Err(_) => Err(format!("no answer within {ADMIN_TIMEOUT:?}")),
        Ok(Err(status)) => Err(format!("failed: {}", status.message())),
        Ok(Ok(reply)) => serde_json::from_slice(&reply.into_inner().answer_json)
            .map_err(|e| format!("undecodable answer: {e}")),
    }
}
