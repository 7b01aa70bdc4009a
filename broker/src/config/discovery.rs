//! The `[discovery]` section: how a node learns the addresses of its peers.
//!
//! Three modes, read by the `tern-discovery` crate:
//! - `static`: the `peers` list (a TOML array, or one comma-separated
//!   string, which is the form `TERN_DISCOVERY__PEERS=a:4370,b:4370` gives);
//! - `dns`: the A/AAAA records of a headless Service, re-resolved every
//!   `dns_interval_secs`;
//! - `kubernetes`: a watch on the Service's EndpointSlices.
//!
//! [`DiscoveryConfig::validate`] holds the cross-field rules and is called
//! from `Config::validate`.

use super::ConfigError;
use serde::{Deserialize, Deserializer, Serialize};
use std::net::{IpAddr, SocketAddr};

/// Where the peer set comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DiscoveryMode {
    /// A fixed list of `host:port` peers.
    #[default]
    Static,
    /// A DNS name (usually a headless Service), re-resolved periodically.
    Dns,
    /// The Kubernetes EndpointSlices of a Service, watched.
    Kubernetes,
}

/// Peer discovery settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Which source to use.
    pub mode: DiscoveryMode,
    /// `static` mode: the peers' mesh endpoints, as `host:port`.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub peers: Vec<String>,
    /// `dns` mode: the name to resolve; empty means
    /// `<service>.<namespace>.svc.<cluster_domain>`.
    pub dns_name: String,
    /// `dns` mode: a nameserver as `ip:port` (or `ip`, port 53); empty
    /// means the system's resolv.conf.
    pub dns_server: String,
    /// `dns` mode: seconds between two resolutions.
    pub dns_interval_secs: u64,
    /// `dns` and `kubernetes` modes: the (headless) Service's name.
    pub service: String,
    /// `dns` and `kubernetes` modes: the namespace; empty means
    /// `POD_NAMESPACE`, then the service account's namespace file.
    pub namespace: String,
    /// `dns` mode: the cluster's DNS domain, used to build the default name.
    pub cluster_domain: String,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            mode: DiscoveryMode::Static,
            peers: Vec::new(),
            dns_name: String::new(),
            dns_server: String::new(),
            dns_interval_secs: 5,
            service: String::new(),
            namespace: String::new(),
            cluster_domain: "cluster.local".to_string(),
        }
    }
}

impl DiscoveryConfig {
    /// Checks the rules serde cannot express: each mode's required keys,
    /// the peers' and nameserver's syntax, a non-zero interval.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |key: &'static str, message: String| Err(ConfigError::Invalid { key, message });
        for peer in &self.peers {
            if let Err(why) = check_host_port(peer) {
                return invalid("discovery.peers", format!("{peer:?}: {why}"));
            }
        }
        if self.dns_interval_secs == 0 {
            return invalid("discovery.dns_interval_secs", "must be at least 1".into());
        }
        if !self.dns_server.is_empty() && parse_dns_server(&self.dns_server).is_none() {
            return invalid(
                "discovery.dns_server",
                format!("expected ip:port or ip, got {:?}", self.dns_server),
            );
        }
        if self.cluster_domain.trim_matches('.').is_empty() {
            return invalid("discovery.cluster_domain", "must not be empty".into());
        }
        match self.mode {
            DiscoveryMode::Static => Ok(()),
            DiscoveryMode::Dns if self.dns_name.is_empty() && self.service.is_empty() => invalid(
                "discovery.dns_name",
                "dns mode needs discovery.dns_name or discovery.service".into(),
            ),
            DiscoveryMode::Dns => Ok(()),
            DiscoveryMode::Kubernetes if self.service.is_empty() => invalid(
                "discovery.service",
                "kubernetes mode needs the Service whose EndpointSlices to watch".into(),
            ),
            DiscoveryMode::Kubernetes => Ok(()),
        }
    }
}

/// Parses `discovery.dns_server`: `ip:port`, `[v6]:port`, or a bare IP
/// (port 53).
pub fn parse_dns_server(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    text.parse::<SocketAddr>().ok().or_else(|| {
        text.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// A `host:port` (or `[v6]:port`) with a non-empty host and a port in
/// 1..=65535.
fn check_host_port(text: &str) -> Result<(), &'static str> {
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("expected host:port");
    };
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains(':') {
        return Err("expected host:port with a host name or an IP ([v6] for IPv6)");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err("port must be a number between 1 and 65535"),
    }
}

/// Accepts a list of strings or one comma-separated string (the form an
/// environment variable gives); blank items are dropped.
fn list_or_comma_separated<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        Text(String),
    }
    let items = match Form::deserialize(deserializer) {
        Ok(Form::List(items)) => items,
        Ok(Form::Text(text)) => text.split(',').map(str::to_string).collect(),
        Err(_) => {
            return Err(serde::de::Error::custom(
                "expected a list of \"host:port\" strings or one comma-separated string",
            ))
        }
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::collections::HashMap;

    /// The file pipeline (parse, then validate) or, with `env`, the
    /// environment pipeline over an empty file.
    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        if env.is_empty() {
            let cfg = Config::from_toml_str(toml)?;
            cfg.validate()?;
            return Ok(cfg);
        }
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(None, &env)
    }

    #[test]
    fn defaults_are_static_with_no_peers() {
        let cfg = Config::default().discovery;
        assert_eq!(cfg.mode, DiscoveryMode::Static);
        assert!(cfg.peers.is_empty());
        assert_eq!(cfg.dns_interval_secs, 5);
        assert_eq!(cfg.cluster_domain, "cluster.local");
        let text = Config::default_toml();
        let back = Config::from_toml_str(&text).expect("defaults round-trip");
        assert_eq!(back.discovery, cfg);
    }

    #[test]
    fn peers_from_file_and_from_env() {
        let cfg = load(
            "[discovery]\npeers = [\"a:4370\", \"10.0.0.2:4370\"]\n",
            &[],
        )
        .expect("loads");
        assert_eq!(cfg.discovery.peers, ["a:4370", "10.0.0.2:4370"]);
        let cfg = load(
            "",
            &[
                ("TERN_DISCOVERY__PEERS", " a:4370, b:4370 ,,[::1]:4370"),
                ("TERN_DISCOVERY__MODE", "static"),
            ],
        )
        .expect("loads");
        assert_eq!(cfg.discovery.peers, ["a:4370", "b:4370", "[::1]:4370"]);
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = load("[discovery]\npeers = [\"nohost\"]\n", &[]).expect_err("no port");
        assert!(err.to_string().contains("discovery.peers"), "{err}");
        let err = load("[discovery]\npeers = [\"a:99999\"]\n", &[]).expect_err("bad port");
        assert!(err.to_string().contains("discovery.peers"), "{err}");
        let err = load("[discovery]\nmode = \"consul\"\n", &[]).expect_err("bad mode");
        assert!(err.to_string().contains("discovery.mode"), "{err}");
        let err = load("[discovery]\ndns_naem = \"x\"\n", &[]).expect_err("unknown key");
        assert!(err.to_string().contains("dns_naem"), "{err}");
        let err = load("[discovery]\ndns_interval_secs = 0\n", &[]).expect_err("zero");
        assert!(err.to_string().contains("dns_interval_secs"), "{err}");
        let err = load("[discovery]\ndns_server = \"resolver\"\n", &[]).expect_err("server");
        assert!(err.to_string().contains("discovery.dns_server"), "{err}");
    }

    #[test]
    fn modes_need_their_keys() {
        let err = load("[discovery]\nmode = \"dns\"\n", &[]).expect_err("dns needs a name");
        assert!(err.to_string().contains("discovery.dns_name"), "{err}");
        load(
            "[discovery]\nmode = \"dns\"\nservice = \"tern-headless\"\n",
            &[],
        )
        .expect("service");
        load(
            "[discovery]\nmode = \"dns\"\ndns_name = \"tern.example\"\n",
            &[],
        )
        .expect("name");
        let err = load("[discovery]\nmode = \"kubernetes\"\n", &[]).expect_err("k8s");
        assert!(err.to_string().contains("discovery.service"), "{err}");
        load(
            "[discovery]\nmode = \"kubernetes\"\nservice = \"tern\"\n",
            &[],
        )
        .expect("k8s");
    }

    #[test]
    fn dns_server_forms() {
        assert_eq!(
            parse_dns_server("127.0.0.1:5353"),
            Some(SocketAddr::from(([127, 0, 0, 1], 5353)))
        );
        assert_eq!(
            parse_dns_server("10.96.0.10"),
            Some(SocketAddr::from(([10, 96, 0, 10], 53)))
        );
        assert!(parse_dns_server("[::1]:53").is_some());
        assert!(parse_dns_server("dns.local:53").is_none());
    }
}
