//! Messages towards the client: taking deliveries from the session queue
//! within the in-flight window, expiry, topic aliases, the client's
//! maximum packet size, and redelivery with DUP after a reconnect.

use super::{Conn, WBUF_HIGH};
use crate::codec::{self, Packet, Properties, PubResp, Publish};
use crate::session::{now_ms, Delivery, Inflight};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// Deliveries taken from the queue under one lock.
const BATCH: usize = 64;

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Conn<S> {
    /// Moves sendable deliveries into the write buffer. Returns true if it
    /// stopped because the buffer is full while more may be waiting.
    pub(super) fn fill_wbuf(&mut self) -> bool {
        let now = now_ms();
        let mut expired = 0u64;
        let mut batch: Vec<(Delivery, u16)> = Vec::new();
        loop {
            if self.wbuf.len() >= WBUF_HIGH {
                self.broker.metrics().expired.inc_by(expired);
                return true;
            }
            {
                let mut st = self.cell.state.lock();
                while batch.len() < BATCH {
                    match st.next_sendable(self.out_window as usize, now, &mut expired) {
                        Some(x) => batch.push(x),
                        None => break,
                    }
                }
            }
            if batch.is_empty() {
                self.broker.metrics().expired.inc_by(expired);
                return false;
            }
            for (d, pkid) in batch.drain(..) {
                self.write_publish(&d, pkid, false, now);
                crate::recycle::release(d.msg);
            }
        }
    }

    /// Encodes one delivery. A packet larger than the client's maximum is
    /// dropped as if delivered (§3.1.2.11.4).
    fn write_publish(&mut self, d: &Delivery, pkid: u16, dup: bool, now: u64) {
        if self.acl && !self.broker.authz().can_read(&self.client(), &d.msg.topic) {
            // Not readable by this client (e.g. a retained message under a
            // wider filter than its ACL allows): dropped as if delivered.
            if pkid != 0 {
                self.cell.state.lock().abandon(pkid);
            }
            return;
        }
        let v5 = self.protocol.is_v5();
        let bare = !v5
            || (d.msg.properties.is_empty()
                && d.msg.expires_at.is_none()
                && d.sub_ids.is_empty()
                && self.out_alias_max == 0);
        if bare {
            let p = codec::BarePublish {
                dup,
                qos: d.qos,
                retain: d.retain,
                topic: &d.msg.topic,
                pkid,
                payload: &d.msg.payload,
            };
            if p.encoded_len(self.protocol) > self.max_out_packet as usize {
                self.too_large(d, pkid);
            } else if let Err(e) = p.encode(self.protocol, &mut self.wbuf) {
                tracing::warn!(error = %e, "cannot encode an outgoing packet");
            } else {
                self.broker.metrics().messages_out.inc();
            }
            return;
        }
        let mut properties = if !d.msg.properties.is_empty() {
            (*d.msg.properties).clone()
        } else {
            Properties::default()
        };
        properties.message_expiry_interval = d.msg.remaining_secs(now);
        properties.subscription_identifiers.clone_from(&d.sub_ids);
        let mut p = Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic: d.msg.topic.to_string(),
            pkid,
            payload: d.msg.payload.clone(),
            properties,
        };
        let new_alias = self.apply_alias(&mut p, &d.msg.topic);
        let packet = Packet::Publish(p);
        if codec::encoded_len(&packet, self.protocol) > self.max_out_packet as usize {
            if let Some(a) = new_alias {
                // The client never learns an alias in a packet it never sees.
                if let Some(aliases) = &mut self.aliases {
                    aliases.outbound.retain(|_, v| *v != a);
                }
            }
            self.too_large(d, pkid);
            return;
        }
        if self.send(&packet).is_ok() {
            self.broker.metrics().messages_out.inc();
        }
    }

    /// Drops a delivery over the client's maximum packet size as if delivered.
    fn too_large(&mut self, d: &Delivery, pkid: u16) {
        tracing::debug!(topic = %d.msg.topic, "message larger than the client's maximum packet size, dropped");
        if pkid != 0 {
            self.cell.state.lock().abandon(pkid);
        }
    }

    /// Uses or assigns a topic alias if the client accepts them; returns a
    /// newly assigned alias.
    fn apply_alias(&mut self, p: &mut Publish, topic: &Arc<str>) -> Option<u16> {
        if self.out_alias_max == 0 {
            return None;
        }
        let known = self.aliases.as_ref().and_then(|a| a.outbound.get(topic));
        if let Some(&a) = known {
            p.topic.clear();
            p.properties.topic_alias = Some(a);
            return None;
        }
        let used = self.aliases.as_ref().map_or(0, |a| a.outbound.len());
        let next = u16::try_from(used + 1).ok()?;
        if next > self.out_alias_max {
            return None;
        }
        let aliases = self.aliases.get_or_insert_default();
        aliases.outbound.insert(topic.clone(), next);
        p.properties.topic_alias = Some(next);
        Some(next)
    }

    /// After a resumed session's CONNACK: every unacknowledged PUBLISH again
    /// with DUP and its packet id, and every PUBREL (§4.4).
    pub(super) fn resend_inflight(&mut self) {
        let inflight: Vec<(u16, Inflight)> = self
            .cell
            .state
            .lock()
            .data
            .inflight
            .iter()
            .cloned()
            .collect();
        let now = now_ms();
        for (pkid, state) in inflight {
            match state {
                Inflight::Sent(d) => self.write_publish(&d, pkid, true, now),
                Inflight::Released => {
                    let rel = PubResp {
                        pkid,
                        reason: 0,
                        properties: Properties::default(),
                    };
                    let _ = self.send(&Packet::PubRel(rel));
                }
            }
        }
    }
}
