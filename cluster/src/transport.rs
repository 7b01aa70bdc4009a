//! The injected byte transport under the mesh's gRPC: real TCP
//! ([`TcpTransport`]) or an in-memory network ([`MemNetwork`]) that can cut
//! and heal links and kill nodes, so partitions are a line in a test. TLS
//! (mutual, rustls) is applied by tonic on top of either.

mod memory;

pub use memory::{MemNetwork, MemTransport};

use crate::{Error, Result};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tern_broker::config::ClusterTlsConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Anything that carries bytes both ways.
pub trait RawIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> RawIo for T {}

/// One connection of the transport, as tonic's server and client take it.
pub struct Io {
    inner: Box<dyn RawIo>,
    remote: Option<std::net::SocketAddr>,
}

impl Io {
    /// Wraps a connection; `remote` is the peer's socket address if known.
    pub fn new(inner: impl RawIo, remote: Option<std::net::SocketAddr>) -> Io {
        Io {
            inner: Box::new(inner),
            remote,
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    // Forwarded: without them HTTP/2 sees a stream that cannot write
    // vectors, and writes each DATA frame in two calls (its head with the
    // first KiB copied, then the rest).
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connected for Io {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: None,
            remote_addr: self.remote,
        }
    }
}

/// Accepted connections.
pub type Incoming = BoxStream<'static, io::Result<Io>>;

/// A boxed future.
pub type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How the mesh listens and dials.
pub trait Transport: Send + Sync + 'static {
    /// Listens on `addr`; returns the bound address and the accepted connections.
    fn bind(&self, addr: &str) -> BoxFut<io::Result<(String, Incoming)>>;
    /// Opens a connection to `addr`.
    fn connect(&self, addr: &str) -> BoxFut<io::Result<Io>>;
}

/// Real TCP (no Nagle: frames are small and latency matters).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpTransport;

impl Transport for TcpTransport {
    fn bind(&self, addr: &str) -> BoxFut<io::Result<(String, Incoming)>> {
        let addr = addr.to_string();
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            let bound = listener.local_addr()?.to_string();
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener)
                .map(|s| {
                    let s = s?;
                    let _ = s.set_nodelay(true);
                    let remote = s.peer_addr().ok();
                    Ok(Io::new(s, remote))
                })
                .boxed();
            Ok((bound, incoming))
        })
    }

    fn connect(&self, addr: &str) -> BoxFut<io::Result<Io>> {
        let addr = addr.to_string();
        Box::pin(async move {
            let s = tokio::net::TcpStream::connect(&addr).await?;
            let _ = s.set_nodelay(true);
            let remote = s.peer_addr().ok();
            Ok(Io::new(s, remote))
        })
    }
}

/// Server and client TLS settings for mutual TLS on the mesh.
#[derive(Debug, Clone)]
pub struct MeshTls {
    /// Presents this node's certificate and requires a client certificate
    /// signed by the CA.
    pub server: ServerTlsConfig,
    /// Presents this node's certificate and verifies the server's.
    pub client: ClientTlsConfig,
}

fn read(path: Option<&std::path::Path>, key: &'static str) -> Result<Vec<u8>> {
    let path = path.ok_or(Error::TlsMissing(key))?;
    std::fs::read(path).map_err(|source| Error::TlsFile {
        path: path.display().to_string(),
        source,
    })
}

impl MeshTls {
    /// Reads `cert`, `key` and `ca`; `None` when TLS is disabled.
    pub fn from_config(cfg: &ClusterTlsConfig) -> Result<Option<MeshTls>> {
        if !cfg.enabled {
            return Ok(None);
        }
        let cert = read(cfg.cert.as_deref(), "cert")?;
        let key = read(cfg.key.as_deref(), "key")?;
        let ca = Certificate::from_pem(read(cfg.ca.as_deref(), "ca")?);
        let identity = Identity::from_pem(cert, key);
        Ok(Some(MeshTls {
            server: ServerTlsConfig::new()
                .identity(identity.clone())
                .client_ca_root(ca.clone()),
            client: ClientTlsConfig::new().identity(identity).ca_certificate(ca),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// HTTP/2 writes a frame's head and its payload with one call only
    /// through a stream that says it can write vectors.
    #[tokio::test]
    async fn io_passes_vectored_writes_through() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut io = TcpTransport.connect(&addr.to_string()).await.unwrap();
        let (mut peer, _) = listener.accept().await.unwrap();
        assert!(io.is_write_vectored());
        let bufs = [io::IoSlice::new(b"head"), io::IoSlice::new(b"+payload")];
        let n = io.write_vectored(&bufs).await.unwrap();
        assert_eq!(n, 12, "both slices in one call");
        let mut got = [0u8; 12];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"head+payload");
    }
}
