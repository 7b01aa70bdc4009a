//! Who this node is on Kubernetes: the downward API's `POD_NAME`,
//! `POD_NAMESPACE` and `POD_IP`, falling back to the host name (a pod's host
//! name is its name). Sources use it to leave the node itself out of the
//! peer set, and the DNS and Kubernetes modes to find their namespace.

use crate::Peer;
use std::net::IpAddr;
use std::path::Path;

/// Where Kubernetes mounts the pod's namespace with its service account.
pub const SERVICE_ACCOUNT_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// This node's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnIdentity {
    /// Pod name (`POD_NAME`), else the host name.
    pub name: String,
    /// Pod namespace (`POD_NAMESPACE`), if set.
    pub namespace: Option<String>,
    /// Pod IP (`POD_IP`), if set and valid.
    pub ip: Option<IpAddr>,
}

impl OwnIdentity {
    /// Reads the process environment.
    pub fn from_env() -> OwnIdentity {
        OwnIdentity::from_vars(|key| std::env::var(key).ok())
    }

    /// Reads the variables through `get` (a map in tests); an empty or
    /// unparsable value counts as unset.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> OwnIdentity {
        let var = |key: &str| {
            get(key)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let ip = var("POD_IP").and_then(|v| match v.parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                tracing::warn!(value = %v, "POD_IP is not an IP address; ignored");
                None
            }
        });
        OwnIdentity {
            name: var("POD_NAME").unwrap_or_else(host_name),
            namespace: var("POD_NAMESPACE"),
            ip,
        }
    }

    /// An identity with a name and an optional IP, for tests and embedders.
    pub fn for_tests(name: &str, ip: Option<IpAddr>) -> OwnIdentity {
        OwnIdentity {
            name: name.to_string(),
            namespace: None,
            ip,
        }
    }

    /// True if `peer` is recognisably this node: the same name, the same IP
    /// as `POD_IP`, or a host that is this pod's name or a DNS name under it
    /// (`tern-0.tern-headless.messaging.svc…` for pod `tern-0`).
    pub fn is_self(&self, peer: &Peer) -> bool {
        if peer.name.as_deref() == Some(self.name.as_str()) {
            return true;
        }
        let host = peer.host();
        if let (Some(own), Ok(ip)) = (self.ip, host.parse::<IpAddr>()) {
            return own == ip;
        }
        !self.name.is_empty()
            && (host == self.name
                || host
                    .strip_prefix(self.name.as_str())
                    .is_some_and(|rest| rest.starts_with('.')))
    }

    /// The namespace to use: `configured` if not empty, else `POD_NAMESPACE`,
    /// else the service account's namespace file.
    pub fn namespace_or(&self, configured: &str) -> Option<String> {
        self.namespace_from(configured, Path::new(SERVICE_ACCOUNT_NAMESPACE_FILE))
    }

    /// [`namespace_or`](Self::namespace_or) with the file's path given.
    pub fn namespace_from(&self, configured: &str, file: &Path) -> Option<String> {
        let configured = configured.trim();
        if !configured.is_empty() {
            return Some(configured.to_string());
        }
        if let Some(ns) = &self.namespace {
            return Some(ns.clone());
        }
        std::fs::read_to_string(file)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }
}

fn host_name() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tern".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn downward_api_then_host_name() {
        let id = OwnIdentity::from_vars(vars(&[
            ("POD_NAME", "tern-1"),
            ("POD_NAMESPACE", "messaging"),
            ("POD_IP", "10.1.2.3"),
        ]));
        assert_eq!(id.name, "tern-1");
        assert_eq!(id.namespace.as_deref(), Some("messaging"));
        assert_eq!(id.ip, Some(IpAddr::from([10, 1, 2, 3])));
        let id = OwnIdentity::from_vars(vars(&[("POD_NAME", " "), ("POD_IP", "nope")]));
        assert_eq!(id.name, host_name());
        assert_eq!((id.namespace, id.ip), (None, None));
    }

    #[test]
    fn recognises_itself() {
        let id = OwnIdentity::for_tests("tern-0", Some(IpAddr::from([10, 0, 0, 5])));
        let peer = |addr: &str, name: Option<&str>| Peer {
            addr: addr.into(),
            name: name.map(Into::into),
        };
        assert!(id.is_self(&peer("10.0.0.9:4370", Some("tern-0"))));
        assert!(id.is_self(&peer("10.0.0.5:4370", None)));
        assert!(id.is_self(&peer("tern-0:4370", None)));
        assert!(id.is_self(&peer("tern-0.tern-headless.messaging.svc:4370", None)));
        assert!(!id.is_self(&peer("10.0.0.6:4370", None)));
        assert!(!id.is_self(&peer("tern-00:4370", None)));
        assert!(!id.is_self(&peer("tern-1.tern-headless:4370", Some("tern-1"))));
    }

    #[test]
    fn namespace_precedence() {
        let dir = std::env::temp_dir().join(format!("tern-ns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("namespace");
        std::fs::write(&file, "from-file\n").expect("write");
        let mut id = OwnIdentity::for_tests("tern-0", None);
        assert_eq!(id.namespace_from("", &file).as_deref(), Some("from-file"));
        id.namespace = Some("from-env".into());
        assert_eq!(id.namespace_from("", &file).as_deref(), Some("from-env"));
        assert_eq!(id.namespace_from("cfg", &file).as_deref(), Some("cfg"));
        id.namespace = None;
        assert_eq!(id.namespace_from("", &dir.join("missing")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
