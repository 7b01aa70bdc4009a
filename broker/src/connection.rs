//! One client connection: the MQTT protocol loop around a [`Session`](crate::session).
use crate::broker::Broker;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

/// What the listener knows about a connection before CONNECT.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Remote address.
    pub peer: SocketAddr,
    /// Listener name, for logs and metrics ("tcp", "tls").
    pub listener: &'static str,
    /// Common name of a verified TLS client certificate.
    pub cert_cn: Option<String>,
}

/// Serves one client connection until it closes, the protocol ends it, or
/// `shutdown` is cancelled (then 5.0 clients get DISCONNECT 0x8B first).
pub async fn serve<S>(stream: S, info: ConnInfo, broker: Arc<Broker>, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _ = (stream, info, broker, shutdown);
    unimplemented!()
}
