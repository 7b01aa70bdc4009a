//! MQTT over WebSocket: the HTTP upgrade (path check, `mqtt` subprotocol)
//! and [`WsStream`], which turns a message stream back into a byte stream
//! so that [`connection::serve`](crate::connection::serve) runs unchanged.
//!
//! Binary frames are concatenated in order, so an MQTT packet may span
//! frames and a frame may hold several packets; each write becomes one
//! binary frame. A text frame is a protocol error: the read fails and the
//! connection closes with a logged reason.

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use prometheus_client::metrics::counter::Counter;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// Subprotocols accepted, in order of preference.
pub const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Checks the upgrade request: the configured path, and one of
/// [`SUBPROTOCOLS`] offered (the chosen one is echoed).
struct Upgrade<'a> {
    path: &'a str,
}

fn refusal(status: StatusCode, why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why.to_string()));
    *r.status_mut() = status;
    r
}

/// The first of [`SUBPROTOCOLS`] that the request offers.
fn pick_subprotocol(req: &Request) -> Option<&'static str> {
    let offered: Vec<&str> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    SUBPROTOCOLS
        .into_iter()
        .find(|p| offered.iter().any(|o| o.eq_ignore_ascii_case(p)))
}

impl Callback for Upgrade<'_> {
    fn on_request(self, req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
        if req.uri().path() != self.path {
            return Err(refusal(StatusCode::NOT_FOUND, "not found"));
        }
        let Some(proto) = pick_subprotocol(req) else {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                "the mqtt WebSocket subprotocol is required",
            ));
        };
        resp.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(proto),
        );
        Ok(resp)
    }
}

/// Runs the server side of the upgrade on `path`; frames and messages are
/// limited to `max_message` bytes.
pub async fn accept<S>(
    stream: S,
    path: &str,
    max_message: usize,
    errors: Counter,
) -> Result<WsStream<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        // Each MQTT write is sent at once: the connection batches already.
        .write_buffer_size(0);
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, Upgrade { path }, Some(config))
            .await?;
    Ok(WsStream {
        inner: ws,
        pending: Bytes::new(),
        errors,
    })
}

/// A WebSocket connection as a byte stream.
pub struct WsStream<S> {
    inner: WebSocketStream<S>,
    /// The unread rest of the current binary frame.
    pending: Bytes,
    /// Counts text frames.
    errors: Counter,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // Drive any frame a blocked write left behind; the result shows up
        // on the next write.
        let _ = Pin::new(&mut this.inner).poll_flush(cx);
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(b))) => this.pending = b,
                Some(Ok(Message::Text(_))) => {
                    this.errors.inc();
                    tracing::info!("WebSocket text frame; MQTT needs binary frames, closing");
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "WebSocket text frame",
                    )));
                }
                // Pings are answered by tungstenite itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let inner = &mut self.inner;
        // Earlier frames first: a slow reader slows the writer down.
        ready!(Pin::new(&mut *inner).poll_flush(cx)).map_err(io::Error::other)?;
        Pin::new(&mut *inner)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io::Error::other)?;
        // Push it out now if the socket takes it; otherwise the next write,
        // flush or read finishes the job.
        if let Poll::Ready(Err(e)) = Pin::new(&mut *inner).poll_flush(cx) {
            return Poll::Ready(Err(io::Error::other(e)));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner)
            .poll_close(cx)
            .map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn prefers_mqtt_and_accepts_v31() {
        let req = |p: &str| {
            Request::builder()
                .header(header::SEC_WEBSOCKET_PROTOCOL, p)
                .body(())
                .unwrap_or_default()
        };
        assert_eq!(pick_subprotocol(&req("mqttv3.1, mqtt")), Some("mqtt"));
        assert_eq!(pick_subprotocol(&req("mqttv3.1")), Some("mqttv3.1"));
        assert_eq!(pick_subprotocol(&req("chat")), None);
    }

    /// Frames are concatenated; writes become frames; text is an error.
    #[tokio::test]
    async fn frames_become_bytes() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut s = accept(a, "/mqtt", 1 << 20, Counter::default()).await?;
            let mut got = vec![0u8; 6];
            s.read_exact(&mut got).await?;
            s.write_all(&got).await?;
            let mut one = [0u8; 1];
            let text = s.read(&mut one).await;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((got, text.is_err()))
        });
        let req = Request::builder()
            .uri("ws://localhost/mqtt")
            .header(header::SEC_WEBSOCKET_PROTOCOL, "mqtt")
            .header(header::HOST, "localhost")
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .expect("request");
        let (mut c, _) = tokio_tungstenite::client_async(req, b)
            .await
            .expect("client handshake");
        use futures_util::{SinkExt, StreamExt};
        c.send(Message::Binary(Bytes::from_static(b"abc")))
            .await
            .expect("send");
        c.send(Message::Binary(Bytes::from_static(b"def")))
            .await
            .expect("send");
        let echo = c.next().await.expect("echo").expect("echo ok");
        assert_eq!(echo, Message::Binary(Bytes::from_static(b"abcdef")));
        c.send(Message::text("nope")).await.expect("send text");
        let (got, text_failed) = server.await.expect("join").expect("server");
        assert_eq!(got, b"abcdef");
        assert!(text_failed, "a text frame must fail the read");
    }
}
