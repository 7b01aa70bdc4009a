//! The dialer's side of a link: connect (with backoff), say Hello, send
//! the initial sync (route snapshot, retained snapshot, connected
//! clients), then stream route deltas, outbox batches and heartbeats while
//! reading acks, heartbeat replies and snapshot requests.

use crate::convert::message_to_pb;
use crate::local::Catchup;
use crate::node::{Inner, Peer};
use crate::pb::frame::Kind;
use crate::pb::mesh_client::MeshClient;
use crate::wire::Encoded;
use crate::{pb, PROTOCOL_VERSION};
use hyper_util::rt::TokioIo;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_broker::session::now_ms;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{BinaryMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tracing::{debug, info, warn};

/// Metadata key of the shared secret.
pub(crate) const SECRET_KEY: &str = "x-tern-secret-bin";

/// Envelopes per `PublishBatch`.
const BATCH: usize = 256;
/// Retained messages per `RetainedSnapshot` frame.
const RETAINED_CHUNK: usize = 512;

/// Adds the shared secret to every request.
#[derive(Clone)]
pub(crate) struct AddSecret(BinaryMetadataValue);

impl tonic::service::Interceptor for AddSecret {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert_bin(SECRET_KEY, self.0.clone());
        Ok(req)
    }
}

/// A mesh client that presents the secret.
pub(crate) type Client = MeshClient<InterceptedService<Channel, AddSecret>>;

fn frame(kind: Kind) -> Encoded {
    Encoded::frame(kind)
}

/// Exponential backoff with jitter, 100 ms → 5 s.
struct Backoff(Duration);

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        d.mul_f64(jitter)
    }
}

enum Outcome {
    /// The address is this node.
    Itself,
    /// The link to the named node was up, then ended.
    WasUp(Arc<str>),
    /// It never came up.
    Failed,
}

/// Dials `addr` until `stop`, reconnecting with backoff.
pub(crate) async fn run(inner: Arc<Inner>, addr: String, stop: CancellationToken) {
    let mut backoff = Backoff(Backoff::MIN);
    loop {
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            o = connect(&inner, &addr, &stop) => o,
        };
        match outcome {
            Outcome::Itself => {
                debug!(%addr, "peer address is this node; not dialing it");
                inner
                    .dials
                    .lock()
                    .insert(addr.clone(), crate::ready::DialStatus::Itself);
                return;
            }
            Outcome::WasUp(name) => {
                backoff = Backoff(Backoff::MIN);
                if inner.peer(&name).state.lock().left {
                    // A node that left is forgotten, not re-dialed, unless
                    // the peer source lists it again (or it dials us).
                    info!(peer = %name, %addr, "peer left: no longer dialed");
                    inner.links.lock().remove(&addr);
                    return;
                }
            }
            Outcome::Failed => {
                let mut dials = inner.dials.lock();
                dials.insert(addr.clone(), crate::ready::DialStatus::Unreachable);
            }
        }
        if inner.leaving.is_cancelled() {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.next()) => {}
        }
    }
}

/// A mesh client, and the same channel for the hand-encoded `Link` stream.
type Channels = (Client, InterceptedService<Channel, AddSecret>);

async fn channel(inner: &Inner, addr: &str) -> Result<Channels, tonic::transport::Error> {
    let scheme = if inner.tls.is_some() { "https" } else { "http" };
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(inner.heartbeat())
        .keep_alive_while_idle(true);
    if let Some(tls) = &inner.tls {
        endpoint = endpoint.tls_config(tls.client.clone().domain_name(host))?;
    }
    let transport = inner.transport.clone();
    let target = addr.to_string();
    let connector = tower::service_fn(move |_| {
        let fut = transport.connect(&target);
        async move { fut.await.map(TokioIo::new) }
    });
    let channel = endpoint.connect_with_connector(connector).await?;
    let secret = MetadataValue::from_bytes(inner.cfg.secret.as_bytes());
    let secret = AddSecret(secret);
    let client = MeshClient::with_interceptor(channel.clone(), secret.clone())
        .max_decoding_message_size(crate::wire::MAX_FRAME)
        .max_encoding_message_size(crate::wire::MAX_FRAME);
    Ok((client, InterceptedService::new(channel, secret)))
}

async fn connect(inner: &Arc<Inner>, addr: &str, stop: &CancellationToken) -> Outcome {
    let (client, raw) = match channel(inner, addr).await {
        Ok(c) => c,
        Err(e) => {
            inner.connect_failures.fetch_add(1, Ordering::Relaxed);
            debug!(%addr, error = %e, "cannot reach peer");
            return Outcome::Failed;
        }
    };
    let (tx, rx) = mpsc::channel::<Encoded>(1024);
    let hello = pb::Hello {
        node: inner.node.to_string(),
        incarnation: inner.incarnation,
        protocol_version: PROTOCOL_VERSION,
        advertise: inner.bound.get().cloned().unwrap_or_default(),
    };
    let _ = tx.send(frame(Kind::Hello(hello))).await;
    let call = tokio::time::timeout(
        inner.peer_timeout(),
        crate::wire::link(raw, ReceiverStream::new(rx)),
    );
    let mut inbound = match call.await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) if status.code() == Code::Unauthenticated => {
            inner.auth_refusals.fetch_add(1, Ordering::Relaxed);
            warn!(%addr, "peer refused the cluster secret");
            return Outcome::Failed;
        }
        Ok(Err(status)) => {
            inner.connect_failures.fetch_add(1, Ordering::Relaxed);
            debug!(%addr, %status, "link refused");
            return Outcome::Failed;
        }
        Err(_) => {
            inner.connect_failures.fetch_add(1, Ordering::Relaxed);
            return Outcome::Failed;
        }
    };
    let hello = match tokio::time::timeout(inner.peer_timeout(), inbound.message()).await {
        Ok(Ok(Some(pb::Frame {
            kind: Some(Kind::Hello(h)),
        }))) => h,
        _ => return Outcome::Failed,
    };
    if hello.node == *inner.node {
        return if hello.incarnation == inner.incarnation {
            Outcome::Itself
        } else {
            warn!(%addr, "a node with this node's name answered");
            Outcome::Failed
        };
    }
    let name: Arc<str> = Arc::from(hello.node.as_str());
    let peer = inner.peer(&name);
    let link_id = inner.next_link.fetch_add(1, Ordering::Relaxed);
    {
        let mut st = peer.state.lock();
        if st.link.is_some() {
            debug!(peer = %name, %addr, "already linked through another address");
            return Outcome::Failed;
        }
        st.link = Some(link_id);
        st.up = true;
        st.left = false;
        st.since_ms = now_ms();
        st.down_at = None;
        st.address = addr.to_string();
        st.incarnation = hello.incarnation;
        st.client = Some(client);
        st.tx = Some(tx.clone());
    }
    peer.outbox.lock().rewind();
    // Whatever was buffered goes out right after the initial sync.
    peer.notify.notify_one();
    inner.refresh_gauges();
    info!(peer = %name, %addr, incarnation = hello.incarnation, "peer up");
    let result = serve(inner, &peer, addr, &tx, &mut inbound, stop).await;
    {
        let mut st = peer.state.lock();
        if st.link == Some(link_id) {
            st.link = None;
            st.up = false;
            st.since_ms = now_ms();
            st.down_at = Some(Instant::now());
            st.client = None;
            st.tx = None;
        }
    }
    peer.outbox.lock().rewind();
    inner.refresh_gauges();
    info!(peer = %name, %addr, reason = result, "peer down");
    Outcome::WasUp(name)
}

/// Sends the initial sync; then the link's loop until it fails.
async fn serve(
    inner: &Arc<Inner>,
    peer: &Arc<Peer>,
    addr: &str,
    tx: &mpsc::Sender<Encoded>,
    inbound: &mut tonic::Streaming<pb::Frame>,
    stop: &CancellationToken,
) -> &'static str {
    let mut routes = inner.routes_tx.subscribe();
    let mut known = None;
    if send_routes(inner, tx, &mut known).await.is_err() || initial(inner, tx).await.is_err() {
        return "send failed";
    }
    inner.dials.lock().insert(
        addr.to_string(),
        crate::ready::DialStatus::Synced(peer.name.clone()),
    );
    let mut heartbeat = tokio::time::interval(inner.heartbeat());
    let mut last_rx = Instant::now();
    loop {
        let sent = tokio::select! {
            _ = stop.cancelled() => return "stopped",
            _ = heartbeat.tick() => {
                if last_rx.elapsed() > inner.peer_timeout() {
                    return "heartbeat timeout";
                }
                let sent_us = inner.epoch.elapsed().as_micros() as u64;
                tx.send(frame(Kind::Heartbeat(pb::Heartbeat { sent_us }))).await.is_ok()
            }
            r = routes.changed() => r.is_ok() && send_routes(inner, tx, &mut known).await.is_ok(),
            _ = peer.notify.notified() => {
                // One turn of the scheduler first: publishers that are
                // ready run and add to the outbox, so a busy link sends
                // fewer, fuller batches (each costs a hand-off to the
                // HTTP/2 task, a write and a wake-up on the peer).
                tokio::task::yield_now().await;
                drain(peer, tx).await
            }
            f = inbound.message() => match f {
                Ok(Some(f)) => {
                    last_rx = Instant::now();
                    on_reply(inner, peer, f, &mut known);
                    if known.is_none() && send_routes(inner, tx, &mut known).await.is_err() {
                        return "send failed";
                    }
                    true
                }
                Ok(None) => return "closed by peer",
                Err(_) => return "stream error",
            },
        };
        if !sent {
            return "send failed";
        }
        // A peer that left gets what was buffered for it, then the link ends.
        if peer.state.lock().left && peer.outbox.lock().is_empty() {
            return "peer left";
        }
    }
}

fn on_reply(inner: &Inner, peer: &Peer, f: pb::Frame, known: &mut Option<u64>) {
    match f.kind {
        Some(Kind::HeartbeatAck(h)) => {
            let now = inner.epoch.elapsed().as_micros() as u64;
            let rtt = Duration::from_micros(now.saturating_sub(h.sent_us));
            peer.state.lock().rtt = Some(rtt);
        }
        Some(Kind::Ack(a)) => {
            peer.outbox.lock().ack(a.upto);
        }
        Some(Kind::SnapshotRequest(_)) => *known = None,
        _ => {}
    }
}

async fn drain(peer: &Peer, tx: &mpsc::Sender<Encoded>) -> bool {
    loop {
        let (taken, more) = {
            let mut o = peer.outbox.lock();
            // Slices of the outbox's chunks: the frame is encoded outside
            // the lock, which publishers wait on.
            let taken = o.take(BATCH);
            (taken, o.has_unsent())
        };
        let Some(taken) = taken else {
            return true;
        };
        if tx.send(Encoded::batch(taken)).await.is_err() {
            return false;
        }
        if !more {
            return true;
        }
    }
}

async fn send_routes(
    inner: &Inner,
    tx: &mpsc::Sender<Encoded>,
    known: &mut Option<u64>,
) -> Result<(), ()> {
    let catchup = inner.local.lock().catch_up(*known);
    let incarnation = inner.incarnation;
    match catchup {
        Catchup::Current => Ok(()),
        Catchup::Deltas(deltas) => {
            for d in deltas {
                let v = d.version;
                let f = frame(Kind::RouteDelta(pb::RouteDelta {
                    incarnation,
                    version: d.version,
                    filter: d.filter,
                    added: d.added,
                }));
                tx.send(f).await.map_err(drop)?;
                *known = Some(v);
            }
            Ok(())
        }
        Catchup::Snapshot { version, filters } => {
            let f = frame(Kind::RouteSnapshot(pb::RouteSnapshot {
                incarnation,
                version,
                filters,
            }));
            tx.send(f).await.map_err(drop)?;
            *known = Some(version);
            Ok(())
        }
    }
}

/// Retained snapshot and connected clients, sent when a link comes up.
async fn initial(inner: &Inner, tx: &mpsc::Sender<Encoded>) -> Result<(), ()> {
    let Some(broker) = inner.broker() else {
        return Ok(());
    };
    let retained = broker.retained_snapshot();
    let mut rest = &retained[..];
    while !rest.is_empty() {
        let sizes = rest.iter().take(RETAINED_CHUNK);
        let n = crate::wire::fits_in_batch(sizes.map(|m| m.payload.len() + m.topic.len()));
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let messages = chunk
            .iter()
            .map(|m| message_to_pb(m, &inner.node))
            .collect();
        let f = frame(Kind::RetainedSnapshot(pb::RetainedSnapshot { messages }));
        tx.send(f).await.map_err(drop)?;
    }
    let clients = broker
        .connected_clients()
        .into_iter()
        .map(|(id, at)| pb::ConnectedClient {
            client_id: id.to_string(),
            connected_at: at,
        })
        .collect();
    let f = frame(Kind::ConnectedClients(pb::ConnectedClients { clients }));
    tx.send(f).await.map_err(drop)
}
