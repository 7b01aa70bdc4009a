//! The `tern` binary's command line: default config, config errors and
//! exit codes, and a full start/SIGTERM cycle on port 0.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tern_broker::config::Config;

fn tern() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
    // Keep the developer's environment from leaking into the config.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TERN_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run tern");
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn config_file(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("tern.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn print_default_config_round_trips() {
    let (code, stdout, _) = run(tern().arg("--print-default-config"));
    assert_eq!(code, Some(0));
    assert_eq!(
        Config::from_toml_str(&stdout).expect("parses"),
        Config::default()
    );
}

#[test]
fn check_config_accepts_a_good_file() {
    let dir = tempfile::tempdir().expect("dir");
    let path = config_file(dir.path(), "[mqtt]\nmax_packet_size = 4096\n");
    let (code, stdout, stderr) = run(tern().arg("--check-config").arg("--config").arg(&path));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("ok"));
}

#[test]
fn unknown_key_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let path = config_file(dir.path(), "[mqtt]\nmax_pakcet_size = 4096\n");
    for extra in [&["--check-config"][..], &[][..]] {
        let (code, _, stderr) = run(tern().args(extra).arg("--config").arg(&path));
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("mqtt.max_pakcet_size"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
}

#[test]
fn bad_value_and_bad_env_exit_2() {
    let dir = tempfile::tempdir().expect("dir");
    let path = config_file(dir.path(), "[listeners.tcp]\nbind = \"nope\"\n");
    let (code, _, stderr) = run(tern().arg("--check-config").arg("-c").arg(&path));
    assert_eq!(code, Some(2));
    assert!(stderr.contains("listeners.tcp.bind"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    let (code, _, stderr) = run(tern().arg("--check-config").env("TERN_MQTT__NOPE", "1"));
    assert_eq!(code, Some(2));
    assert!(stderr.contains("TERN_MQTT__NOPE"), "{stderr}");

    let (code, _, stderr) = run(tern()
        .arg("--check-config")
        .env("TERN_LISTENERS__TLS__ENABLED", "true"));
    assert_eq!(code, Some(2));
    assert!(stderr.contains("listeners.tls.cert"), "{stderr}");

    let missing = dir.path().join("missing.toml");
    let (code, _, stderr) = run(tern().arg("--check-config").arg("-c").arg(&missing));
    assert_eq!(code, Some(2));
    assert!(stderr.contains("missing.toml"), "{stderr}");
}

fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect admin");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    stream.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn runs_on_port_0_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("dir");
    let addrs = dir.path().join("addrs.json");
    let mut child = tern()
        .env("TERN_LISTENERS__TCP__BIND", "127.0.0.1:0")
        .env("TERN_ADMIN__BIND", "127.0.0.1:0")
        .env("TERN_BOUND_ADDRS_FILE", &addrs)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tern");
    let start = Instant::now();
    while !addrs.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no bound-addresses file"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("tern exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&addrs).expect("read addrs");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert!(json["tls"].is_null());
    let tcp = json["tcp"].as_str().expect("tcp addr");
    TcpStream::connect(tcp).expect("tcp listener up");
    let admin = json["admin"].as_str().expect("admin addr");
    let health = http_get(admin, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(http_get(admin, "/metrics").contains("tern_connections"));

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "tern did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
