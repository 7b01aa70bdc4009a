//! MQTT over WebSocket: a raw tokio-tungstenite client on `/mqtt` with the
//! `mqtt` subprotocol; packets split across frames and several packets in
//! one frame; a large frame; wss with an rcgen CA; wrong path (404),
//! missing subprotocol (400) and text frames refused.
mod common;

use common::raw::{decode, subscribe};
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// A broker with the ws listener (and tcp, which the helpers expect).
async fn ws_server(f: impl FnOnce(&mut tern_broker::config::Config)) -> (TestServer, SocketAddr) {
    let s = start_with(|c| {
        c.listeners.ws.enabled = true;
        c.listeners.ws.bind = "127.0.0.1:0".parse().expect("addr");
        f(c);
    })
    .await;
    let ws = s.server().ws_addr().expect("ws listener bound");
    (s, ws)
}

fn request(
    url: &str,
    proto: Option<&str>,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = url.into_client_request().expect("request");
    if let Some(p) = proto {
        req.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(p).expect("header"),
        );
    }
    req
}

/// Reads binary messages until a whole MQTT packet is decoded.
struct Client<S> {
    ws: WebSocketStream<S>,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    async fn frame(&mut self, bytes: Vec<u8>) {
        tokio::time::timeout(T, self.ws.send(Message::binary(bytes)))
            .await
            .expect("send timed out")
            .expect("send");
    }

    /// One whole packet, as the test helpers decode it.
    async fn packet(&mut self) -> Packet {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            if let Some((first, body, used)) = split(&self.buf) {
                let p = decode(first, &body, true).expect("decodable packet");
                self.buf.drain(..used);
                return p;
            }
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("no packet in time")
                .expect("stream ended")
                .expect("read");
            match msg {
                Message::Binary(b) => self.buf.extend_from_slice(&b),
                Message::Close(_) => panic!("closed while waiting for a packet"),
                other => panic!("unexpected message {other:?}"),
            }
        }
    }
}

/// (first byte, body, bytes used) of the first whole packet in `b`.
fn split(b: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (mut len, mut mult, mut i) = (0usize, 1usize, 1usize);
    loop {
        let byte = *b.get(i)?;
        len += usize::from(byte & 0x7f) * mult;
        mult *= 128;
        i += 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let body = b.get(i..i + len)?;
    Some((b[0], body.to_vec(), i + len))
}

async fn mqtt_session<S: AsyncRead + AsyncWrite + Unpin>(ws: WebSocketStream<S>) {
    let mut c = Client {
        ws,
        buf: Vec::new(),
    };
    // CONNECT split across two frames.
    let connect = Connect::v5(&uid("ws")).encode();
    let (a, b) = connect.split_at(3);
    c.frame(a.to_vec()).await;
    c.frame(b.to_vec()).await;
    match c.packet().await {
        Packet::ConnAck { code: 0, .. } => {}
        other => panic!("expected CONNACK 0, got {other:?}"),
    }
    // SUBSCRIBE and two PUBLISHes in one frame.
    let topic = uid("ws/t");
    let mut batch = subscribe(true, 1, &[(topic.as_str(), 0)], &Props::new());
    batch.extend(Publish::new(&topic, b"one").encode(true));
    batch.extend(Publish::new(&topic, b"two").encode(true));
    c.frame(batch).await;
    assert!(matches!(c.packet().await, Packet::SubAck { pkid: 1, .. }));
    for want in [&b"one"[..], b"two"] {
        match c.packet().await {
            Packet::Publish(p) => assert_eq!(p.payload, want),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    // A large frame: one 300 KB PUBLISH, echoed back whole.
    let big = vec![0x5a; 300 * 1024];
    c.frame(Publish::new(&topic, &big).encode(true)).await;
    match c.packet().await {
        Packet::Publish(p) => assert!(p.payload == big, "large payload corrupted"),
        other => panic!("expected the large PUBLISH, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_round_trip_with_split_and_batched_frames() {
    let (_s, addr) = ws_server(|_| {}).await;
    let req = request(&format!("ws://{addr}/mqtt"), Some("mqtt"));
    let (ws, resp) = tokio::time::timeout(T, tokio_tungstenite::connect_async(req))
        .await
        .expect("upgrade timed out")
        .expect("upgrade");
    assert_eq!(
        resp.headers()
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .map(|v| v.as_bytes()),
        Some(&b"mqtt"[..]),
        "the subprotocol must be echoed"
    );
    mqtt_session(ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_accepts_mqttv31_and_refuses_wrong_path_and_no_subprotocol() {
    let (s, addr) = ws_server(|c| c.listeners.ws.path = "/broker".into()).await;
    let status = |r: Result<_, WsError>| match r {
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("upgrade unexpectedly accepted"),
    };
    let wrong =
        tokio_tungstenite::connect_async(request(&format!("ws://{addr}/mqtt"), Some("mqtt"))).await;
    assert_eq!(status(wrong.map(drop)), 404, "a wrong path gets 404");
    let none =
        tokio_tungstenite::connect_async(request(&format!("ws://{addr}/broker"), None)).await;
    assert_eq!(status(none.map(drop)), 400, "no mqtt subprotocol gets 400");
    let (_ws, resp) =
        tokio_tungstenite::connect_async(request(&format!("ws://{addr}/broker"), Some("mqttv3.1")))
            .await
            .expect("mqttv3.1 accepted");
    assert_eq!(
        resp.headers()
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .map(|v| v.as_bytes()),
        Some(&b"mqttv3.1"[..])
    );
    // The refusals are counted after they are written: wait for both.
    wait_until(T, "both refusals are counted", || async {
        scrape(s.admin(), "tern_websocket_errors_total").await >= 2.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_text_frame_closes_the_connection() {
    let (s, addr) = ws_server(|_| {}).await;
    let req = request(&format!("ws://{addr}/mqtt"), Some("mqtt"));
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    let mut c = Client {
        ws,
        buf: Vec::new(),
    };
    c.frame(Connect::v5(&uid("txt")).encode()).await;
    assert!(matches!(c.packet().await, Packet::ConnAck { code: 0, .. }));
    c.ws.send(Message::text("hello")).await.expect("send text");
    let closed = tokio::time::timeout(T, async {
        loop {
            match c.ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a text frame must close the connection");
    wait_until(T, "the text frame is counted", || async {
        scrape(s.admin(), "tern_websocket_errors_total").await >= 1.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_round_trip_with_rcgen_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("server cert");
    let (cert_file, key_file) = (dir.path().join("s.pem"), dir.path().join("s.key"));
    std::fs::write(&cert_file, cert.pem()).expect("write cert");
    std::fs::write(&key_file, key.serialize_pem()).expect("write key");
    let s = start_with(|c| {
        c.listeners.wss.enabled = true;
        c.listeners.wss.bind = "127.0.0.1:0".parse().expect("addr");
        c.listeners.wss.cert = Some(cert_file);
        c.listeners.wss.key = Some(key_file);
    })
    .await;
    let addr = s.server().wss_addr().expect("wss bound");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio::time::timeout(
        T,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("TLS timed out")
    .expect("TLS handshake");
    let req = request("wss://localhost/mqtt", Some("mqtt"));
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::client_async(req, tls),
    )
    .await
    .expect("upgrade timed out")
    .expect("upgrade over TLS");
    mqtt_session(ws).await;
}
