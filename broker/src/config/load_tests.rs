//! Tests for configuration loading.
use super::*;
use crate::config::DropPolicy;
use std::io::Write;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(text.as_bytes()).expect("write temp file");
    f
}

#[test]
fn defaults_round_trip() {
    let text = Config::default_toml();
    assert!(text.starts_with('#'), "header comment missing");
    assert_eq!(
        Config::from_toml_str(&text).expect("parses"),
        Config::default()
    );
    assert!(Config::default().validate().is_ok());
}

#[test]
fn empty_file_and_no_file_give_defaults() {
    let f = file("");
    let none = env(&[]);
    assert_eq!(
        Config::load(Some(f.path()), &none).expect("loads"),
        Config::default()
    );
    assert_eq!(Config::load(None, &none).expect("loads"), Config::default());
}

#[test]
fn file_values_are_read() {
    let f = file("[mqtt]\nmax_packet_size = 4096\nqueue_drop_policy = \"drop_oldest\"\n");
    let cfg = Config::load(Some(f.path()), &env(&[])).expect("loads");
    assert_eq!(cfg.mqtt.max_packet_size, 4096);
    assert_eq!(cfg.mqtt.queue_drop_policy, DropPolicy::DropOldest);
}

#[test]
fn env_overrides_nested_keys() {
    let f = file("[mqtt]\nmax_packet_size = 4096\n");
    let vars = env(&[
        ("TERN_MQTT__MAX_PACKET_SIZE", "2048"),
        ("TERN_LISTENERS__TCP__BIND", "127.0.0.1:1884"),
        ("TERN_NODE__NAME", "a"),
        ("TERN_MQTT__RETAIN_AVAILABLE", "false"),
        ("TERN_LOG", "debug"),
        ("TERN_BOUND_ADDRS_FILE", "/tmp/x"),
        ("PATH", "/usr/bin"),
    ]);
    let cfg = Config::load(Some(f.path()), &vars).expect("loads");
    assert_eq!(cfg.mqtt.max_packet_size, 2048, "env beats the file");
    assert_eq!(
        cfg.listeners.tcp.bind,
        "127.0.0.1:1884".parse().expect("addr")
    );
    assert_eq!(cfg.node.name, "a");
    assert!(!cfg.mqtt.retain_available);
}

#[test]
fn env_numeric_looking_string_stays_a_string() {
    let cfg = Config::load(None, &env(&[("TERN_NODE__NAME", "42")])).expect("loads");
    assert_eq!(cfg.node.name, "42");
    let cfg = Config::load(None, &env(&[("TERN_LISTENERS__TLS__CA", "/ca.pem")])).expect("loads");
    assert_eq!(cfg.listeners.tls.ca, Some(PathBuf::from("/ca.pem")));
}

#[test]
fn unknown_key_in_file_names_the_path() {
    let err = Config::from_toml_str("[mqtt]\nmax_pakcet_size = 10\n").expect_err("unknown key");
    assert!(
        matches!(&err, ConfigError::UnknownKey { key } if key == "mqtt.max_pakcet_size"),
        "{err}"
    );
    assert_eq!(err.to_string(), "unknown key mqtt.max_pakcet_size");
    let err =
        Config::from_toml_str("[listeners.tcp]\nbindd = \"1.2.3.4:1\"\n").expect_err("unknown");
    assert_eq!(err.to_string(), "unknown key listeners.tcp.bindd");
    let err = Config::from_toml_str("[nope]\n").expect_err("unknown section");
    assert_eq!(err.to_string(), "unknown key nope");
}

#[test]
fn unknown_env_key_names_the_variable() {
    let err =
        Config::load(None, &env(&[("TERN_MQTT__MAX_PAKCET_SIZE", "1")])).expect_err("unknown");
    assert!(
        matches!(&err, ConfigError::UnknownEnv { var, .. } if var == "TERN_MQTT__MAX_PAKCET_SIZE"),
        "{err}"
    );
    assert!(err.to_string().contains("TERN_MQTT__MAX_PAKCET_SIZE"));
    let err = Config::load(None, &env(&[("TERN_BOGUS__X", "1")])).expect_err("unknown section");
    assert!(err.to_string().contains("TERN_BOGUS__X"), "{err}");
    let err = Config::load(None, &env(&[("TERN_MQTT__MAX_PACKET_SIZE__X", "1")]))
        .expect_err("not a table");
    assert!(
        err.to_string().contains("TERN_MQTT__MAX_PACKET_SIZE__X"),
        "{err}"
    );
    let err = Config::load(None, &env(&[("TERN_MQTT____X", "1")])).expect_err("empty part");
    assert!(matches!(err, ConfigError::InvalidEnv { .. }), "{err}");
}

#[test]
fn bad_values_name_the_key() {
    let err = Config::from_toml_str("[listeners.tcp]\nbind = \"nope\"\n").expect_err("bad addr");
    assert!(
        matches!(&err, ConfigError::InvalidValue { key, .. } if key == "listeners.tcp.bind"),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("invalid value for listeners.tcp.bind: "),
        "{err}"
    );
    let err = Config::from_toml_str("[mqtt]\nmax_packet_size = -1\n").expect_err("negative");
    assert!(
        err.to_string()
            .starts_with("invalid value for mqtt.max_packet_size: "),
        "{err}"
    );
    let err =
        Config::from_toml_str("[mqtt]\nqueue_drop_policy = \"sometimes\"\n").expect_err("bad enum");
    assert!(err.to_string().contains("mqtt.queue_drop_policy"), "{err}");
    let err = Config::load(None, &env(&[("TERN_MQTT__MAX_PACKET_SIZE", "-1")]))
        .expect_err("negative env");
    let text = err.to_string();
    assert!(
        text.contains("TERN_MQTT__MAX_PACKET_SIZE") && text.contains("mqtt.max_packet_size"),
        "{text}"
    );
}

#[test]
fn syntax_errors_name_the_file() {
    let f = file("[mqtt\n");
    let err = Config::load(Some(f.path()), &env(&[])).expect_err("syntax");
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    assert!(err.to_string().contains(&f.path().display().to_string()));
    let missing = Path::new("/nonexistent/tern.toml");
    let err = Config::load(Some(missing), &env(&[])).expect_err("missing");
    assert!(err.to_string().contains("/nonexistent/tern.toml"), "{err}");
}

fn invalid_key(cfg: &Config) -> &'static str {
    match cfg.validate() {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn tls_enabled_without_cert_is_invalid() {
    let mut cfg = Config::default();
    cfg.listeners.tls.enabled = true;
    assert_eq!(invalid_key(&cfg), "listeners.tls.cert");
    let cert = file("cert");
    cfg.listeners.tls.cert = Some(cert.path().to_path_buf());
    assert_eq!(invalid_key(&cfg), "listeners.tls.key");
    cfg.listeners.tls.key = Some(PathBuf::from("/nonexistent/key.pem"));
    assert_eq!(invalid_key(&cfg), "listeners.tls.key");
    let key = file("key");
    cfg.listeners.tls.key = Some(key.path().to_path_buf());
    assert!(cfg.validate().is_ok());
    cfg.listeners.tls.require_client_cert = true;
    assert_eq!(invalid_key(&cfg), "listeners.tls.ca");
}

/// A change to a valid config and the key its validation error must name.
type Case = (fn(&mut Config), &'static str);

#[test]
fn limits_are_validated() {
    let cases: [Case; 7] = [
        (|c| c.mqtt.max_packet_size = 1, "mqtt.max_packet_size"),
        (
            |c| c.mqtt.max_packet_size = 268_435_461,
            "mqtt.max_packet_size",
        ),
        (|c| c.mqtt.receive_maximum = 0, "mqtt.receive_maximum"),
        (|c| c.mqtt.max_inflight = 0, "mqtt.max_inflight"),
        (|c| c.mqtt.max_client_id_len = 5, "mqtt.max_client_id_len"),
        (
            |c| c.listeners.tcp.max_connections = 0,
            "listeners.tcp.max_connections",
        ),
        (|c| c.listeners.tcp.enabled = false, "listeners"),
    ];
    for (mutate, key) in cases {
        let mut cfg = Config::default();
        mutate(&mut cfg);
        assert_eq!(invalid_key(&cfg), key);
    }
    let mut cfg = Config::default();
    cfg.admin.bind = cfg.listeners.tcp.bind;
    assert_eq!(invalid_key(&cfg), "admin.bind");
    cfg.admin.bind.set_port(0);
    cfg.listeners.tcp.bind.set_port(0);
    assert!(cfg.validate().is_ok(), "port 0 may repeat");
}

#[test]
fn load_validates() {
    let err =
        Config::load(None, &env(&[("TERN_MQTT__RECEIVE_MAXIMUM", "0")])).expect_err("invalid");
    assert!(err.to_string().contains("mqtt.receive_maximum"), "{err}");
}

#[test]
fn node_name_falls_back_to_host_name() {
    let mut cfg = Config::default();
    assert!(!cfg.node_name().is_empty());
    cfg.node.name = "n1".into();
    assert_eq!(cfg.node_name(), "n1");
}

#[test]
fn cluster_is_disabled_by_default_and_documented() {
    let c = Config::default();
    assert!(!c.cluster.enabled);
    assert_eq!(c.cluster.bind.port(), 44053);
    assert_eq!(c.cluster.heartbeat_ms, 1000);
    assert_eq!(c.cluster.buffer_max_messages, 100_000);
    let text = Config::default_toml();
    for key in [
        "[cluster]",
        "peer_timeout_ms",
        "route_grace_secs",
        "allow_register_during_netsplit",
        "tls.enabled",
    ] {
        assert!(text.contains(key), "default config documents {key}");
    }
}

#[test]
fn cluster_peers_from_env_accept_a_comma_separated_string() {
    let e = env(&[
        ("TERN_CLUSTER__ENABLED", "true"),
        ("TERN_CLUSTER__SECRET", "x"),
        ("TERN_CLUSTER__PEERS", "127.0.0.1:44054, 127.0.0.1:44055"),
    ]);
    let c = Config::load(None, &e).expect("loads");
    assert_eq!(c.cluster.peers, vec!["127.0.0.1:44054", "127.0.0.1:44055"]);
    let c = Config::from_toml_str("[cluster]\npeers = [\"h:1\"]\n").expect("list");
    assert_eq!(c.cluster.peers, vec!["h:1"]);
}

#[test]
fn cluster_rules_are_validated() {
    let mut c = Config::default();
    c.cluster.enabled = true;
    assert_eq!(invalid_key(&c), "cluster.secret");
    c.cluster.secret = "s".into();
    assert!(c.validate().is_ok());
    c.cluster.peers = vec!["no-port".into()];
    assert_eq!(invalid_key(&c), "cluster.peers");
    c.cluster.peers.clear();
    c.cluster.tls.enabled = true;
    assert_eq!(invalid_key(&c), "cluster.tls.cert");
    c.cluster.tls.enabled = false;
    c.cluster.peer_timeout_ms = c.cluster.heartbeat_ms;
    assert_eq!(invalid_key(&c), "cluster.peer_timeout_ms");
}

#[test]
fn storage_dir_and_memory_cap_from_env() {
    let set = env(&[
        ("TERN_STORAGE__DIR", "/var/lib/tern"),
        ("TERN_STORAGE__MAX_IN_MEMORY_PER_SESSION", "50"),
    ]);
    let cfg = Config::load(None, &set).expect("loads");
    assert_eq!(
        cfg.storage.data_dir(),
        Some(std::path::Path::new("/var/lib/tern"))
    );
    assert_eq!(cfg.storage.max_in_memory_per_session, 50);
    let off = Config::load(None, &env(&[("TERN_STORAGE__DIR", "")])).expect("loads");
    assert_eq!(off.storage.data_dir(), None, "empty: memory only");
    assert_eq!(Config::default().storage.data_dir(), None);
    let mut zero = Config::default();
    zero.storage.max_in_memory_per_session = 0;
    assert_eq!(invalid_key(&zero), "storage.max_in_memory_per_session");
}
