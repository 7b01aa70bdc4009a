//! Real `tern` processes for the Kubernetes-facing tests: spawn a node
//! with a pre-picked mesh port, read its bound addresses, poll its admin
//! API, SIGTERM it; every child is killed on drop.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "../ports/mod.rs"]
mod ports;
pub use ports::free_port;

/// One `tern` child process.
pub struct Node {
    pub name: String,
    pub mesh_port: u16,
    pub tcp: SocketAddr,
    pub admin: SocketAddr,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `name` on mesh port `mesh_port` dialing `peers`, with `extra` env.
pub fn spawn(name: &str, mesh_port: u16, peers: &[u16], extra: &[(&str, &str)]) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let addrs: PathBuf = dir.path().join("addrs.json");
    let peers: Vec<String> = peers.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("TERN_NODE__NAME", name)
        .env("POD_NAME", name)
        .env("TERN_LISTENERS__TCP__BIND", "127.0.0.1:0")
        .env("TERN_ADMIN__BIND", "127.0.0.1:0")
        .env("TERN_CLUSTER__ENABLED", "true")
        .env("TERN_CLUSTER__BIND", format!("127.0.0.1:{mesh_port}"))
        .env("TERN_CLUSTER__PEERS", peers.join(","))
        .env("TERN_CLUSTER__SECRET", "x")
        .env("TERN_CLUSTER__HEARTBEAT_MS", "200")
        .env("TERN_CLUSTER__PEER_TIMEOUT_MS", "1500")
        .env("TERN_CLUSTER__READY_WAIT_SECS", "2")
        .env("TERN_SHUTDOWN__GRACE_PERIOD_SECS", "10")
        .arg("--bound-addrs-file")
        .arg(&addrs)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if std::env::var_os("TERN_TEST_LOGS").is_none() {
        cmd.stderr(Stdio::null());
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn tern");
    let deadline = Instant::now() + Duration::from_secs(20);
    let json: serde_json::Value = loop {
        if let Ok(text) = std::fs::read_to_string(&addrs) {
            if let Ok(v) = serde_json::from_str(&text) {
                break v;
            }
        }
        assert!(Instant::now() < deadline, "{name}: no bound addresses");
        std::thread::sleep(Duration::from_millis(20));
    };
    let addr = |k: &str| -> SocketAddr {
        json[k]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{name}: no {k} address in {json}"))
    };
    Node {
        name: name.to_string(),
        mesh_port,
        tcp: addr("tcp"),
        admin: addr("admin"),
        child: Some(child),
        _dir: dir,
    }
}

impl Node {
    /// Sends SIGTERM.
    pub fn term(&self) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill -TERM {}", self.name);
        }
    }

    /// Waits for the process to exit, at most `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET path` on the admin listener: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).await
    }

    /// Waits until `/ready` is 200.
    pub async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = self.get("/ready").await;
            if status == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "{} not ready: {body}", self.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Peer name → state ("up"/"down") from `/api/v1/cluster/show`.
    pub async fn peers(&self) -> Vec<(String, String)> {
        let (_, body) = self.get("/api/v1/cluster/show").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["peers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| {
                        let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
                        (s("node"), s("state"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until the peers shown are exactly `want`, all up.
    pub async fn wait_peers_up(&self, want: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let peers = self.peers().await;
            let mut names: Vec<&str> = peers
                .iter()
                .filter(|(_, s)| s == "up")
                .map(|(n, _)| n.as_str())
                .collect();
            names.sort_unstable();
            if names == want && peers.len() == want.len() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: peers {peers:?}, want {want:?} up",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A minimal HTTP/1.1 GET: (status, body); (0, error) if unreachable.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).to_string())
    };
    match tokio::time::timeout(Duration::from_secs(5), fut).await {
        Ok(Ok(text)) => {
            let status = text
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let body = text
                .split("\r\n\r\n")
                .nth(1)
                .unwrap_or_default()
                .to_string();
            (status, body)
        }
        Ok(Err(e)) => (0, e.to_string()),
        Err(_) => (0, "timeout".into()),
    }
}
