//! Accept-loop tests with a fake protocol handler (no broker needed).
use super::*;
use crate::tls::test_certs::{self, TestPki};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

const DEADLINE: Duration = Duration::from_secs(5);

/// Greets with "hello", then reads until EOF; on shutdown (if it obeys)
/// writes "bye" and closes, like a DISCONNECT 0x8B.
#[derive(Clone)]
struct Fake {
    seen: mpsc::UnboundedSender<ConnInfo>,
    obey_shutdown: bool,
}

impl Handler for Fake {
    fn handle<S>(
        &self,
        mut stream: S,
        info: ConnInfo,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + use<S>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (seen, obey) = (self.seen.clone(), self.obey_shutdown);
        async move {
            let _ = seen.send(info);
            if stream.write_all(b"hello").await.is_err() || stream.flush().await.is_err() {
                return;
            }
            let mut buf = [0u8; 64];
            loop {
                tokio::select! {
                    _ = shutdown.cancelled(), if obey => {
                        let _ = stream.write_all(b"bye").await;
                        let _ = stream.shutdown().await;
                        return;
                    }
                    r = stream.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { return },
                }
            }
        }
    }
}

struct Harness {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<ConnInfo>,
    metrics: Metrics,
    health: Health,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    kill: CancellationToken,
    accept_loop: JoinHandle<()>,
}

async fn start(tls: Option<TlsAcceptor>, max_connections: usize, obey_shutdown: bool) -> Harness {
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let (tx, seen) = mpsc::unbounded_channel();
    let listener = Listener {
        kind: if tls.is_some() {
            ListenerKind::Tls
        } else {
            ListenerKind::Tcp
        },
        tls,
        max_connections,
        handler: Fake {
            seen: tx,
            obey_shutdown,
        },
        metrics: Metrics::default(),
        health: Health::default(),
        tracker: TaskTracker::new(),
        shutdown: CancellationToken::new(),
        kill: CancellationToken::new(),
        edge: Default::default(),
    };
    let (metrics, health, tracker) = (
        listener.metrics.clone(),
        listener.health.clone(),
        listener.tracker.clone(),
    );
    let (shutdown, kill) = (listener.shutdown.clone(), listener.kill.clone());
    let accept_loop = listener.spawn(socket);
    Harness {
        addr,
        seen,
        metrics,
        health,
        tracker,
        shutdown,
        kill,
        accept_loop,
    }
}

/// Reads until EOF (or a reset, which also means "closed"); panics after
/// the deadline. Returns the bytes read.
async fn read_to_close<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "connection not closed within {DEADLINE:?}");
    out
}

async fn expect_hello<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut buf = [0u8; 5];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut buf))
        .await
        .expect("greeting in time")
        .expect("greeting");
    assert_eq!(&buf, b"hello");
}

#[tokio::test]
async fn connection_cap_closes_excess_connections() {
    let mut h = start(None, 1, true).await;
    assert!(h.health.all_up());
    let mut first = TcpStream::connect(h.addr).await.expect("connect");
    expect_hello(&mut first).await;
    let info = h.seen.recv().await.expect("first served");
    assert_eq!(info.listener, ListenerKind::Tcp);
    assert_eq!(info.cert_cn, None);

    let mut second = TcpStream::connect(h.addr).await.expect("connect");
    assert!(read_to_close(&mut second).await.is_empty(), "over the cap");
    assert_eq!(h.metrics.connections_refused.get(), 1);

    // Closing the first connection frees its slot.
    drop(first);
    let mut third = None;
    for _ in 0..50 {
        let mut s = TcpStream::connect(h.addr).await.expect("connect");
        let mut buf = [0u8; 5];
        if let Ok(Ok(_)) = tokio::time::timeout(DEADLINE, s.read_exact(&mut buf)).await {
            third = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(third.is_some(), "slot was never released");
}

fn tls_acceptor(pki: &TestPki, require_client_cert: bool) -> TlsAcceptor {
    let cfg = crate::config::TlsListenerConfig {
        enabled: true,
        cert: Some(pki.cert.clone()),
        key: Some(pki.key.clone()),
        ca: Some(pki.ca.clone()),
        require_client_cert,
        ..Default::default()
    };
    crate::tls::acceptor(&cfg).expect("acceptor")
}

fn connector(pki: &TestPki, with_client_cert: bool) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki.ca_der.clone()))
        .expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = if with_client_cert {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.client_key_der.clone()));
        builder
            .with_client_auth_cert(vec![CertificateDer::from(pki.client_cert_der.clone())], key)
            .expect("client cert")
    } else {
        builder.with_no_client_auth()
    };
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await
}

#[tokio::test]
async fn tls_handshake_passes_client_cn() {
    let pki = test_certs::generate("device-7");
    let mut h = start(Some(tls_acceptor(&pki, true)), 10, true).await;
    let mut client = tls_connect(h.addr, &connector(&pki, true))
        .await
        .expect("handshake");
    expect_hello(&mut client).await;
    let info = h.seen.recv().await.expect("served");
    assert_eq!(info.listener, ListenerKind::Tls);
    assert_eq!(info.cert_cn.as_deref(), Some("device-7"));
}

#[tokio::test]
async fn tls_optional_client_cert_allows_anonymous() {
    let pki = test_certs::generate("device-8");
    let mut h = start(Some(tls_acceptor(&pki, false)), 10, true).await;
    let mut client = tls_connect(h.addr, &connector(&pki, false))
        .await
        .expect("handshake");
    expect_hello(&mut client).await;
    assert_eq!(h.seen.recv().await.expect("served").cert_cn, None);
}

#[tokio::test]
async fn tls_required_client_cert_rejects_anonymous() {
    let pki = test_certs::generate("device-9");
    let mut h = start(Some(tls_acceptor(&pki, true)), 10, true).await;
    // TLS 1.3 reports the rejection on the first read, not in connect().
    if let Ok(mut client) = tls_connect(h.addr, &connector(&pki, false)).await {
        let mut buf = [0u8; 5];
        let read = tokio::time::timeout(DEADLINE, client.read_exact(&mut buf)).await;
        assert!(matches!(read, Ok(Err(_))), "anonymous client was served");
    }
    assert!(
        h.seen.try_recv().is_err(),
        "handler ran without a client cert"
    );
}

#[tokio::test]
async fn plain_tcp_on_tls_port_is_closed_cleanly() {
    let pki = test_certs::generate("device-1");
    let mut h = start(Some(tls_acceptor(&pki, false)), 10, true).await;
    let mut plain = TcpStream::connect(h.addr).await.expect("connect");
    // An MQTT CONNECT header where a ClientHello should be.
    plain
        .write_all(b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04abcd")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(DEADLINE, plain.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "plain client not closed in time");
    assert!(!buf.starts_with(b"hello"), "plain client was served");
    assert!(
        h.seen.try_recv().is_err(),
        "handler ran for a failed handshake"
    );
    // The listener is unaffected.
    let mut client = tls_connect(h.addr, &connector(&pki, true))
        .await
        .expect("handshake");
    expect_hello(&mut client).await;
    assert!(h.health.all_up());
}

#[tokio::test]
async fn shutdown_stops_accepting_and_cancels_connections() {
    let mut h = start(None, 10, true).await;
    let mut client = TcpStream::connect(h.addr).await.expect("connect");
    expect_hello(&mut client).await;
    h.seen.recv().await.expect("served");

    h.shutdown.cancel();
    tokio::time::timeout(DEADLINE, h.accept_loop)
        .await
        .expect("accept loop stops")
        .expect("no panic");
    assert!(!h.health.all_up(), "listener still reported up");
    assert_eq!(read_to_close(&mut client).await, b"bye");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    assert_eq!(drain(&h.tracker, &h.kill, deadline).await, 0);
    assert!(!h.kill.is_cancelled(), "nothing needed aborting");
    assert!(TcpStream::connect(h.addr).await.is_err(), "still accepting");
}

#[tokio::test]
async fn drain_aborts_connections_after_grace() {
    let mut h = start(None, 10, false).await;
    let mut client = TcpStream::connect(h.addr).await.expect("connect");
    expect_hello(&mut client).await;
    h.seen.recv().await.expect("served");

    h.shutdown.cancel();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
    assert_eq!(drain(&h.tracker, &h.kill, deadline).await, 1);
    assert!(h.tracker.is_empty());
    assert!(read_to_close(&mut client).await.is_empty());
}

#[test]
fn log_limit_suppresses_bursts() {
    let mut limit = LogLimit::default();
    assert_eq!(limit.allow(), Some(0));
    assert_eq!(limit.allow(), None);
    assert_eq!(limit.allow(), None);
    limit.last = Some(Instant::now() - Duration::from_secs(2));
    assert_eq!(limit.allow(), Some(2));
}
