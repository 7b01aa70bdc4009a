//! Shared helpers for the end-to-end tests: an in-process server, raw and
//! rumqttc clients, bounded waits, and a tiny HTTP client for the admin API.
#![allow(dead_code)]

pub mod node;
pub mod raw;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tern_broker::config::Config;
use tern_broker::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[allow(unused_imports)]
pub use raw::{login, Connect, Packet, Props, Publish, Raw, Recv, RxPublish, Will, T};

/// A unique client id / topic component.
pub fn uid(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// An in-process broker on 127.0.0.1, ephemeral ports. Cancelled on drop.
pub struct TestServer {
    server: Option<Server>,
    /// The plain MQTT listener.
    pub addr: SocketAddr,
    /// The admin HTTP listener, if enabled.
    pub admin: Option<SocketAddr>,
    /// The TLS listener, if enabled.
    pub tls: Option<SocketAddr>,
}

impl TestServer {
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server still running")
    }
    /// Graceful shutdown, bounded.
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(20), s.shutdown())
                .await
                .expect("server shutdown timed out")
                .expect("server shutdown failed");
        }
    }
    pub fn admin(&self) -> SocketAddr {
        self.admin.expect("admin listener enabled")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = &self.server {
            s.shutdown_token().cancel();
        }
    }
}

/// The config every test starts from: TCP and admin on 127.0.0.1:0, no TLS.
pub fn test_config() -> Config {
    let mut c = Config::default();
    c.node.name = "test".into();
    c.listeners.tcp.enabled = true;
    c.listeners.tcp.bind = "127.0.0.1:0".parse().expect("addr");
    c.listeners.tls.enabled = false;
    c.admin.enabled = true;
    c.admin.bind = "127.0.0.1:0".parse().expect("addr");
    c.shutdown.grace_period_secs = 2;
    c
}

/// Starts a broker with [`test_config`] adjusted by `f`.
pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestServer {
    let mut c = test_config();
    f(&mut c);
    let server = tokio::time::timeout(Duration::from_secs(10), Server::start(c))
        .await
        .expect("Server::start timed out")
        .expect("Server::start failed");
    let addr = server.tcp_addr().expect("tcp listener bound");
    let admin = server.admin_addr();
    let tls = server.tls_addr();
    TestServer {
        server: Some(server),
        addr,
        admin,
        tls,
    }
}

/// Starts a broker with the test defaults.
pub async fn start() -> TestServer {
    start_with(|_| {}).await
}

/// A PROXY protocol v2 header (PROXY, TCP over IPv4) naming `src` as the
/// client's address, towards 10.0.0.1:1883.
pub fn proxy_v2_header(src: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(src) = src else {
        panic!("an IPv4 source address")
    };
    let mut body = src.ip().octets().to_vec();
    body.extend_from_slice(&[10, 0, 0, 1]);
    body.extend_from_slice(&src.port().to_be_bytes());
    body.extend_from_slice(&1883u16.to_be_bytes());
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11]);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(&body);
    h
}

/// Polls `cond` every 20 ms until it is true; panics with `what` at `within`.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Synchronous-condition variant of [`wait_until`].
pub async fn wait_until_sync(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    wait_until(within, what, || std::future::ready(cond())).await
}

/// A minimal HTTP/1.1 GET: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to admin");
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .expect("write HTTP request");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read HTTP response");
        let text = String::from_utf8_lossy(&buf).to_string();
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        (status, body)
    };
    tokio::time::timeout(T, fut)
        .await
        .expect("HTTP GET timed out")
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

/// The value of a Prometheus metric (`name` or `name_total`, summed over
/// label sets), if present.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let base = series.split('{').next().unwrap_or(series);
        if base == name || base == format!("{name}_total") {
            if let Ok(v) = value.trim().parse::<f64>() {
                *found.get_or_insert(0.0) += v;
            }
        }
    }
    found
}

/// Scrapes /metrics and returns the metric's value (panics if absent).
pub async fn scrape(admin: SocketAddr, name: &str) -> f64 {
    let (status, body) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200, "GET /metrics");
    metric(&body, name).unwrap_or_else(|| panic!("metric {name} missing from /metrics:\n{body}"))
}

// ---------------------------------------------------------------- rumqttc

/// A rumqttc 3.1.1 client whose event loop runs in a task.
pub struct V4 {
    pub client: rumqttc::AsyncClient,
    rx: mpsc::UnboundedReceiver<Result<rumqttc::Packet, String>>,
    stash: Vec<rumqttc::Packet>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for V4 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A connected rumqttc v4 client; `f` adjusts the options.
pub async fn v4_client(
    addr: SocketAddr,
    id: &str,
    f: impl FnOnce(&mut rumqttc::MqttOptions),
) -> V4 {
    let mut o = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    f(&mut o);
    v4_with_options(o).await
}

pub async fn v4_with_options(o: rumqttc::MqttOptions) -> V4 {
    let (client, mut el) = rumqttc::AsyncClient::new(o, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(p)) => {
                    if tx.send(Ok(p)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
        }
    });
    let mut c = V4 {
        client,
        rx,
        stash: Vec::new(),
        task,
    };
    c.wait("CONNACK", |p| matches!(p, rumqttc::Packet::ConnAck(_)))
        .await;
    c
}

impl V4 {
    async fn wait(
        &mut self,
        what: &str,
        pred: impl Fn(&rumqttc::Packet) -> bool,
    ) -> rumqttc::Packet {
        let deadline = Instant::now() + T;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => panic!("rumqttc v4: no {what} within {T:?}"),
                Ok(None) => panic!("rumqttc v4: event loop ended waiting for {what}"),
                Ok(Some(Err(e))) => panic!("rumqttc v4: connection error waiting for {what}: {e}"),
                Ok(Some(Ok(p))) if pred(&p) => return p,
                Ok(Some(Ok(p))) => self.stash.push(p),
            }
        }
    }
    pub async fn subscribe(&mut self, filter: &str, qos: rumqttc::QoS) {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("rumqttc subscribe");
        let p = self
            .wait("SUBACK", |p| matches!(p, rumqttc::Packet::SubAck(_)))
            .await;
        if let rumqttc::Packet::SubAck(s) = p {
            assert!(
                s.return_codes
                    .iter()
                    .all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure)),
                "subscription to {filter} refused"
            );
        }
    }
    pub async fn publish(&mut self, topic: &str, payload: &[u8], qos: rumqttc::QoS, retain: bool) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .expect("rumqttc publish");
    }
    /// Next incoming PUBLISH within [`T`].
    pub async fn recv(&mut self) -> rumqttc::Publish {
        if let Some(i) = self
            .stash
            .iter()
            .position(|p| matches!(p, rumqttc::Packet::Publish(_)))
        {
            if let rumqttc::Packet::Publish(p) = self.stash.remove(i) {
                return p;
            }
        }
        match self
            .wait("PUBLISH", |p| matches!(p, rumqttc::Packet::Publish(_)))
            .await
        {
            rumqttc::Packet::Publish(p) => p,
            _ => unreachable!(),
        }
    }
}

/// A rumqttc 5.0 client whose event loop runs in a task.
pub struct V5 {
    pub client: rumqttc::v5::AsyncClient,
    rx: mpsc::UnboundedReceiver<Result<rumqttc::v5::mqttbytes::v5::Packet, String>>,
    stash: Vec<rumqttc::v5::mqttbytes::v5::Packet>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for V5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A connected rumqttc v5 client; `f` adjusts the options.
pub async fn v5_client(
    addr: SocketAddr,
    id: &str,
    f: impl FnOnce(&mut rumqttc::v5::MqttOptions),
) -> V5 {
    let mut o = rumqttc::v5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    f(&mut o);
    v5_with_options(o).await
}

pub async fn v5_with_options(o: rumqttc::v5::MqttOptions) -> V5 {
    use rumqttc::v5::{mqttbytes::v5::Packet as P, Event};
    let (client, mut el) = rumqttc::v5::AsyncClient::new(o, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(p)) => {
                    if tx.send(Ok(p)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
        }
    });
    let mut c = V5 {
        client,
        rx,
        stash: Vec::new(),
        task,
    };
    let ack = c.wait("CONNACK", |p| matches!(p, P::ConnAck(_))).await;
    if let P::ConnAck(a) = ack {
        assert_eq!(
            a.code,
            rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success,
            "rumqttc v5 CONNACK"
        );
    }
    c
}

impl V5 {
    async fn wait(
        &mut self,
        what: &str,
        pred: impl Fn(&rumqttc::v5::mqttbytes::v5::Packet) -> bool,
    ) -> rumqttc::v5::mqttbytes::v5::Packet {
        let deadline = Instant::now() + T;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => panic!("rumqttc v5: no {what} within {T:?}"),
                Ok(None) => panic!("rumqttc v5: event loop ended waiting for {what}"),
                Ok(Some(Err(e))) => panic!("rumqttc v5: connection error waiting for {what}: {e}"),
                Ok(Some(Ok(p))) if pred(&p) => return p,
                Ok(Some(Ok(p))) => self.stash.push(p),
            }
        }
    }
    pub async fn subscribe(&mut self, filter: &str, qos: rumqttc::v5::mqttbytes::QoS) {
        use rumqttc::v5::mqttbytes::v5::Packet as P;
        self.client
            .subscribe(filter, qos)
            .await
            .expect("rumqttc v5 subscribe");
        let p = self.wait("SUBACK", |p| matches!(p, P::SubAck(_))).await;
        if let P::SubAck(s) = p {
            assert!(
                s.return_codes.iter().all(|c| matches!(
                    c,
                    rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)
                )),
                "subscription to {filter} refused: {:?}",
                s.return_codes
            );
        }
    }
    pub async fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: rumqttc::v5::mqttbytes::QoS,
        retain: bool,
    ) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .expect("rumqttc v5 publish");
    }
    /// Next incoming PUBLISH within [`T`].
    pub async fn recv(&mut self) -> rumqttc::v5::mqttbytes::v5::Publish {
        use rumqttc::v5::mqttbytes::v5::Packet as P;
        if let Some(i) = self.stash.iter().position(|p| matches!(p, P::Publish(_))) {
            if let P::Publish(p) = self.stash.remove(i) {
                return p;
            }
        }
        match self.wait("PUBLISH", |p| matches!(p, P::Publish(_))).await {
            P::Publish(p) => p,
            _ => unreachable!(),
        }
    }
}

/// A connected subscriber that can prove the broker still works: it
/// publishes to its own topic and must get the message back.
pub struct Witness {
    raw: Raw,
    topic: String,
    n: u32,
    addr: SocketAddr,
}

impl Witness {
    pub async fn new(addr: SocketAddr) -> Witness {
        let id = uid("witness");
        let mut raw = Raw::v5(addr, &id).await;
        let topic = format!("witness/{id}");
        raw.subscribe(&topic, 1).await;
        Witness {
            raw,
            topic,
            n: 0,
            addr,
        }
    }
    /// Publish/subscribe round trip; panics if the broker no longer serves.
    pub async fn round_trip(&mut self) {
        self.n += 1;
        let payload = format!("alive-{}", self.n);
        self.raw.publish(&self.topic, payload.as_bytes(), 1).await;
        let got = self.raw.next_publish().await;
        assert_eq!(got.payload, payload.as_bytes(), "witness round trip");
        // And a brand-new connection is still accepted.
        let fresh = Raw::v5(self.addr, &uid("fresh")).await;
        fresh.disconnect().await;
    }
}
