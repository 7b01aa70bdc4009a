//! PROXY protocol v1 (text) and v2 (binary) headers, read before TLS or
//! the WebSocket upgrade, parsed with the `ppp` crate. Exactly the header
//! is consumed, never a byte of what follows, so the stream can be handed
//! on as it is.

use ppp::v2::{Addresses as V2Addresses, Command};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt};

/// A v1 header is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
/// The v2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Largest v2 address + TLV block accepted.
const V2_MAX_BODY: usize = 4096;
/// TLV types (PROXY protocol §2.2.5).
const PP2_TYPE_SSL: u8 = 0x20;
const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
/// Bits of the SSL TLV's client field: a certificate was presented on
/// this connection or session.
const PP2_CLIENT_CERT: u8 = 0x02 | 0x04;

/// Why a PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The connection failed or closed while the header was read.
    #[error("connection closed while reading the PROXY header")]
    Io(#[source] std::io::Error),
    /// The stream does not start with a PROXY header.
    #[error("no PROXY protocol header")]
    Missing,
    /// A v1 header is longer than the specification allows.
    #[error("PROXY v1 header longer than {V1_MAX} bytes")]
    TooLong,
    /// A v1 header that `ppp` cannot parse.
    #[error("malformed PROXY v1 header: {0}")]
    V1(String),
    /// A v2 header that `ppp` cannot parse.
    #[error("malformed PROXY v2 header: {0}")]
    V2(String),
}

/// What a header says about the client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyInfo {
    /// The client's address (`None` for v1 UNKNOWN, v2 LOCAL or non-IP).
    pub source: Option<SocketAddr>,
    /// CN of a client certificate the proxy saw (v2 SSL TLV).
    pub cert_cn: Option<String>,
}

/// Reads and parses one v1 or v2 header from the start of `io`.
pub async fn read_header<S: AsyncRead + Unpin>(io: &mut S) -> Result<ProxyInfo, ProxyError> {
    let mut head = [0u8; 5];
    io.read_exact(&mut head).await.map_err(ProxyError::Io)?;
    if &head == b"PROXY" {
        read_v1(io, head).await
    } else if head[..] == V2_SIGNATURE[..5] {
        read_v2(io, head).await
    } else {
        Err(ProxyError::Missing)
    }
}

async fn read_v1<S: AsyncRead + Unpin>(io: &mut S, head: [u8; 5]) -> Result<ProxyInfo, ProxyError> {
    let mut line = head.to_vec();
    // Byte by byte: the header is short, and nothing after it may be read.
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(ProxyError::TooLong);
        }
        line.push(io.read_u8().await.map_err(ProxyError::Io)?);
    }
    let text = std::str::from_utf8(&line).map_err(|_| ProxyError::V1("not ASCII".into()))?;
    let header = ppp::v1::Header::try_from(text).map_err(|e| ProxyError::V1(e.to_string()))?;
    let source = match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Unknown => None,
    };
    Ok(ProxyInfo {
        source,
        cert_cn: None,
    })
}

async fn read_v2<S: AsyncRead + Unpin>(io: &mut S, head: [u8; 5]) -> Result<ProxyInfo, ProxyError> {
    let mut buf = vec![0u8; 16];
    buf[..5].copy_from_slice(&head);
    io.read_exact(&mut buf[5..]).await.map_err(ProxyError::Io)?;
    if buf[..12] != V2_SIGNATURE {
        return Err(ProxyError::Missing);
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_BODY {
        return Err(ProxyError::V2(format!("{len}-byte body is too large")));
    }
    buf.resize(16 + len, 0);
    io.read_exact(&mut buf[16..])
        .await
        .map_err(ProxyError::Io)?;
    parse_v2(&buf)
}

/// Parses a complete v2 header.
pub fn parse_v2(bytes: &[u8]) -> Result<ProxyInfo, ProxyError> {
    let header = ppp::v2::Header::try_from(bytes).map_err(|e| ProxyError::V2(e.to_string()))?;
    if header.command == Command::Local {
        // Health checks from the proxy itself: keep the socket's address.
        return Ok(ProxyInfo::default());
    }
    let source = match header.addresses {
        V2Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        V2Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        V2Addresses::Unix(_) | V2Addresses::Unspecified => None,
    };
    let mut cert_cn = None;
    for tlv in header.tlvs() {
        let tlv = tlv.map_err(|e| ProxyError::V2(e.to_string()))?;
        if tlv.kind == PP2_TYPE_SSL {
            cert_cn = ssl_common_name(&tlv.value)?;
        }
    }
    Ok(ProxyInfo { source, cert_cn })
}

/// The CN sub-TLV of an SSL TLV, if the client presented a certificate
/// that the proxy verified (`verify == 0`).
fn ssl_common_name(value: &[u8]) -> Result<Option<String>, ProxyError> {
    let bad = |why: &str| ProxyError::V2(format!("SSL TLV: {why}"));
    let (&client, rest) = value.split_first().ok_or_else(|| bad("empty"))?;
    let verify = rest.get(..4).ok_or_else(|| bad("truncated"))?;
    let mut subs = &rest[4..];
    let mut cn = None;
    while !subs.is_empty() {
        let [kind, hi, lo, ..] = *subs else {
            return Err(bad("truncated sub-TLV"));
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        let v = subs
            .get(3..3 + len)
            .ok_or_else(|| bad("truncated sub-TLV"))?;
        if kind == PP2_SUBTYPE_SSL_CN {
            let s = std::str::from_utf8(v).map_err(|_| bad("CN is not UTF-8"))?;
            cn = Some(s.to_string());
        }
        subs = &subs[3 + len..];
    }
    let verified = client & PP2_CLIENT_CERT != 0 && verify == [0, 0, 0, 0];
    Ok(cn.filter(|_| verified))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> (Result<ProxyInfo, ProxyError>, Vec<u8>) {
        let mut r = bytes;
        let info = read_header(&mut r).await;
        (info, r.to_vec())
    }

    #[tokio::test]
    async fn v1_tcp4_leaves_the_rest_unread() {
        let (info, rest) = parse(b"PROXY TCP4 203.0.113.7 10.0.0.1 4242 1883\r\n\x10\x00").await;
        let info = info.expect("valid v1");
        assert_eq!(info.source, Some("203.0.113.7:4242".parse().expect("addr")));
        assert_eq!(rest, b"\x10\x00");
    }

    #[tokio::test]
    async fn v1_garbage_and_missing_are_refused() {
        assert!(matches!(
            parse(b"PROXY TCP9 x y\r\n").await.0,
            Err(ProxyError::V1(_))
        ));
        assert!(matches!(
            parse(b"\x10\x0c\x00\x04MQTT").await.0,
            Err(ProxyError::Missing)
        ));
        let long = format!("PROXY {}\r\n", "1".repeat(200));
        assert!(matches!(
            parse(long.as_bytes()).await.0,
            Err(ProxyError::TooLong)
        ));
    }

    #[test]
    fn ssl_tlv_cn_only_when_verified() {
        let tlv = |client: u8, verify: u8| {
            let mut v = vec![client, 0, 0, 0, verify, PP2_SUBTYPE_SSL_CN, 0, 3];
            v.extend_from_slice(b"dev");
            v
        };
        assert_eq!(
            ssl_common_name(&tlv(0x03, 0)).ok().flatten().as_deref(),
            Some("dev")
        );
        assert_eq!(ssl_common_name(&tlv(0x03, 1)).ok().flatten(), None);
        assert_eq!(ssl_common_name(&tlv(0x01, 0)).ok().flatten(), None);
        assert!(ssl_common_name(&[0x03, 0, 0]).is_err());
    }
}
