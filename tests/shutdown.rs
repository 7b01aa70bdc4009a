//! The `tern` binary: graceful shutdown on SIGTERM (5.0 clients get
//! DISCONNECT 0x8B, exit status 0 within the grace period), the bound
//! addresses file, config file and environment overrides.
mod common;

use common::raw::prop;
use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

struct Bound {
    tcp: SocketAddr,
    admin: Option<SocketAddr>,
}

fn tern() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tern"));
    // Keep the caller's TERN_* variables out of the binary's config.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TERN_") {
            c.env_remove(key);
        }
    }
    c.env("TERN_LISTENERS__TCP__BIND", "127.0.0.1:0")
        .env("TERN_ADMIN__BIND", "127.0.0.1:0")
        .env("TERN_LISTENERS__TLS__ENABLED", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    c
}

/// Waits for the bound-addresses file to appear and parses it.
async fn bound(path: &Path, child: &mut Child) -> Bound {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                let addr = |k: &str| {
                    v.get(k)
                        .and_then(|a| a.as_str())
                        .and_then(|a| a.parse().ok())
                };
                if let Some(tcp) = addr("tcp") {
                    assert!(
                        v.get("tls").is_some(),
                        "bound-addrs file has a \"tls\" key: {text}"
                    );
                    return Bound {
                        tcp,
                        admin: addr("admin"),
                    };
                }
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("tern exited before binding: {status}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tern did not write a usable --bound-addrs-file within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("child pid");
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -TERM {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_disconnects_v5_clients_with_0x8b_and_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addrs = dir.path().join("bound.json");
    let grace = 3u64;
    let mut child = tern()
        .arg("--bound-addrs-file")
        .arg(&addrs)
        .env("TERN_SHUTDOWN__GRACE_PERIOD_SECS", grace.to_string())
        .spawn()
        .expect("spawn tern");
    let b = bound(&addrs, &mut child).await;
    if let Some(admin) = b.admin {
        assert_eq!(
            http_get(admin, "/health").await.0,
            200,
            "binary serves /health"
        );
    }
    let mut v5 = Raw::v5(b.tcp, &uid("sd5")).await;
    let mut v4 = Raw::v4(b.tcp, &uid("sd4")).await;
    v5.subscribe("sd/t", 1).await;
    v5.publish("sd/t", b"before", 1).await;
    assert_eq!(v5.next_publish().await.payload, b"before");

    sigterm(&child);
    let limit = Duration::from_secs(grace + 2);
    v5.expect_disconnect(&[0x8B], limit).await;
    let seen = v4.expect_closed(limit).await;
    assert!(seen.is_empty(), "3.1.1 clients are just closed: {seen:?}");
    let status = tokio::time::timeout(limit, child.wait())
        .await
        .expect("tern must exit within the grace period after SIGTERM")
        .expect("wait for tern");
    assert_eq!(
        status.code(),
        Some(0),
        "tern exits 0 after a graceful shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_shutdown_sends_0x8b() {
    let s = start().await;
    let mut c = Raw::v5(s.addr, &uid("ip")).await;
    let stop = tokio::spawn(s.stop());
    c.expect_disconnect(&[0x8B], Duration::from_secs(5)).await;
    tokio::time::timeout(Duration::from_secs(10), stop)
        .await
        .expect("Server::shutdown finishes")
        .expect("shutdown task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_default_config_exits_0() {
    let out = tern()
        .arg("--print-default-config")
        .stdout(Stdio::piped())
        .output()
        .await
        .expect("run tern --print-default-config");
    assert!(out.status.success(), "exit status {:?}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    for key in [
        "max_packet_size",
        "persistent_client_expiration",
        "grace_period_secs",
    ] {
        assert!(text.contains(key), "default config lacks {key}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_and_env_overrides_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("tern.toml");
    std::fs::write(
        &cfg,
        "[mqtt]\nmax_keep_alive = 7\ntopic_alias_maximum = 3\n",
    )
    .expect("write config");
    let addrs = dir.path().join("bound.json");
    let mut child = tern()
        .arg("--config")
        .arg(&cfg)
        .arg("--bound-addrs-file")
        .arg(&addrs)
        .env("TERN_MQTT__TOPIC_ALIAS_MAXIMUM", "5")
        .spawn()
        .expect("spawn tern");
    let b = bound(&addrs, &mut child).await;
    let (c, ack) = Raw::connect_ok(b.tcp, Connect::v5(&uid("cfg")).keep_alive(60)).await;
    assert_eq!(
        ack.props.u16(prop::SERVER_KEEP_ALIVE),
        Some(7),
        "max_keep_alive from the file"
    );
    assert_eq!(
        ack.props.u16(prop::TOPIC_ALIAS_MAXIMUM),
        Some(5),
        "environment overrides the file"
    );
    c.disconnect().await;
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("tern exits after SIGTERM")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[mqtt]\nno_such_key = 1\n").expect("write config");
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tern()
            .arg("--config")
            .arg(&cfg)
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .expect("tern must exit on a bad config, not serve")
    .expect("run tern");
    assert!(
        !out.status.success(),
        "unknown config key must fail startup"
    );
}
