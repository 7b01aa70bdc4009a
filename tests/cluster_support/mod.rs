//! Real-process cluster harness: N `tern` processes on 127.0.0.1 forming
//! one cluster, optionally with every mesh link going through an in-test
//! [`relay::Relay`] so a test can cut and heal links.
//!
//! Every node logs (`RUST_LOG=info`) to its own file; when a test panics
//! the [`Cluster`] prints each node's log tail and keeps the directory.
//! Dropping the [`Cluster`] kills every child process.
#![allow(dead_code)]

pub mod mqtt;
pub mod netns;
pub mod raw5;
pub mod relay;

use mqtt::{Client, Msg, Opts};
use relay::Relay;
use serde_json::Value;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// How long a freshly started cluster gets to show every peer `up`.
pub const UP_DEADLINE: Duration = Duration::from_secs(20);
/// Mesh heartbeat used by the tests.
pub const HEARTBEAT_MS: u64 = 200;
/// Peer timeout used by the tests.
pub const PEER_TIMEOUT_MS: u64 = 1000;
/// Deadline for a node to notice a peer is gone (timeout plus slack).
pub const DOWN_DEADLINE: Duration = Duration::from_secs(10);

/// A unique string per call in this process (client ids, topics).
pub fn uid(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[path = "../ports/mod.rs"]
mod ports;
pub use ports::free_port;

/// The tern binary under test: cargo's, unless `CLUSTER_TEST_TERN_BIN`
/// names another (e.g. a release build, or a private copy when several
/// checkouts share one target directory).
pub fn tern_bin() -> String {
    std::env::var("CLUSTER_TEST_TERN_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tern").to_string())
}

/// What a node wrote to its `--bound-addrs-file`.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub tcp: SocketAddr,
    pub admin: SocketAddr,
    pub cluster: SocketAddr,
}

/// One `tern` process (or its slot while stopped).
pub struct Node {
    pub index: usize,
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
    addrs_file: PathBuf,
    /// Requested binds, picked once and kept across restarts.
    tcp_bind: SocketAddr,
    admin_bind: SocketAddr,
    mesh_bind: SocketAddr,
    /// The peer addresses this node is given.
    peers: Vec<SocketAddr>,
    pub bound: Option<Bound>,
    pub starts: u32,
    /// Status of the last process that exited, if any.
    pub last_exit: Option<ExitStatus>,
}

impl Node {
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => match c.try_wait() {
                Ok(None) => true,
                Ok(Some(st)) => {
                    self.last_exit = Some(st);
                    self.child = None;
                    false
                }
                Err(_) => false,
            },
            None => false,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn kill_now(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            if let Ok(st) = c.wait() {
                self.last_exit = Some(st);
            }
        }
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("<cannot read: {e}>"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A minimal HTTP/1.1 GET with a 3 s deadline: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an HTTP response: {text:?}"))?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(3), fut)
        .await
        .map_err(|_| format!("GET http://{addr}{path} timed out"))?
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Peer states from a `/api/v1/cluster/show` body: (node, state).
pub fn peer_states(show: &Value) -> Vec<(String, String)> {
    show.get("peers")
        .and_then(Value::as_array)
        .map(|peers| {
            peers
                .iter()
                .map(|p| {
                    (
                        p.get("node")
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                            .to_string(),
                        p.get("state")
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The state `show` reports for `peer` (None if not listed).
pub fn peer_state(show: &Value, peer: &str) -> Option<String> {
    peer_states(show)
        .into_iter()
        .find(|(n, _)| n == peer)
        .map(|(_, s)| s)
}

/// How a cluster is started.
pub struct Builder {
    prefix: String,
    n: usize,
    relayed: bool,
    env: Vec<(String, String)>,
}

impl Builder {
    /// Every mesh link goes through a [`Relay`] (needed for cut/heal).
    pub fn relayed(mut self) -> Builder {
        self.relayed = true;
        self
    }

    /// An extra environment variable for every node.
    pub fn env(mut self, k: &str, v: &str) -> Builder {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    /// Starts every node and waits until each sees all the others `up`.
    pub async fn start(self) -> Cluster {
        let mut c = self.spawn().await;
        c.wait_all_up(UP_DEADLINE).await;
        c
    }

    /// Starts every node and waits only for the bound-addresses files.
    pub async fn spawn(self) -> Cluster {
        let dir = std::env::temp_dir().join(uid(&format!("tern-cluster-{}", self.prefix)));
        std::fs::create_dir_all(&dir).expect("create cluster test dir");
        let names: Vec<String> = (1..=self.n)
            .map(|i| format!("{}-n{i}", self.prefix))
            .collect();
        // relays[i][j]: node i's way to node j.
        let mut relays: Vec<Vec<Option<Relay>>> = Vec::new();
        let mut mesh_binds = Vec::new();
        if self.relayed {
            for i in 0..self.n {
                let mut row = Vec::new();
                for j in 0..self.n {
                    row.push(if i == j {
                        None
                    } else {
                        Some(Relay::start(&format!("{}->{}", names[i], names[j])).await)
                    });
                }
                relays.push(row);
            }
        }
        // Every port is picked before the first start (and kept for
        // restarts) outside the kernel's ephemeral range: see `ports`.
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..self.n {
            mesh_binds.push(loopback(free_port()));
        }
        let mut nodes = Vec::new();
        for i in 0..self.n {
            let peers = (0..self.n)
                .filter(|&j| j != i)
                .map(|j| match &relays.get(i).and_then(|r| r[j].as_ref()) {
                    Some(r) => r.addr,
                    None => mesh_binds[j],
                })
                .collect();
            nodes.push(Node {
                index: i,
                name: names[i].clone(),
                child: None,
                log: dir.join(format!("{}.log", names[i])),
                addrs_file: dir.join(format!("{}.addrs.json", names[i])),
                tcp_bind: loopback(free_port()),
                admin_bind: loopback(free_port()),
                mesh_bind: mesh_binds[i],
                peers,
                bound: None,
                starts: 0,
                last_exit: None,
            });
        }
        let mut c = Cluster {
            secret: uid("secret"),
            prefix: self.prefix,
            dir,
            nodes,
            relays,
            env: self.env,
        };
        for i in 0..c.nodes.len() {
            c.start_node(i).await;
        }
        c
    }
}

/// A running cluster of `tern` processes.
pub struct Cluster {
    pub prefix: String,
    pub dir: PathBuf,
    pub nodes: Vec<Node>,
    relays: Vec<Vec<Option<Relay>>>,
    secret: String,
    env: Vec<(String, String)>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill_now();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
            eprintln!("cluster test files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Cluster {
    /// A builder for `n` nodes named `{prefix}-n1` … (prefix unique per test).
    pub fn builder(prefix: &str, n: usize) -> Builder {
        Builder {
            prefix: prefix.to_string(),
            n,
            relayed: false,
            env: Vec::new(),
        }
    }

    /// `n` nodes with direct mesh links, all up.
    pub async fn start(prefix: &str, n: usize) -> Cluster {
        Cluster::builder(prefix, n).start().await
    }

    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    fn bound(&self, i: usize) -> Bound {
        self.nodes[i]
            .bound
            .unwrap_or_else(|| panic!("node {} never bound", self.nodes[i].name))
    }

    /// Node i's MQTT listener.
    pub fn mqtt(&self, i: usize) -> SocketAddr {
        self.bound(i).tcp
    }

    /// Node i's admin listener.
    pub fn admin(&self, i: usize) -> SocketAddr {
        self.bound(i).admin
    }

    /// Node i's mesh listener.
    pub fn mesh(&self, i: usize) -> SocketAddr {
        self.bound(i).cluster
    }

    /// Every node's log tail and the relays' state, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let _ = writeln!(
                out,
                "----- {} (pid {:?}, starts {}, last exit {:?}) log {} (tail):\n{}",
                n.name,
                n.pid(),
                n.starts,
                n.last_exit,
                n.log.display(),
                tail(&n.log, 40)
            );
        }
        for r in self.relays.iter().flatten().flatten() {
            let _ = writeln!(out, "relay {}", r.describe());
        }
        out
    }

    fn command(&self, i: usize) -> Command {
        let n = &self.nodes[i];
        let mut cmd = Command::new(tern_bin());
        // The test's own TERN_* environment must not leak into the nodes.
        for (k, _) in std::env::vars() {
            if k.starts_with("TERN_") {
                cmd.env_remove(k);
            }
        }
        let peers: Vec<String> = n.peers.iter().map(|p| p.to_string()).collect();
        let log_filter =
            std::env::var("CLUSTER_TEST_RUST_LOG").unwrap_or_else(|_| "info".to_string());
        cmd.arg("--bound-addrs-file")
            .arg(&n.addrs_file)
            .env("RUST_LOG", log_filter)
            .env("NO_COLOR", "1")
            .env("TERN_NODE__NAME", &n.name)
            .env("TERN_LISTENERS__TCP__BIND", n.tcp_bind.to_string())
            .env("TERN_ADMIN__BIND", n.admin_bind.to_string())
            .env("TERN_SHUTDOWN__GRACE_PERIOD_SECS", "2")
            .env("TERN_MQTT__MAX_OFFLINE_MESSAGES", "10000")
            .env("TERN_CLUSTER__ENABLED", "true")
            .env("TERN_CLUSTER__BIND", n.mesh_bind.to_string())
            .env("TERN_CLUSTER__PEERS", peers.join(","))
            .env("TERN_CLUSTER__SECRET", &self.secret)
            .env("TERN_CLUSTER__HEARTBEAT_MS", HEARTBEAT_MS.to_string())
            .env("TERN_CLUSTER__PEER_TIMEOUT_MS", PEER_TIMEOUT_MS.to_string());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Spawns node i and waits (15 s) for its bound-addresses file.
    async fn start_node(&mut self, i: usize) {
        if let Err(e) = self.start_node_checked(i).await {
            panic!(
                "node {}: {e}\nlog:\n{}",
                self.nodes[i].name,
                tail(&self.nodes[i].log, 40)
            );
        }
    }

    /// Panics (with logs) if a node that should run has exited.
    pub fn assert_alive(&mut self, nodes: &[usize]) {
        for &i in nodes {
            if !self.nodes[i].running() {
                panic!(
                    "node {} exited unexpectedly ({:?})",
                    self.nodes[i].name, self.nodes[i].last_exit
                );
            }
        }
    }

    /// `GET /api/v1/cluster/show` on node i, parsed.
    pub async fn show(&self, i: usize) -> Result<Value, String> {
        let (status, body) = http_get(self.admin(i), "/api/v1/cluster/show").await?;
        if status != 200 {
            return Err(format!("HTTP {status}: {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body}"))
    }

    /// Waits until, for every `i` in `viewers`, `cond(i, show_i)` holds.
    /// Panics at `within` with every viewer's last answer and the logs.
    pub async fn wait_views(
        &mut self,
        viewers: &[usize],
        within: Duration,
        what: &str,
        cond: impl Fn(usize, &Value) -> bool,
    ) {
        let deadline = Instant::now() + within;
        loop {
            self.assert_alive(viewers);
            let mut last = Vec::new();
            let mut ok = true;
            for &i in viewers {
                match self.show(i).await {
                    Ok(v) => {
                        if !cond(i, &v) {
                            ok = false;
                        }
                        last.push(format!("{}: {v}", self.nodes[i].name));
                    }
                    Err(e) => {
                        ok = false;
                        last.push(format!("{}: {e}", self.nodes[i].name));
                    }
                }
            }
            if ok {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {within:?} waiting until {what}; last /api/v1/cluster/show:\n{}",
                    last.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every running node lists every other running node `up`.
    pub async fn wait_all_up(&mut self, within: Duration) {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        let all: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .collect();
        let deadline = Instant::now() + within;
        loop {
            self.assert_alive(&all);
            let mut last = Vec::new();
            let mut ok = true;
            for &i in &all {
                match self.show(i).await {
                    Ok(v) => {
                        let me_ok = v.get("node").and_then(Value::as_str) == Some(&names[i]);
                        let peers_ok = all
                            .iter()
                            .filter(|&&j| j != i)
                            .all(|&j| peer_state(&v, &names[j]).as_deref() == Some("up"));
                        ok &= me_ok && peers_ok;
                        last.push(format!("{}: {v}", names[i]));
                    }
                    Err(e) => {
                        ok = false;
                        last.push(format!("{}: {e}", names[i]));
                    }
                }
            }
            if ok {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "cluster {} not fully up after {within:?} (every node should list every \
                     other node as \"up\"); last /api/v1/cluster/show:\n{}",
                    self.prefix,
                    last.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until each of `viewers` reports `peer` in `state`.
    pub async fn wait_peer_state(
        &mut self,
        viewers: &[usize],
        peer: usize,
        state: &str,
        within: Duration,
    ) {
        let peer_name = self.nodes[peer].name.clone();
        let what = format!("{peer_name} is {state:?} in the view of {viewers:?}");
        self.wait_views(viewers, within, &what, |_, v| {
            peer_state(v, &peer_name).as_deref() == Some(state)
        })
        .await;
    }

    /// `kill -9` node i and reap it.
    pub fn kill9(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let mut c = n
            .child
            .take()
            .unwrap_or_else(|| panic!("{} is not running", n.name));
        c.kill().expect("kill -9");
        n.last_exit = Some(c.wait().expect("reap"));
    }

    /// `kill -TERM` node i; waits up to `within` for it to exit.
    pub async fn sigterm(&mut self, i: usize, within: Duration) -> ExitStatus {
        let pid = self.nodes[i]
            .pid()
            .unwrap_or_else(|| panic!("{} is not running", self.nodes[i].name));
        let st = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(st.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + within;
        loop {
            if !self.nodes[i].running() {
                return self.nodes[i].last_exit.expect("exit status");
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not exit within {within:?} of SIGTERM",
                    self.nodes[i].name
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts node i again: same name, same MQTT, admin and mesh ports.
    pub async fn restart(&mut self, i: usize) {
        assert!(
            !self.nodes[i].running(),
            "{} is still running",
            self.nodes[i].name
        );
        // The old ports may linger briefly; retry the start a few times.
        let mut tries = 0;
        loop {
            tries += 1;
            match self.start_node_checked(i).await {
                Ok(()) => return,
                Err(e) if tries < 5 => {
                    eprintln!("restart of {} failed ({e}); retrying", self.nodes[i].name);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("restart of {} failed: {e}", self.nodes[i].name),
            }
        }
    }

    /// Spawns node i and waits (15 s) for its bound-addresses file;
    /// an exit before binding is an error.
    async fn start_node_checked(&mut self, i: usize) -> Result<(), String> {
        let _ = std::fs::remove_file(&self.nodes[i].addrs_file);
        let mut cmd = self.command(i);
        let n = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .expect("open node log");
        use std::io::Write;
        let mut header = log.try_clone().expect("clone log handle");
        let _ = writeln!(
            header,
            "===== test harness: start #{} of {} (tcp {}, admin {}, mesh {}, peers {:?})",
            n.starts + 1,
            n.name,
            n.tcp_bind,
            n.admin_bind,
            n.mesh_bind,
            n.peers
        );
        cmd.stdout(Stdio::from(log.try_clone().expect("clone log handle")))
            .stderr(Stdio::from(log));
        n.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", tern_bin())),
        );
        n.starts += 1;
        n.bound = None;
        let deadline = Instant::now() + Duration::from_secs(15);
        let text = loop {
            if let Ok(text) = std::fs::read_to_string(&self.nodes[i].addrs_file) {
                break text;
            }
            if !self.nodes[i].running() {
                return Err(format!(
                    "exited ({:?}) before writing its bound addresses",
                    self.nodes[i].last_exit
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "did not write {} within 15 s",
                    self.nodes[i].addrs_file.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("bound-addrs file {text:?} is not JSON: {e}"))?;
        let addr = |k: &str| -> Option<SocketAddr> { v.get(k)?.as_str()?.parse().ok() };
        let (Some(tcp), Some(admin)) = (addr("tcp"), addr("admin")) else {
            return Err(format!("bound-addrs file lacks tcp/admin: {text}"));
        };
        let Some(cluster) = addr("cluster") else {
            return Err(format!(
                "bound-addrs file has no \"cluster\" address (is the cluster implemented \
                 and enabled?): {text}"
            ));
        };
        let n = &mut self.nodes[i];
        n.bound = Some(Bound {
            tcp,
            admin,
            cluster,
        });
        // A restart reuses the same ports.
        n.tcp_bind = tcp;
        n.admin_bind = admin;
        n.mesh_bind = cluster;
        for row in &self.relays {
            if let Some(Some(r)) = row.get(i) {
                r.set_target(cluster);
            }
        }
        Ok(())
    }

    fn relay(&self, i: usize, j: usize) -> &Relay {
        self.relays
            .get(i)
            .and_then(|r| r.get(j))
            .and_then(Option::as_ref)
            .expect("cut/heal need a relayed cluster (Cluster::builder(..).relayed())")
    }

    /// Where node i dials node j (its relay), in a relayed cluster.
    pub fn relay_addr(&self, i: usize, j: usize) -> SocketAddr {
        self.relay(i, j).addr
    }

    /// Panics unless every node reaches every peer through the relays
    /// (the peer addresses in `/api/v1/cluster/show` are relay addresses):
    /// links that bypass the relays cannot be cut.
    pub async fn assert_links_through_relays(&self) {
        for i in 0..self.nodes.len() {
            let v = self.show(i).await.expect("cluster show");
            for p in v["peers"].as_array().cloned().unwrap_or_default() {
                let name = p["node"].as_str().unwrap_or("?");
                let Some(j) = self.nodes.iter().position(|n| n.name == name) else {
                    continue;
                };
                let via = self.relay_addr(i, j);
                let addr = p["address"].as_str().unwrap_or("?");
                assert_eq!(
                    addr,
                    via.to_string(),
                    "{} reaches {name} at {addr}, not through its relay {via} (configured in \
                     cluster.peers): the mesh dials addresses it learnt from peers (their \
                     bound mesh address) instead of the configured peer address, so a \
                     partition made by cutting the relays cannot take effect. Full view: {v}",
                    self.nodes[i].name
                );
            }
        }
    }

    /// Cuts both directions between nodes i and j.
    pub fn cut(&self, i: usize, j: usize) {
        self.relay(i, j).cut();
        self.relay(j, i).cut();
    }

    /// Heals both directions between nodes i and j.
    pub fn heal(&self, i: usize, j: usize) {
        self.relay(i, j).heal();
        self.relay(j, i).heal();
    }

    /// Cuts node i off from every other node.
    pub fn isolate(&self, i: usize) {
        for j in 0..self.nodes.len() {
            if j != i {
                self.cut(i, j);
            }
        }
    }

    /// Heals every link.
    pub fn heal_all(&self) {
        for r in self.relays.iter().flatten().flatten() {
            r.heal();
        }
    }

    /// A client connected to node i.
    pub async fn client(&self, i: usize, id: &str, opts: &Opts) -> Client {
        Client::connect(self.mqtt(i), &self.nodes[i].name, id, opts).await
    }

    /// A v5 clean-start client on node i.
    pub async fn v5(&self, i: usize, id: &str) -> Client {
        self.client(i, id, &Opts::v5()).await
    }
}

/// Publishes `probe-N` (QoS 0) to `topic` through `publisher` every 100 ms
/// until `subscriber` receives one, within `within`: proves the route from
/// the publisher's node to the subscriber exists. Non-probe messages the
/// subscriber gets meanwhile are returned.
pub async fn await_route(
    publisher: &mut Client,
    subscriber: &mut Client,
    topic: &str,
    within: Duration,
) -> Vec<Msg> {
    let deadline = Instant::now() + within;
    let mut other = Vec::new();
    let mut k = 0u32;
    loop {
        k += 1;
        publisher
            .publish(topic, format!("probe-{k}").as_bytes(), 0)
            .await;
        let step = Instant::now() + Duration::from_millis(100);
        while let Some(m) = subscriber
            .recv(step.saturating_duration_since(Instant::now()))
            .await
        {
            if is_probe(&m) {
                return other;
            }
            other.push(m);
        }
        if let Some(g) = publisher.gone() {
            panic!(
                "publisher {}@{} disconnected while probing {topic}: {g:?}",
                publisher.id, publisher.node
            );
        }
        if Instant::now() >= deadline {
            let sub_state = subscriber.gone();
            panic!(
                "no route: {} probes to {topic} published on {} never reached {} on {} within \
                 {within:?} (subscriber connection: {:?})",
                k, publisher.node, subscriber.id, subscriber.node, sub_state
            );
        }
    }
}

/// Whether a message is one of [`await_route`]'s probes.
pub fn is_probe(m: &Msg) -> bool {
    m.payload.starts_with(b"probe-")
}
