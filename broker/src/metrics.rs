//! Broker metrics, registered with `prometheus-client` and rendered as
//! Prometheus text by the admin listener. Counters are atomics: cheap on
//! the publish path. Every series carries a `node` label (the node's name),
//! so the series of a cluster's nodes stay apart wherever they are merged.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::sync::Arc;

/// Every broker metric. Cloning shares the underlying atomics.
#[derive(Clone, Default)]
pub struct Metrics {
    /// Currently open client connections (after CONNACK).
    pub connections: Gauge,
    /// Of those, connections hibernated while idle (no task of their own).
    pub connections_hibernated: Gauge,
    /// Client connections accepted since start.
    pub connections_total: Counter,
    /// Connections refused (listener full, bad CONNECT, auth failure).
    pub connections_refused: Counter,
    /// PUBLISH packets received from clients.
    pub messages_in: Counter,
    /// PUBLISH packets sent to clients.
    pub messages_out: Counter,
    /// Bytes read from clients.
    pub bytes_in: Counter,
    /// Bytes written to clients.
    pub bytes_out: Counter,
    /// Current subscriptions (filter × session).
    pub subscriptions: Gauge,
    /// Current retained messages.
    pub retained: Gauge,
    /// Messages dropped because a session queue was full.
    pub queue_drops: Counter,
    /// Messages dropped because they expired before delivery.
    pub expired: Counter,
    /// Current sessions (online and offline).
    pub sessions: Gauge,
    /// Protocol errors and malformed packets seen.
    pub protocol_errors: Counter,
    /// Failed authentications (bad credentials, not authorized, bad method).
    pub auth_failures: Counter,
    /// The cluster mesh (all zero on a single node).
    pub cluster: ClusterMetrics,
    /// Overload protection and the edge (WebSocket, PROXY protocol).
    pub edge: EdgeMetrics,
    /// The `node` label's value; `None` renders without it (unit tests).
    node: Option<Arc<str>>,
    /// Authentication and authorization webhooks, by hook.
    pub webhooks: WebhookMetrics,
}

/// The label of webhook metrics: `hook="auth_on_register"` and so on.
pub type HookLabel = [(&'static str, &'static str); 1];

/// Webhook metrics, labelled by hook.
#[derive(Clone)]
pub struct WebhookMetrics {
    /// HTTP calls made.
    pub calls: Family<HookLabel, Counter>,
    /// Calls that failed: timeout, connection error, non-200, bad answer.
    pub failures: Family<HookLabel, Counter>,
    /// Decisions answered from the cache.
    pub cache_hits: Family<HookLabel, Counter>,
    /// Requests refused by a webhook's answer or by a failure (fail closed).
    pub denials: Family<HookLabel, Counter>,
    /// Call latency, seconds (failures included).
    pub latency: Family<HookLabel, Histogram, fn() -> Histogram>,
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        WebhookMetrics {
            calls: Family::default(),
            failures: Family::default(),
            cache_hits: Family::default(),
            denials: Family::default(),
            // 1 ms to about 16 s.
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 15))
            }),
        }
    }
}

/// Overload protection and edge metrics.
#[derive(Clone, Default)]
pub struct EdgeMetrics {
    /// Connections closed after accept because the listener's connect rate
    /// was exceeded.
    pub connect_rate_refused: Counter,
    /// Connections closed for a missing, malformed or late PROXY header.
    pub proxy_errors: Counter,
    /// WebSocket upgrades refused (wrong path, no `mqtt` subprotocol, bad
    /// HTTP) and connections closed for a text frame.
    pub ws_errors: Counter,
    /// Reads delayed because a client exceeded its publish rate.
    pub publish_throttled: Counter,
    /// Reads delayed because a QoS 1/2 target queue was full.
    pub backpressure_waits: Counter,
    /// Subscribers disconnected for making no progress.
    pub slow_consumers: Counter,
    /// SUBSCRIBE filters refused by `max_subscriptions_per_client` or
    /// `max_topic_levels`, and PUBLISHes refused for topic depth.
    pub limit_rejections: Counter,
    /// CONNECTs refused because resident memory was above the watermark.
    pub memory_refused: Counter,
    /// Resident memory, bytes, as last sampled.
    pub memory_rss_bytes: Gauge,
}

/// Metrics of the cluster mesh, updated by `tern-cluster`.
#[derive(Clone, Default)]
pub struct ClusterMetrics {
    /// Peers with a live link.
    pub peers_up: Gauge,
    /// Messages forwarded to other nodes (one per target node).
    pub forwarded_messages: Counter,
    /// Payload bytes forwarded to other nodes.
    pub forwarded_bytes: Counter,
    /// Messages waiting in per-peer retry buffers.
    pub buffered_messages: Gauge,
    /// Messages dropped: retry buffer full, or a peer gone past its grace.
    pub dropped_messages: Counter,
    /// Full route snapshots applied after a gap, a new link or a restart.
    pub resyncs: Counter,
}

impl Metrics {
    /// Fresh metrics whose every series is labelled `node="<node>"`.
    pub fn for_node(node: &str) -> Metrics {
        Metrics {
            node: Some(Arc::from(node)),
            ..Metrics::default()
        }
    }

    /// The node named in the `node` label, if any.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// Renders every metric as Prometheus text exposition format.
    pub fn render(&self) -> String {
        let labels = self
            .node
            .iter()
            .map(|n| (Cow::Borrowed("node"), Cow::Owned(n.to_string())));
        let mut registry = Registry::with_prefix_and_labels("tern", labels);
        let m = self.clone();
        registry.register("connections", "Open client connections", m.connections);
        registry.register(
            "connections_hibernated",
            "Open client connections hibernated while idle",
            m.connections_hibernated,
        );
        registry.register(
            "connections_accepted",
            "Client connections accepted",
            m.connections_total,
        );
        registry.register(
            "connections_refused",
            "Client connections refused",
            m.connections_refused,
        );
        registry.register(
            "messages_received",
            "PUBLISH packets received from clients",
            m.messages_in,
        );
        registry.register(
            "messages_sent",
            "PUBLISH packets sent to clients",
            m.messages_out,
        );
        registry.register("bytes_received", "Bytes read from clients", m.bytes_in);
        registry.register("bytes_sent", "Bytes written to clients", m.bytes_out);
        registry.register("subscriptions", "Current subscriptions", m.subscriptions);
        registry.register("retained_messages", "Current retained messages", m.retained);
        registry.register(
            "queue_dropped",
            "Messages dropped on a full session queue",
            m.queue_drops,
        );
        registry.register(
            "messages_expired",
            "Messages expired before delivery",
            m.expired,
        );
        registry.register(
            "sessions",
            "Current sessions, online and offline",
            m.sessions,
        );
        registry.register(
            "protocol_errors",
            "Malformed packets and protocol violations",
            m.protocol_errors,
        );
        registry.register("auth_failures", "Failed authentications", m.auth_failures);
        let c = m.cluster;
        registry.register(
            "cluster_peers_up",
            "Cluster peers with a live link",
            c.peers_up,
        );
        registry.register(
            "cluster_forwarded_messages",
            "Messages forwarded to other nodes",
            c.forwarded_messages,
        );
        registry.register(
            "cluster_forwarded_bytes",
            "Payload bytes forwarded to other nodes",
            c.forwarded_bytes,
        );
        registry.register(
            "cluster_buffered_messages",
            "Messages buffered for unreachable or slow peers",
            c.buffered_messages,
        );
        registry.register(
            "cluster_dropped_messages",
            "Messages dropped by the cluster (buffer full, peer gone)",
            c.dropped_messages,
        );
        registry.register("cluster_resyncs", "Full route snapshots applied", c.resyncs);
        let e = m.edge;
        registry.register(
            "connect_rate_refused",
            "Connections closed over the listener connect rate",
            e.connect_rate_refused,
        );
        registry.register(
            "proxy_protocol_errors",
            "Connections closed for a missing or malformed PROXY header",
            e.proxy_errors,
        );
        registry.register(
            "websocket_errors",
            "WebSocket upgrades refused and text frames seen",
            e.ws_errors,
        );
        registry.register(
            "publish_throttled",
            "Reads delayed by the per-client publish rate",
            e.publish_throttled,
        );
        registry.register(
            "backpressure_waits",
            "Reads delayed because a QoS 1/2 target queue was full",
            e.backpressure_waits,
        );
        registry.register(
            "slow_consumers_disconnected",
            "Subscribers disconnected for making no progress",
            e.slow_consumers,
        );
        registry.register(
            "limit_rejections",
            "Subscriptions and publishes refused by subscription or topic depth caps",
            e.limit_rejections,
        );
        registry.register(
            "memory_refused",
            "Connections refused above the memory watermark",
            e.memory_refused,
        );
        registry.register(
            "memory_rss_bytes",
            "Resident memory as last sampled",
            e.memory_rss_bytes,
        );
        let w = m.webhooks;
        registry.register("webhook_calls", "Webhook HTTP calls made", w.calls);
        registry.register(
            "webhook_failures",
            "Webhook calls that failed (timeout, connection, status, bad answer)",
            w.failures,
        );
        registry.register(
            "webhook_cache_hits",
            "Webhook decisions answered from the cache",
            w.cache_hits,
        );
        registry.register(
            "webhook_denials",
            "Requests refused by a webhook (answer or failure)",
            w.denials,
        );
        registry.register(
            "webhook_duration_seconds",
            "Webhook call latency",
            w.latency,
        );
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}
