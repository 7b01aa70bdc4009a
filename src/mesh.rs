//! Wiring between discovery, the cluster mesh and readiness: the peer
//! source built from `[discovery]` (falling back to `cluster.peers`), the
//! adapter from discovery's `PeerSet` to the mesh's address list, and the
//! task that releases the `discovery` and `cluster` readiness latches.

use std::sync::Arc;
use std::time::Duration;
use tern_broker::admin::Readiness;
use tern_broker::config::Config;
use tern_cluster::{Cluster, PeerSource};
use tern_discovery::{
    DiscoveryConfig, DiscoveryError, DiscoveryMode, OwnIdentity, PeerSet, SourceStatus,
    StatusHandle,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Readiness latch of the peer source.
pub const DISCOVERY_LATCH: &str = "discovery";
/// Readiness latch of the mesh's initial sync.
pub const CLUSTER_LATCH: &str = "cluster";

/// The discovery output as the mesh's [`PeerSource`]: `host:port` strings.
pub struct DiscoveredPeers {
    rx: watch::Receiver<Vec<String>>,
}

impl PeerSource for DiscoveredPeers {
    fn watch(&self) -> watch::Receiver<Vec<String>> {
        self.rx.clone()
    }
}

/// The `[discovery]` settings in effect: in `static` mode an empty
/// `discovery.peers` falls back to `cluster.peers`.
pub fn effective_discovery(config: &Config) -> DiscoveryConfig {
    let mut d = config.discovery.clone();
    if d.mode == DiscoveryMode::Static && d.peers.is_empty() {
        d.peers.clone_from(&config.cluster.peers);
    }
    d
}

/// Starts the peer source `config` chooses, discovered peers dialed on
/// the port of `cluster.bind`; it stops with `shutdown`.
pub fn peer_source(
    config: &Config,
    shutdown: CancellationToken,
) -> Result<(Arc<dyn PeerSource>, StatusHandle), DiscoveryError> {
    let mesh_port = config.cluster.bind.port();
    let source = tern_discovery::from_config(
        &effective_discovery(config),
        mesh_port,
        &OwnIdentity::from_env(),
    )?;
    let discovery = tern_discovery::spawn(source, shutdown.clone());
    let (tx, rx) = watch::channel(Vec::new());
    tokio::spawn(adapt(discovery.peers, tx, shutdown));
    Ok((Arc::new(DiscoveredPeers { rx }), discovery.status))
}

fn addrs(set: &PeerSet) -> Vec<String> {
    set.iter().map(|p| p.addr.clone()).collect()
}

/// Mirrors every published `PeerSet` as its addresses until `shutdown`.
async fn adapt(
    mut peers: watch::Receiver<PeerSet>,
    tx: watch::Sender<Vec<String>>,
    shutdown: CancellationToken,
) {
    loop {
        let next = addrs(&peers.borrow_and_update());
        tx.send_if_modified(|current| {
            let changed = *current != next;
            *current = next;
            changed
        });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = peers.changed() => if r.is_err() { return },
        }
    }
}

/// Holds the `discovery` and `cluster` latches, then releases each once
/// it is first satisfied (a later peer failure does not make a serving
/// node unready; discovery errors before that are shown in `waiting`).
pub fn track_readiness(
    readiness: &Readiness,
    status: StatusHandle,
    cluster: Cluster,
    shutdown: CancellationToken,
) {
    readiness.hold(DISCOVERY_LATCH, SourceStatus::Pending.to_string());
    readiness.hold(CLUSTER_LATCH, "not joined yet");
    let readiness = readiness.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !readiness.is_released(DISCOVERY_LATCH) {
                match status.get() {
                    SourceStatus::Ok => readiness.release(DISCOVERY_LATCH),
                    other => readiness.hold(DISCOVERY_LATCH, other.to_string()),
                }
                continue;
            }
            readiness.set(CLUSTER_LATCH, cluster.sync_status());
            if readiness.is_released(CLUSTER_LATCH) {
                tracing::info!("joined the mesh: ready");
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_discovery_falls_back_to_cluster_peers() {
        let mut config = Config::default();
        config.cluster.peers = vec!["a:1".into()];
        assert_eq!(effective_discovery(&config).peers, vec!["a:1".to_string()]);
        config.discovery.peers = vec!["b:2".into()];
        assert_eq!(effective_discovery(&config).peers, vec!["b:2".to_string()]);
    }
}
