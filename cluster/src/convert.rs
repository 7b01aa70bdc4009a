//! Broker values to and from their protobuf form: [`Message`] (every field,
//! properties included) and [`SessionData`] (subscriptions, queue, in-flight
//! window, QoS 2 ids received, will, expiry).

use crate::pb;
use crate::{Error, Result};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use tern_broker::codec::{Properties, QoS, SubOptions};
use tern_broker::session::{Delivery, Inflight, Message, PkidSet, SessionData, Will};
use tern_broker::trie::SubEntry;

fn qos(v: u32, what: &'static str) -> Result<QoS> {
    u8::try_from(v)
        .ok()
        .and_then(QoS::from_u8)
        .ok_or_else(|| Error::Decode {
            what,
            message: format!("QoS {v}"),
        })
}

fn small<T: TryFrom<u32>>(v: u32, what: &'static str) -> Result<T> {
    T::try_from(v).map_err(|_| Error::Decode {
        what,
        message: format!("{v} out of range"),
    })
}

fn utf8(b: &[u8], what: &'static str) -> Result<Arc<str>> {
    std::str::from_utf8(b)
        .map(Arc::from)
        .map_err(|_| Error::Decode {
            what,
            message: "not UTF-8".into(),
        })
}

/// A message for the wire; `origin_node` is filled with `local_node` when
/// the message was published here (receivers order retained writes by it).
pub fn message_to_pb(msg: &Message, local_node: &str) -> pb::MqttMessage {
    let p = &msg.properties;
    pb::MqttMessage {
        topic: Bytes::copy_from_slice(msg.topic.as_bytes()),
        payload: msg.payload.clone(),
        qos: msg.qos as u32,
        retain: msg.retain,
        payload_format_indicator: p.payload_format_indicator.map(u32::from),
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user_properties: p
            .user_properties
            .iter()
            .map(|(key, value)| pb::UserProperty {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        expires_at: msg.expires_at,
        origin_client: msg
            .origin
            .as_ref()
            .map(|c| Bytes::copy_from_slice(c.as_bytes())),
        timestamp: msg.timestamp,
        origin_node: Some(msg.origin_node.as_deref().unwrap_or(local_node).to_string()),
        message_expiry_interval: p.message_expiry_interval,
    }
}

/// A message from the wire.
pub fn message_from_pb(m: pb::MqttMessage) -> Result<Message> {
    let properties = Properties {
        payload_format_indicator: m
            .payload_format_indicator
            .map(|v| small::<u8>(v, "payload format indicator"))
            .transpose()?,
        message_expiry_interval: m.message_expiry_interval,
        content_type: m.content_type,
        response_topic: m.response_topic,
        correlation_data: m.correlation_data,
        user_properties: m
            .user_properties
            .into_iter()
            .map(|u| (u.key, u.value))
            .collect(),
        ..Properties::default()
    };
    Ok(Message {
        topic: utf8(&m.topic, "topic")?,
        payload: m.payload,
        qos: qos(m.qos, "message")?,
        retain: m.retain,
        properties: properties.into(),
        expires_at: m.expires_at,
        origin: m
            .origin_client
            .map(|c| utf8(&c, "origin client"))
            .transpose()?,
        timestamp: m.timestamp,
        origin_node: m.origin_node.map(Arc::from),
    })
}

fn delivery_to_pb(d: &Delivery, node: &str) -> pb::Delivery {
    pb::Delivery {
        message: Some(message_to_pb(&d.msg, node)),
        qos: d.qos as u32,
        retain: d.retain,
        sub_ids: d.sub_ids.clone(),
    }
}

fn delivery_from_pb(d: pb::Delivery) -> Result<Delivery> {
    let msg = d.message.ok_or_else(|| Error::Decode {
        what: "delivery",
        message: "no message".into(),
    })?;
    Ok(Delivery {
        msg: Arc::new(message_from_pb(msg)?),
        qos: qos(d.qos, "delivery")?,
        retain: d.retain,
        sub_ids: d.sub_ids,
    })
}

fn will_to_pb(w: &Will, node: &str) -> pb::Will {
    let msg = Message {
        topic: w.topic.clone(),
        payload: w.payload.clone(),
        qos: w.qos,
        retain: w.retain,
        properties: (*w.properties).clone().into(),
        expires_at: None,
        origin: None,
        timestamp: 0,
        origin_node: None,
    };
    pb::Will {
        message: Some(message_to_pb(&msg, node)),
        delay: w.delay,
    }
}

fn will_from_pb(w: pb::Will) -> Result<Will> {
    let m = message_from_pb(w.message.ok_or_else(|| Error::Decode {
        what: "will",
        message: "no message".into(),
    })?)?;
    Ok(Will {
        topic: m.topic,
        payload: m.payload,
        qos: m.qos,
        retain: m.retain,
        properties: m.properties.into_boxed(),
        delay: w.delay,
    })
}

/// A session for the wire (a `Claim` reply).
pub fn session_to_pb(s: &SessionData, node: &str) -> pb::Session {
    let mut subscriptions: Vec<pb::Subscription> = s
        .subscriptions
        .iter()
        .map(|(filter, e)| pb::Subscription {
            filter: filter.clone(),
            options: Some(pb::SubOptions {
                qos: e.options.qos as u32,
                no_local: e.options.no_local,
                retain_as_published: e.options.retain_as_published,
                retain_handling: u32::from(e.options.retain_handling),
                identifier: e.identifier,
            }),
        })
        .collect();
    subscriptions.sort_by(|a, b| a.filter.cmp(&b.filter));
    let mut incoming_qos2: Vec<u32> = s.incoming_qos2.iter().map(|&p| u32::from(p)).collect();
    incoming_qos2.sort_unstable();
    pb::Session {
        client_id: s.client_id.to_string(),
        subscriptions,
        queue: s.queue.iter().map(|d| delivery_to_pb(d, node)).collect(),
        inflight: s
            .inflight
            .iter()
            .map(|(pkid, f)| pb::InflightEntry {
                pkid: u32::from(*pkid),
                sent: match f {
                    Inflight::Sent(d) => Some(delivery_to_pb(d, node)),
                    Inflight::Released => None,
                },
            })
            .collect(),
        incoming_qos2,
        will: s.will.as_ref().map(|w| will_to_pb(w, node)),
        expiry_interval: s.expiry_interval,
        last_pkid: u32::from(s.last_pkid),
    }
}

/// A session from the wire.
pub fn session_from_pb(s: pb::Session) -> Result<SessionData> {
    let mut subscriptions = tern_broker::session::Subscriptions::default();
    for sub in s.subscriptions {
        let o = sub.options.unwrap_or_default();
        let entry = SubEntry {
            options: SubOptions {
                qos: qos(o.qos, "subscription")?,
                no_local: o.no_local,
                retain_as_published: o.retain_as_published,
                retain_handling: small(o.retain_handling, "retain handling")?,
            },
            identifier: o.identifier,
        };
        subscriptions.insert(sub.filter, entry);
    }
    let queue = s
        .queue
        .into_iter()
        .map(delivery_from_pb)
        .collect::<Result<VecDeque<_>>>()?;
    let mut inflight = VecDeque::with_capacity(s.inflight.len());
    for e in s.inflight {
        let state = match e.sent {
            Some(d) => Inflight::Sent(delivery_from_pb(d)?),
            None => Inflight::Released,
        };
        inflight.push_back((small(e.pkid, "packet id")?, state));
    }
    let incoming_qos2 = s
        .incoming_qos2
        .into_iter()
        .map(|p| small(p, "packet id"))
        .collect::<Result<PkidSet>>()?;
    Ok(SessionData {
        client_id: Arc::from(s.client_id),
        subscriptions,
        queue,
        inflight,
        incoming_qos2,
        will: s.will.map(will_from_pb).transpose()?.map(Box::new),
        expiry_interval: s.expiry_interval,
        last_pkid: small(s.last_pkid, "packet id")?,
    })
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
