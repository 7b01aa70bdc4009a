//! The management API against a real node with real MQTT clients: API
//! keys, session show and disconnect (5.0 sees 0x98), retained show and
//! delete, listener show, runtime `set` changing the in-flight window, the
//! forwarded address of a PROXY-protocol client, and the `tern admin` CLI
//! (tables, `--json`, log level) against the real binary.
mod common;

use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tern_broker::config::{ApiKeyConfig, Config, Scope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MGMT_KEY: &str = "mgmt-key-0123456789";
const METRICS_KEY: &str = "metrics-key-0123456789";

fn with_keys(c: &mut Config) {
    c.admin.api_keys = vec![
        ApiKeyConfig {
            key: MGMT_KEY.into(),
            scopes: vec![Scope::Mgmt],
        },
        ApiKeyConfig {
            key: METRICS_KEY.into(),
            scopes: vec![Scope::Metrics],
        },
    ];
}

/// One HTTP/1.1 request: (status, body as JSON or a string value).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        let text = String::from_utf8_lossy(&buf).to_string();
        let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let json = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
        (status, json)
    };
    tokio::time::timeout(T, fut).await.expect("HTTP timed out")
}

async fn mgmt(addr: SocketAddr, method: &str, path: &str) -> (u16, Value) {
    http(addr, method, path, Some(MGMT_KEY), "").await
}

/// The session row of `id`, if listed.
async fn session(addr: SocketAddr, id: &str) -> Option<Value> {
    let (status, v) = mgmt(addr, "GET", &format!("/api/v1/session/show?client_id={id}")).await;
    assert_eq!(status, 200, "{v}");
    v["rows"].as_array()?.first().cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_scopes_guard_management() {
    let s = start_with(with_keys).await;
    let a = s.admin();
    let path = "/api/v1/session/show";
    let (status, v) = http(a, "GET", path, None, "").await;
    assert_eq!(status, 401, "no key: {v}");
    assert!(v.get("rows").is_none() && v["error"].is_string(), "{v}");
    let (status, v) = http(a, "GET", path, Some("wrong-key-0123456789"), "").await;
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("invalid API key"))
    );
    let (status, v) = http(a, "GET", path, Some(METRICS_KEY), "").await;
    assert_eq!(status, 401, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("mgmt"), "{v}");
    let (status, _) = http(a, "GET", path, Some(MGMT_KEY), "").await;
    assert_eq!(status, 200);
    // Health and metrics stay open unless configured otherwise.
    assert_eq!(http(a, "GET", "/health", None, "").await.0, 200);
    assert_eq!(http(a, "GET", "/metrics", None, "").await.0, 200);
    s.stop().await;

    let s = start_with(|c| {
        with_keys(c);
        c.admin.require_key_for = vec![Scope::Metrics];
    })
    .await;
    let a = s.admin();
    assert_eq!(http(a, "GET", "/metrics", None, "").await.0, 401);
    assert_eq!(http(a, "GET", "/metrics", Some(MGMT_KEY), "").await.0, 401);
    assert_eq!(
        http(a, "GET", "/metrics", Some(METRICS_KEY), "").await.0,
        200
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_show_lists_the_client_and_disconnect_kicks_it() {
    let s = start_with(with_keys).await;
    let a = s.admin();
    let id = uid("adm-v5");
    let mut c = Connect::v5(&id).session_expiry(300);
    c.username = Some("alice".into());
    let (mut v5, ack) = Raw::connect_ok(s.addr, c).await;
    assert_eq!(ack.code, 0);
    v5.subscribe("adm/+/x", 1).await;

    let row = session(a, &id).await.expect("session listed");
    assert_eq!(row["online"], true);
    assert_eq!(row["user"], "alice");
    assert_eq!(row["node"], "test");
    assert_eq!(row["protocol"], 5);
    assert_eq!(row["expiry_interval"], 300);
    assert_eq!(row["subscriptions"], 1);
    let peer = row["peer"].as_str().unwrap_or_default();
    assert!(
        peer.starts_with("127.0.0.1:"),
        "the client's address: {row}"
    );
    let (_, v) = mgmt(a, "GET", "/api/v1/session/show?user=alice&online=true").await;
    assert_eq!(v["rows"].as_array().map(Vec::len), Some(1), "{v}");
    let (_, v) = mgmt(a, "GET", "/api/v1/session/show?online=false").await;
    assert!(!v.to_string().contains(&id), "{v}");
    let (status, v) = mgmt(a, "GET", "/api/v1/session/show?online=maybe").await;
    assert_eq!(status, 400, "{v}");

    let (_, v) = mgmt(
        a,
        "GET",
        &format!("/api/v1/subscription/show?client_id={id}"),
    )
    .await;
    let sub = &v["rows"][0];
    assert_eq!(
        (sub["filter"].as_str(), sub["qos"].as_u64()),
        (Some("adm/+/x"), Some(1)),
        "{v}"
    );

    // 5.0: DISCONNECT 0x98; the session stays (expiry 300), offline.
    let (status, v) = mgmt(
        a,
        "POST",
        &format!("/api/v1/session/disconnect?client_id={id}"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["disconnected_on"], serde_json::json!(["test"]));
    v5.expect_disconnect(&[0x98], T).await;
    wait_until(T, "the session goes offline", || async {
        session(a, &id).await.is_some_and(|r| r["online"] == false)
    })
    .await;
    // cleanup=true deletes it.
    let path = format!("/api/v1/session/disconnect?client_id={id}&cleanup=true");
    assert_eq!(mgmt(a, "POST", &path).await.0, 200);
    assert!(session(a, &id).await.is_none(), "session deleted");
    let (status, v) = mgmt(a, "POST", &path).await;
    assert_eq!(status, 404, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains(&id), "{v}");

    // 3.1.1: the socket is closed.
    let id4 = uid("adm-v4");
    let (mut v4, _) = Raw::connect_ok(s.addr, Connect::v4(&id4)).await;
    let path = format!("/api/v1/session/disconnect?client_id={id4}");
    assert_eq!(mgmt(a, "POST", &path).await.0, 200);
    let seen = v4.expect_closed(T).await;
    assert!(seen.is_empty(), "3.1.1 gets no DISCONNECT: {seen:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_show_and_delete() {
    let s = start_with(with_keys).await;
    let a = s.admin();
    let topic = format!("adm/{}/state", uid("r"));
    let (mut p, _) = Raw::connect_ok(s.addr, Connect::v5(&uid("pub"))).await;
    p.publish_retained(&topic, b"on", 1).await;
    let (status, v) = mgmt(a, "GET", "/api/v1/retain/show?topic=adm/%23").await;
    assert_eq!(status, 200);
    let row = v["rows"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["topic"] == topic.as_str()))
        .cloned()
        .unwrap_or_else(|| panic!("{topic} not listed: {v}"));
    assert_eq!(
        (row["payload"].as_str(), row["size"].as_u64()),
        (Some("on"), Some(2))
    );
    assert_eq!(
        mgmt(a, "GET", "/api/v1/retain/show?topic=a/%23/b").await.0,
        400
    );

    let path = format!("/api/v1/retain/delete?topic={}", topic.replace('/', "%2F"));
    let (status, v) = mgmt(a, "POST", &path).await;
    assert_eq!((status, v["deleted"].as_bool()), (200, Some(true)), "{v}");
    let (_, v) = mgmt(a, "GET", "/api/v1/retain/show?topic=adm/%23").await;
    assert!(!v.to_string().contains(&topic), "{v}");
    // A new subscriber gets nothing retained; a later publish still arrives.
    let (mut sub, _) = Raw::connect_ok(s.addr, Connect::v5(&uid("sub"))).await;
    sub.subscribe(&topic, 1).await;
    p.publish(&topic, b"live", 1).await;
    let got = sub.next_publish().await;
    assert_eq!(
        got.payload, b"live",
        "the deleted retained message came first"
    );
    assert_eq!(
        mgmt(a, "POST", &path).await.0,
        404,
        "nothing left to delete"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_show_and_set_changes_the_inflight_window() {
    let s = start_with(with_keys).await;
    let a = s.admin();
    let (status, v) = mgmt(a, "GET", "/api/v1/listener/show").await;
    assert_eq!(status, 200);
    let tcp = &v["rows"][0];
    assert_eq!(tcp["kind"], "tcp");
    assert_eq!(tcp["bind"], s.addr.to_string());
    assert_eq!(
        (tcp["state"].as_str(), tcp["proxy_protocol"].as_bool()),
        (Some("up"), Some(false))
    );

    let (status, v) = mgmt(a, "POST", "/api/v1/set?mqtt.max_inflight=1&mqtt.bogus=2").await;
    assert_eq!(status, 400);
    assert!(
        v["error"].as_str().unwrap_or("").contains("mqtt.bogus"),
        "{v}"
    );
    let (status, v) = mgmt(a, "POST", "/api/v1/set?mqtt.max_inflight=0").await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = mgmt(a, "POST", "/api/v1/set?mqtt.max_inflight=1").await;
    assert_eq!(
        (status, v["applied"]["mqtt.max_inflight"].as_u64()),
        (200, Some(1)),
        "{v}"
    );

    // A new subscriber gets one QoS 1 message in flight at a time.
    let id = uid("win");
    let (mut sub, _) = Raw::connect_ok(s.addr, Connect::v5(&id)).await;
    sub.auto_ack = false;
    let topic = format!("adm/{id}");
    sub.subscribe(&topic, 1).await;
    let (mut p, _) = Raw::connect_ok(s.addr, Connect::v5(&uid("pub"))).await;
    for i in 0..3u8 {
        p.publish(&topic, &[i], 1).await;
    }
    let first = sub.next_publish().await;
    // With the default window (100) all three would be in flight.
    wait_until(T, "one in flight, two queued", || async {
        session(a, &id)
            .await
            .is_some_and(|r| r["inflight"] == 1 && r["queued"] == 2)
    })
    .await;
    sub.send(&common::raw::ack(common::raw::kind::PUBACK, first.pkid))
        .await;
    let second = sub.next_publish().await;
    assert_eq!(second.payload, [1u8]);
    wait_until(T, "still one in flight, one queued", || async {
        session(a, &id)
            .await
            .is_some_and(|r| r["inflight"] == 1 && r["queued"] == 1)
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_client_shows_its_forwarded_address() {
    let s = start_with(|c| {
        with_keys(c);
        c.listeners.tcp.proxy_protocol = true;
    })
    .await;
    let a = s.admin();
    let id = uid("adm-pp");
    let mut raw = Raw::tcp(s.addr).await;
    raw.send(b"PROXY TCP4 203.0.113.7 10.0.0.1 4242 1883\r\n")
        .await;
    assert_eq!(raw.handshake(Connect::v5(&id)).await.code, 0);
    let row = session(a, &id).await.expect("listed");
    assert_eq!(row["peer"], "203.0.113.7:4242", "{row}");
    let (_, v) = mgmt(a, "GET", "/api/v1/listener/show").await;
    assert_eq!(v["rows"][0]["proxy_protocol"], true, "{v}");
    assert_eq!(v["rows"][0]["connections"], 1, "{v}");
    s.stop().await;
}

/// A `tern` process on port 0 with a key file; killed on drop.
struct Binary {
    child: tokio::process::Child,
    admin: SocketAddr,
    tcp: SocketAddr,
    _dir: tempfile::TempDir,
    key_file: std::path::PathBuf,
}

impl Binary {
    async fn start() -> Binary {
        let dir = tempfile::tempdir().expect("dir");
        let key_file = dir.path().join("api-keys");
        std::fs::write(&key_file, format!("# test\n{MGMT_KEY} mgmt,metrics\n")).expect("keys");
        let addrs = dir.path().join("bound.json");
        let child = tern()
            .env("TERN_LISTENERS__TCP__BIND", "127.0.0.1:0")
            .env("TERN_ADMIN__BIND", "127.0.0.1:0")
            .env("TERN_ADMIN__API_KEYS_FILE", &key_file)
            .arg("--bound-addrs-file")
            .arg(&addrs)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tern");
        let mut text = String::new();
        wait_until_sync(Duration::from_secs(15), "the bound-addresses file", || {
            text = std::fs::read_to_string(&addrs).unwrap_or_default();
            !text.is_empty()
        })
        .await;
        let v: Value = serde_json::from_str(&text).expect("json");
        let addr = |k: &str| v[k].as_str().expect(k).parse().expect("addr");
        Binary {
            child,
            admin: addr("admin"),
            tcp: addr("tcp"),
            _dir: dir,
            key_file,
        }
    }

    /// `tern admin <args> --url …` with the key file; (exit ok, stdout, stderr).
    async fn admin(&self, args: &[&str], key_file: Option<&Path>) -> (bool, String, String) {
        let mut cmd = tern();
        cmd.arg("admin")
            .args(args)
            .arg("--url")
            .arg(format!("http://{}", self.admin));
        if let Some(k) = key_file {
            cmd.env("TERN_ADMIN_API_KEY_FILE", k);
        }
        let out = tokio::time::timeout(Duration::from_secs(15), cmd.output())
            .await
            .expect("tern admin finished")
            .expect("run tern admin");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn tern() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tern"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TERN_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_prints_tables_json_and_changes_the_log_level() {
    let mut b = Binary::start().await;
    let keys = Some(b.key_file.as_path());
    let id = uid("cli");
    let mut c = Connect::v4(&id);
    c.username = Some("bob".into());
    let (_client, _) = Raw::connect_ok(b.tcp, c).await;

    let (ok, out, err) = b.admin(&["session", "show"], keys).await;
    assert!(ok, "{err}");
    let header = out.lines().nth(1).unwrap_or_default();
    assert!(
        header.contains("Client ID") && header.contains("Peer"),
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("bob") && line.contains("127.0.0.1:"), "{out}");

    let (ok, out, err) = b
        .admin(&["session", "show", "--client-id", &id, "--json"], keys)
        .await;
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(v["rows"][0]["client_id"], id.as_str());

    let (ok, out, _) = b.admin(&["listener", "show"], keys).await;
    assert!(
        ok && out.contains(&b.tcp.to_string()) && out.contains(" up "),
        "{out}"
    );
    let (ok, out, _) = b
        .admin(&["metrics", "show", "--name", "tern_connections"], keys)
        .await;
    assert!(
        ok && out
            .lines()
            .any(|l| l.contains("tern_connections ") && l.contains(" 1 ")),
        "{out}"
    );
    let (ok, out, err) = b.admin(&["set", "mqtt.max_online_messages=50"], keys).await;
    assert!(
        ok && out.contains("mqtt.max_online_messages = 50"),
        "{out}{err}"
    );

    // Log level round trip, through the CLI and over HTTP.
    let (ok, out, _) = b.admin(&["log-level"], keys).await;
    assert!(ok && out.trim() == "info", "{out}");
    let (ok, out, err) = b
        .admin(&["log-level", "tern_broker=debug,info"], keys)
        .await;
    assert!(ok && out.trim() == "tern_broker=debug,info", "{out}{err}");
    let (status, v) = http(b.admin, "GET", "/log-level", Some(MGMT_KEY), "").await;
    assert_eq!(
        (status, v["level"].as_str()),
        (200, Some("tern_broker=debug,info"))
    );
    let (status, v) = http(b.admin, "PUT", "/log-level", Some(MGMT_KEY), "x=loud").await;
    assert_eq!(status, 400, "{v}");
    let (ok, _, err) = b.admin(&["log-level", "x=loud"], keys).await;
    assert!(!ok && err.contains("400"), "{err}");

    // No key, a wrong key, an unknown client: clear errors, non-zero exit.
    let (ok, _, err) = b.admin(&["session", "show"], None).await;
    assert!(!ok && err.contains("401"), "{err}");
    let wrong = b._dir.path().join("wrong");
    std::fs::write(&wrong, "wrong-key-0123456789\n").expect("write");
    let (ok, _, err) = b.admin(&["session", "show"], Some(&wrong)).await;
    assert!(!ok && err.contains("invalid API key"), "{err}");
    let (ok, _, err) = b
        .admin(&["session", "disconnect", "--client-id", "nobody"], keys)
        .await;
    assert!(
        !ok && err.contains("404") && err.contains("nobody"),
        "{err}"
    );
    let (ok, out, err) = b
        .admin(&["session", "disconnect", "--client-id", &id], keys)
        .await;
    assert!(ok && out.contains("Disconnected"), "{out}{err}");
    b.child.kill().await.expect("kill tern");
}
