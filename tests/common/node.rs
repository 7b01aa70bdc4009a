//! The real `tern` binary as a child process on port 0 with a data
//! directory: started, killed with SIGKILL (`kill -9`), restarted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A running `tern` process.
pub struct Node {
    child: Child,
    /// Its MQTT TCP address.
    pub tcp: SocketAddr,
    _addrs: tempfile::TempDir,
}

fn command(data: &Path, env: &[(&str, &str)], addrs: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tern"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TERN_") {
            c.env_remove(key);
        }
    }
    c.env("TERN_LISTENERS__TCP__BIND", "127.0.0.1:0")
        .env("TERN_ADMIN__BIND", "127.0.0.1:0")
        .env("TERN_LISTENERS__TLS__ENABLED", "false")
        .env("TERN_STORAGE__DIR", data)
        .env("TERN_NODE__NAME", "durable-test")
        .arg("--bound-addrs-file")
        .arg(addrs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

impl Node {
    /// Starts `tern` on `data` and waits (20 s at most) until it listens.
    pub async fn start(data: &Path, env: &[(&str, &str)]) -> Node {
        let addrs = tempfile::tempdir().expect("temp dir");
        let file: PathBuf = addrs.path().join("bound.json");
        let mut child = command(data, env, &file)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tern");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let tcp = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v.get("tcp")?.as_str()?.parse().ok());
            if let Some(tcp) = tcp {
                return Node {
                    child,
                    tcp,
                    _addrs: addrs,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("tern exited before binding: {status}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "tern did not bind within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts `tern` on `data` expecting it to refuse: returns its exit
    /// success flag and its standard error (waits 20 s at most).
    pub async fn start_refused(data: &Path) -> (bool, String) {
        let addrs = tempfile::tempdir().expect("temp dir");
        let child = command(data, &[], &addrs.path().join("bound.json"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tern");
        let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
            .await
            .expect("tern should exit within 20 s on a corrupt store")
            .expect("wait for tern");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("tern is running")
    }

    /// Resident memory (VmRSS) of the process, bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kb * 1024
    }

    /// `kill -9`: SIGKILL, then reaps the process.
    pub async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL tern");
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("tern should die within 10 s of SIGKILL")
            .expect("reap tern");
    }
}
