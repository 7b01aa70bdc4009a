//! `[admin]`: the admin HTTP listener and its API keys.
//!
//! Keys come from `api_keys` (inline) and/or `api_keys_file` (one
//! `KEY SCOPE[,SCOPE…]` per line, re-read when it changes, so a mounted
//! Kubernetes Secret can rotate them). Management needs a `mgmt` key;
//! `/metrics` and `/status` need one only if listed in `require_key_for`.

use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Shortest API key accepted.
pub const MIN_API_KEY_LEN: usize = 16;

/// What an API key opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// `/status`, `/status.json`.
    Status,
    /// `/metrics`.
    Metrics,
    /// `/api/v1/…` and `/log-level`.
    Mgmt,
}

impl Scope {
    /// Parses `status`, `metrics` or `mgmt`.
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "status" => Some(Scope::Status),
            "metrics" => Some(Scope::Metrics),
            "mgmt" => Some(Scope::Mgmt),
            _ => None,
        }
    }

    /// The scope's name.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Status => "status",
            Scope::Metrics => "metrics",
            Scope::Mgmt => "mgmt",
        }
    }
}

/// One API key and its scopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The secret sent as `Authorization: Bearer <key>` or `x-api-key`.
    pub key: String,
    /// What it opens.
    pub scopes: Vec<Scope>,
}

/// Admin HTTP listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Whether to listen.
    pub enabled: bool,
    /// Bind address.
    pub bind: SocketAddr,
    /// API keys given inline.
    pub api_keys: Vec<ApiKeyConfig>,
    /// A file of API keys, one `KEY SCOPE[,SCOPE…]` per line (`#` comments);
    /// re-read when its modification time changes.
    pub api_keys_file: Option<PathBuf>,
    /// Open routes that need a key anyway: `metrics`, `status`.
    pub require_key_for: Vec<Scope>,
    /// With no `mgmt` key configured at all, accept management requests
    /// from loopback addresses (a local `cargo run`, `kubectl exec` into
    /// the pod); everything else is refused.
    pub loopback_without_key: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            bind: SocketAddr::from(([0, 0, 0, 0], 8888)),
            api_keys: Vec::new(),
            api_keys_file: None,
            require_key_for: Vec::new(),
            loopback_without_key: true,
        }
    }
}

/// Why a line of an API key file is unusable.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.len() < MIN_API_KEY_LEN {
        return Err(format!(
            "an API key must be at least {MIN_API_KEY_LEN} characters"
        ));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("an API key must not contain spaces or control characters".into());
    }
    Ok(())
}

/// Parses an API key file: `KEY SCOPE[,SCOPE…]` per line, `#` comments.
pub fn parse_key_file(text: &str) -> Result<Vec<ApiKeyConfig>, String> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split(|c: char| c.is_whitespace() || c == ',');
        let key = words.next().unwrap_or_default();
        check_key(key).map_err(|e| format!("line {}: {e}", n + 1))?;
        let scopes = words
            .filter(|w| !w.is_empty())
            .map(|w| {
                Scope::parse(w).ok_or_else(|| {
                    format!(
                        "line {}: unknown scope {w:?} (status, metrics, mgmt)",
                        n + 1
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if scopes.is_empty() {
            return Err(format!("line {}: no scope after the key", n + 1));
        }
        keys.push(ApiKeyConfig {
            key: key.to_string(),
            scopes,
        });
    }
    Ok(keys)
}

impl AdminConfig {
    /// Checks the keys and the key file.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for k in &self.api_keys {
            check_key(&k.key).map_err(|message| ConfigError::Invalid {
                key: "admin.api_keys",
                message,
            })?;
            if k.scopes.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "admin.api_keys",
                    message: "every key needs at least one scope".into(),
                });
            }
        }
        if let Some(path) = &self.api_keys_file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
                key: "admin.api_keys_file",
                message: format!("cannot read {}: {e}", path.display()),
            })?;
            parse_key_file(&text).map_err(|e| ConfigError::Invalid {
                key: "admin.api_keys_file",
                message: format!("{}: {e}", path.display()),
            })?;
        }
        if self.require_key_for.contains(&Scope::Mgmt) {
            return Err(ConfigError::Invalid {
                key: "admin.require_key_for",
                message: "lists `metrics` and/or `status`; management always needs a key".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_lines() {
        let keys = parse_key_file(
            "# ops\n0123456789abcdef mgmt,metrics\n\nfedcba9876543210  status metrics\n",
        )
        .expect("valid");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].scopes, vec![Scope::Mgmt, Scope::Metrics]);
        assert_eq!(keys[1].scopes, vec![Scope::Status, Scope::Metrics]);
        let e = parse_key_file("short mgmt\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("16"), "{e}");
        let e = parse_key_file("0123456789abcdef root\n").unwrap_err();
        assert!(e.contains("unknown scope \"root\""), "{e}");
        let e = parse_key_file("0123456789abcdef\n").unwrap_err();
        assert!(e.contains("no scope"), "{e}");
    }

    #[test]
    fn toml_keys_are_checked() {
        let c = crate::config::Config::from_toml_str(
            "[admin]\napi_keys = [{ key = \"0123456789abcdef\", scopes = [\"mgmt\"] }]\nrequire_key_for = [\"metrics\"]\n",
        )
        .expect("valid");
        assert_eq!(c.admin.api_keys[0].scopes, vec![Scope::Mgmt]);
        assert_eq!(c.admin.require_key_for, vec![Scope::Metrics]);
        let e = crate::config::Config::from_toml_str(
            "[admin]\napi_keys = [{ key = \"short\", scopes = [\"mgmt\"] }]\n",
        )
        .and_then(|c| c.validate())
        .expect_err("short key");
        assert!(e.to_string().contains("admin.api_keys"), "{e}");
        let e = crate::config::Config::from_toml_str("[admin]\nrequire_key_for = [\"root\"]\n")
            .expect_err("bad scope");
        assert!(e.to_string().contains("admin.require_key_for"), "{e}");
    }
}
