//! The webhook wire format of VerneMQ's `vmq_webhooks`: one JSON body per
//! hook, POSTed with a `vernemq-hook` header, and the `result` of a 200
//! answer (`"ok"`, `"next"` or `{"error": …}`). Pure: no I/O.

use crate::codec::QoS;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use blake2::{Blake2s256, Digest};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// A cache key: a digest of the request fields a decision depends on, so
/// that no password is kept in memory.
pub type Key = [u8; 32];

/// A request ready to send: its body, its cache key, and what the answer
/// is checked against.
#[derive(Debug, Clone)]
pub struct Request {
    /// The JSON body.
    pub body: Vec<u8>,
    /// Cache key.
    pub key: Key,
    /// What was asked, for reading the answer.
    pub expect: Expect,
}

/// What a request asked, as far as reading its answer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// `auth_on_register`.
    Register,
    /// `auth_on_publish` to this topic.
    Publish {
        /// The topic asked about.
        topic: String,
    },
    /// `auth_on_subscribe` to these filters.
    Subscribe {
        /// The filters asked about, in order.
        filters: Vec<String>,
    },
}

/// The endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Allowed. For `auth_on_subscribe`, one verdict per filter asked about
    /// (a `topics` list in the answer can refuse some).
    Ok {
        /// Per-filter verdicts, subscribe only.
        topics: Option<Vec<bool>>,
    },
    /// Not this endpoint's call: ask the next one, then the files.
    Next,
    /// Refused, with the endpoint's reason.
    Error(String),
}

#[derive(Serialize)]
struct RegisterBody<'a> {
    peer_addr: String,
    peer_port: u16,
    username: Option<&'a str>,
    password: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    password_base64: bool,
    mountpoint: &'static str,
    client_id: &'a str,
    clean_session: bool,
}

#[derive(Serialize)]
struct PublishBody<'a> {
    username: Option<&'a str>,
    client_id: &'a str,
    mountpoint: &'static str,
    qos: u8,
    topic: &'a str,
    payload: String,
    retain: bool,
}

#[derive(Serialize)]
struct TopicQos<'a> {
    topic: &'a str,
    qos: u8,
}

#[derive(Serialize)]
struct SubscribeBody<'a> {
    username: Option<&'a str>,
    client_id: &'a str,
    mountpoint: &'static str,
    topics: Vec<TopicQos<'a>>,
}

fn json(v: &impl Serialize) -> Vec<u8> {
    // Plain structs of strings and numbers always serialize.
    serde_json::to_vec(v).unwrap_or_default()
}

fn key(hook: &str, fields: &impl Serialize) -> Key {
    let mut h = Blake2s256::new();
    h.update(hook.as_bytes());
    h.update([0]);
    h.update(json(fields));
    h.finalize().into()
}

/// `auth_on_register`. The password goes as a string, as VerneMQ sends it;
/// one that is not UTF-8 goes base64-encoded with `password_base64: true`.
/// The cache key leaves out the peer port, which changes on every connection.
pub fn register(
    client_id: &str,
    username: Option<&str>,
    password: Option<&[u8]>,
    peer: SocketAddr,
    clean_session: bool,
) -> Request {
    let (password, password_base64) = match password.map(std::str::from_utf8) {
        None => (None, false),
        Some(Ok(s)) => (Some(s.to_owned()), false),
        Some(Err(_)) => (password.map(|p| B64.encode(p)), true),
    };
    let peer_addr = peer.ip().to_canonical().to_string();
    let k = key(
        "auth_on_register",
        &(
            client_id,
            username,
            &password,
            password_base64,
            &peer_addr,
            clean_session,
        ),
    );
    let body = json(&RegisterBody {
        peer_addr,
        peer_port: peer.port(),
        username,
        password,
        password_base64,
        mountpoint: "",
        client_id,
        clean_session,
    });
    Request {
        body,
        key: k,
        expect: Expect::Register,
    }
}

/// `auth_on_publish`, the payload base64-encoded (VerneMQ's default). The
/// cache key leaves out the payload, as VerneMQ's does.
pub fn publish(
    client_id: &str,
    username: Option<&str>,
    topic: &str,
    qos: QoS,
    retain: bool,
    payload: &[u8],
) -> Request {
    let k = key(
        "auth_on_publish",
        &(client_id, username, topic, qos as u8, retain),
    );
    let body = json(&PublishBody {
        username,
        client_id,
        mountpoint: "",
        qos: qos as u8,
        topic,
        payload: B64.encode(payload),
        retain,
    });
    Request {
        body,
        key: k,
        expect: Expect::Publish {
            topic: topic.to_owned(),
        },
    }
}

/// `auth_on_subscribe` for every filter of one SUBSCRIBE.
pub fn subscribe(client_id: &str, username: Option<&str>, filters: &[(&str, QoS)]) -> Request {
    let topics: Vec<TopicQos> = filters
        .iter()
        .map(|&(topic, qos)| TopicQos {
            topic,
            qos: qos as u8,
        })
        .collect();
    let pairs: Vec<(&str, u8)> = filters.iter().map(|&(f, q)| (f, q as u8)).collect();
    let k = key("auth_on_subscribe", &(client_id, username, &pairs));
    let body = json(&SubscribeBody {
        username,
        client_id,
        mountpoint: "",
        topics,
    });
    Request {
        body,
        key: k,
        expect: Expect::Subscribe {
            filters: filters.iter().map(|(f, _)| (*f).to_owned()).collect(),
        },
    }
}

#[derive(Deserialize)]
struct Answer {
    result: Outcome,
    #[serde(default)]
    modifiers: Option<Modifiers>,
    /// `auth_on_subscribe` (3.x style): the subscriptions as the endpoint
    /// wants them.
    #[serde(default)]
    topics: Option<Vec<AnswerTopic>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Outcome {
    Word(String),
    Error { error: serde_json::Value },
}

#[derive(Deserialize, Default)]
struct Modifiers {
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    topics: Option<Vec<AnswerTopic>>,
}

#[derive(Deserialize)]
struct AnswerTopic {
    topic: String,
    qos: u16,
}

/// Reads a 200 answer's body. Modifiers Tern cannot apply are refused
/// rather than ignored where ignoring them would grant more than the
/// endpoint meant: a rewritten publish topic refuses the PUBLISH, and a
/// subscription missing from (or rewritten in) a returned `topics` list, or
/// returned with QoS 128 or more, is refused. Other modifiers are ignored.
pub fn parse(expect: &Expect, body: &[u8]) -> Result<Reply, String> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| format!("bad JSON: {e}"))?;
    let word = match answer.result {
        Outcome::Word(w) => w,
        Outcome::Error { error } => {
            let why = match error {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            return Ok(Reply::Error(why));
        }
    };
    match word.as_str() {
        "next" => return Ok(Reply::Next),
        "ok" => {}
        other => return Err(format!("unknown result {other:?}")),
    }
    let modifiers = answer.modifiers.unwrap_or_default();
    match expect {
        Expect::Register => Ok(Reply::Ok { topics: None }),
        Expect::Publish { topic } => match modifiers.topic {
            Some(t) if t != *topic => Ok(Reply::Error(format!(
                "topic rewrite to {t:?} is not supported"
            ))),
            _ => Ok(Reply::Ok { topics: None }),
        },
        Expect::Subscribe { filters } => {
            let verdicts = answer.topics.or(modifiers.topics).map(|given| {
                filters
                    .iter()
                    .map(|f| given.iter().any(|t| t.topic == *f && t.qos < 128))
                    .collect()
            });
            Ok(Reply::Ok { topics: verdicts })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn body(r: &Request) -> Value {
        serde_json::from_slice(&r.body).expect("JSON")
    }

    #[test]
    fn register_body_is_vernemqs() {
        let peer: SocketAddr = "[::ffff:192.0.2.7]:4242".parse().expect("addr");
        let r = register("dev1", Some("alice"), Some(b"s3cret"), peer, true);
        assert_eq!(
            body(&r),
            json!({
                "peer_addr": "192.0.2.7", "peer_port": 4242, "username": "alice",
                "password": "s3cret", "mountpoint": "", "client_id": "dev1",
                "clean_session": true
            })
        );
        let anon = register("dev1", None, None, peer, false);
        assert_eq!(body(&anon)["username"], Value::Null);
        assert_eq!(body(&anon)["password"], Value::Null);
        let binary = register("dev1", Some("a"), Some(&[0xff, 0x00]), peer, true);
        assert_eq!(body(&binary)["password"], "/wA=");
        assert_eq!(body(&binary)["password_base64"], true);
    }

    #[test]
    fn register_key_ignores_the_port_only() {
        let at = |p: &str| p.parse::<SocketAddr>().expect("addr");
        let k = |peer: &str, pass: &[u8]| register("c", Some("u"), Some(pass), at(peer), true).key;
        assert_eq!(k("10.0.0.1:1000", b"pw"), k("10.0.0.1:2000", b"pw"));
        assert_ne!(k("10.0.0.1:1000", b"pw"), k("10.0.0.2:1000", b"pw"));
        assert_ne!(k("10.0.0.1:1000", b"pw"), k("10.0.0.1:1000", b"other"));
    }

    #[test]
    fn publish_and_subscribe_bodies() {
        let p = publish("c", Some("u"), "a/b", QoS::AtLeastOnce, true, b"hello");
        assert_eq!(
            body(&p),
            json!({
                "username": "u", "client_id": "c", "mountpoint": "", "qos": 1,
                "topic": "a/b", "payload": "aGVsbG8=", "retain": true
            })
        );
        let other_payload = publish("c", Some("u"), "a/b", QoS::AtLeastOnce, true, b"bye");
        assert_eq!(
            p.key, other_payload.key,
            "the payload is not part of the key"
        );
        let s = subscribe(
            "c",
            None,
            &[("a/b", QoS::AtLeastOnce), ("c/#", QoS::ExactlyOnce)],
        );
        assert_eq!(
            body(&s),
            json!({
                "username": null, "client_id": "c", "mountpoint": "",
                "topics": [{"topic": "a/b", "qos": 1}, {"topic": "c/#", "qos": 2}]
            })
        );
    }

    #[test]
    fn answers_are_read() {
        let reg = Expect::Register;
        assert_eq!(
            parse(&reg, br#"{"result":"ok"}"#),
            Ok(Reply::Ok { topics: None })
        );
        assert_eq!(parse(&reg, br#"{"result":"next"}"#), Ok(Reply::Next));
        assert_eq!(
            parse(&reg, br#"{"result":{"error":"not_allowed"}}"#),
            Ok(Reply::Error("not_allowed".into()))
        );
        assert_eq!(
            parse(
                &reg,
                br#"{"result":"ok","modifiers":{"max_inflight_messages":10}}"#
            ),
            Ok(Reply::Ok { topics: None }),
            "modifiers Tern does not apply are ignored"
        );
        assert!(parse(&reg, br#"{"result":"maybe"}"#).is_err());
        assert!(parse(&reg, b"not json").is_err());
        assert!(parse(&reg, br#"{"answer":"ok"}"#).is_err());
    }

    #[test]
    fn rewrites_that_cannot_be_applied_refuse() {
        let publ = Expect::Publish {
            topic: "a/b".into(),
        };
        assert_eq!(
            parse(
                &publ,
                br#"{"result":"ok","modifiers":{"topic":"a/b","qos":0}}"#
            ),
            Ok(Reply::Ok { topics: None })
        );
        assert!(matches!(
            parse(&publ, br#"{"result":"ok","modifiers":{"topic":"x/y"}}"#),
            Ok(Reply::Error(_))
        ));
        let sub = Expect::Subscribe {
            filters: vec!["a/b".into(), "c/d".into(), "e/f".into()],
        };
        assert_eq!(
            parse(
                &sub,
                br#"{"result":"ok","topics":[{"topic":"a/b","qos":1},{"topic":"c/d","qos":128}]}"#
            ),
            Ok(Reply::Ok {
                topics: Some(vec![true, false, false])
            }),
            "128 refuses c/d; e/f was dropped from the list"
        );
        assert_eq!(
            parse(
                &sub,
                br#"{"result":"ok","modifiers":{"topics":[{"topic":"e/f","qos":135}]}}"#
            ),
            Ok(Reply::Ok {
                topics: Some(vec![false, false, false])
            })
        );
    }
}
