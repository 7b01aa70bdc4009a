//! Reading the configuration: a TOML file, `TERN_…` environment overrides
//! (`__` separates nesting levels), then validation before anything binds.
//!
//! The file and the overrides are merged as a `toml::Value` tree and only
//! then deserialized, through `serde_path_to_error`, so every unknown key or
//! bad value is reported with its dotted path (and, when it came from the
//! environment, with the variable's name).

use super::Config;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "TERN_";

/// `TERN_…` variables that are not configuration keys: the log filter,
/// the binary's bound-addresses file, and what `tern admin` reads.
pub const RESERVED_ENV_VARS: &[&str] = &[
    "TERN_LOG",
    "TERN_BOUND_ADDRS_FILE",
    "TERN_ADMIN_URL",
    "TERN_ADMIN_API_KEY",
    "TERN_ADMIN_API_KEY_FILE",
];

/// Largest MQTT packet: 268,435,455 bytes of remaining length plus a
/// 5-byte fixed header.
const MAX_PACKET_SIZE_LIMIT: u32 = 268_435_460;

/// The MQTT specification requires servers to accept client identifiers of
/// up to 23 bytes.
const MIN_CLIENT_ID_LEN: usize = 23;

/// Why a configuration could not be loaded or is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML.
    #[error("{origin} is not valid TOML")]
    Syntax {
        /// Where the text came from (a file path or "config").
        origin: String,
        /// The parse failure.
        #[source]
        source: toml::de::Error,
    },
    /// A key that is not part of the configuration tree.
    #[error("unknown key {key}")]
    UnknownKey {
        /// Dotted key path, e.g. `mqtt.max_pakcet_size`.
        key: String,
    },
    /// A value of the wrong type or out of range.
    #[error("invalid value for {key}: {message}")]
    InvalidValue {
        /// Dotted key path.
        key: String,
        /// What was wrong.
        message: String,
    },
    /// An environment variable naming no configuration key.
    #[error("environment variable {var} names unknown key {key}")]
    UnknownEnv {
        /// The variable.
        var: String,
        /// The key path it maps to.
        key: String,
    },
    /// An environment variable with an unusable name or value.
    #[error("invalid environment variable {var}: {message}")]
    InvalidEnv {
        /// The variable.
        var: String,
        /// What was wrong.
        message: String,
    },
    /// The configuration parsed but breaks a cross-field rule.
    #[error("invalid configuration: {key}: {message}")]
    Invalid {
        /// Dotted key path of the offending setting.
        key: &'static str,
        /// The rule that was broken.
        message: String,
    },
}

/// Where environment overrides come from: the process environment in
/// production, a map in tests.
pub trait EnvSource {
    /// Every variable as (name, value); non-UTF-8 entries may be skipped.
    fn vars(&self) -> Vec<(String, String)>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
    }
}

impl EnvSource for HashMap<String, String> {
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// One `TERN_…` override, already split into its key path.
struct EnvOverride {
    var: String,
    path: Vec<String>,
    raw: String,
}

impl Config {
    /// Loads the configuration: the file (if any; none means all defaults),
    /// then `TERN_SECTION__KEY=value` overrides from `env`, then
    /// [`validate`](Config::validate).
    pub fn load(path: Option<&Path>, env: &dyn EnvSource) -> Result<Config, ConfigError> {
        let table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                parse_table(&text, &path.display().to_string())?
            }
            None => Table::new(),
        };
        let overrides = env_overrides(env)?;
        let config = build(table, &overrides)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text into a configuration (no environment, no
    /// validation: see [`load`](Config::load) for the full pipeline).
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        build(parse_table(text, "config")?, &[])
    }

    /// The embedded defaults as a commented TOML document;
    /// `Config::from_toml_str(&Config::default_toml())` gives the defaults.
    pub fn default_toml() -> String {
        let header = "# Tern MQTT broker configuration: the embedded defaults.\n\
                      # Every key is optional. Override any key from the environment with\n\
                      # TERN_SECTION__KEY=value, e.g. TERN_MQTT__MAX_PACKET_SIZE=2048.\n\
                      # Unset optional keys: listeners.tls.cert, listeners.tls.key,\n\
                      # listeners.tls.ca, cluster.tls.cert, cluster.tls.key, cluster.tls.ca\n\
                      # (PEM file paths).\n\
                      #\n\
                      # [cluster]: the gRPC mesh that makes nodes one broker (disabled by default).\n\
                      #   enabled: join a cluster (needs a non-empty secret).\n\
                      #   bind: mesh listener address (port 0 picks one).\n\
                      #   peers: peer mesh addresses \"host:port\" to dial; from the environment a\n\
                      #     comma-separated string, e.g. TERN_CLUSTER__PEERS=10.0.0.2:44053,10.0.0.3:44053.\n\
                      #   secret: shared secret sent on every mesh RPC.\n\
                      #   heartbeat_ms: heartbeat interval on each link.\n\
                      #   peer_timeout_ms: a peer is down after this long without traffic.\n\
                      #   route_grace_secs: routes of an unreachable peer are kept this long.\n\
                      #   buffer_max_messages: messages buffered per unreachable peer (overflow dropped, counted).\n\
                      #   allow_register_during_netsplit, allow_publish_during_netsplit,\n\
                      #   allow_subscribe_during_netsplit: accept CONNECT / PUBLISH / SUBSCRIBE\n\
                      #     while a known peer is unreachable.\n\
                      #   dial_back: dial a node that dialed in at its advertised address (off behind NAT).\n\
                      #   tls.enabled, tls.cert, tls.key, tls.ca: mutual TLS between nodes.\n\
                      #   ready_wait_secs: with no reachable peer, /ready turns 200 after this long.\n\
                      #\n\
                      # Peers: discovery.mode (static, dns, kubernetes) feeds the mesh; in static\n\
                      # mode discovery.peers wins, and cluster.peers is used when it is empty.\n\
                      # Discovered peers are dialed on the port of cluster.bind.\n\
                      # [shutdown]: grace_period_secs bounds the drain (disconnect clients, hand\n\
                      #   sessions to peers, leave); server_reference, when set, sends 5.0 clients\n\
                      #   DISCONNECT 0x9C \"use another server\" with that reference.\n\
                      #\n\
                      # [storage]: durable state. storage.dir (unset or empty: memory only) is the data\n\
                      #   directory; durability = \"group\" | \"fsync\" | \"none\";\n\
                      #   group_commit_ms: the group-commit interval;\n\
                      #   max_in_memory_per_session: queued messages of a session kept in memory,\n\
                      #     the rest read back from the store as the queue drains. See README, Durable state.\n\
                      #\n\
                      # [admin]: api_keys = [{ key = \"...\", scopes = [\"mgmt\", \"metrics\", \"status\"] }]\n\
                      #   and/or api_keys_file (one `KEY SCOPE[,SCOPE]` per line, re-read on change).\n\
                      #   /api/v1 and /log-level need a mgmt key; require_key_for = [\"metrics\", \"status\"]\n\
                      #   closes those too. loopback_without_key: with no mgmt key configured,\n\
                      #   loopback clients may manage without one. See README, Management API.\n\n";
        match toml::to_string(&Config::default()) {
            Ok(body) => format!(
                "{header}{}{}{body}",
                super::edge::EDGE_DOC,
                super::webhooks::WEBHOOKS_DOC
            ),
            // Unreachable for the plain data in `Config`, but never panic.
            Err(e) => format!("{header}# cannot render the defaults: {e}\n"),
        }
    }

    /// Checks the rules serde cannot express, before anything binds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.discovery.validate()?;
        self.storage.validate()?;
        self.auth.validate()?;
        self.admin.validate()?;
        let invalid =
            |key: &'static str, message: String| Err(ConfigError::Invalid { key, message });
        let m = &self.mqtt;
        if !(2..=MAX_PACKET_SIZE_LIMIT).contains(&m.max_packet_size) {
            return invalid(
                "mqtt.max_packet_size",
                format!(
                    "must be between 2 and {MAX_PACKET_SIZE_LIMIT}, got {}",
                    m.max_packet_size
                ),
            );
        }
        if m.receive_maximum == 0 {
            return invalid("mqtt.receive_maximum", "must be at least 1".into());
        }
        if m.max_inflight == 0 {
            return invalid("mqtt.max_inflight", "must be at least 1".into());
        }
        if !(MIN_CLIENT_ID_LEN..=usize::from(u16::MAX)).contains(&m.max_client_id_len) {
            return invalid(
                "mqtt.max_client_id_len",
                format!(
                    "must be between {MIN_CLIENT_ID_LEN} and 65535, got {}",
                    m.max_client_id_len
                ),
            );
        }
        self.validate_edge()?;
        let (tcp, tls) = (&self.listeners.tcp, &self.listeners.tls);
        let (ws, wss) = (&self.listeners.ws, &self.listeners.wss);
        if !tcp.enabled && !tls.enabled && !ws.enabled && !wss.enabled {
            return invalid("listeners", "no client listener is enabled".into());
        }
        if tcp.enabled && tcp.max_connections == 0 {
            return invalid("listeners.tcp.max_connections", "must be at least 1".into());
        }
        if tls.enabled {
            if tls.max_connections == 0 {
                return invalid("listeners.tls.max_connections", "must be at least 1".into());
            }
            check_file(
                "listeners.tls.cert",
                tls.cert.as_deref(),
                "the TLS listener is enabled",
            )?;
            check_file(
                "listeners.tls.key",
                tls.key.as_deref(),
                "the TLS listener is enabled",
            )?;
            if tls.require_client_cert {
                check_file(
                    "listeners.tls.ca",
                    tls.ca.as_deref(),
                    "require_client_cert is set",
                )?;
            } else if let Some(ca) = tls.ca.as_deref() {
                check_file("listeners.tls.ca", Some(ca), "")?;
            }
        } else if tls.require_client_cert && tls.ca.is_none() {
            return invalid(
                "listeners.tls.ca",
                "required when require_client_cert is set".into(),
            );
        }
        let cl = &self.cluster;
        if cl.enabled {
            if cl.secret.is_empty() {
                return invalid(
                    "cluster.secret",
                    "required (non-empty) when the cluster is enabled".into(),
                );
            }
            if cl.heartbeat_ms == 0 {
                return invalid("cluster.heartbeat_ms", "must be at least 1".into());
            }
            if cl.peer_timeout_ms <= cl.heartbeat_ms {
                return invalid(
                    "cluster.peer_timeout_ms",
                    format!("must exceed heartbeat_ms ({})", cl.heartbeat_ms),
                );
            }
            if cl.buffer_max_messages == 0 {
                return invalid("cluster.buffer_max_messages", "must be at least 1".into());
            }
            if let Some(bad) = cl.peers.iter().find(|p| !valid_peer(p)) {
                return invalid("cluster.peers", format!("{bad:?} is not host:port"));
            }
            if cl.tls.enabled {
                let why = "cluster.tls is enabled";
                check_file("cluster.tls.cert", cl.tls.cert.as_deref(), why)?;
                check_file("cluster.tls.key", cl.tls.key.as_deref(), why)?;
                check_file("cluster.tls.ca", cl.tls.ca.as_deref(), why)?;
            }
        }
        // Two listeners on one fixed address would fail at bind time with a
        // less helpful message.
        let mut binds = Vec::new();
        if tcp.enabled {
            binds.push(("listeners.tcp.bind", tcp.bind));
        }
        if tls.enabled {
            binds.push(("listeners.tls.bind", tls.bind));
        }
        if ws.enabled {
            binds.push(("listeners.ws.bind", ws.bind));
        }
        if wss.enabled {
            binds.push(("listeners.wss.bind", wss.bind));
        }
        if self.admin.enabled {
            binds.push(("admin.bind", self.admin.bind));
        }
        if cl.enabled {
            binds.push(("cluster.bind", cl.bind));
        }
        for (i, (key, addr)) in binds.iter().enumerate() {
            if addr.port() != 0 && binds[..i].iter().any(|(_, other)| other == addr) {
                return invalid(key, format!("address {addr} is used by another listener"));
            }
        }
        Ok(())
    }

    /// The node name: `node.name`, or the host name when that is empty.
    pub fn node_name(&self) -> String {
        if !self.node.name.is_empty() {
            return self.node.name.clone();
        }
        hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "tern".to_string())
    }
}

/// `host:port` with a non-empty host and a numeric port.
fn valid_peer(peer: &str) -> bool {
    match peer.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

/// A required file setting: present, and an existing file.
pub(super) fn check_file(
    key: &'static str,
    path: Option<&Path>,
    why: &str,
) -> Result<(), ConfigError> {
    match path {
        None => Err(ConfigError::Invalid {
            key,
            message: format!("required when {why}"),
        }),
        Some(p) if !p.is_file() => Err(ConfigError::Invalid {
            key,
            message: format!("{} is not a readable file", p.display()),
        }),
        Some(_) => Ok(()),
    }
}

fn parse_table(text: &str, origin: &str) -> Result<Table, ConfigError> {
    text.parse::<Table>().map_err(|source| ConfigError::Syntax {
        origin: origin.to_string(),
        source,
    })
}

/// Collects the `TERN_…` overrides, sorted by name for deterministic
/// precedence and error messages.
fn env_overrides(env: &dyn EnvSource) -> Result<Vec<EnvOverride>, ConfigError> {
    let mut out = Vec::new();
    for (var, raw) in env.vars() {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if RESERVED_ENV_VARS.contains(&var.as_str()) {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::InvalidEnv {
                var,
                message: "expected TERN_SECTION__KEY with non-empty parts".into(),
            });
        }
        out.push(EnvOverride { var, path, raw });
    }
    out.sort_by(|a, b| a.var.cmp(&b.var));
    Ok(out)
}

/// An override's value: integers, floats and booleans keep their type,
/// anything else is a string.
fn env_value(raw: &str) -> Value {
    let trimmed = raw.trim();
    if let Ok(b) = trimmed.parse::<bool>() {
        Value::Boolean(b)
    } else if let Ok(i) = trimmed.parse::<i64>() {
        Value::Integer(i)
    } else if let Ok(f) = trimmed.parse::<f64>().map_err(drop).and_then(finite) {
        Value::Float(f)
    } else {
        Value::String(raw.to_string())
    }
}

/// Rejects `inf`/`nan`, which `f64::from_str` accepts but are meant as text.
fn finite(f: f64) -> Result<f64, ()> {
    if f.is_finite() {
        Ok(f)
    } else {
        Err(())
    }
}

/// Sets `path` in `table`, creating intermediate tables.
fn insert(table: &mut Table, ov: &EnvOverride, value: Value) -> Result<(), ConfigError> {
    let (last, parents) = match ov.path.split_last() {
        Some(split) => split,
        None => return Ok(()),
    };
    let mut cur = table;
    for (depth, part) in parents.iter().enumerate() {
        let entry = cur
            .entry(part.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        cur = match entry {
            Value::Table(t) => t,
            _ => {
                return Err(ConfigError::InvalidEnv {
                    var: ov.var.clone(),
                    message: format!("{} is not a section", ov.path[..=depth].join(".")),
                })
            }
        };
    }
    cur.insert(last.clone(), value);
    Ok(())
}

/// Merges the overrides into the file's table and deserializes the result.
fn build(file: Table, overrides: &[EnvOverride]) -> Result<Config, ConfigError> {
    // An override that looked like a number or boolean but sits where a
    // string belongs (e.g. TERN_NODE__NAME=42) is retried as a string.
    let mut as_string = vec![false; overrides.len()];
    loop {
        let mut table = file.clone();
        for (ov, &string) in overrides.iter().zip(&as_string) {
            let value = if string {
                Value::String(ov.raw.clone())
            } else {
                env_value(&ov.raw)
            };
            insert(&mut table, ov, value)?;
        }
        let err = match serde_path_to_error::deserialize::<_, Config>(Value::Table(table)) {
            Ok(config) => return Ok(config),
            Err(err) => err,
        };
        let path = err.path().to_string();
        // `message()` leaves out the "in `key`" suffix toml appends.
        let message = err.into_inner().message().trim().to_string();
        // serde_path_to_error's path already ends with an unknown field's
        // name; add it only if a future version stops doing so.
        let (key, unknown) = match unknown_field(&message) {
            Some(field) if path == "." => (field.to_string(), true),
            Some(field) if path.rsplit('.').next() != Some(field) => {
                (format!("{path}.{field}"), true)
            }
            Some(_) => (path, true),
            None => (path, false),
        };
        let key_path: Vec<&str> = key.split('.').collect();
        // The override whose path is the failing key or lies under it.
        let culprit = overrides.iter().enumerate().find(|(_, ov)| {
            ov.path.len() >= key_path.len() && ov.path.iter().zip(&key_path).all(|(a, b)| a == b)
        });
        return Err(match culprit {
            Some((i, ov))
                if !unknown
                    && !as_string[i]
                    && message.starts_with("invalid type")
                    && !matches!(env_value(&ov.raw), Value::String(_)) =>
            {
                as_string[i] = true;
                continue;
            }
            Some((_, ov)) if unknown => ConfigError::UnknownEnv {
                var: ov.var.clone(),
                key: ov.path.join("."),
            },
            Some((_, ov)) => ConfigError::InvalidEnv {
                var: ov.var.clone(),
                message: format!("invalid value for {key}: {message}"),
            },
            None if unknown => ConfigError::UnknownKey { key },
            None => ConfigError::InvalidValue { key, message },
        });
    }
}

/// The field name in serde's "unknown field `x`, expected …" message.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
