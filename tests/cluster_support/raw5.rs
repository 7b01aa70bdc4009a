//! A bare MQTT 5.0 connection for checks rumqttc cannot make: rumqttc
//! 0.24 reports a broker's DISCONNECT followed by the close as a plain
//! "connection closed by peer", so the reason code is read off the wire
//! here.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// One MQTT 5.0 connection.
pub struct RawV5 {
    s: TcpStream,
    buf: Vec<u8>,
}

fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return;
        }
    }
}

impl RawV5 {
    /// CONNECT (keep-alive 60 s) and read the CONNACK within 10 s:
    /// returns the connection, session present and the reason code.
    pub async fn connect(
        addr: SocketAddr,
        id: &str,
        clean: bool,
        session_expiry: u32,
    ) -> (RawV5, bool, u8) {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5];
        body.push(if clean { 0x02 } else { 0 });
        body.extend_from_slice(&60u16.to_be_bytes());
        let mut props = vec![0x11];
        props.extend_from_slice(&session_expiry.to_be_bytes());
        varint(props.len(), &mut body);
        body.extend_from_slice(&props);
        body.extend_from_slice(&(id.len() as u16).to_be_bytes());
        body.extend_from_slice(id.as_bytes());
        let mut pkt = vec![0x10];
        varint(body.len(), &mut pkt);
        pkt.extend_from_slice(&body);
        let mut s = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .expect("TCP connect timed out")
            .expect("TCP connect");
        s.write_all(&pkt).await.expect("write CONNECT");
        let mut c = RawV5 { s, buf: Vec::new() };
        let deadline = Instant::now() + Duration::from_secs(10);
        match c.next(deadline).await {
            Some((0x20, b)) if b.len() >= 2 => (c, b[0] & 1 == 1, b[1]),
            other => panic!("{id}: expected CONNACK, got {other:?}"),
        }
    }

    /// The next packet (first byte, body) before `deadline`; None on close
    /// or timeout.
    async fn next(&mut self, deadline: Instant) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                let (mut len, mut mult, mut i) = (0usize, 1usize, 1usize);
                let mut complete = false;
                while i < self.buf.len() && i <= 4 {
                    let b = self.buf[i];
                    len += (b & 0x7F) as usize * mult;
                    mult *= 128;
                    i += 1;
                    if b & 0x80 == 0 {
                        complete = true;
                        break;
                    }
                }
                if complete && self.buf.len() >= i + len {
                    let first = self.buf[0];
                    let body = self.buf[i..i + len].to_vec();
                    self.buf.drain(..i + len);
                    return Some((first, body));
                }
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.s.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads until the broker closes the connection, within `d`. Returns
    /// the DISCONNECT reason code if a DISCONNECT came first (Some(None)
    /// for a close without DISCONNECT); None if still open at `d`.
    pub async fn wait_closed(&mut self, d: Duration) -> Option<Option<u8>> {
        let deadline = Instant::now() + d;
        let mut reason = None;
        loop {
            match self.next(deadline).await {
                Some((first, body)) if first >> 4 == 14 => {
                    reason = Some(body.first().copied().unwrap_or(0));
                }
                Some(_) => {}
                None => {
                    return if Instant::now() >= deadline {
                        None
                    } else {
                        Some(reason)
                    }
                }
            }
        }
    }
}
