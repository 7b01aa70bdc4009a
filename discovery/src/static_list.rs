//! The `static` source: the `discovery.peers` list, published once.
//!
//! Entries are `host:port`, `ip:port` or `[v6]:port`; the config accepts a
//! TOML array or one comma-separated string (`TERN_DISCOVERY__PEERS`), and
//! [`parse_peers`] accepts the same comma-separated form. The node itself is
//! left out when recognisable (see [`OwnIdentity::is_self`]), so every pod
//! of a StatefulSet can be given the same list.

use crate::{
    publish, split_host_port, DiscoveryConfig, DiscoveryError, OwnIdentity, Peer, PeerSet,
    PeerSource, Result, SourceStatus, StatusHandle,
};
use futures::future::BoxFuture;
use std::net::SocketAddr;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A fixed peer set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticSource {
    peers: PeerSet,
}

impl StaticSource {
    /// The source for `discovery.peers`, `own` excluded.
    pub fn from_config(cfg: &DiscoveryConfig, own: &OwnIdentity) -> Result<StaticSource> {
        StaticSource::new(cfg.peers.iter().map(String::as_str), own)
    }

    /// The source for `peers`, `own` excluded.
    pub fn new<'a>(
        peers: impl IntoIterator<Item = &'a str>,
        own: &OwnIdentity,
    ) -> Result<StaticSource> {
        let mut set = PeerSet::new();
        for text in peers {
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let peer = parse_peer(text)?;
            if !own.is_self(&peer) {
                set.insert(peer);
            }
        }
        Ok(StaticSource { peers: set })
    }

    /// The set this source publishes.
    pub fn peers(&self) -> &PeerSet {
        &self.peers
    }
}

impl PeerSource for StaticSource {
    fn run(
        self: Box<Self>,
        tx: watch::Sender<PeerSet>,
        status: StatusHandle,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            publish(&tx, self.peers);
            status.set(SourceStatus::Ok);
            shutdown.cancelled().await;
        })
    }
}

/// Parses a comma-separated list (the environment form); blanks are skipped.
pub fn parse_peers(text: &str) -> Result<Vec<Peer>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_peer)
        .collect()
}

/// Parses one `host:port`, normalising IP literals (`[::1]:9`).
pub fn parse_peer(text: &str) -> Result<Peer> {
    let invalid = |reason| DiscoveryError::InvalidPeer {
        peer: text.to_string(),
        reason,
    };
    if let Ok(sa) = text.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(invalid("port must be between 1 and 65535"));
        }
        return Ok(Peer {
            addr: sa.to_string(),
            name: None,
        });
    }
    let Some((host, port)) = split_host_port(text) else {
        return Err(invalid("expected host:port"));
    };
    if host.is_empty() || host.contains(':') || host.contains(char::is_whitespace) {
        return Err(invalid("expected a host name, an IPv4 address or [IPv6]"));
    }
    if port == 0 {
        return Err(invalid("port must be between 1 and 65535"));
    }
    Ok(Peer {
        addr: format!("{host}:{port}"),
        name: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn addrs(set: &PeerSet) -> Vec<&str> {
        set.iter().map(|p| p.addr.as_str()).collect()
    }

    #[test]
    fn parses_hosts_ips_and_v6() {
        let peers = parse_peers(" tern-1.tern-headless:4370, 10.0.0.2:4370,,[FD00::1]:4370 ")
            .expect("valid");
        let got: Vec<&str> = peers.iter().map(|p| p.addr.as_str()).collect();
        assert_eq!(
            got,
            [
                "tern-1.tern-headless:4370",
                "10.0.0.2:4370",
                "[fd00::1]:4370"
            ]
        );
        assert!(peers.iter().all(|p| p.name.is_none()));
    }

    #[test]
    fn rejects_malformed_entries() {
        for bad in [
            "tern-1",
            "tern-1:",
            ":4370",
            "tern-1:0",
            "tern-1:70000",
            "fd00::1:x",
            "a b:1",
        ] {
            let err = parse_peer(bad).expect_err(bad);
            assert!(err.to_string().contains("discovery.peers"), "{err}");
        }
        assert!(parse_peers("a:1,broken").is_err());
    }

    #[test]
    fn excludes_itself_by_name_host_or_ip() {
        let own = OwnIdentity::for_tests("tern-0", Some(IpAddr::from([10, 0, 0, 1])));
        let list = [
            "tern-0.tern-headless.messaging.svc:4370",
            "tern-1.tern-headless.messaging.svc:4370",
            "10.0.0.1:4370",
            "10.0.0.2:4370",
            "tern-0:4370",
        ];
        let src = StaticSource::new(list, &own).expect("valid");
        assert_eq!(
            addrs(src.peers()),
            ["10.0.0.2:4370", "tern-1.tern-headless.messaging.svc:4370"]
        );
    }

    #[test]
    fn config_list_and_env_comma_form_agree() {
        let own = OwnIdentity::for_tests("tern-0", None);
        let cfg = DiscoveryConfig {
            peers: vec![
                "tern-0:4370".into(),
                "tern-1:4370".into(),
                "tern-2:4370".into(),
            ],
            ..DiscoveryConfig::default()
        };
        let from_cfg = StaticSource::from_config(&cfg, &own).expect("valid");
        let env_form = "tern-0:4370,tern-1:4370, tern-2:4370";
        let from_env = StaticSource::new(env_form.split(','), &own).expect("valid");
        assert_eq!(from_cfg, from_env);
        assert_eq!(addrs(from_cfg.peers()), ["tern-1:4370", "tern-2:4370"]);
    }

    #[tokio::test]
    async fn publishes_once_and_is_ready() {
        let own = OwnIdentity::for_tests("tern-0", None);
        let src = Box::new(StaticSource::new(["tern-1:4370"], &own).expect("valid"));
        let (tx, mut rx) = watch::channel(PeerSet::new());
        let status = StatusHandle::new();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(src.run(tx, status.clone(), shutdown.clone()));
        let deadline = std::time::Duration::from_secs(5);
        tokio::time::timeout(deadline, rx.wait_for(|s| s.len() == 1))
            .await
            .expect("in time")
            .expect("sender alive");
        assert_eq!(status.get(), SourceStatus::Ok);
        shutdown.cancel();
        tokio::time::timeout(deadline, task)
            .await
            .expect("stops")
            .expect("no panic");
    }
}
