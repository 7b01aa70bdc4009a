//! Peer discovery: where a Tern node learns the mesh addresses of its peers.
//!
//! A [`PeerSource`] publishes the *full* current [`PeerSet`] on a
//! `tokio::sync::watch` channel each time it changes, and reports its health
//! through a [`StatusHandle`] that the node's readiness reads. The source is
//! chosen by the `[discovery]` config section ([`from_config`]):
//!
//! - [`static_list`]: a fixed `host:port` list (`discovery.peers`);
//! - [`dns`]: the A/AAAA records of a headless Service, re-resolved on an
//!   interval (hickory-resolver);
//! - [`kubernetes`]: a watch on the Service's EndpointSlices (kube-rs
//!   `watcher` with the default backoff), not-ready endpoints included;
//! - [`identity`]: who this pod is (downward API env, host name fallback),
//!   so that every source leaves the node itself out of the set;
//! - [`status`]: the `Pending` / `Ok` / `Error` state readiness reads.
//!
//! The cluster mesh only sees the trait, so tests inject any source (or a
//! plain `watch` channel) in its place.

pub mod dns;
pub mod identity;
pub mod kubernetes;
pub mod static_list;
pub mod status;

pub use identity::OwnIdentity;
pub use status::{SourceStatus, StatusHandle};
pub use tern_broker::config::discovery::{DiscoveryConfig, DiscoveryMode};

use futures::future::BoxFuture;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One peer: where to reach its mesh endpoint, and its node name when the
/// source knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    /// `host:port`, `ip:port` or `[v6]:port`.
    pub addr: String,
    /// The peer's node (pod) name, when the source knows it.
    pub name: Option<String>,
}

impl Peer {
    /// A peer at `ip:port`, with an optional name.
    pub fn from_ip(ip: IpAddr, port: u16, name: Option<String>) -> Peer {
        Peer {
            addr: SocketAddr::new(ip, port).to_string(),
            name,
        }
    }

    /// The host part of [`addr`](Peer::addr) (brackets removed for IPv6).
    pub fn host(&self) -> &str {
        split_host_port(&self.addr).map_or(self.addr.as_str(), |(host, _)| host)
    }
}

/// The full set of peers a source currently knows, the node itself excluded.
pub type PeerSet = BTreeSet<Peer>;

/// Why a peer source could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// A `discovery.peers` entry is not `host:port`.
    #[error("invalid peer {peer:?} in discovery.peers: {reason}")]
    InvalidPeer {
        /// The entry.
        peer: String,
        /// What was wrong.
        reason: &'static str,
    },
    /// A setting the chosen mode needs is empty.
    #[error("discovery.{key} is required in {mode} mode")]
    Missing {
        /// The key under `[discovery]`.
        key: &'static str,
        /// The mode that needs it.
        mode: &'static str,
    },
    /// No namespace in the config, in `POD_NAMESPACE` or in the service
    /// account's namespace file.
    #[error(
        "no namespace: set discovery.namespace or POD_NAMESPACE (downward API), \
         or run with a service account token mounted"
    )]
    NoNamespace,
    /// `discovery.dns_server` is not `ip:port` or `ip`.
    #[error("invalid discovery.dns_server {0:?}: expected ip:port or ip")]
    InvalidDnsServer(String),
    /// The system resolver configuration (resolv.conf) could not be read.
    #[error("cannot read the system DNS configuration")]
    SystemDns(#[source] Box<hickory_resolver::ResolveError>),
}

/// Results of this crate.
pub type Result<T, E = DiscoveryError> = std::result::Result<T, E>;

/// A source of peer sets.
pub trait PeerSource: Send + 'static {
    /// Publishes each new full set on `tx` until `shutdown` is cancelled;
    /// errors are logged and reported through `status` (a source never
    /// gives up on its own: it retries with a backoff).
    fn run(
        self: Box<Self>,
        tx: watch::Sender<PeerSet>,
        status: StatusHandle,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, ()>;
}

/// Builds the source `cfg` chooses. `mesh_port` is the port peers' mesh
/// endpoints listen on (for DNS records and EndpointSlices without a port
/// named `mesh`); `own` is left out of every published set.
pub fn from_config(
    cfg: &DiscoveryConfig,
    mesh_port: u16,
    own: &OwnIdentity,
) -> Result<Box<dyn PeerSource>> {
    match cfg.mode {
        DiscoveryMode::Static => Ok(Box::new(static_list::StaticSource::from_config(cfg, own)?)),
        DiscoveryMode::Dns => Ok(Box::new(dns::DnsSource::from_config(cfg, mesh_port, own)?)),
        DiscoveryMode::Kubernetes => Ok(Box::new(kubernetes::KubernetesSource::from_config(
            cfg, mesh_port, own,
        )?)),
    }
}

/// A running source: the peer sets it publishes, its status, its task.
#[derive(Debug)]
pub struct Discovery {
    /// The latest full peer set (empty until the source publishes one).
    pub peers: watch::Receiver<PeerSet>,
    /// The source's health, for readiness.
    pub status: StatusHandle,
    /// The source's task; it ends after `shutdown` is cancelled.
    pub task: JoinHandle<()>,
}

/// Spawns `source` on the current tokio runtime.
pub fn spawn(source: Box<dyn PeerSource>, shutdown: CancellationToken) -> Discovery {
    let (tx, peers) = watch::channel(PeerSet::new());
    let status = StatusHandle::new();
    let task = tokio::spawn(source.run(tx, status.clone(), shutdown));
    Discovery {
        peers,
        status,
        task,
    }
}

/// Replaces the published set if `set` differs from it; true if it did.
pub(crate) fn publish(tx: &watch::Sender<PeerSet>, set: PeerSet) -> bool {
    tx.send_if_modified(|current| {
        if *current == set {
            false
        } else {
            tracing::info!(peers = ?set.iter().map(|p| &p.addr).collect::<Vec<_>>(), "peer set changed");
            *current = set;
            true
        }
    })
}

/// Splits `host:port` or `[v6]:port`; `None` if there is no port.
pub(crate) fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        let port = sa.port();
        let host = addr.rsplit_once(':').map(|(h, _)| h)?;
        return Some((host.trim_start_matches('[').trim_end_matches(']'), port));
    }
    let (host, port) = addr.rsplit_once(':')?;
    Some((host, port.parse().ok()?))
}

/// `host:port`, bracketing IPv6 literals.
pub(crate) fn join_host_port(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_helpers() {
        assert_eq!(split_host_port("a.b:4370"), Some(("a.b", 4370)));
        assert_eq!(split_host_port("10.0.0.1:1"), Some(("10.0.0.1", 1)));
        assert_eq!(split_host_port("[fd00::1]:4370"), Some(("fd00::1", 4370)));
        assert_eq!(split_host_port("nohost"), None);
        assert_eq!(join_host_port("fd00::1", 4370), "[fd00::1]:4370");
        assert_eq!(join_host_port("tern-0.svc", 4370), "tern-0.svc:4370");
        let p = Peer::from_ip("fd00::2".parse().expect("ip"), 9, None);
        assert_eq!((p.addr.as_str(), p.host()), ("[fd00::2]:9", "fd00::2"));
    }

    #[tokio::test]
    async fn spawn_runs_a_source_until_shutdown() {
        let own = OwnIdentity::for_tests("tern-0", None);
        let cfg = DiscoveryConfig {
            peers: vec!["tern-1:4370".into()],
            ..DiscoveryConfig::default()
        };
        let shutdown = CancellationToken::new();
        let mut d = spawn(
            from_config(&cfg, 4370, &own).expect("static"),
            shutdown.clone(),
        );
        let deadline = std::time::Duration::from_secs(5);
        tokio::time::timeout(deadline, d.peers.wait_for(|s| s.len() == 1))
            .await
            .expect("published in time")
            .expect("sender alive");
        assert!(d.status.is_ready());
        shutdown.cancel();
        tokio::time::timeout(deadline, d.task)
            .await
            .expect("stops in time")
            .expect("no panic");
    }
}
