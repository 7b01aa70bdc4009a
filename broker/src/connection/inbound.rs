//! Packets from the client after CONNECT: PUBLISH and its acks in both
//! directions, SUBSCRIBE/UNSUBSCRIBE, PINGREQ, DISCONNECT, AUTH.

use super::authorize::{AckAfter, HeldPublish, HeldSubscribe, Pending};
use super::{Close, Conn};
use crate::auth::{BoxFuture, Check, PublishInfo};
use crate::broker::CloseKind;
use crate::codec::{
    reason, Packet, Properties, PubResp, Publish, QoS, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use crate::routes::Operation;
use crate::session::{Delivery, Message, PubRecOutcome};
use crate::topic;
use crate::trie::SubEntry;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

fn ack(pkid: u16, reason: u8) -> PubResp {
    PubResp {
        pkid,
        reason,
        properties: Properties::default(),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Conn<S> {
    /// Handles one packet. Synchronous on purpose: no packet lives across an
    /// `.await`, which keeps every connection's future small; the waits
    /// (remote acknowledgement of a QoS 1/2 forward, an authorizer asking a
    /// remote service) are returned as [`Pending`], the packet boxed in it.
    pub(super) fn handle(&mut self, p: Packet) -> Result<Option<Pending>, Close> {
        match p {
            Packet::Publish(p) => self.on_publish(p),
            Packet::PubAck(a) => {
                if self.cell.state.lock().puback(a.pkid) {
                    self.cell.notify.notify_one();
                }
                Ok(None)
            }
            Packet::PubRec(a) => {
                let outcome = self.cell.state.lock().pubrec(a.pkid, a.reason);
                match outcome {
                    PubRecOutcome::Release => self.send(&Packet::PubRel(ack(a.pkid, 0)))?,
                    PubRecOutcome::Refused => self.cell.notify.notify_one(),
                    PubRecOutcome::Unknown => self.send(&Packet::PubRel(ack(
                        a.pkid,
                        reason::PACKET_IDENTIFIER_NOT_FOUND,
                    )))?,
                }
                Ok(None)
            }
            Packet::PubRel(a) => {
                let known = {
                    let mut st = self.cell.state.lock();
                    let known = st.data.incoming_qos2.remove(&a.pkid);
                    st.save();
                    known
                };
                let code = if known {
                    0
                } else {
                    reason::PACKET_IDENTIFIER_NOT_FOUND
                };
                self.send(&Packet::PubComp(ack(a.pkid, code)))
                    .map(|()| None)
            }
            Packet::PubComp(a) => {
                if self.cell.state.lock().pubcomp(a.pkid) {
                    self.cell.notify.notify_one();
                }
                Ok(None)
            }
            Packet::Subscribe(s) => self.on_subscribe(s),
            Packet::Unsubscribe(u) => self.on_unsubscribe(u).map(|()| None),
            Packet::PingReq => self.send(&Packet::PingResp).map(|()| None),
            Packet::Disconnect(d) => self.on_disconnect(d.reason, &d.properties).map(|()| None),
            // No enhanced-authentication method is ever accepted, so AUTH
            // after CONNECT is always out of place.
            Packet::Auth(_) => Err(Close::protocol(
                reason::PROTOCOL_ERROR,
                "AUTH without an authentication method",
            )),
            Packet::Connect(_) => Err(Close::protocol(reason::PROTOCOL_ERROR, "second CONNECT")),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => Err(
                Close::protocol(reason::PROTOCOL_ERROR, "server-only packet from a client"),
            ),
        }
    }

    /// Resolves a 5.0 topic alias (§3.3.2.3.4) into the topic to publish to.
    fn resolve_topic(&mut self, p: &mut Publish) -> Result<Arc<str>, Close> {
        let Some(alias) = p.properties.topic_alias else {
            if p.topic.is_empty() {
                return Err(Close::protocol(
                    reason::PROTOCOL_ERROR,
                    "empty topic without alias",
                ));
            }
            return Ok(Arc::from(std::mem::take(&mut p.topic)));
        };
        if alias == 0 || alias > self.broker.config().mqtt.topic_alias_maximum {
            return Err(Close::protocol(
                reason::TOPIC_ALIAS_INVALID,
                "topic alias out of range",
            ));
        }
        if p.topic.is_empty() {
            return self
                .aliases
                .as_ref()
                .and_then(|a| a.inbound.get(&alias))
                .cloned()
                .ok_or_else(|| Close::protocol(reason::PROTOCOL_ERROR, "unknown topic alias"));
        }
        let topic: Arc<str> = Arc::from(std::mem::take(&mut p.topic));
        let aliases = self.aliases.get_or_insert_default();
        aliases.inbound.insert(alias, topic.clone());
        Ok(topic)
    }

    fn on_publish(&mut self, mut p: Publish) -> Result<Option<Pending>, Close> {
        self.broker.metrics().messages_in.inc();
        self.account_publish(p.topic.len() + p.payload.len());
        let topic = self.resolve_topic(&mut p)?;
        if !topic::valid_topic_name(&topic) {
            return Err(Close::protocol(
                reason::TOPIC_NAME_INVALID,
                "invalid topic name",
            ));
        }
        if self.too_deep(&topic) {
            return Err(Close::protocol(
                reason::TOPIC_NAME_INVALID,
                "topic deeper than limits.max_topic_levels",
            ));
        }
        if p.retain && !self.broker.config().mqtt.retain_available {
            return Err(Close::protocol(
                reason::RETAIN_NOT_SUPPORTED,
                "retain not supported",
            ));
        }
        if p.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(&p.payload).is_err()
        {
            // §3.3.2.3.2: the payload claims to be UTF-8 and is not.
            return match p.qos {
                QoS::AtMostOnce => Ok(None),
                QoS::AtLeastOnce => self
                    .send(&Packet::PubAck(ack(p.pkid, reason::PAYLOAD_FORMAT_INVALID)))
                    .map(|()| None),
                QoS::ExactlyOnce => self
                    .send(&Packet::PubRec(ack(p.pkid, reason::PAYLOAD_FORMAT_INVALID)))
                    .map(|()| None),
            };
        }
        let info = PublishInfo {
            topic: &topic,
            qos: p.qos,
            retain: p.retain,
            payload: &p.payload,
        };
        match self.broker.authz().check_publish(&self.client(), &info) {
            Check::Now(allowed) => self.publish_decided(allowed, p, topic),
            Check::Later(verdict) => Ok(Some(Pending::Publish(Box::new(HeldPublish {
                verdict,
                publish: p,
                topic,
            })))),
        }
    }

    /// The rest of a PUBLISH once authorization has decided.
    pub(super) fn publish_decided(
        &mut self,
        allowed: bool,
        p: Publish,
        topic: Arc<str>,
    ) -> Result<Option<Pending>, Close> {
        if !allowed {
            tracing::info!(topic = %topic, "publish not authorized");
            // 5.0 says so in the ack; 3.x has no way to, so the message is
            // acknowledged and dropped (§4.x of each spec leaves this to the server).
            let code = if self.protocol.is_v5() {
                reason::NOT_AUTHORIZED
            } else {
                reason::SUCCESS
            };
            return match p.qos {
                QoS::AtMostOnce => Ok(None),
                QoS::AtLeastOnce => self.send(&Packet::PubAck(ack(p.pkid, code))).map(|()| None),
                QoS::ExactlyOnce => {
                    if code == reason::SUCCESS {
                        // PUBREL will follow: remember the id as for any QoS 2 PUBLISH.
                        let mut st = self.cell.state.lock();
                        st.data.incoming_qos2.insert(p.pkid);
                        st.save();
                    }
                    self.send(&Packet::PubRec(ack(p.pkid, code))).map(|()| None)
                }
            };
        }
        if !self.broker.remote().allows(Operation::Publish) {
            // Partitioned, and configured to prefer consistency: refuse
            // rather than acknowledge what might not reach every node.
            return match (p.qos, self.protocol.is_v5()) {
                (QoS::AtMostOnce, _) => Ok(None),
                (QoS::AtLeastOnce, true) => self
                    .send(&Packet::PubAck(ack(p.pkid, reason::UNSPECIFIED_ERROR)))
                    .map(|()| None),
                (QoS::ExactlyOnce, true) => self
                    .send(&Packet::PubRec(ack(p.pkid, reason::UNSPECIFIED_ERROR)))
                    .map(|()| None),
                (_, false) => Err(Close::protocol(
                    reason::SERVER_UNAVAILABLE,
                    "publish refused during netsplit",
                )),
            };
        }
        let mut msg = Message::new(topic, p.payload, p.qos, p.retain, &p.properties);
        msg.origin = Some(self.client_id.clone());
        let msg = crate::recycle::make(msg);
        match p.qos {
            QoS::AtMostOnce => {
                self.broker.publish(msg);
                Ok(None)
            }
            QoS::AtLeastOnce => {
                let (n, remote) = self.broker.publish(msg);
                self.ack_after(remote, false, p.pkid, self.delivered_code(n))
            }
            QoS::ExactlyOnce => {
                let fresh = {
                    let mut st = self.cell.state.lock();
                    let limit = usize::from(self.broker.config().mqtt.receive_maximum);
                    if !st.data.incoming_qos2.contains(&p.pkid)
                        && st.data.incoming_qos2.len() >= limit
                    {
                        return Err(Close::protocol(
                            reason::RECEIVE_MAXIMUM_EXCEEDED,
                            "receive maximum exceeded",
                        ));
                    }
                    let fresh = st.data.incoming_qos2.insert(p.pkid);
                    st.save();
                    fresh
                };
                // A repeated PUBLISH before PUBREL is answered, never re-routed:
                // that is what makes QoS 2 exactly once.
                if !fresh {
                    return self.send(&Packet::PubRec(ack(p.pkid, 0))).map(|()| None);
                }
                let (n, remote) = self.broker.publish(msg);
                self.ack_after(remote, true, p.pkid, self.delivered_code(n))
            }
        }
    }

    /// Sends `ack` now, or after the remote nodes hold the message.
    fn ack_after(
        &mut self,
        remote: Option<BoxFuture<'static, ()>>,
        qos2: bool,
        pkid: u16,
        reason: u8,
    ) -> Result<Option<Pending>, Close> {
        let a = ack(pkid, reason);
        match remote {
            Some(remote) => Ok(Some(Pending::Ack(AckAfter {
                remote,
                qos2,
                pkid,
                reason,
            }))),
            None if qos2 => self.send(&Packet::PubRec(a)).map(|()| None),
            None => self.send(&Packet::PubAck(a)).map(|()| None),
        }
    }

    fn delivered_code(&self, matched: usize) -> u8 {
        if self.protocol.is_v5() && matched == 0 {
            reason::NO_MATCHING_SUBSCRIBERS
        } else {
            reason::SUCCESS
        }
    }

    fn on_subscribe(&mut self, s: Subscribe) -> Result<Option<Pending>, Close> {
        if s.properties.subscription_identifiers.len() > 1 {
            return Err(Close::protocol(
                reason::PROTOCOL_ERROR,
                "several subscription identifiers",
            ));
        }
        if !self.broker.remote().allows(Operation::Subscribe) {
            return self
                .send(&Packet::SubAck(SubAck {
                    pkid: s.pkid,
                    reasons: vec![reason::UNSPECIFIED_ERROR; s.filters.len()],
                    properties: Properties::default(),
                }))
                .map(|()| None);
        }
        let local: Vec<Option<u8>> = s
            .filters
            .iter()
            .map(|f| {
                let bad = !topic::valid_topic_filter(&f.filter) || self.too_deep(&f.filter);
                bad.then_some(if self.protocol.is_v5() {
                    reason::TOPIC_FILTER_INVALID
                } else {
                    0x80
                })
            })
            .collect();
        // The filters that passed the local checks are asked about together.
        let asked: Vec<(&str, QoS)> = s
            .filters
            .iter()
            .zip(&local)
            .filter(|(_, refused)| refused.is_none())
            .map(|(f, _)| (f.filter.as_str(), f.options.qos))
            .collect();
        let check = self.broker.authz().check_subscribe(&self.client(), &asked);
        drop(asked);
        match check {
            Check::Now(verdicts) => self.subscribe_decided(s, local, verdicts).map(|()| None),
            Check::Later(verdicts) => Ok(Some(Pending::Subscribe(Box::new(HeldSubscribe {
                verdicts,
                subscribe: s,
                local,
            })))),
        }
    }

    /// The rest of a SUBSCRIBE once authorization has decided: `local`
    /// holds each filter's refusal by the local checks, `verdicts` the
    /// authorizer's answer for each filter that passed them.
    pub(super) fn subscribe_decided(
        &mut self,
        s: Subscribe,
        local: Vec<Option<u8>>,
        verdicts: Vec<bool>,
    ) -> Result<(), Close> {
        let identifier = s.properties.subscription_identifiers.first().copied();
        let mut verdicts = verdicts.into_iter();
        let mut reasons = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        for (f, refused) in s.filters.iter().zip(local) {
            if let Some(code) = refused {
                reasons.push(code);
                continue;
            }
            // A short answer refuses what it does not cover.
            let allowed = verdicts.next().unwrap_or(false);
            if self.too_many_subscriptions(&f.filter) {
                reasons.push(if self.protocol.is_v5() {
                    reason::QUOTA_EXCEEDED
                } else {
                    0x80
                });
                continue;
            }
            if !allowed {
                tracing::info!(filter = %f.filter, "subscription not authorized");
                reasons.push(if self.protocol.is_v5() {
                    reason::NOT_AUTHORIZED
                } else {
                    0x80
                });
                continue;
            }
            let entry = SubEntry {
                options: f.options,
                identifier,
            };
            let Some(new) = self
                .broker
                .subscribe(&self.cell, self.owner_id, &f.filter, entry)
            else {
                return Err(Close {
                    kind: CloseKind::TakenOver,
                    disconnect: Some(reason::SESSION_TAKEN_OVER),
                    why: "session ended",
                });
            };
            reasons.push(f.options.qos as u8);
            // Retained messages go to new ordinary subscriptions per retain
            // handling; never to shared ones (§4.8.2).
            let rh = f.options.retain_handling;
            if topic::parse_shared(&f.filter).is_none() && (rh == 0 || (rh == 1 && new)) {
                for (_, m) in self.broker.retained_for(&f.filter) {
                    retained.push(Delivery {
                        qos: m.qos.min(f.options.qos),
                        msg: m,
                        retain: true,
                        sub_ids: identifier.into_iter().collect(),
                    });
                }
            }
        }
        self.send(&Packet::SubAck(SubAck {
            pkid: s.pkid,
            reasons,
            properties: Properties::default(),
        }))?;
        // Queued after the SUBACK is encoded, so they reach the wire after it.
        for d in retained {
            self.broker.deliver(&self.client_id, d);
        }
        Ok(())
    }

    /// A name or filter with more levels than `limits.max_topic_levels`
    /// (counted; the `$share/group/` prefix is not counted).
    fn too_deep(&self, name: &str) -> bool {
        let max = self.broker.knobs().max_topic_levels();
        let name = topic::parse_shared(name).map_or(name, |(_, f)| f);
        let deep = max > 0 && name.split('/').count() > max;
        if deep {
            self.broker.metrics().edge.limit_rejections.inc();
            tracing::info!(topic = %name, max, "topic too deep");
        }
        deep
    }

    /// A new filter for a session already at `limits.max_subscriptions_per_client`.
    fn too_many_subscriptions(&self, filter: &str) -> bool {
        let max = self.broker.knobs().max_subscriptions_per_client();
        if max == 0 {
            return false;
        }
        let full = {
            let st = self.cell.state.lock();
            st.data.subscriptions.len() >= max && !st.data.subscriptions.contains_key(filter)
        };
        if full {
            self.broker.metrics().edge.limit_rejections.inc();
            tracing::info!(filter, max, "subscription limit reached");
        }
        full
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) -> Result<(), Close> {
        let reasons = u
            .filters
            .iter()
            .map(|f| {
                if self.broker.unsubscribe(&self.cell, self.owner_id, f) {
                    reason::SUCCESS
                } else {
                    reason::NO_SUBSCRIPTION_EXISTED
                }
            })
            .collect();
        let reasons = if self.protocol.is_v5() {
            reasons
        } else {
            Vec::new()
        };
        self.send(&Packet::UnsubAck(UnsubAck {
            pkid: u.pkid,
            reasons,
            properties: Properties::default(),
        }))
    }

    fn on_disconnect(&mut self, code: u8, props: &Properties) -> Result<(), Close> {
        if let Some(exp) = props.session_expiry_interval {
            let mut st = self.cell.state.lock();
            // §3.14.2.2.2: a session opened with expiry 0 cannot be extended here.
            if st.data.expiry_interval == 0 && exp != 0 {
                drop(st);
                return Err(Close::protocol(
                    reason::PROTOCOL_ERROR,
                    "session expiry set on DISCONNECT after 0",
                ));
            }
            st.data.expiry_interval = exp.min(self.broker.config().mqtt.max_session_expiry);
        }
        let kind = if code == reason::DISCONNECT_WITH_WILL {
            CloseKind::Abnormal
        } else {
            CloseKind::Normal
        };
        Err(Close {
            kind,
            disconnect: None,
            why: "DISCONNECT from client",
        })
    }
}
