//! The `dns` source: the A/AAAA records of a (headless) Service name,
//! re-resolved every `discovery.dns_interval_secs` with hickory-resolver.
//!
//! The name is `discovery.dns_name`, or `<service>.<namespace>.svc.<domain>.`
//! built from `discovery.service`, the namespace and
//! `discovery.cluster_domain` (never a hard-coded `cluster.local`). Each
//! address becomes `ip:mesh_port`. The resolver's cache is cleared before
//! each round so a change shows within one interval. A name with no records
//! (NXDOMAIN: no pod yet) is an empty set and `Ok`; any other failure keeps
//! the last set and reports `Error` until a round succeeds.
//!
//! For pods to find each other before they are Ready, the headless Service
//! needs `publishNotReadyAddresses: true`.

use crate::{
    publish, DiscoveryConfig, DiscoveryError, OwnIdentity, Peer, PeerSet, PeerSource, Result,
    SourceStatus, StatusHandle,
};
use futures::future::BoxFuture;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfigGroup, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
use std::net::SocketAddr;
use std::time::Duration;
use tern_broker::config::discovery::parse_dns_server;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Resolves a name periodically into a peer set.
pub struct DnsSource {
    name: String,
    interval: Duration,
    mesh_port: u16,
    own: OwnIdentity,
    resolver: TokioResolver,
}

impl std::fmt::Debug for DnsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsSource")
            .field("name", &self.name)
            .field("interval", &self.interval)
            .field("mesh_port", &self.mesh_port)
            .finish_non_exhaustive()
    }
}

impl DnsSource {
    /// The source `cfg` describes (`dns` mode).
    pub fn from_config(cfg: &DiscoveryConfig, mesh_port: u16, own: &OwnIdentity) -> Result<Self> {
        let name = dns_name(cfg, own)?;
        let server = if cfg.dns_server.trim().is_empty() {
            None
        } else {
            Some(
                parse_dns_server(&cfg.dns_server)
                    .ok_or_else(|| DiscoveryError::InvalidDnsServer(cfg.dns_server.clone()))?,
            )
        };
        let interval = Duration::from_secs(cfg.dns_interval_secs.max(1));
        DnsSource::new(name, server, interval, mesh_port, own.clone())
    }

    /// A source resolving `name` through `server` (or the system's
    /// resolv.conf when `None`) every `interval`.
    pub fn new(
        name: String,
        server: Option<SocketAddr>,
        interval: Duration,
        mesh_port: u16,
        own: OwnIdentity,
    ) -> Result<Self> {
        let (config, mut opts) = match server {
            Some(addr) => (
                ResolverConfig::from_parts(
                    None,
                    Vec::new(),
                    NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true),
                ),
                ResolverOpts::default(),
            ),
            None => hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| DiscoveryError::SystemDns(Box::new(e)))?,
        };
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // One round must fit in an interval, or updates would lag behind.
        opts.timeout = opts.timeout.min(interval.max(Duration::from_secs(1)));
        let mut builder =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
        *builder.options_mut() = opts;
        Ok(DnsSource {
            name,
            interval,
            mesh_port,
            own,
            resolver: builder.build(),
        })
    }

    /// The name this source resolves.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One resolution round: the current set, or why it failed.
    pub async fn resolve(&self) -> Result<PeerSet, String> {
        self.resolver.clear_cache();
        match self.resolver.lookup_ip(self.name.as_str()).await {
            Ok(lookup) => Ok(lookup
                .iter()
                .map(|ip| Peer::from_ip(ip, self.mesh_port, None))
                .filter(|peer| !self.own.is_self(peer))
                .collect()),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => {
                tracing::debug!(name = %self.name, "no DNS records yet");
                Ok(PeerSet::new())
            }
            Err(e) => Err(format!("DNS: cannot resolve {}: {e}", self.name)),
        }
    }
}

impl PeerSource for DnsSource {
    fn run(
        self: Box<Self>,
        tx: watch::Sender<PeerSet>,
        status: StatusHandle,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            tracing::info!(name = %self.name, interval = ?self.interval, "DNS peer discovery");
            loop {
                let round = tokio::select! {
                    () = shutdown.cancelled() => return,
                    round = self.resolve() => round,
                };
                match round {
                    Ok(set) => {
                        publish(&tx, set);
                        status.set(SourceStatus::Ok);
                    }
                    Err(message) => {
                        status.set(SourceStatus::Error(message));
                    }
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(self.interval) => {}
                }
            }
        })
    }
}

/// The name to resolve: `dns_name` as given, or the fully qualified
/// `<service>.<namespace>.svc.<cluster_domain>.`.
pub fn dns_name(cfg: &DiscoveryConfig, own: &OwnIdentity) -> Result<String> {
    let given = cfg.dns_name.trim();
    if !given.is_empty() {
        return Ok(given.to_string());
    }
    let service = cfg.service.trim();
    if service.is_empty() {
        return Err(DiscoveryError::Missing {
            key: "dns_name or discovery.service",
            mode: "dns",
        });
    }
    let namespace = own
        .namespace_or(&cfg.namespace)
        .ok_or(DiscoveryError::NoNamespace)?;
    let domain = cfg.cluster_domain.trim().trim_matches('.');
    Ok(format!("{service}.{namespace}.svc.{domain}."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_name_comes_from_service_namespace_and_domain() {
        let mut own = OwnIdentity::for_tests("tern-0", None);
        own.namespace = Some("messaging".into());
        let mut cfg = DiscoveryConfig {
            service: "tern-headless".into(),
            cluster_domain: "corp.example".into(),
            ..DiscoveryConfig::default()
        };
        assert_eq!(
            dns_name(&cfg, &own).expect("name"),
            "tern-headless.messaging.svc.corp.example."
        );
        cfg.namespace = "other".into();
        cfg.cluster_domain = DiscoveryConfig::default().cluster_domain;
        assert_eq!(
            dns_name(&cfg, &own).expect("name"),
            "tern-headless.other.svc.cluster.local."
        );
        cfg.dns_name = "peers.example.org".into();
        assert_eq!(dns_name(&cfg, &own).expect("name"), "peers.example.org");
        cfg.dns_name.clear();
        cfg.service.clear();
        assert!(matches!(
            dns_name(&cfg, &own),
            Err(DiscoveryError::Missing { .. })
        ));
    }

    #[tokio::test]
    async fn rejects_a_bad_server() {
        let own = OwnIdentity::for_tests("tern-0", None);
        let cfg = DiscoveryConfig {
            dns_name: "x.example".into(),
            dns_server: "not-an-ip".into(),
            ..DiscoveryConfig::default()
        };
        assert!(matches!(
            DnsSource::from_config(&cfg, 4370, &own),
            Err(DiscoveryError::InvalidDnsServer(_))
        ));
    }
}
