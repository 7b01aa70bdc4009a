//! The dialed side of the mesh: the gRPC server. `Link` reads a peer's
//! own traffic (routes, forwarded publishes, retained updates, heartbeats,
//! leave) and answers with acks, heartbeat replies and snapshot requests;
//! `Claim` hands a session over. An interceptor checks the shared secret.

use crate::batch::Received;
use crate::convert::{message_from_pb, session_to_pb};
use crate::dedup::Dedup;
use crate::link::SECRET_KEY;
use crate::node::{Inbound, Inner};
use crate::pb::frame::Kind;
use crate::pb::mesh_server::{Mesh, MeshServer};
use crate::remote::Applied;
use crate::transport::Incoming;
use crate::{pb, PROTOCOL_VERSION};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tern_broker::admin::{answer_local, AdminAnswer, AdminQuery};
use tern_broker::broker::{Broker, Fanout};
use tern_broker::session::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, error, info, warn};

/// Constant-time comparison of the presented secret.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves the mesh on `incoming` until the cluster shuts down.
pub(crate) fn spawn(inner: Arc<Inner>, incoming: Incoming) {
    let secret = inner.cfg.secret.clone().into_bytes();
    let check = move |req: Request<()>| -> Result<Request<()>, Status> {
        let presented = req
            .metadata()
            .get_bin(SECRET_KEY)
            .and_then(|v| v.to_bytes().ok());
        match presented {
            Some(p) if same(&p, &secret) => Ok(req),
            _ => {
                warn!(remote = ?req.remote_addr(), "mesh request with a wrong secret refused");
                Err(Status::unauthenticated("wrong cluster secret"))
            }
        }
    };
    let svc = tonic::service::interceptor::InterceptedService::new(
        MeshServer::new(MeshService {
            inner: inner.clone(),
        })
        .max_decoding_message_size(crate::wire::MAX_FRAME)
        .max_encoding_message_size(crate::wire::MAX_FRAME),
        check,
    );
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let stop = inner.shutdown.clone();
    let tls = inner.tls.clone();
    inner.tasks.spawn(async move {
        health_reporter
            .set_serving::<MeshServer<MeshService>>()
            .await;
        // Frames up to one batch: the dialer sends a PublishBatch as one
        // DATA frame, one write, instead of 16 KiB pieces.
        let mut builder = Server::builder().max_frame_size(Some(crate::wire::BATCH_BYTES as u32));
        if let Some(tls) = tls {
            builder = match builder.tls_config(tls.server) {
                Ok(b) => b,
                Err(e) => {
                    error!(error = %e, "cluster TLS configuration refused");
                    return;
                }
            };
        }
        let served = builder
            .add_service(health)
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            error!(error = %e, "cluster listener failed");
        }
    });
}

struct MeshService {
    inner: Arc<Inner>,
}

type Replies = mpsc::Sender<Result<pb::Frame, Status>>;

fn frame(kind: Kind) -> Result<pb::Frame, Status> {
    Ok(pb::Frame { kind: Some(kind) })
}

#[tonic::async_trait]
impl Mesh for MeshService {
    type LinkStream = ReceiverStream<Result<pb::Frame, Status>>;

    async fn link(
        &self,
        req: Request<Streaming<pb::Frame>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        let remote_ip = req.remote_addr().map(|a| a.ip());
        let stream = req.into_inner();
        let (tx, rx) = mpsc::channel(1024);
        let inner = self.inner.clone();
        self.inner.tasks.spawn(async move {
            inbound(inner, stream, tx, remote_ip).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn claim(
        &self,
        req: Request<pb::ClaimRequest>,
    ) -> Result<Response<pb::ClaimReply>, Status> {
        let r = req.into_inner();
        let broker = self
            .inner
            .broker()
            .ok_or_else(|| Status::unavailable("broker gone"))?;
        if self.inner.moved.lock().contains_key(&r.client_id) {
            // Handed off by this draining node: the new home answers.
            return Ok(Response::new(pb::ClaimReply { session: None }));
        }
        let session = broker.take_session(&r.client_id, !r.clean_start);
        if session.is_some() || !r.clean_start {
            debug!(client_id = %r.client_id, to = %r.node, "session claimed by another node");
        }
        Ok(Response::new(pb::ClaimReply {
            session: session.map(|s| session_to_pb(&s, &self.inner.node)),
        }))
    }

    async fn handoff(
        &self,
        req: Request<pb::HandoffRequest>,
    ) -> Result<Response<pb::HandoffAck>, Status> {
        crate::drain::on_handoff(&self.inner, req.into_inner()).map(Response::new)
    }

    async fn admin(
        &self,
        req: Request<pb::AdminRequest>,
    ) -> Result<Response<pb::AdminReply>, Status> {
        let broker = self
            .inner
            .broker()
            .ok_or_else(|| Status::unavailable("broker gone"))?;
        let answer = match serde_json::from_slice::<AdminQuery>(&req.into_inner().query_json) {
            Ok(query) => answer_local(&broker, &query),
            // A newer node's query this one does not know.
            Err(e) => AdminAnswer::Error(format!("unsupported admin query: {e}")),
        };
        let answer_json = serde_json::to_vec(&answer)
            .map_err(|e| Status::internal(format!("cannot encode the answer: {e}")))?;
        Ok(Response::new(pb::AdminReply {
            answer_json: answer_json.into(),
        }))
    }
}

/// The address to dial back from a Hello's `advertise`.
fn dial_back(advertise: &str, remote: Option<IpAddr>) -> Option<String> {
    let (host, port) = advertise.rsplit_once(':')?;
    let unspecified = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified());
    match (unspecified, remote) {
        (false, _) => Some(advertise.to_string()),
        (true, Some(ip)) => Some(std::net::SocketAddr::new(ip, port.parse().ok()?).to_string()),
        (true, None) => None,
    }
}

/// One peer's link into this node.
async fn inbound(
    inner: Arc<Inner>,
    mut stream: Streaming<pb::Frame>,
    tx: Replies,
    ip: Option<IpAddr>,
) {
    let timeout = inner.peer_timeout();
    let hello = match tokio::time::timeout(timeout, stream.message()).await {
        Ok(Ok(Some(pb::Frame {
            kind: Some(Kind::Hello(h)),
        }))) => h,
        _ => return,
    };
    let ours = pb::Hello {
        node: inner.node.to_string(),
        incarnation: inner.incarnation,
        protocol_version: PROTOCOL_VERSION,
        advertise: inner.bound.get().cloned().unwrap_or_default(),
    };
    if tx.send(frame(Kind::Hello(ours))).await.is_err() || hello.node == *inner.node {
        return;
    }
    if hello.protocol_version != PROTOCOL_VERSION {
        warn!(peer = %hello.node, version = hello.protocol_version, "unsupported mesh protocol");
        return;
    }
    let name: Arc<str> = Arc::from(hello.node.as_str());
    let incarnation = hello.incarnation;
    if inner.leaving.is_cancelled() {
        debug!(peer = %name, "link refused: this node is leaving");
        return;
    }
    if !open(&inner, &name, incarnation) {
        warn!(peer = %name, incarnation, "link from a stale incarnation refused");
        return;
    }
    if inner.cfg.dial_back {
        if let Some(addr) = dial_back(&hello.advertise, ip) {
            inner.dial(&addr);
        }
    }
    let broker = inner.broker();
    let stop = inner.shutdown.clone();
    // Kept across frames for the room of its lists.
    let mut fanout = Fanout::default();
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => break,
            n = tokio::time::timeout(timeout, stream.message()) => n,
        };
        let f = match next {
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) | Ok(Err(_)) => break,
            Err(_) => {
                warn!(peer = %name, "no traffic from peer; link closed");
                break;
            }
        };
        let reply = match (f.kind, &broker) {
            (Some(Kind::Leave(l)), _) => {
                leave(&inner, &name, incarnation, l);
                return;
            }
            (Some(kind), Some(b)) => handle(&inner, b, &name, incarnation, kind, &mut fanout),
            _ => None,
        };
        if let Some(r) = reply {
            if tx.send(frame(r)).await.is_err() {
                break;
            }
        }
    }
    close(&inner, &name, incarnation);
}

/// Registers a link from `name`; false for a stale incarnation.
fn open(inner: &Inner, name: &Arc<str>, incarnation: u64) -> bool {
    let mut map = inner.inbound.lock();
    let e = map.entry(name.clone()).or_insert_with(|| Inbound {
        incarnation,
        links: 0,
        down_at: None,
        dedup: Dedup::new(),
        synced: false,
    });
    if incarnation < e.incarnation {
        return false;
    }
    if incarnation > e.incarnation {
        info!(peer = %name, incarnation, "peer restarted: its old routes are dropped");
        inner.remote.drop_node(name);
        *e = Inbound {
            incarnation,
            links: 0,
            down_at: None,
            dedup: Dedup::new(),
            synced: false,
        };
    }
    e.links += 1;
    e.down_at = None;
    true
}

fn close(inner: &Inner, name: &Arc<str>, incarnation: u64) {
    let mut map = inner.inbound.lock();
    if let Some(e) = map.get_mut(name).filter(|e| e.incarnation == incarnation) {
        e.links = e.links.saturating_sub(1);
        if e.links == 0 {
            e.down_at = Some(Instant::now());
        }
    }
}

/// `name` leaves: its handed-off sessions' filters are routed to their
/// new homes *before* its own routes go, so every publish matches one or
/// the other. What is buffered for it still goes out on the link, which
/// then ends (`link::serve`); with no link up it is dropped.
fn leave(inner: &Inner, name: &Arc<str>, incarnation: u64, l: pb::Leave) {
    for m in l.moved {
        if m.node != *inner.node && m.node != **name {
            inner
                .remote
                .add_provisional(&Arc::from(m.node.as_str()), &m.filters);
        }
    }
    let routes = inner.remote.drop_node(name);
    inner.inbound.lock().remove(name);
    if let Some(p) = inner.peers.lock().get(name).cloned() {
        let up = {
            let mut st = p.state.lock();
            st.left = true;
            st.up
        };
        if !up {
            let dropped = p.outbox.lock().clear();
            inner.metrics().dropped_messages.inc_by(dropped as u64);
        }
        p.notify.notify_one();
    }
    info!(peer = %name, incarnation, routes, "peer left the cluster");
}

/// Applies one frame of `name`'s traffic; returns the reply, if any.
fn handle(
    inner: &Inner,
    broker: &Arc<Broker>,
    name: &Arc<str>,
    inc: u64,
    kind: Kind,
    fanout: &mut Fanout,
) -> Option<Kind> {
    match kind {
        Kind::Heartbeat(h) => Some(Kind::HeartbeatAck(pb::HeartbeatAck { sent_us: h.sent_us })),
        Kind::RouteDelta(d) => {
            match inner
                .remote
                .apply_delta(name, d.incarnation, d.version, &d.filter, d.added)
            {
                Applied::Ok => None,
                Applied::Gap => Some(Kind::SnapshotRequest(pb::SnapshotRequest {})),
            }
        }
        Kind::RouteSnapshot(s) => {
            if s.incarnation != inc {
                return None;
            }
            inner
                .remote
                .apply_snapshot(name, s.incarnation, s.version, &s.filters);
            inner.metrics().resyncs.inc();
            None
        }
        Kind::PublishBatch(mut b) => {
            let upto = b.envelopes.last().map(|e| e.seq);
            {
                // One lock per batch: duplicates (resends) are dropped here.
                let mut map = inner.inbound.lock();
                let origin = map.get_mut(name).filter(|e| e.incarnation == inc);
                match origin {
                    Some(e) => b.envelopes.retain(|env| e.dedup.accept(env.seq)),
                    None => b.envelopes.clear(),
                }
            }
            // Queued per session once the whole batch is staged.
            for env in b.envelopes {
                deliver(broker, name, env, fanout);
            }
            broker.flush_fanout(fanout);
            upto.map(|upto| Kind::Ack(pb::Ack { upto }))
        }
        Kind::RetainedSnapshot(r) => {
            for m in r.messages {
                if let Some(msg) = decode(m, name) {
                    broker.apply_retained(Arc::new(msg));
                }
            }
            None
        }
        Kind::ConnectedClients(c) => {
            // The last frame of the peer's initial sync.
            if let Some(i) = inner.inbound.lock().get_mut(name) {
                i.synced = true;
            }
            resolve_duplicates(inner, broker, name, c);
            None
        }
        _ => None,
    }
}

fn decode(m: pb::MqttMessage, from: &Arc<str>) -> Option<Message> {
    match message_from_pb(m) {
        Ok(mut msg) => {
            msg.origin_node.get_or_insert_with(|| from.clone());
            Some(msg)
        }
        Err(e) => {
            warn!(peer = %from, error = %e, "undecodable message dropped");
            None
        }
    }
}

fn deliver(broker: &Broker, from: &Arc<str>, env: Received, fanout: &mut Fanout) {
    let mut msg = match env.message {
        Ok(msg) => msg,
        Err(e) => {
            warn!(peer = %from, error = %e, "undecodable message dropped");
            return;
        }
    };
    if msg.origin_node.is_none() {
        // Just decoded, so not shared: no copy.
        Arc::make_mut(&mut msg).origin_node = Some(from.clone());
    }
    if env.retained {
        broker.apply_retained(msg.clone());
    }
    if env.direct || !env.groups.is_empty() {
        broker.stage_forwarded(fanout, &msg, env.direct, &env.groups);
    }
}

/// After a partition a client id may be connected on both sides: the
/// older connection is closed (newest wins; ties go to the greater node name).
fn resolve_duplicates(inner: &Inner, broker: &Broker, peer: &Arc<str>, c: pb::ConnectedClients) {
    let local: HashMap<_, _> = broker.connected_clients().into_iter().collect();
    for remote in c.clients {
        let Some(&here) = local.get(remote.client_id.as_str()) else {
            continue;
        };
        if (here, &*inner.node) < (remote.connected_at, &**peer) {
            info!(client_id = %remote.client_id, newer_on = %peer, "duplicate client after heal: closing the older connection here");
            broker.take_session(&remote.client_id, false);
        }
    }
}
