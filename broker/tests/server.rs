//! `Server` end to end: real listeners on port 0, the real connection
//! handler, raw MQTT bytes.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tern_broker::config::Config;
use tern_broker::server::{Server, ServerError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(5);
/// MQTT 3.1.1 CONNECT, clean session, keep-alive 60, client id "a".
const CONNECT_311: &[u8] = b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01a";
/// MQTT 5.0 CONNECT, clean start, keep-alive 60, no properties, client id "b".
const CONNECT_5: &[u8] = b"\x10\x0e\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x01b";

fn config() -> Config {
    let mut c = Config::default();
    c.listeners.tcp.bind = "127.0.0.1:0".parse().expect("addr");
    c.admin.bind = "127.0.0.1:0".parse().expect("addr");
    c.shutdown.grace_period_secs = 2;
    c
}

/// Reads one MQTT packet: (first header byte, body).
async fn read_packet<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<(u8, Vec<u8>)> {
    let first = s.read_u8().await?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let b = s.read_u8().await?;
        len |= usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    s.read_exact(&mut body).await?;
    Ok((first, body))
}

/// Sends CONNECT and expects a successful CONNACK.
async fn connect<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, connect: &[u8]) {
    s.write_all(connect).await.expect("write CONNECT");
    let (header, body) = tokio::time::timeout(DEADLINE, read_packet(s))
        .await
        .expect("CONNACK in time")
        .expect("CONNACK");
    assert_eq!(header, 0x20, "expected CONNACK");
    assert_eq!(body.get(1), Some(&0), "CONNACK reason code");
}

/// Asserts the peer closes the connection without sending anything.
async fn expect_closed(s: &mut TcpStream) {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection not closed within {DEADLINE:?}");
    assert!(buf.is_empty(), "unexpected bytes: {buf:?}");
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect admin");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = String::new();
    tokio::time::timeout(DEADLINE, s.read_to_string(&mut out))
        .await
        .expect("admin reply in time")
        .expect("read");
    out
}

#[tokio::test]
async fn start_binds_tcp_and_admin_on_port_0() {
    let server = Server::start(config()).await.expect("start");
    let tcp = server.tcp_addr().expect("tcp bound");
    let admin = server.admin_addr().expect("admin bound");
    assert_ne!(tcp.port(), 0);
    assert_ne!(admin.port(), 0);
    assert_eq!(server.tls_addr(), None);

    let mut client = TcpStream::connect(tcp).await.expect("connect");
    connect(&mut client, CONNECT_311).await;
    let health = http_get(admin, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with(r#"{"status":"ok"}"#), "{health}");
    let metrics = http_get(admin, "/metrics").await;
    assert!(metrics.contains("tern_connections "), "{metrics}");

    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown in time")
        .expect("shutdown");
}

#[tokio::test]
async fn connection_cap_closes_the_extra_connection() {
    let mut c = config();
    c.listeners.tcp.max_connections = 1;
    let server = Server::start(c).await.expect("start");
    let tcp = server.tcp_addr().expect("tcp bound");
    let mut first = TcpStream::connect(tcp).await.expect("connect");
    connect(&mut first, CONNECT_311).await;

    let mut second = TcpStream::connect(tcp).await.expect("connect");
    expect_closed(&mut second).await;
    assert_eq!(server.metrics().connections_refused.get(), 1);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn shutdown_sends_v5_clients_disconnect_0x8b() {
    let server = Server::start(config()).await.expect("start");
    let mut client = TcpStream::connect(server.tcp_addr().expect("tcp"))
        .await
        .expect("connect");
    connect(&mut client, CONNECT_5).await;
    let token = server.shutdown_token();
    let stopping = tokio::spawn(server.shutdown());
    let (header, body) = tokio::time::timeout(DEADLINE, read_packet(&mut client))
        .await
        .expect("DISCONNECT in time")
        .expect("DISCONNECT");
    assert_eq!(header, 0xE0, "expected DISCONNECT");
    assert_eq!(body.first(), Some(&0x8B), "reason: server shutting down");
    assert!(token.is_cancelled());
    tokio::time::timeout(DEADLINE, stopping)
        .await
        .expect("shutdown within the grace period")
        .expect("no panic")
        .expect("shutdown ok");
}

/// A CA-signed certificate for `localhost`, written as PEM files.
struct Pki {
    _dir: tempfile::TempDir,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    ca_der: Vec<u8>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("cert");
    let dir = tempfile::tempdir().expect("dir");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    Pki {
        _dir: dir,
        cert: cert_path,
        key: key_path,
        ca_der: ca.der().to_vec(),
    }
}

#[tokio::test]
async fn tls_listener_serves_mqtt_and_drops_plain_tcp() {
    let pki = pki();
    let mut c = config();
    c.listeners.tls.enabled = true;
    c.listeners.tls.bind = "127.0.0.1:0".parse().expect("addr");
    c.listeners.tls.cert = Some(pki.cert.clone());
    c.listeners.tls.key = Some(pki.key.clone());
    let server = Server::start(c).await.expect("start");
    let tls_addr = server.tls_addr().expect("tls bound");

    // Plain MQTT to the TLS port: closed without a reply.
    let mut plain = TcpStream::connect(tls_addr).await.expect("connect");
    plain.write_all(CONNECT_311).await.expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(DEADLINE, plain.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "plain client not closed in time");
    assert!(!buf.starts_with(&[0x20]), "plain client got a CONNACK");

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki.ca_der.clone()))
        .expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = TcpStream::connect(tls_addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    connect(&mut tls, CONNECT_311).await;

    let health = http_get(server.admin_addr().expect("admin"), "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn start_errors_are_typed() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut c = config();
    c.listeners.tcp.bind = taken.local_addr().expect("addr");
    match Server::start(c).await {
        Err(ServerError::Bind { listener, .. }) => assert_eq!(listener, "tcp"),
        other => panic!("expected a bind error, got {:?}", other.err()),
    }

    let mut c = config();
    c.mqtt.receive_maximum = 0;
    assert!(matches!(
        Server::start(c).await.err(),
        Some(ServerError::Config(_))
    ));

    let dir = tempfile::tempdir().expect("dir");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let mut c = config();
    c.listeners.tls.enabled = true;
    c.listeners.tls.bind = "127.0.0.1:0".parse().expect("addr");
    c.listeners.tls.cert = Some(garbage.clone());
    c.listeners.tls.key = Some(garbage);
    let err = Server::start(c).await.err().expect("TLS error");
    assert!(matches!(err, ServerError::Tls(_)), "{err}");
    assert!(err.to_string().contains("garbage.pem"), "{err}");
}
