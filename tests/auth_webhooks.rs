//! Authentication and authorization webhooks against the real server: a
//! real HTTP endpoint (axum on 127.0.0.1:0, recording every call) answers
//! `auth_on_register`, `auth_on_publish` and `auth_on_subscribe` as VerneMQ's
//! `vmq_webhooks` expects; real MQTT clients (the raw client) connect,
//! publish and subscribe, for 3.1.1 and 5.0.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::raw::{Connect, Props, Publish, Raw, Will};
use common::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tern_broker::auth::password::PasswordFile;
use tern_broker::config::{Config, HookKind, WebhookConfig};

/// How the test endpoint answers one call.
struct Answer {
    status: u16,
    body: Value,
    cache_control: Option<&'static str>,
    delay: Duration,
}

fn ok() -> Answer {
    answer(json!({"result": "ok"}))
}

fn next() -> Answer {
    answer(json!({"result": "next"}))
}

fn error(why: &str) -> Answer {
    answer(json!({"result": {"error": why}}))
}

fn answer(body: Value) -> Answer {
    Answer {
        status: 200,
        body,
        cache_control: None,
        delay: Duration::ZERO,
    }
}

type Script = dyn Fn(&str, &Value) -> Answer + Send + Sync;

#[derive(Clone)]
struct Shared {
    script: Arc<Script>,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

/// The webhook endpoint: answers with `script(hook, body)`, records calls.
struct Endpoint {
    url: String,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Endpoint {
    async fn start(script: impl Fn(&str, &Value) -> Answer + Send + Sync + 'static) -> Endpoint {
        let shared = Shared {
            script: Arc::new(script),
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        let seen = shared.seen.clone();
        let app = axum::Router::new().fallback(handle).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the endpoint");
        let addr = listener.local_addr().expect("endpoint address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Endpoint {
            url: format!("http://{addr}/vmq"),
            seen,
        }
    }

    /// The bodies of the calls made to `hook` so far.
    fn calls(&self, hook: &str) -> Vec<Value> {
        let seen = self.seen.lock().expect("calls");
        seen.iter()
            .filter(|(h, _)| h == hook)
            .map(|(_, b)| b.clone())
            .collect()
    }

    fn hook(&self, kind: HookKind) -> WebhookConfig {
        WebhookConfig::new(kind, self.url.clone())
    }
}

async fn handle(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let hook = headers
        .get("vernemq-hook")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    s.seen
        .lock()
        .expect("calls")
        .push((hook.clone(), body.clone()));
    let a = (s.script)(&hook, &body);
    if !a.delay.is_zero() {
        tokio::time::sleep(a.delay).await;
    }
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, a.body.to_string()).into_response();
    if let Some(cc) = a.cache_control {
        r.headers_mut()
            .insert("cache-control", cc.parse().expect("header value"));
    }
    r
}

async fn server(f: impl FnOnce(&mut Config)) -> TestServer {
    start_with(|c| {
        c.auth.allow_anonymous = false;
        f(c);
    })
    .await
}

fn version(v5: bool, id: &str) -> Connect {
    if v5 {
        Connect::v5(id)
    } else {
        Connect::v4(id)
    }
}

/// Metric value, 0 when the series does not exist yet.
async fn metric_or_zero(s: &TestServer, name: &str) -> f64 {
    let (_, body) = http_get(s.admin(), "/metrics").await;
    metric(&body, name).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_is_decided_by_the_hook_per_version() {
    let ep = Endpoint::start(
        |_, b| match (b["username"].as_str(), b["password"].as_str()) {
            (Some("alice"), Some("wonderland")) => ok(),
            (Some("alice"), _) => error("invalid_credentials"),
            _ => error("not_allowed"),
        },
    )
    .await;
    let s = server(|c| c.auth.webhooks = vec![ep.hook(HookKind::AuthOnRegister)]).await;
    for v5 in [false, true] {
        let id = uid("reg");
        let (mut c, ack) =
            Raw::connect(s.addr, login(version(v5, &id), "alice", "wonderland")).await;
        assert_eq!(ack.code, 0, "allowed");
        c.ping().await;
        let (_, ack) = Raw::connect(s.addr, login(version(v5, &uid("reg")), "alice", "nope")).await;
        assert_eq!(ack.code, if v5 { 0x86 } else { 4 }, "invalid_credentials");
        let (_, ack) = Raw::connect(s.addr, login(version(v5, &uid("reg")), "mallory", "x")).await;
        assert_eq!(ack.code, if v5 { 0x87 } else { 5 }, "not_allowed");
        let (_, ack) = Raw::connect(s.addr, version(v5, &uid("anon"))).await;
        assert_eq!(
            ack.code,
            if v5 { 0x87 } else { 5 },
            "anonymous, refused by the hook"
        );
    }
    // The request is VerneMQ's.
    let first = ep.calls("auth_on_register")[0].clone();
    assert_eq!(first["peer_addr"], "127.0.0.1");
    assert!(
        first["peer_port"].as_u64().is_some_and(|p| p > 0),
        "{first}"
    );
    assert_eq!(first["mountpoint"], "");
    assert_eq!(first["clean_session"], true);
    assert_eq!(first["username"], "alice");
    assert_eq!(first["password"], "wonderland");
    assert!(first["client_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("reg")));
    assert_eq!(ep.calls("auth_on_register").len(), 8);
    // Failed logins are counted like the password file's.
    assert_eq!(scrape(s.admin(), "tern_auth_failures_total").await, 6.0);
    assert_eq!(scrape(s.admin(), "tern_webhook_denials_total").await, 6.0);
    assert_eq!(scrape(s.admin(), "tern_webhook_calls_total").await, 8.0);
    assert_eq!(
        scrape(s.admin(), "tern_webhook_duration_seconds_count").await,
        8.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_falls_through_to_the_password_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut pf = PasswordFile::default();
    pf.set("alice", "wonderland").expect("hash");
    let passwords = dir.path().join("passwd");
    pf.save(&passwords).expect("save");
    let ep = Endpoint::start(|_, b| match b["username"].as_str() {
        Some("hooked") => ok(),
        _ => next(),
    })
    .await;
    let s = server(|c| {
        c.auth.password_file = Some(passwords);
        c.auth.webhooks = vec![ep.hook(HookKind::AuthOnRegister)];
    })
    .await;
    let (_, ack) = Raw::connect(s.addr, login(Connect::v5(&uid("n")), "alice", "wonderland")).await;
    assert_eq!(ack.code, 0, "next, then the password file accepts");
    let (_, ack) = Raw::connect(s.addr, login(Connect::v5(&uid("n")), "alice", "wrong")).await;
    assert_eq!(ack.code, 0x86, "next, then the password file refuses");
    let (_, ack) = Raw::connect(s.addr, login(Connect::v4(&uid("n")), "hooked", "any")).await;
    assert_eq!(ack.code, 0, "the hook's ok needs no password file entry");
    assert_eq!(ep.calls("auth_on_register").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_refusals_per_version() {
    let ep = Endpoint::start(|_, b| match b["topic"].as_str() {
        Some(t) if t.starts_with("deny/") => error("not_allowed"),
        _ => ok(),
    })
    .await;
    let s = server(|c| {
        c.auth.allow_anonymous = true;
        c.auth.webhooks = vec![ep.hook(HookKind::AuthOnPublish)];
    })
    .await;
    let mut watcher = Raw::v5(s.addr, &uid("w")).await;
    watcher.subscribe("#", 1).await;
    let mut p5 = Raw::v5(s.addr, &uid("p5")).await;
    assert_eq!(
        p5.publish_msg(Publish::new("deny/x", b"no5").qos(1)).await,
        0x87,
        "5.0 PUBACK: not authorized"
    );
    assert_eq!(
        p5.publish_msg(Publish::new("deny/x", b"no5").qos(2)).await,
        0x87,
        "5.0 PUBREC: not authorized"
    );
    let mut p4 = Raw::v4(s.addr, &uid("p4")).await;
    assert_eq!(
        p4.publish_msg(Publish::new("deny/y", b"dropped").qos(1))
            .await,
        0,
        "3.1.1: acknowledged and dropped"
    );
    assert_eq!(
        p4.publish_msg(Publish::new("ok/y", b"allowed").qos(1))
            .await,
        0
    );
    let first = watcher.next_publish().await;
    assert_eq!(
        (first.topic.as_str(), first.payload.as_slice()),
        ("ok/y", &b"allowed"[..]),
        "nothing refused reaches the subscriber"
    );
    let body = ep
        .calls("auth_on_publish")
        .into_iter()
        .find(|b| b["topic"] == "ok/y")
        .expect("called for ok/y");
    assert_eq!(body["payload"], "YWxsb3dlZA==", "base64 of \"allowed\"");
    assert_eq!(
        (body["qos"].as_u64(), body["retain"].as_bool()),
        (Some(1), Some(false))
    );
    // A will is a publish too: a refused will topic refuses the CONNECT.
    let will = Connect::v5(&uid("will")).will(Will::new("deny/will", b"bye"));
    let (_, ack) = Raw::connect(s.addr, will).await;
    assert_eq!(ack.code, 0x87);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_refusals_whole_and_per_filter() {
    let ep = Endpoint::start(|_, b| {
        let topics: Vec<&str> = b["topics"]
            .as_array()
            .map(|t| t.iter().filter_map(|x| x["topic"].as_str()).collect())
            .unwrap_or_default();
        if topics.iter().all(|t| t.starts_with("deny/")) {
            return error("not_allowed");
        }
        // Per topic: QoS 128 refuses the secret one.
        let list: Vec<Value> = topics
            .iter()
            .map(|t| json!({"topic": t, "qos": if t.starts_with("secret/") { 128 } else { 1 }}))
            .collect();
        answer(json!({"result": "ok", "topics": list}))
    })
    .await;
    let s = server(|c| {
        c.auth.allow_anonymous = true;
        c.limits.max_topic_levels = 3;
        c.auth.webhooks = vec![ep.hook(HookKind::AuthOnSubscribe)];
    })
    .await;
    for v5 in [true, false] {
        let mut c = Raw::connect_ok(s.addr, version(v5, &uid("sub"))).await.0;
        let refused = if v5 { 0x87 } else { 0x80 };
        assert_eq!(
            c.subscribe_with(&[("deny/#", 1)], Props::new()).await,
            vec![refused]
        );
        assert_eq!(
            c.subscribe_with(
                &[("open/#", 1), ("secret/#", 1), ("too/deep/a/b", 0)],
                Props::new()
            )
            .await,
            vec![1, refused, if v5 { 0x8F } else { 0x80 }],
            "per-filter answer; a filter refused by the local checks is not asked about"
        );
    }
    let asked = ep.calls("auth_on_subscribe");
    assert_eq!(
        asked[1]["topics"],
        json!([{"topic": "open/#", "qos": 1}, {"topic": "secret/#", "qos": 1}])
    );
    // The granted subscription works.
    let mut sub = Raw::v5(s.addr, &uid("sub")).await;
    assert_eq!(
        sub.subscribe_with(&[("open/#", 1)], Props::new()).await,
        vec![1]
    );
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    p.publish("open/x", b"hi", 1).await;
    assert_eq!(sub.next_publish().await.payload, b"hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_decisions_make_no_second_call() {
    let ep = Endpoint::start(|_, b| {
        let mut a = if b["password"] == "right" {
            ok()
        } else {
            error("invalid_credentials")
        };
        a.cache_control = Some("max-age=60");
        a
    })
    .await;
    let s = server(|c| c.auth.webhooks = vec![ep.hook(HookKind::AuthOnRegister)]).await;
    let id = uid("cached");
    for _ in 0..2 {
        // A new connection each time: another source port, same fields.
        let (c, ack) = Raw::connect(s.addr, login(Connect::v5(&id), "u", "right")).await;
        assert_eq!(ack.code, 0);
        c.disconnect().await;
    }
    assert_eq!(
        ep.calls("auth_on_register").len(),
        1,
        "the second CONNECT was cached"
    );
    for _ in 0..2 {
        let (_, ack) = Raw::connect(s.addr, login(Connect::v5(&id), "u", "wrong")).await;
        assert_eq!(ack.code, 0x86);
    }
    assert_eq!(
        ep.calls("auth_on_register").len(),
        2,
        "another password is another key; its refusal is cached too"
    );
    assert_eq!(
        scrape(s.admin(), "tern_webhook_cache_hits_total").await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_hook_fails_closed_and_delays_only_its_client() {
    let ep = Endpoint::start(|hook, b| {
        let slow = match hook {
            "auth_on_register" => b["username"] == "slow",
            _ => b["topic"] == "slow/x",
        };
        let mut a = ok();
        if slow {
            a.delay = Duration::from_secs(30);
        }
        a
    })
    .await;
    let s = server(|c| {
        c.auth.allow_anonymous = true;
        let mut reg = ep.hook(HookKind::AuthOnRegister);
        reg.timeout_ms = 700;
        let mut publ = ep.hook(HookKind::AuthOnPublish);
        publ.timeout_ms = 700;
        c.auth.webhooks = vec![reg, publ];
    })
    .await;
    let mut watcher = Raw::v5(s.addr, &uid("w")).await;
    watcher.subscribe("fast/#", 1).await;
    let mut stuck = Raw::v5(s.addr, &uid("stuck")).await;
    let started = Instant::now();
    let waiting = tokio::spawn(async move {
        let code = stuck.publish_msg(Publish::new("slow/x", b"x").qos(1)).await;
        (code, Instant::now())
    });
    wait_until_sync(T, "the slow publish reached the hook", || {
        ep.calls("auth_on_publish")
            .iter()
            .any(|b| b["topic"] == "slow/x")
    })
    .await;
    // Meanwhile another client connects, publishes and is delivered to.
    let mut other = Raw::v5(s.addr, &uid("other")).await;
    other.publish("fast/y", b"quick", 1).await;
    assert_eq!(watcher.next_publish().await.payload, b"quick");
    let others_done = Instant::now();
    let (code, stuck_done) = waiting.await.expect("publisher task");
    assert_eq!(code, 0x87, "timed out: refused (fail closed)");
    assert!(
        others_done < stuck_done,
        "the other client did not wait for the slow hook"
    );
    assert!(
        stuck_done - started < Duration::from_secs(10),
        "bounded by timeout_ms"
    );
    let (_, ack) = Raw::connect(s.addr, login(Connect::v4(&uid("s")), "slow", "x")).await;
    assert_eq!(ack.code, 5, "a CONNECT whose hook times out is refused");
    wait_until(T, "both failures counted", || async {
        metric_or_zero(&s, "tern_webhook_failures_total").await >= 2.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_proxy_protocol_the_hook_sees_the_forwarded_address() {
    let ep = Endpoint::start(|_, b| match b["peer_addr"].as_str() {
        Some("198.51.100.9") => ok(),
        _ => error("not_allowed"),
    })
    .await;
    let s = server(|c| {
        c.listeners.tcp.proxy_protocol = true;
        c.auth.webhooks = vec![ep.hook(HookKind::AuthOnRegister)];
    })
    .await;
    let mut c = Raw::tcp(s.addr).await;
    c.send(&proxy_v2_header("198.51.100.9:5555".parse().expect("addr")))
        .await;
    assert_eq!(c.handshake(Connect::v5(&uid("pp"))).await.code, 0);
    let asked = &ep.calls("auth_on_register")[0];
    assert_eq!(
        (asked["peer_addr"].as_str(), asked["peer_port"].as_u64()),
        (Some("198.51.100.9"), Some(5555))
    );
    let mut direct = Raw::tcp(s.addr).await;
    direct
        .send(&proxy_v2_header("203.0.113.1:6000".parse().expect("addr")))
        .await;
    assert_eq!(direct.handshake(Connect::v5(&uid("pp"))).await.code, 0x87);
}
