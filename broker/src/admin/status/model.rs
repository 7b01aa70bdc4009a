//! The shape of `/status.json` and how it is gathered from this node's
//! metrics, session registry and cluster view.

use super::rates::{Rates, Sampler};
use crate::admin::{AdminAnswer, AdminQuery, AdminState, ClusterShow, Health};
use crate::broker::Broker;
use crate::session::now_ms;
use serde::{Deserialize, Serialize};

/// `GET /status.json`: this node and the cluster as this node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// This node's name.
    pub node: String,
    /// Tern's version.
    pub version: String,
    /// Seconds since this node started.
    pub uptime_secs: u64,
    /// When the report was made, ms since the Unix epoch.
    pub generated_ms: u64,
    /// This node first, then its peers by name.
    pub nodes: Vec<NodeStatus>,
    /// This node's client listeners, in start order.
    pub listeners: Vec<ListenerStatus>,
    /// Sums over the nodes.
    pub totals: Totals,
}

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// True for the node that made the report.
    pub local: bool,
    /// `"up"` or `"down"` (this node is always up).
    pub state: String,
    /// Mesh address dialed (peers only).
    pub address: Option<String>,
    /// The node's incarnation (0 for a single node, or a peer never seen).
    pub incarnation: u64,
    /// When the state last changed (this node: when it started), ms since
    /// the Unix epoch.
    pub since_ms: u64,
    /// Last heartbeat round trip to the peer, ms (`null` for this node).
    pub rtt_ms: Option<f64>,
    /// The node's numbers; `null` for a peer (only this node's are known).
    pub stats: Option<NodeStats>,
}

/// A node's numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    /// Open client connections.
    pub connections: u64,
    /// Sessions with a connection.
    pub sessions_online: u64,
    /// Sessions kept without a connection.
    pub sessions_offline: u64,
    /// Subscriptions (filter × session).
    pub subscriptions: u64,
    /// Retained messages.
    pub retained: u64,
    /// Messages queued in sessions, not yet sent.
    pub queued: u64,
    /// QoS 1/2 messages sent, awaiting acknowledgement.
    pub inflight: u64,
    /// Traffic per second over the last few seconds.
    #[serde(flatten)]
    pub rates: Rates,
}

impl NodeStats {
    fn add(&mut self, o: &NodeStats) {
        self.connections += o.connections;
        self.sessions_online += o.sessions_online;
        self.sessions_offline += o.sessions_offline;
        self.subscriptions += o.subscriptions;
        self.retained += o.retained;
        self.queued += o.queued;
        self.inflight += o.inflight;
        self.rates.messages_in_per_sec += o.rates.messages_in_per_sec;
        self.rates.messages_out_per_sec += o.rates.messages_out_per_sec;
        self.rates.bytes_in_per_sec += o.rates.bytes_in_per_sec;
        self.rates.bytes_out_per_sec += o.rates.bytes_out_per_sec;
    }
}

/// One client listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerStatus {
    /// `"tcp"`, `"tls"`, `"ws"` or `"wss"`.
    pub name: String,
    /// `"up"` (accepting) or `"down"`.
    pub state: String,
}

/// Cluster-wide sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Nodes known (this one included).
    pub nodes: u64,
    /// Nodes up.
    pub nodes_up: u64,
    /// Nodes whose numbers are summed below (those with `stats`).
    pub nodes_reporting: u64,
    /// The sums.
    #[serde(flatten)]
    pub stats: NodeStats,
}

/// The listeners' states from `health`.
pub fn listeners(health: &Health) -> Vec<ListenerStatus> {
    health
        .listeners()
        .into_iter()
        .map(|(name, up)| ListenerStatus {
            name: name.to_string(),
            state: if up { "up" } else { "down" }.to_string(),
        })
        .collect()
}

/// This node's numbers, read now (rates from the sampler's window).
pub fn local_stats(broker: &Broker, sampler: &Sampler) -> NodeStats {
    let m = broker.metrics();
    let gauge = |v: i64| u64::try_from(v).unwrap_or(0);
    let sessions = broker.session_stats();
    NodeStats {
        connections: gauge(m.connections.get()),
        sessions_online: sessions.online,
        sessions_offline: sessions.offline,
        subscriptions: gauge(m.subscriptions.get()),
        retained: gauge(m.retained.get()),
        queued: sessions.queued,
        inflight: sessions.inflight,
        rates: sampler.rates(),
    }
}

/// Gathers the report: this node's numbers, and each up peer's, asked over
/// the mesh (a peer that does not answer in time keeps `stats: None`).
pub async fn report(state: &AdminState, broker: &Broker) -> StatusReport {
    let sampler = &state.status;
    let show = broker.remote().show().unwrap_or_else(|| ClusterShow {
        node: broker.node_name().to_string(),
        incarnation: 0,
        peers: Vec::new(),
    });
    let mut nodes = vec![NodeStatus {
        name: show.node,
        local: true,
        state: "up".to_string(),
        address: None,
        incarnation: show.incarnation,
        since_ms: sampler.started_ms(),
        rtt_ms: None,
        stats: Some(local_stats(broker, sampler)),
    }];
    nodes.extend(show.peers.into_iter().map(|p| NodeStatus {
        name: p.node,
        local: false,
        state: p.state,
        address: Some(p.address),
        incarnation: p.incarnation,
        since_ms: p.since_ms,
        rtt_ms: p.rtt_ms,
        stats: None,
    }));
    if nodes.len() > 1 {
        for reply in broker.remote().admin(&AdminQuery::Status).await {
            if let Ok(AdminAnswer::Status(stats)) = reply.answer {
                if let Some(n) = nodes.iter_mut().find(|n| !n.local && n.name == reply.node) {
                    n.stats = Some(stats);
                }
            }
        }
    }
    StatusReport {
        node: broker.node_name().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: sampler.uptime().as_secs(),
        generated_ms: now_ms(),
        listeners: listeners(&state.health),
        totals: totals(&nodes),
        nodes,
    }
}

/// Sums `nodes` (pure).
pub fn totals(nodes: &[NodeStatus]) -> Totals {
    let mut t = Totals {
        nodes: nodes.len() as u64,
        ..Totals::default()
    };
    for n in nodes {
        t.nodes_up += u64::from(n.state == "up");
        if let Some(s) = &n.stats {
            t.nodes_reporting += 1;
            t.stats.add(s);
        }
    }
    t
}
