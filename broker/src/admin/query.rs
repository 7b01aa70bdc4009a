//! Management queries and commands as plain values, and [`answer_local`],
//! the pure function that answers one from this node's [`Broker`].
//!
//! The node that receives an API request answers for itself with
//! `answer_local` and sends the same [`AdminQuery`] (as JSON) to every up
//! peer over the mesh (`RemoteRoutes::admin`); each peer answers it with
//! the same function, and the API merges the answers.

use super::Health;
use crate::broker::Broker;
use crate::knobs::Setting;
use crate::session::Message;
use crate::topic;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The client listeners a server runs, registered with the broker
/// ([`Broker::set_listeners`]) so that any node can describe its own.
#[derive(Debug, Clone)]
pub struct Listeners {
    /// One entry per enabled listener.
    pub entries: Vec<ListenerEntry>,
    /// Which are accepting.
    pub health: Health,
}

/// One client listener's settings.
#[derive(Debug, Clone)]
pub struct ListenerEntry {
    /// `tcp`, `tls`, `ws` or `wss`.
    pub kind: &'static str,
    /// Bound address.
    pub bind: std::net::SocketAddr,
    /// Connections accepted at once.
    pub max_connections: usize,
    /// Whether a PROXY protocol header is expected.
    pub proxy_protocol: bool,
}

/// Filters of `session show`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionFilter {
    /// Exact client id.
    pub client_id: Option<String>,
    /// Exact user name.
    pub user: Option<String>,
    /// Only sessions on this node.
    pub node: Option<String>,
    /// Only online (`true`) or offline (`false`) sessions.
    pub online: Option<bool>,
    /// At most this many rows per node (the API cuts the merged list too).
    pub limit: Option<usize>,
}

/// Filters of `subscription show`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscriptionFilter {
    /// Exact client id.
    pub client_id: Option<String>,
    /// A substring of the filter (as subscribed, `$share/…` included).
    pub topic: Option<String>,
    /// Only subscriptions on this node.
    pub node: Option<String>,
    /// At most this many rows per node.
    pub limit: Option<usize>,
}

/// One management query or command, as it travels between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "query", rename_all = "snake_case")]
pub enum AdminQuery {
    /// Sessions matching a filter.
    SessionShow(SessionFilter),
    /// Disconnect a client (and with `cleanup`, delete its session).
    SessionDisconnect {
        /// The client.
        client_id: String,
        /// Delete the session and its queue too.
        cleanup: bool,
    },
    /// Subscriptions matching a filter.
    SubscriptionShow(SubscriptionFilter),
    /// Apply a retained-message deletion marker (last writer wins).
    RetainDelete {
        /// The topic.
        topic: String,
        /// The marker's write time, ms since the epoch.
        timestamp: u64,
        /// The node that wrote it.
        node: String,
    },
    /// The client listeners.
    ListenerShow,
    /// Change runtime knobs (already checked).
    Set {
        /// The settings.
        settings: Vec<Setting>,
    },
    /// This node's numbers for the status page.
    Status,
}

/// One session, as `session show` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRow {
    /// Client identifier.
    pub client_id: String,
    /// The node holding the session.
    pub node: String,
    /// Whether a connection owns it now.
    pub online: bool,
    /// User name of the current (or last) connection.
    pub user: Option<String>,
    /// The client's address (the forwarded one behind a PROXY header).
    pub peer: Option<String>,
    /// Listener of the current (or last) connection.
    pub listener: Option<String>,
    /// Protocol level: 3 (3.1), 4 (3.1.1), 5.
    pub protocol: Option<u8>,
    /// The CONNECT's clean start flag.
    pub clean_start: Option<bool>,
    /// Session expiry interval, seconds (4294967295: never).
    pub expiry_interval: u32,
    /// When the current connection attached, ms since the epoch.
    pub connected_at: Option<u64>,
    /// When the last connection left, ms since the epoch.
    pub disconnected_at: Option<u64>,
    /// Subscriptions held.
    pub subscriptions: usize,
    /// Messages queued, not yet sent.
    pub queued: usize,
    /// QoS 1/2 messages sent and not yet acknowledged.
    pub inflight: usize,
}

/// One subscription, as `subscription show` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRow {
    /// Client identifier.
    pub client_id: String,
    /// The node holding the session.
    pub node: String,
    /// The topic filter (without `$share/group/`).
    pub filter: String,
    /// Maximum QoS.
    pub qos: u8,
    /// 5.0 no-local.
    pub no_local: bool,
    /// 5.0 retain-as-published.
    pub retain_as_published: bool,
    /// 5.0 retain handling (0..=2).
    pub retain_handling: u8,
    /// The shared-subscription group, if any.
    pub share_group: Option<String>,
    /// 5.0 subscription identifier.
    pub identifier: Option<u32>,
}

/// One retained message, as `retain show` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainedRow {
    /// Topic.
    pub topic: String,
    /// QoS it was published with.
    pub qos: u8,
    /// Payload size, bytes.
    pub size: usize,
    /// The payload as text (lossy UTF-8, at most 64 characters).
    pub payload: String,
    /// When it was written, ms since the epoch.
    pub timestamp: u64,
    /// The node where it was published.
    pub origin_node: Option<String>,
}

/// One client listener, as `listener show` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerRow {
    /// The node.
    pub node: String,
    /// `tcp`, `tls`, `ws` or `wss`.
    pub kind: String,
    /// Bound address.
    pub bind: String,
    /// `up` or `down`.
    pub state: String,
    /// MQTT clients connected through it now.
    pub connections: usize,
    /// Connections it accepts at once.
    pub max_connections: usize,
    /// Whether it expects a PROXY protocol header.
    pub proxy_protocol: bool,
}

/// One node's answer to an [`AdminQuery`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", content = "rows", rename_all = "snake_case")]
pub enum AdminAnswer {
    /// `session show`.
    Sessions(Vec<SessionRow>),
    /// `session disconnect`: whether this node held the client.
    Disconnected(bool),
    /// `subscription show`.
    Subscriptions(Vec<SubscriptionRow>),
    /// `retain delete`: whether a live message was deleted here.
    RetainDeleted(bool),
    /// `listener show`.
    Listeners(Vec<ListenerRow>),
    /// `set`: every knob's value now in force.
    Settings(Vec<Setting>),
    /// The status page's numbers.
    Status(crate::admin::status::NodeStats),
    /// The node could not answer (e.g. a query it does not know).
    Error(String),
}

/// One peer's reply to a fanned-out query: its answer, or why it gave none
/// (down, timed out, failed).
#[derive(Debug, Clone, PartialEq)]
pub struct PeerReply {
    /// The peer's node name.
    pub node: String,
    /// Its answer, or why there is none.
    pub answer: Result<AdminAnswer, String>,
}

/// Default row limit of the `show` queries.
pub const DEFAULT_LIMIT: usize = 100;

/// Answers `query` from this node's state.
pub fn answer_local(broker: &Broker, query: &AdminQuery) -> AdminAnswer {
    let node = broker.node_name().to_string();
    match query {
        AdminQuery::SessionShow(f) => AdminAnswer::Sessions(sessions(broker, &node, f)),
        AdminQuery::SessionDisconnect { client_id, cleanup } => {
            AdminAnswer::Disconnected(broker.admin_disconnect(client_id, *cleanup))
        }
        AdminQuery::SubscriptionShow(f) => {
            AdminAnswer::Subscriptions(subscriptions(broker, &node, f))
        }
        AdminQuery::RetainDelete {
            topic,
            timestamp,
            node: writer,
        } => {
            let had = broker.has_retained(topic);
            let mut msg = broker.retained_tombstone(topic);
            msg.timestamp = *timestamp;
            msg.origin_node = Some(Arc::from(writer.as_str()));
            broker.apply_retained(Arc::new(msg));
            AdminAnswer::RetainDeleted(had && !broker.has_retained(topic))
        }
        AdminQuery::ListenerShow => AdminAnswer::Listeners(listeners(broker, &node)),
        AdminQuery::Set { settings } => {
            broker.knobs().apply(settings);
            AdminAnswer::Settings(broker.knobs().show())
        }
        AdminQuery::Status => match broker.status_sampler() {
            Some(sampler) => {
                AdminAnswer::Status(crate::admin::status::model::local_stats(broker, sampler))
            }
            None => AdminAnswer::Error("this node has no admin listener".into()),
        },
    }
}

fn wanted(want: &Option<String>, have: &str) -> bool {
    want.as_deref().is_none_or(|w| w == have)
}

fn sessions(broker: &Broker, node: &str, f: &SessionFilter) -> Vec<SessionRow> {
    if !wanted(&f.node, node) {
        return Vec::new();
    }
    let mut rows: Vec<SessionRow> = broker
        .all_sessions()
        .into_iter()
        .filter(|c| wanted(&f.client_id, &c.client_id))
        .filter_map(|cell| {
            let st = cell.state.lock();
            if st.ended {
                return None;
            }
            let online = st.owner.is_some();
            let conn = st.conn.as_ref();
            let row = SessionRow {
                client_id: cell.client_id.to_string(),
                node: node.to_string(),
                online,
                user: conn.and_then(|c| c.username.as_deref().map(str::to_string)),
                peer: conn.map(|c| c.peer.to_string()),
                listener: conn.map(|c| c.listener.to_string()),
                protocol: conn.map(|c| c.protocol),
                clean_start: conn.map(|c| c.clean_start),
                expiry_interval: st.data.expiry_interval,
                connected_at: (st.connected_at > 0).then_some(st.connected_at),
                disconnected_at: st.offline_since.map(|s| s.get()).filter(|_| !online),
                subscriptions: st.data.subscriptions.len(),
                queued: st.data.queue.len(),
                inflight: st.data.inflight.len(),
            };
            drop(st);
            let keep = f.online.is_none_or(|o| o == row.online)
                && f.user
                    .as_deref()
                    .is_none_or(|u| row.user.as_deref() == Some(u));
            keep.then_some(row)
        })
        .collect();
    rows.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    rows.truncate(f.limit.unwrap_or(DEFAULT_LIMIT));
    rows
}

fn subscriptions(broker: &Broker, node: &str, f: &SubscriptionFilter) -> Vec<SubscriptionRow> {
    if !wanted(&f.node, node) {
        return Vec::new();
    }
    let mut rows = Vec::new();
    for cell in broker.all_sessions() {
        if !wanted(&f.client_id, &cell.client_id) {
            continue;
        }
        let st = cell.state.lock();
        if st.ended {
            continue;
        }
        for (filter, e) in &st.data.subscriptions {
            if f.topic.as_deref().is_some_and(|t| !filter.contains(t)) {
                continue;
            }
            let (group, plain) = match topic::parse_shared(filter) {
                Some((g, p)) => (Some(g.to_string()), p),
                None => (None, filter.as_str()),
            };
            rows.push(SubscriptionRow {
                client_id: cell.client_id.to_string(),
                node: node.to_string(),
                filter: plain.to_string(),
                qos: e.options.qos as u8,
                no_local: e.options.no_local,
                retain_as_published: e.options.retain_as_published,
                retain_handling: e.options.retain_handling,
                share_group: group,
                identifier: e.identifier,
            });
        }
    }
    rows.sort_by(|a, b| (&a.client_id, &a.filter).cmp(&(&b.client_id, &b.filter)));
    rows.truncate(f.limit.unwrap_or(DEFAULT_LIMIT));
    rows
}

/// Retained messages matching `filter` on this node (retained messages are
/// replicated to every node, so one node's answer is the cluster's).
pub fn retained(broker: &Broker, filter: &str, limit: usize) -> Vec<RetainedRow> {
    let mut rows: Vec<RetainedRow> = broker
        .retained_for(filter)
        .into_iter()
        .map(|(topic, m)| retained_row(topic, &m))
        .collect();
    rows.sort_by(|a, b| a.topic.cmp(&b.topic));
    rows.truncate(limit);
    rows
}

fn retained_row(topic: String, m: &Message) -> RetainedRow {
    let text = String::from_utf8_lossy(&m.payload);
    RetainedRow {
        topic,
        qos: m.qos as u8,
        size: m.payload.len(),
        payload: text.chars().take(64).collect(),
        timestamp: m.timestamp,
        origin_node: m.origin_node.as_deref().map(str::to_string),
    }
}

fn listeners(broker: &Broker, node: &str) -> Vec<ListenerRow> {
    let Some(l) = broker.listeners() else {
        return Vec::new();
    };
    let mut counts = std::collections::HashMap::<&str, usize>::new();
    for cell in broker.all_sessions() {
        let st = cell.state.lock();
        if let (Some(_), Some(c)) = (&st.owner, &st.conn) {
            *counts.entry(c.listener.as_str()).or_default() += 1;
        }
    }
    let down = l.health.down();
    l.entries
        .iter()
        .map(|e| ListenerRow {
            node: node.to_string(),
            kind: e.kind.to_string(),
            bind: e.bind.to_string(),
            state: if down.contains(&e.kind) { "down" } else { "up" }.to_string(),
            connections: counts.get(e.kind).copied().unwrap_or(0),
            max_connections: e.max_connections,
            proxy_protocol: e.proxy_protocol,
        })
        .collect()
}
