//! The validated configuration tree. Every section denies unknown keys and
//! every field has an embedded default, so an empty file is a working
//! single-node broker (TCP 1883, admin 8888).
//!
//! Loading (file + `TERN_…` environment overrides + validation) lives in
//! the `load` submodule.

mod admin;
pub use admin::*;
pub mod discovery;
mod storage;
pub use storage::{Durability, StorageConfig};
mod webhooks;
pub use webhooks::{HookKind, WebhookConfig};
mod edge;
mod load;
pub use edge::*;
pub use load::*;

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This node.
    pub node: NodeConfig,
    /// Client listeners.
    pub listeners: ListenersConfig,
    /// Admin HTTP listener.
    pub admin: AdminConfig,
    /// Protocol limits and behaviour.
    pub mqtt: MqttConfig,
    /// Authentication.
    pub auth: AuthConfig,
    /// Shutdown behaviour.
    pub shutdown: ShutdownConfig,
    /// The cluster mesh (disabled: a single node).
    pub cluster: ClusterConfig,
    /// Peer discovery.
    pub discovery: discovery::DiscoveryConfig,
    /// Durable state (off unless `dir` is set).
    pub storage: StorageConfig,
    /// Overload protection: rates, timeouts, caps, the memory watermark.
    pub limits: LimitsConfig,
}

/// Node identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Node name; empty means the host name.
    pub name: String,
}

/// The client listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenersConfig {
    /// Plain MQTT over TCP.
    pub tcp: TcpListenerConfig,
    /// MQTT over TLS.
    pub tls: TlsListenerConfig,
    /// MQTT over WebSocket.
    pub ws: WsListenerConfig,
    /// MQTT over WebSocket over TLS.
    pub wss: WssListenerConfig,
}

#[allow(clippy::derivable_impls)]
impl Default for ListenersConfig {
    fn default() -> Self {
        ListenersConfig {
            tcp: TcpListenerConfig::default(),
            tls: TlsListenerConfig::default(),
            ws: WsListenerConfig::default(),
            wss: WssListenerConfig::default(),
        }
    }
}

/// A plain TCP listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpListenerConfig {
    /// Whether to listen at all.
    pub enabled: bool,
    /// Bind address.
    pub bind: SocketAddr,
    /// Connections beyond this are closed right after accept.
    pub max_connections: usize,
    /// Expect a PROXY protocol (v1 or v2) header before anything else.
    pub proxy_protocol: bool,
    /// Take the client certificate CN from a v2 header's SSL TLV.
    pub proxy_protocol_use_cn_as_username: bool,
}

impl Default for TcpListenerConfig {
    fn default() -> Self {
        TcpListenerConfig {
            enabled: true,
            bind: SocketAddr::from(([0, 0, 0, 0], 1883)),
            max_connections: 100_000,
            proxy_protocol: false,
            proxy_protocol_use_cn_as_username: false,
        }
    }
}

/// A TLS listener (rustls).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsListenerConfig {
    /// Whether to listen; needs `cert` and `key`.
    pub enabled: bool,
    /// Bind address.
    pub bind: SocketAddr,
    /// Connections beyond this are closed right after accept.
    pub max_connections: usize,
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// PEM CA bundle for client certificates.
    pub ca: Option<PathBuf>,
    /// Require a client certificate signed by `ca`.
    pub require_client_cert: bool,
    /// Expect a PROXY protocol (v1 or v2) header before the TLS handshake.
    pub proxy_protocol: bool,
    /// Take the client certificate CN from a v2 header's SSL TLV.
    pub proxy_protocol_use_cn_as_username: bool,
}

impl Default for TlsListenerConfig {
    fn default() -> Self {
        TlsListenerConfig {
            enabled: false,
            bind: SocketAddr::from(([0, 0, 0, 0], 8883)),
            max_connections: 100_000,
            cert: None,
            key: None,
            ca: None,
            require_client_cert: false,
            proxy_protocol: false,
            proxy_protocol_use_cn_as_username: false,
        }
    }
}

/// What to drop when a session's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DropPolicy {
    /// Drop the incoming message (the queue keeps its oldest).
    #[default]
    DropNewest,
    /// Drop the oldest queued message to make room.
    DropOldest,
}

/// How one member of a shared-subscription group is picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SharedPolicy {
    /// Round robin over the group's members.
    #[default]
    RoundRobin,
    /// A random member.
    Random,
    /// Local members first (meaningful in a cluster), round robin among them.
    PreferLocal,
}

/// Protocol limits and behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Largest packet accepted from a client, in bytes (fixed header included).
    pub max_packet_size: u32,
    /// Largest keep-alive accepted; a 5.0 client asking for more (or 0) is
    /// told this value as Server Keep Alive. 0 means no limit.
    pub max_keep_alive: u16,
    /// Receive Maximum the broker announces: QoS 1/2 PUBLISHes a client may
    /// have unacknowledged towards the broker.
    pub receive_maximum: u16,
    /// Upper bound on QoS 1/2 messages in flight towards one client (also
    /// bounded by the client's Receive Maximum).
    pub max_inflight: u16,
    /// Topic Alias Maximum the broker announces to 5.0 clients.
    pub topic_alias_maximum: u16,
    /// Session expiry, in seconds, for 3.x sessions with clean session = 0;
    /// 0 keeps them forever (like VerneMQ's `persistent_client_expiration`).
    pub persistent_client_expiration: u32,
    /// Upper bound on the session expiry a 5.0 client may ask for, in seconds.
    pub max_session_expiry: u32,
    /// Messages queued for an offline persistent session.
    pub max_offline_messages: usize,
    /// Messages queued for an online session beyond the in-flight window.
    pub max_online_messages: usize,
    /// What a full queue drops.
    pub queue_drop_policy: DropPolicy,
    /// How shared-subscription members are picked.
    pub shared_subscription_policy: SharedPolicy,
    /// Whether retained messages are stored.
    pub retain_available: bool,
    /// Largest client identifier accepted, in bytes.
    pub max_client_id_len: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            max_packet_size: 1024 * 1024,
            max_keep_alive: 0,
            receive_maximum: 100,
            max_inflight: 100,
            topic_alias_maximum: 64,
            persistent_client_expiration: 0,
            max_session_expiry: u32::MAX,
            max_offline_messages: 1000,
            max_online_messages: 1000,
            queue_drop_policy: DropPolicy::DropNewest,
            shared_subscription_policy: SharedPolicy::RoundRobin,
            retain_available: true,
            max_client_id_len: 256,
        }
    }
}

/// Authentication and authorization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accept clients without credentials.
    pub allow_anonymous: bool,
    /// Password file (`user:argon2-hash` lines, managed by `tern passwd`);
    /// reloaded when it changes. Unset: any user name is accepted.
    pub password_file: Option<PathBuf>,
    /// ACL file in the Mosquitto/VerneMQ syntax; reloaded when it changes.
    /// Unset: every client may publish and subscribe to everything.
    pub acl_file: Option<PathBuf>,
    /// Decisions each webhook keeps cached at most.
    pub webhook_cache_max_entries: usize,
    /// HTTP endpoints asked before the files; a `next` answer falls
    /// through to them. From the environment: `hook=endpoint,…`.
    #[serde(deserialize_with = "webhooks::webhooks_list")]
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allow_anonymous: true,
            password_file: None,
            acl_file: None,
            webhook_cache_max_entries: 100_000,
            webhooks: Vec::new(),
        }
    }
}

impl AuthConfig {
    /// Checks the webhooks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        webhooks::validate(&self.webhooks, self.webhook_cache_max_entries)
    }
}

/// Shutdown behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Seconds allowed for the drain after SIGTERM/SIGINT.
    pub grace_period_secs: u64,
    /// When set, 5.0 clients connected at shutdown get DISCONNECT 0x9C
    /// "use another server" with this Server Reference instead of 0x8B.
    pub server_reference: String,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace_period_secs: 10,
            server_reference: String::new(),
        }
    }
}

/// The cluster mesh: gRPC links to every peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Join a cluster at all; needs a non-empty `secret`.
    pub enabled: bool,
    /// Address of the mesh's gRPC listener (port 0 picks one).
    pub bind: SocketAddr,
    /// Peer addresses (`host:port`) to dial. From the environment a
    /// comma-separated string is accepted too.
    #[serde(deserialize_with = "peers_list")]
    pub peers: Vec<String>,
    /// Shared secret every node presents on every mesh RPC.
    pub secret: String,
    /// Interval between heartbeats on a link, milliseconds.
    pub heartbeat_ms: u64,
    /// A peer is down after this long without traffic, milliseconds.
    pub peer_timeout_ms: u64,
    /// Routes of an unreachable peer are kept (and messages for it
    /// buffered) this long, seconds.
    pub route_grace_secs: u64,
    /// Messages buffered per peer while it is unreachable or slow to ack;
    /// beyond this they are dropped and counted.
    pub buffer_max_messages: usize,
    /// Accept a CONNECT while some known peer is unreachable.
    pub allow_register_during_netsplit: bool,
    /// Accept a PUBLISH while some known peer is unreachable.
    pub allow_publish_during_netsplit: bool,
    /// Accept a SUBSCRIBE while some known peer is unreachable.
    pub allow_subscribe_during_netsplit: bool,
    /// Dial back a node that dialed in, at the address it advertises, so a
    /// single seed address forms the whole mesh. Turn off when nodes must
    /// be reached only through the configured peer addresses (behind a
    /// proxy or NAT, where the advertised address is not reachable).
    pub dial_back: bool,
    /// Mutual TLS between nodes.
    pub tls: ClusterTlsConfig,
    /// Readiness: with no reachable peer, a node (the first of a cluster)
    /// reports ready this many seconds after start.
    pub ready_wait_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            bind: SocketAddr::from(([0, 0, 0, 0], 44053)),
            peers: Vec::new(),
            secret: String::new(),
            heartbeat_ms: 1000,
            peer_timeout_ms: 5000,
            route_grace_secs: 60,
            buffer_max_messages: 100_000,
            allow_register_during_netsplit: true,
            allow_publish_during_netsplit: true,
            allow_subscribe_during_netsplit: true,
            dial_back: true,
            tls: ClusterTlsConfig::default(),
            ready_wait_secs: 10,
        }
    }
}

/// Mutual TLS on the mesh: each side presents `cert`/`key` and verifies
/// the other against `ca`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterTlsConfig {
    /// Use mTLS on the mesh; needs `cert`, `key` and `ca`.
    pub enabled: bool,
    /// PEM certificate chain of this node.
    pub cert: Option<PathBuf>,
    /// PEM private key of this node.
    pub key: Option<PathBuf>,
    /// PEM CA bundle peers' certificates must chain to.
    pub ca: Option<PathBuf>,
}

/// `peers` as a TOML array or a comma-separated string (from the environment).
fn peers_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Peers {
        List(Vec<String>),
        Joined(String),
    }
    Ok(match Peers::deserialize(d)? {
        Peers::List(list) => list,
        Peers::Joined(s) => s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect(),
    })
}
