//! What a [`Cluster`](crate::Cluster) is built from, and its incarnation.

use tern_broker::config::{ClusterConfig, Config, SharedPolicy};
use tern_broker::session::now_ms;

/// Everything a [`Cluster`] needs besides its transport and peer source.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// This node's name.
    pub node: String,
    /// `[cluster]`.
    pub cluster: ClusterConfig,
    /// `mqtt.shared_subscription_policy`.
    pub shared_policy: SharedPolicy,
    /// `mqtt.retain_available`.
    pub retain_available: bool,
    /// Fixed incarnation (tests); `None` draws a new one.
    pub incarnation: Option<u64>,
}

impl ClusterOptions {
    /// Options from the node's configuration.
    pub fn from_config(config: &Config) -> ClusterOptions {
        ClusterOptions {
            node: config.node_name(),
            cluster: config.cluster.clone(),
            shared_policy: config.mqtt.shared_subscription_policy,
            retain_available: config.mqtt.retain_available,
            incarnation: None,
        }
    }
}

/// A fresh incarnation: start time in ms, times 1024, plus 10 random bits,
/// so a restarted node's incarnation is greater than its previous one.
pub fn new_incarnation() -> u64 {
    now_ms()
        .saturating_mul(1024)
        .saturating_add(rand::random::<u64>() % 1024)
}
