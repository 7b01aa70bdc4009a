//! TLS listener: a CA and server certificate made with rcgen, round trips
//! over TLS (rumqttc and raw MQTT over tokio-rustls), client certificates,
//! and plain TCP to the TLS port failing cleanly.
mod common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Pki {
    _dir: tempfile::TempDir,
    ca_pem: String,
    server_cert: PathBuf,
    server_key: PathBuf,
    ca_file: PathBuf,
    client_cert_pem: String,
    client_key_pem: String,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Tern Test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).expect("self-sign CA");

    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .expect("sign server cert");

    let ckey = KeyPair::generate().expect("client key");
    let mut cparams = CertificateParams::new(Vec::<String>::new()).expect("client params");
    cparams
        .distinguished_name
        .push(DnType::CommonName, "tls-client-1");
    let ccert = cparams
        .signed_by(&ckey, &ca, &ca_key)
        .expect("sign client cert");

    let server_cert = dir.path().join("server.pem");
    let server_key = dir.path().join("server.key");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&server_cert, cert.pem()).expect("write cert");
    std::fs::write(&server_key, key.serialize_pem()).expect("write key");
    std::fs::write(&ca_file, ca.pem()).expect("write CA");
    Pki {
        ca_pem: ca.pem(),
        server_cert,
        server_key,
        ca_file,
        client_cert_pem: ccert.pem(),
        client_key_pem: ckey.serialize_pem(),
        _dir: dir,
    }
}

async fn tls_server(pki: &Pki, require_client_cert: bool) -> TestServer {
    let (cert, key, ca) = (
        pki.server_cert.clone(),
        pki.server_key.clone(),
        pki.ca_file.clone(),
    );
    start_with(move |c| {
        c.listeners.tls.enabled = true;
        c.listeners.tls.bind = "127.0.0.1:0".parse().expect("addr");
        c.listeners.tls.cert = Some(cert);
        c.listeners.tls.key = Some(key);
        if require_client_cert {
            c.listeners.tls.ca = Some(ca);
            c.listeners.tls.require_client_cert = true;
        }
    })
    .await
}

fn rustls_config(pki: &Pki, client_auth: bool) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls_pki_types_from_pem(&pki.ca_pem);
    roots.add(der).expect("add CA");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots);
    if client_auth {
        let cert = rustls_pki_types_from_pem(&pki.client_cert_pem);
        let key = key_from_pem(&pki.client_key_pem);
        builder
            .with_client_auth_cert(vec![cert], key)
            .expect("client auth cert")
    } else {
        builder.with_no_client_auth()
    }
}

fn pem_body(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64_decode(&b64)
}

fn rustls_pki_types_from_pem(pem: &str) -> rustls::pki_types::CertificateDer<'static> {
    rustls::pki_types::CertificateDer::from(pem_body(pem))
}

fn key_from_pem(pem: &str) -> rustls::pki_types::PrivateKeyDer<'static> {
    rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(pem_body(
        pem,
    )))
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().filter(|c| **c == b'=').count();
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        let b = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&b[..3 - pad]);
    }
    out
}

async fn raw_tls(addr: std::net::SocketAddr, cfg: rustls::ClientConfig) -> std::io::Result<Raw> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    let tls = tokio::time::timeout(T, connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))??;
    Ok(Raw::over(Box::new(tls)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_round_trip_with_rumqttc() {
    let pki = pki();
    let s = tls_server(&pki, false).await;
    let tls = s.tls.expect("TLS listener bound");
    let mut o = rumqttc::MqttOptions::new(uid("tls4"), "localhost", tls.port());
    o.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Simple {
        ca: pki.ca_pem.clone().into_bytes(),
        alpn: None,
        client_auth: None,
    }));
    let mut c = v4_with_options(o).await;
    c.subscribe("tls/t", rumqttc::QoS::AtLeastOnce).await;
    c.publish("tls/t", b"secret", rumqttc::QoS::AtLeastOnce, false)
        .await;
    assert_eq!(c.recv().await.payload.as_ref(), b"secret");
    // Cross-listener: a plain TCP subscriber sees TLS publishes.
    let mut plain = Raw::v5(s.addr, &uid("plain")).await;
    plain.subscribe("tls/t", 1).await;
    c.publish("tls/t", b"to-tcp", rumqttc::QoS::AtLeastOnce, false)
        .await;
    assert_eq!(plain.next_publish().await.payload, b"to-tcp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_round_trip_raw_v5() {
    let pki = pki();
    let s = tls_server(&pki, false).await;
    let mut c = raw_tls(s.tls.expect("TLS listener"), rustls_config(&pki, false))
        .await
        .expect("TLS connect");
    let ack = c.handshake(Connect::v5(&uid("tls5"))).await;
    assert_eq!(ack.code, 0);
    c.subscribe("tls5/t", 2).await;
    c.publish("tls5/t", b"over-tls", 2).await;
    let m = c.next_publish().await;
    assert_eq!((m.payload.as_slice(), m.qos), (&b"over-tls"[..], 2));
    c.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_to_tls_port_fails_cleanly() {
    let pki = pki();
    let s = tls_server(&pki, false).await;
    let tls = s.tls.expect("TLS listener");
    let mut tcp = tokio::net::TcpStream::connect(tls)
        .await
        .expect("TCP connect to TLS port");
    let _ = tcp
        .write_all(&Connect::v4(&uid("plain-on-tls")).encode())
        .await;
    let mut buf = Vec::new();
    let r = tokio::time::timeout(T, tcp.read_to_end(&mut buf)).await;
    assert!(
        r.is_ok(),
        "the TLS port must close a plain-MQTT connection, not hang"
    );
    assert!(
        buf.first() != Some(&0x20),
        "plain MQTT on the TLS port must not get a CONNACK: {buf:02X?}"
    );
    // The server keeps serving, over TLS and TCP.
    let mut c = raw_tls(tls, rustls_config(&pki, false))
        .await
        .expect("TLS connect after");
    assert_eq!(c.handshake(Connect::v5(&uid("after"))).await.code, 0);
    c.subscribe("after/t", 1).await;
    c.publish("after/t", b"ok", 1).await;
    assert_eq!(c.next_publish().await.payload, b"ok");
    let mut w = Witness::new(s.addr).await;
    w.round_trip().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificate() {
    let pki = pki();
    let s = tls_server(&pki, true).await;
    let tls = s.tls.expect("TLS listener");
    // Without a client certificate: no MQTT session.
    let without = async {
        let mut c = raw_tls(tls, rustls_config(&pki, false)).await?;
        // TLS 1.3 reports the missing certificate after the handshake.
        c.try_send(&Connect::v5(&uid("nocert")).encode()).await?;
        match c.recv_within(T).await {
            Recv::Packet(Packet::ConnAck { code: 0, .. }) => Ok::<bool, std::io::Error>(true),
            _ => Ok(false),
        }
    };
    let accepted = without.await.unwrap_or(false);
    assert!(!accepted, "a client without a certificate must be refused");
    // With one signed by the CA: accepted.
    let mut c = raw_tls(tls, rustls_config(&pki, true))
        .await
        .expect("TLS with client cert");
    assert_eq!(c.handshake(Connect::v5(&uid("withcert"))).await.code, 0);
    c.ping().await;
}
