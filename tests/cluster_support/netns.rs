//! A cluster whose nodes live in their own network namespaces, joined by
//! veth pairs on a bridge in a hub namespace (10.77.0.0/24 exists only
//! inside these namespaces; the host's network is not touched).
//!
//! ```text
//!   ns n1: e1 10.77.0.1 ─┐
//!   ns n2: e2 10.77.0.2 ─┼─ ns hub: br0 (v1, v2, v3)
//!   ns n3: e3 10.77.0.3 ─┘
//! ```
//!
//! Cutting node i sets `v<i>` down in the hub: its packets are dropped,
//! whatever address a node dials. The test reaches each node's MQTT and
//! admin listeners (127.0.0.1 inside its namespace) through a forwarder
//! running in that namespace (this test binary re-executed with
//! [`FORWARD_ENV`]) that listens on a Unix socket, and a TCP listener on the
//! host's 127.0.0.1 that relays to that socket.

use super::{http_get, peer_state, tail, tern_bin, uid};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// `path=host:port,…`: the forwarder mode of the test binary.
pub const FORWARD_ENV: &str = "CLUSTER_NETNS_FORWARD";

const MQTT_PORT: u16 = 1883;
const ADMIN_PORT: u16 = 8888;
const MESH_PORT: u16 = 44053;

/// Why the netns test cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        })
        .unwrap_or_default();
    if uid != "0" {
        return Some(format!("not running as root (effective uid {uid:?})"));
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => return Some(format!("`ip -V` failed: {}", o.status)),
        Err(e) => return Some(format!("`ip` (iproute2) not available: {e}")),
    }
    // Root in an unprivileged container may still lack CAP_SYS_ADMIN.
    let probe = format!("tprobe{}", std::process::id());
    let out = Command::new("ip").args(["netns", "add", &probe]).output();
    let _ = Command::new("ip").args(["netns", "del", &probe]).output();
    match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`ip netns add` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("`ip netns add` failed: {e}")),
    }
}

/// Runs `ip args…`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The forwarder mode: for each `path=addr`, accept on the Unix socket
/// `path` and relay to TCP `addr`. Runs until killed.
pub async fn run_forwarder(spec: &str) {
    let mut tasks = Vec::new();
    for item in spec.split(',') {
        let (path, addr) = item.split_once('=').expect("path=addr");
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind forwarder socket");
        let addr: SocketAddr = addr.parse().expect("forward target");
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(addr).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Host 127.0.0.1:0 → the Unix socket `path`.
async fn host_listener(path: PathBuf) -> (SocketAddr, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = l.accept().await else {
                continue;
            };
            let path = path.clone();
            tokio::spawn(async move {
                if let Ok(mut out) = UnixStream::connect(&path).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    (addr, task)
}

struct NsNode {
    name: String,
    ns: String,
    child: Option<Child>,
    forwarder: Option<Child>,
    log: PathBuf,
    mqtt: SocketAddr,
    admin: SocketAddr,
}

/// Three (or `n`) nodes in network namespaces.
pub struct NetnsCluster {
    hub: String,
    nodes: Vec<NsNode>,
    dir: PathBuf,
    tasks: Vec<JoinHandle<()>>,
    namespaces: Vec<String>,
}

impl Drop for NetnsCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            for c in [n.child.take(), n.forwarder.take()].into_iter().flatten() {
                let mut c = c;
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for t in &self.tasks {
            t.abort();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if std::thread::panicking() {
            for n in &self.nodes {
                eprintln!("----- {} log (tail):\n{}", n.name, tail(&n.log, 40));
            }
            eprintln!("netns test files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl NetnsCluster {
    /// Creates the namespaces and starts `n` nodes; does not wait for the
    /// mesh.
    pub async fn start(prefix: &str, n: usize) -> NetnsCluster {
        let tag = format!("t{}{}", std::process::id() % 100_000, prefix);
        let dir = std::env::temp_dir().join(uid(&format!("tern-netns-{prefix}")));
        std::fs::create_dir_all(&dir).expect("create dir");
        let hub = format!("{tag}h");
        let mut c = NetnsCluster {
            hub: hub.clone(),
            nodes: Vec::new(),
            dir: dir.clone(),
            tasks: Vec::new(),
            namespaces: Vec::new(),
        };
        ip(&["netns", "add", &hub]);
        c.namespaces.push(hub.clone());
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        let secret = uid("secret");
        let peers_of = |i: usize| -> String {
            (1..=n)
                .filter(|&j| j != i)
                .map(|j| format!("10.77.0.{j}:{MESH_PORT}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        for i in 1..=n {
            let ns = format!("{tag}n{i}");
            ip(&["netns", "add", &ns]);
            c.namespaces.push(ns.clone());
            let (v, e) = (format!("v{i}"), format!("e{i}"));
            ip(&[
                "-n", &hub, "link", "add", &v, "type", "veth", "peer", "name", &e, "netns", &ns,
            ]);
            ip(&["-n", &hub, "link", "set", &v, "master", "br0"]);
            ip(&["-n", &hub, "link", "set", &v, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.77.0.{i}/24"),
                "dev",
                &e,
            ]);
            ip(&["-n", &ns, "link", "set", &e, "up"]);

            // The forwarder for MQTT and admin, inside the namespace.
            let mqtt_sock = dir.join(format!("n{i}-mqtt.sock"));
            let admin_sock = dir.join(format!("n{i}-admin.sock"));
            let spec = format!(
                "{}=127.0.0.1:{MQTT_PORT},{}=127.0.0.1:{ADMIN_PORT}",
                mqtt_sock.display(),
                admin_sock.display()
            );
            let me = std::env::current_exe().expect("current exe");
            let forwarder = Command::new("ip")
                .args(["netns", "exec", &ns])
                .arg(&me)
                .args(["--exact", "netns_forwarder_helper", "--nocapture"])
                .env(FORWARD_ENV, spec)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn forwarder");
            let (mqtt, t1) = host_listener(mqtt_sock.clone()).await;
            let (admin, t2) = host_listener(admin_sock.clone()).await;
            c.tasks.push(t1);
            c.tasks.push(t2);

            let name = format!("{prefix}-n{i}");
            let log = dir.join(format!("{name}.log"));
            let logf = std::fs::File::create(&log).expect("log file");
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &ns]).arg(tern_bin());
            for (k, _) in std::env::vars() {
                if k.starts_with("TERN_") {
                    cmd.env_remove(k);
                }
            }
            let child = cmd
                .arg("--bound-addrs-file")
                .arg(dir.join(format!("{name}.addrs.json")))
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .env("TERN_NODE__NAME", &name)
                .env(
                    "TERN_LISTENERS__TCP__BIND",
                    format!("127.0.0.1:{MQTT_PORT}"),
                )
                .env("TERN_ADMIN__BIND", format!("127.0.0.1:{ADMIN_PORT}"))
                .env("TERN_SHUTDOWN__GRACE_PERIOD_SECS", "2")
                .env("TERN_CLUSTER__ENABLED", "true")
                .env("TERN_CLUSTER__BIND", format!("10.77.0.{i}:{MESH_PORT}"))
                .env("TERN_CLUSTER__PEERS", peers_of(i))
                .env("TERN_CLUSTER__SECRET", &secret)
                .env(
                    "TERN_CLUSTER__HEARTBEAT_MS",
                    super::HEARTBEAT_MS.to_string(),
                )
                .env(
                    "TERN_CLUSTER__PEER_TIMEOUT_MS",
                    super::PEER_TIMEOUT_MS.to_string(),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::from(logf.try_clone().expect("log")))
                .stderr(Stdio::from(logf))
                .spawn()
                .expect("spawn tern in netns");
            c.nodes.push(NsNode {
                name,
                ns,
                child: Some(child),
                forwarder: Some(forwarder),
                log,
                mqtt,
                admin,
            });
            wait_file(&mqtt_sock, Duration::from_secs(10)).await;
            wait_file(&admin_sock, Duration::from_secs(10)).await;
            wait_file(
                &dir.join(format!("{}.addrs.json", c.nodes[i - 1].name)),
                Duration::from_secs(15),
            )
            .await;
        }
        c
    }

    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Node i's MQTT listener, as reachable from the test.
    pub fn mqtt(&self, i: usize) -> SocketAddr {
        self.nodes[i].mqtt
    }

    pub async fn show(&self, i: usize) -> Result<Value, String> {
        let (status, body) = http_get(self.nodes[i].admin, "/api/v1/cluster/show").await?;
        if status != 200 {
            return Err(format!("HTTP {status}: {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body}"))
    }

    /// Waits until each `(viewer, peer, state)` holds.
    pub async fn wait_states(&mut self, want: &[(usize, usize, &str)], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            for n in &mut self.nodes {
                if let Some(c) = &mut n.child {
                    if let Ok(Some(st)) = c.try_wait() {
                        panic!("node {} exited: {st}", n.name);
                    }
                }
            }
            let mut ok = true;
            let mut last = Vec::new();
            for &(v, p, state) in want {
                match self.show(v).await {
                    Ok(view) => {
                        ok &= peer_state(&view, self.name(p)).as_deref() == Some(state);
                        last.push(format!("{}: {view}", self.name(v)));
                    }
                    Err(e) => {
                        ok = false;
                        last.push(format!("{}: {e}", self.name(v)));
                    }
                }
            }
            if ok {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {within:?} waiting for {want:?} (viewer, peer, state); last \
                     views:\n{}",
                    last.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every node sees every other node up.
    pub async fn wait_all_up(&mut self, within: Duration) {
        let n = self.nodes.len();
        let want: Vec<(usize, usize, &str)> = (0..n)
            .flat_map(|v| (0..n).filter(move |&p| p != v).map(move |p| (v, p, "up")))
            .collect();
        self.wait_states(&want, within).await;
    }

    /// Drops every packet to and from node i (its bridge port goes down).
    pub fn isolate(&self, i: usize) {
        ip(&[
            "-n",
            &self.hub,
            "link",
            "set",
            &format!("v{}", i + 1),
            "down",
        ]);
    }

    /// Reconnects node i.
    pub fn reconnect(&self, i: usize) {
        ip(&["-n", &self.hub, "link", "set", &format!("v{}", i + 1), "up"]);
    }

    /// The namespace node i runs in.
    pub fn ns(&self, i: usize) -> &str {
        &self.nodes[i].ns
    }
}

async fn wait_file(p: &Path, within: Duration) {
    let deadline = Instant::now() + within;
    while std::fs::metadata(p).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {within:?}",
            p.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
