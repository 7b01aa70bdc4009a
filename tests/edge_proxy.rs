//! PROXY protocol: v1 and v2 headers before CONNECT replace the peer
//! address (seen in the connection's log line), a v2 SSL TLV's CN stands in
//! for a client certificate, and a malformed, missing or late header closes
//! the connection and is counted.
mod common;

use common::*;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Every log line of this test binary (debug for the broker).
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("tern_broker=debug")
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        buf
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A log line containing every one of `parts`, within the deadline.
async fn logged(parts: &[&str]) {
    let buf = logs();
    wait_until_sync(T, &format!("a log line with {parts:?}"), || {
        let text = String::from_utf8_lossy(&buf.lock().expect("log buffer")).to_string();
        text.lines().any(|l| parts.iter().all(|p| l.contains(p)))
    })
    .await;
}

async fn proxied(f: impl FnOnce(&mut tern_broker::config::Config)) -> TestServer {
    logs();
    start_with(|c| {
        c.listeners.tcp.proxy_protocol = true;
        f(c);
    })
    .await
}

/// A v2 PROXY/TCP4 header from 198.51.100.9:5555, with an SSL TLV naming
/// client certificate CN `cn` if given.
fn v2_header(cn: Option<&str>) -> Vec<u8> {
    let mut body = vec![198, 51, 100, 9, 10, 0, 0, 1];
    body.extend_from_slice(&5555u16.to_be_bytes());
    body.extend_from_slice(&1883u16.to_be_bytes());
    if let Some(cn) = cn {
        let mut ssl = vec![0x07, 0, 0, 0, 0];
        ssl.push(0x21);
        ssl.extend_from_slice(&7u16.to_be_bytes());
        ssl.extend_from_slice(b"TLSv1.3");
        ssl.push(0x22);
        ssl.extend_from_slice(&(cn.len() as u16).to_be_bytes());
        ssl.extend_from_slice(cn.as_bytes());
        body.push(0x20);
        body.extend_from_slice(&(ssl.len() as u16).to_be_bytes());
        body.extend_from_slice(&ssl);
    }
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11]);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(&body);
    h
}

async fn connect_after(s: &TestServer, header: &[u8], c: Connect) -> (Raw, common::raw::ConnAck) {
    let mut raw = Raw::tcp(s.addr).await;
    raw.send(header).await;
    let ack = raw.handshake(c).await;
    (raw, ack)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_header_replaces_the_peer_address() {
    let s = proxied(|_| {}).await;
    let id = uid("pp1");
    let header = b"PROXY TCP4 203.0.113.7 10.0.0.1 4242 1883\r\n";
    let (mut c, ack) = connect_after(&s, header, Connect::v5(&id)).await;
    assert_eq!(ack.code, 0);
    c.ping().await;
    logged(&["peer=203.0.113.7:4242", &id, "connected"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_header_replaces_the_peer_and_its_ssl_cn_authenticates() {
    let s = proxied(|c| {
        c.auth.allow_anonymous = false;
        c.listeners.tcp.proxy_protocol_use_cn_as_username = true;
    })
    .await;
    let id = uid("pp2");
    let (mut c, ack) = connect_after(&s, &v2_header(Some("dev-cn")), Connect::v5(&id)).await;
    assert_eq!(
        ack.code, 0,
        "the TLV's certificate CN must stand in for credentials"
    );
    c.ping().await;
    logged(&["peer=198.51.100.9:5555", &id, "connected"]).await;
    // Without the SSL TLV the anonymous client is refused.
    let (_c, ack) = connect_after(&s, &v2_header(None), Connect::v5(&uid("pp2"))).await;
    assert_ne!(ack.code, 0, "no CN, no credentials: refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_ssl_cn_is_ignored_unless_enabled() {
    let s = proxied(|c| c.auth.allow_anonymous = false).await;
    let (_c, ack) = connect_after(&s, &v2_header(Some("dev-cn")), Connect::v5(&uid("pp3"))).await;
    assert_ne!(ack.code, 0, "proxy_protocol_use_cn_as_username is off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_missing_and_late_headers_close_and_count() {
    let s = proxied(|c| c.limits.proxy_header_timeout_secs = 1).await;
    let errors = || async { scrape(s.admin(), "tern_proxy_protocol_errors_total").await };
    let before = errors().await;

    let mut bad = Raw::tcp(s.addr).await;
    let _ = bad.try_send(b"PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n").await;
    let _ = bad.try_send(&Connect::v5(&uid("bad")).encode()).await;
    let seen = bad.expect_closed(T).await;
    assert!(
        seen.is_empty(),
        "malformed header: nothing may be answered: {seen:?}"
    );

    // No header where one is required: CONNECT straight away.
    let mut none = Raw::tcp(s.addr).await;
    let _ = none.try_send(&Connect::v5(&uid("none")).encode()).await;
    let seen = none.expect_closed(T).await;
    assert!(seen.is_empty(), "missing header: no CONNACK: {seen:?}");

    // Silence: closed after the header timeout.
    let mut late = Raw::tcp(s.addr).await;
    let started = tokio::time::Instant::now();
    late.expect_closed(Duration::from_secs(4)).await;
    assert!(started.elapsed() >= Duration::from_millis(900));

    wait_until(T, "three PROXY errors counted", || async {
        errors().await >= before + 3.0
    })
    .await;
    logged(&["PROXY header refused"]).await;
}
