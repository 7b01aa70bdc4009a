//! The edge's configuration: the WebSocket listeners (`[listeners.ws]`,
//! `[listeners.wss]`) and overload protection (`[limits]`), with their
//! validation rules.

use super::load::check_file;
use super::{Config, ConfigError, TlsListenerConfig};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The edge's part of the commented default configuration.
pub(super) const EDGE_DOC: &str = "# [listeners.ws] / [listeners.wss]: MQTT over WebSocket (subprotocol mqtt or\n\
                      #   mqttv3.1, binary frames) on `path`; other paths get 404. wss takes\n\
                      #   cert/key/ca/require_client_cert like listeners.tls (PEM paths, unset).\n\
                      # proxy_protocol (every listener): expect a PROXY v1/v2 header first; the\n\
                      #   client's address replaces the peer. proxy_protocol_use_cn_as_username:\n\
                      #   a v2 SSL TLV's client certificate CN is used like a TLS client CN.\n\
                      #\n\
                      # [limits]: overload protection; a rate or cap of 0 means no limit.\n\
                      #   connect_timeout_secs: close a socket without a CONNECT after this.\n\
                      #   proxy_header_timeout_secs: the PROXY header must arrive within this.\n\
                      #   max_connect_rate, connect_burst: new connections/s per listener (token\n\
                      #     bucket); the excess is closed after accept.\n\
                      #   max_publish_rate, publish_burst, max_publish_bytes_rate,\n\
                      #     publish_bytes_burst: per client; the excess is slowed, never dropped.\n\
                      #   max_subscriptions_per_client, max_topic_levels: SUBACK / DISCONNECT caps.\n\
                      #   qos_queue_headroom, backpressure_max_wait_ms: QoS 1/2 to a full online\n\
                      #     queue is kept (up to the headroom) and its publishers are slowed.\n\
                      #   slow_consumer_timeout_secs: a subscriber stuck this long is disconnected.\n\
                      #   max_memory_mb, memory_check_interval_ms: above this RSS new clients get\n\
                      #     CONNACK server busy.\n\
                      #   hibernate_after_ms: an idle plain-TCP connection parks its task after\n\
                      #     this (0: never); it wakes on traffic, deliveries, keep-alive, takeover.\n\n";

/// MQTT over WebSocket (subprotocol `mqtt`, binary frames).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WsListenerConfig {
    /// Whether to listen at all.
    pub enabled: bool,
    /// Bind address.
    pub bind: SocketAddr,
    /// The HTTP path of the upgrade; any other path gets 404.
    pub path: String,
    /// Connections beyond this are closed right after accept.
    pub max_connections: usize,
    /// Expect a PROXY protocol (v1 or v2) header before the HTTP upgrade.
    pub proxy_protocol: bool,
    /// Take the client certificate CN from a v2 header's SSL TLV.
    pub proxy_protocol_use_cn_as_username: bool,
}

impl Default for WsListenerConfig {
    fn default() -> Self {
        WsListenerConfig {
            enabled: false,
            bind: SocketAddr::from(([0, 0, 0, 0], 8080)),
            path: "/mqtt".into(),
            max_connections: 100_000,
            proxy_protocol: false,
            proxy_protocol_use_cn_as_username: false,
        }
    }
}

/// MQTT over WebSocket over TLS (rustls, like `listeners.tls`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WssListenerConfig {
    /// Whether to listen; needs `cert` and `key`.
    pub enabled: bool,
    /// Bind address.
    pub bind: SocketAddr,
    /// The HTTP path of the upgrade; any other path gets 404.
    pub path: String,
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

impl Default for WssListenerConfig {
    fn default() -> Self {
        WssListenerConfig {
            enabled: false,
            bind: SocketAddr::from(([0, 0, 0, 0], 8443)),
            path: "/mqtt".into(),
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

impl WssListenerConfig {
    /// The TLS part, in the shape `tls::acceptor` takes.
    pub fn tls(&self) -> TlsListenerConfig {
        TlsListenerConfig {
            enabled: self.enabled,
            bind: self.bind,
            max_connections: self.max_connections,
            cert: self.cert.clone(),
            key: self.key.clone(),
            ca: self.ca.clone(),
            require_client_cert: self.require_client_cert,
            proxy_protocol: self.proxy_protocol,
            proxy_protocol_use_cn_as_username: self.proxy_protocol_use_cn_as_username,
        }
    }
}

/// Overload protection. A rate or cap of 0 means "no limit".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// A socket that sends no complete CONNECT within this time is closed.
    pub connect_timeout_secs: u64,
    /// A PROXY protocol header must arrive within this time.
    pub proxy_header_timeout_secs: u64,
    /// New connections per second per listener (token bucket); the excess
    /// is closed right after accept and counted.
    pub max_connect_rate: u32,
    /// Connections a listener may accept in a burst above the rate.
    pub connect_burst: u32,
    /// PUBLISH packets per second per client; above it the connection's
    /// next read is delayed (nothing is dropped).
    pub max_publish_rate: u32,
    /// PUBLISH packets a client may send in a burst above the rate.
    pub publish_burst: u32,
    /// PUBLISH bytes (topic + payload) per second per client, throttled
    /// the same way.
    pub max_publish_bytes_rate: u64,
    /// Bytes a client may send in a burst above the byte rate.
    pub publish_bytes_burst: u64,
    /// Subscriptions one session may hold.
    pub max_subscriptions_per_client: usize,
    /// Levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// QoS 1/2 messages an online session may queue beyond
    /// `mqtt.max_online_messages` while its publishers are slowed down.
    pub qos_queue_headroom: usize,
    /// Longest a publisher's next read is delayed while a target is full.
    pub backpressure_max_wait_ms: u64,
    /// A subscriber with queued messages that makes no progress this long
    /// is disconnected (5.0: reason 0x97 quota exceeded).
    pub slow_consumer_timeout_secs: u64,
    /// Resident memory in MiB above which new connections are refused
    /// (CONNACK 0x89 server busy / 3.x 3 server unavailable).
    pub max_memory_mb: u64,
    /// How often resident memory is sampled, milliseconds.
    pub memory_check_interval_ms: u64,
    /// A plain-TCP connection idle this long (nothing to read, write or
    /// acknowledge) hibernates: its task ends and a compact record waits
    /// in one shared epoll until the client, a delivery, keep-alive,
    /// takeover or shutdown needs it. 0 turns it off.
    pub hibernate_after_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            connect_timeout_secs: 10,
            proxy_header_timeout_secs: 5,
            max_connect_rate: 0,
            connect_burst: 100,
            max_publish_rate: 0,
            publish_burst: 100,
            max_publish_bytes_rate: 0,
            publish_bytes_burst: 1024 * 1024,
            max_subscriptions_per_client: 0,
            max_topic_levels: 128,
            qos_queue_headroom: 1000,
            backpressure_max_wait_ms: 1000,
            slow_consumer_timeout_secs: 30,
            max_memory_mb: 0,
            memory_check_interval_ms: 1000,
            hibernate_after_ms: 1000,
        }
    }
}

impl Config {
    /// The WebSocket listeners and `[limits]`.
    pub(super) fn validate_edge(&self) -> Result<(), ConfigError> {
        let invalid =
            |key: &'static str, message: String| Err(ConfigError::Invalid { key, message });
        let (ws, wss) = (&self.listeners.ws, &self.listeners.wss);
        if ws.enabled {
            if ws.max_connections == 0 {
                return invalid("listeners.ws.max_connections", "must be at least 1".into());
            }
            if !ws.path.starts_with('/') {
                return invalid("listeners.ws.path", "must start with /".into());
            }
        }
        if wss.enabled {
            if wss.max_connections == 0 {
                return invalid("listeners.wss.max_connections", "must be at least 1".into());
            }
            if !wss.path.starts_with('/') {
                return invalid("listeners.wss.path", "must start with /".into());
            }
            let why = "the WSS listener is enabled";
            check_file("listeners.wss.cert", wss.cert.as_deref(), why)?;
            check_file("listeners.wss.key", wss.key.as_deref(), why)?;
            if wss.require_client_cert || wss.ca.is_some() {
                check_file(
                    "listeners.wss.ca",
                    wss.ca.as_deref(),
                    "require_client_cert is set",
                )?;
            }
        }
        let l = &self.limits;
        let at_least_1 = [
            ("limits.connect_timeout_secs", l.connect_timeout_secs),
            (
                "limits.proxy_header_timeout_secs",
                l.proxy_header_timeout_secs,
            ),
            ("limits.connect_burst", u64::from(l.connect_burst)),
            ("limits.publish_burst", u64::from(l.publish_burst)),
            ("limits.publish_bytes_burst", l.publish_bytes_burst),
            (
                "limits.slow_consumer_timeout_secs",
                l.slow_consumer_timeout_secs,
            ),
            (
                "limits.memory_check_interval_ms",
                l.memory_check_interval_ms,
            ),
        ];
        if let Some((key, _)) = at_least_1.iter().find(|(_, v)| *v == 0) {
            return invalid(key, "must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn edge_keys_load_from_file_and_environment() {
        let text = "[listeners.ws]\nenabled = true\npath = \"/ws\"\n\
                    [listeners.tcp]\nproxy_protocol = true\n[limits]\nmax_connect_rate = 50\n";
        let mut c = Config::from_toml_str(text).expect("parses");
        assert!(c.listeners.ws.enabled && c.listeners.tcp.proxy_protocol);
        assert_eq!(c.listeners.ws.path, "/ws");
        assert_eq!(c.listeners.ws.bind.port(), 8080);
        assert_eq!(c.listeners.wss.bind.port(), 8443);
        assert_eq!(c.limits.max_connect_rate, 50);
        c.listeners.ws.path = "ws".into();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                key: "listeners.ws.path",
                ..
            })
        ));
        let vars = env(&[("TERN_LIMITS__SLOW_CONSUMER_TIMEOUT_SECS", "7")]);
        let c = Config::load(None, &vars).expect("loads");
        assert_eq!(c.limits.slow_consumer_timeout_secs, 7);
    }

    #[test]
    fn zero_timeouts_and_unknown_limits_are_named() {
        let mut c = Config::default();
        c.limits.connect_timeout_secs = 0;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                key: "limits.connect_timeout_secs",
                ..
            })
        ));
        let err = Config::from_toml_str("[limits]\nmax_conect_rate = 1");
        assert!(
            matches!(err, Err(ConfigError::UnknownKey { key }) if key == "limits.max_conect_rate")
        );
        let mut c = Config::default();
        c.listeners.wss.enabled = true;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                key: "listeners.wss.cert",
                ..
            })
        ));
    }
}
