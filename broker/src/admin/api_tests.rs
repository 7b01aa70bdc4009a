//! The management routes and the API-key layer, driven without a socket.

use super::*;
use crate::codec::{QoS, SubOptions};
use crate::config::{AdminConfig, ApiKeyConfig, Config, Scope};
use crate::trie::SubEntry;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use std::net::SocketAddr;
use tower::ServiceExt;

const MGMT: &str = "mgmt-key-0123456789";
const METRICS: &str = "metrics-key-0123456789";
const STATUS: &str = "status-key-0123456789";

fn keys(require: Vec<Scope>) -> Arc<KeyRing> {
    let key = |k: &str, s: Scope| ApiKeyConfig {
        key: k.into(),
        scopes: vec![s],
    };
    Arc::new(KeyRing::from_config(&AdminConfig {
        api_keys: vec![
            key(MGMT, Scope::Mgmt),
            key(METRICS, Scope::Metrics),
            key(STATUS, Scope::Status),
        ],
        require_key_for: require,
        ..AdminConfig::default()
    }))
}

/// A log filter that knows a few levels.
#[derive(Default)]
struct FakeLog(parking_lot::Mutex<String>);

impl LogControl for FakeLog {
    fn current(&self) -> String {
        self.0.lock().clone()
    }
    fn set(&self, d: &str) -> Result<(), String> {
        if !["info", "debug", "tern_broker=debug,info"].contains(&d) {
            return Err("unknown level".into());
        }
        *self.0.lock() = d.into();
        Ok(())
    }
}

fn state() -> AdminState {
    let mut config = Config::default();
    config.node.name = "n1".into();
    let broker = Broker::new(Arc::new(config), Metrics::default());
    let health = Health::default();
    health.set("tcp", true);
    broker.set_listeners(Listeners {
        entries: vec![ListenerEntry {
            kind: "tcp",
            bind: "127.0.0.1:1883".parse().expect("addr"),
            max_connections: 10,
            proxy_protocol: true,
        }],
        health: health.clone(),
    });
    let metrics = Metrics::default();
    AdminState {
        status: super::status::Sampler::new(metrics.clone()),
        metrics,
        health,
        broker: Some(broker),
        readiness: Readiness::new(),
        keys: keys(Vec::new()),
        log: Some(Arc::new(FakeLog(parking_lot::Mutex::new("info".into())))),
    }
}

/// Attaches a session for `id` as a connection from `peer` would.
fn connect(s: &AdminState, id: &str, user: &str, peer: &str) {
    let broker = s.broker.as_ref().expect("broker");
    let a = broker.attach(&Arc::from(id), true);
    {
        let mut st = a.cell.state.lock();
        st.data.expiry_interval = 60;
        st.conn = Some(crate::broker::ConnMeta {
            username: Some(user.into()),
            peer: peer.parse::<std::net::SocketAddr>().expect("peer").into(),
            listener: crate::connection::ListenerKind::Tcp,
            protocol: 5,
            clean_start: true,
        });
    }
    let options = SubOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        retain_as_published: false,
        retain_handling: 2,
    };
    let entry = SubEntry {
        options,
        identifier: Some(7),
    };
    // The session stays online: its owner is recorded in the cell.
    broker.subscribe(&a.cell, a.owner_id, "$share/g/a/+", entry);
}

struct Reply {
    status: StatusCode,
    json: serde_json::Value,
}

async fn call(
    s: &AdminState,
    method: &str,
    uri: &str,
    key: Option<&str>,
    peer: Option<&str>,
    body: &str,
) -> Reply {
    let mut r = Request::builder().method(method).uri(uri);
    if let Some(k) = key {
        r = r.header("authorization", format!("Bearer {k}"));
    }
    let mut request = r.body(Body::from(body.to_string())).expect("request");
    if let Some(p) = peer {
        let addr: SocketAddr = p.parse().expect("peer");
        request.extensions_mut().insert(ConnectInfo(addr));
    }
    let response = router(s.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned().into());
    Reply { status, json }
}

async fn mgmt(s: &AdminState, method: &str, uri: &str) -> Reply {
    call(s, method, uri, Some(MGMT), None, "").await
}

#[tokio::test]
async fn every_management_route_refuses_without_the_mgmt_scope() {
    let s = state();
    connect(&s, "c1", "alice", "198.51.100.9:5555");
    let routes = [
        ("GET", "/api/v1/cluster/show"),
        ("GET", "/api/v1/session/show"),
        ("POST", "/api/v1/session/disconnect?client_id=c1"),
        ("GET", "/api/v1/subscription/show"),
        ("GET", "/api/v1/retain/show"),
        ("POST", "/api/v1/retain/delete?topic=a"),
        ("GET", "/api/v1/listener/show"),
        ("POST", "/api/v1/set?mqtt.max_inflight=5"),
        ("GET", "/log-level"),
        ("PUT", "/log-level"),
    ];
    for (method, uri) in routes {
        for key in [
            None,
            Some("not-a-key-0123456789"),
            Some(METRICS),
            Some(STATUS),
        ] {
            let r = call(&s, method, uri, key, None, "debug").await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {uri} {key:?}");
            let obj = r.json.as_object().expect("JSON error");
            assert_eq!(obj.len(), 1, "only the error, no data: {}", r.json);
            assert!(obj["error"].is_string());
        }
    }
    // Nothing was applied or disconnected by the refused calls.
    let broker = s.broker.as_ref().expect("broker");
    assert_eq!(broker.knobs().max_inflight(), 100);
    assert!(broker.session("c1").is_some_and(|c| c.is_online()));
    assert_eq!(s.log.as_ref().expect("log").current(), "info");
}

#[tokio::test]
async fn no_mgmt_key_means_loopback_only_with_a_hint() {
    let mut s = state();
    s.keys = Arc::new(KeyRing::from_config(&AdminConfig {
        loopback_without_key: true,
        ..AdminConfig::default()
    }));
    let uri = "/api/v1/listener/show";
    let r = call(&s, "GET", uri, None, Some("10.1.2.3:5000"), "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.json["error"]
            .as_str()
            .is_some_and(|e| e.contains("api_keys")),
        "{}",
        r.json
    );
    assert_eq!(
        call(&s, "GET", uri, None, None, "").await.status,
        401,
        "unknown peer"
    );
    let r = call(&s, "GET", uri, None, Some("127.0.0.1:5000"), "").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(&s, "GET", uri, None, Some("[::1]:5000"), "").await;
    assert_eq!(r.status, StatusCode::OK);
    s.keys = Arc::new(KeyRing::from_config(&AdminConfig::default()));
    let r = call(&s, "GET", uri, None, Some("127.0.0.1:5000"), "").await;
    assert_eq!(r.status, StatusCode::OK, "the default keeps the hatch open");
    s.keys = Arc::new(KeyRing::from_config(&AdminConfig {
        loopback_without_key: false,
        ..AdminConfig::default()
    }));
    let r = call(&s, "GET", uri, None, Some("127.0.0.1:5000"), "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "hatch closed");
}

#[tokio::test]
async fn metrics_and_status_scopes_only_when_required() {
    let mut s = state();
    assert_eq!(
        call(&s, "GET", "/metrics", None, None, "").await.status,
        200
    );
    s.keys = keys(vec![Scope::Metrics, Scope::Status]);
    assert_eq!(
        call(&s, "GET", "/metrics", None, None, "").await.status,
        401
    );
    let r = call(&s, "GET", "/metrics", Some(MGMT), None, "").await;
    assert_eq!(r.status, 401, "mgmt does not open metrics");
    assert!(r.json["error"]
        .as_str()
        .is_some_and(|e| e.contains("metrics")));
    let r = call(&s, "GET", "/metrics", Some(METRICS), None, "").await;
    assert_eq!(r.status, 200);
    assert_eq!(scope_of("/status"), Some(Scope::Status));
    assert_eq!(scope_of("/status.json"), Some(Scope::Status));
    assert_eq!(scope_of("/health/listeners"), None);
    assert_eq!(scope_of("/ready"), None);
    assert_eq!(call(&s, "GET", "/health", None, None, "").await.status, 200);
    // x-api-key works too.
    let request = Request::get("/metrics")
        .header("x-api-key", METRICS)
        .body(Body::empty())
        .expect("request");
    let response = router(s.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn session_show_rows_and_filters() {
    let s = state();
    connect(&s, "c1", "alice", "198.51.100.9:5555");
    connect(&s, "c2", "bob", "203.0.113.7:4242");
    let r = mgmt(&s, "GET", "/api/v1/session/show").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["nodes"], serde_json::json!(["n1"]));
    assert_eq!(r.json["missing"], serde_json::json!([]));
    assert_eq!(r.json["truncated"], false);
    let rows = r.json["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    let c1 = &rows[0];
    assert_eq!(c1["client_id"], "c1");
    assert_eq!(c1["node"], "n1");
    assert_eq!(c1["online"], true);
    assert_eq!(c1["user"], "alice");
    assert_eq!(c1["peer"], "198.51.100.9:5555");
    assert_eq!(c1["protocol"], 5);
    assert_eq!(c1["clean_start"], true);
    assert_eq!(c1["expiry_interval"], 60);
    assert_eq!(c1["subscriptions"], 1);
    assert_eq!(
        (c1["queued"].as_u64(), c1["inflight"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(c1["connected_at"].as_u64().is_some_and(|t| t > 0));

    let r = mgmt(&s, "GET", "/api/v1/session/show?user=bob").await;
    assert_eq!(r.json["rows"][0]["client_id"], "c2");
    assert_eq!(r.json["rows"].as_array().map(Vec::len), Some(1));
    let r = mgmt(&s, "GET", "/api/v1/session/show?limit=1").await;
    assert_eq!(r.json["rows"].as_array().map(Vec::len), Some(1));
    assert_eq!(r.json["truncated"], true);
    let r = mgmt(&s, "GET", "/api/v1/session/show?online=false").await;
    assert_eq!(r.json["rows"], serde_json::json!([]));
    let r = mgmt(&s, "GET", "/api/v1/session/show?node=other").await;
    assert_eq!(r.json["rows"], serde_json::json!([]));
    let r = mgmt(&s, "GET", "/api/v1/session/show?limit=many").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json["error"].is_string(), "{}", r.json);
}

#[tokio::test]
async fn subscription_show_splits_shared_groups() {
    let s = state();
    connect(&s, "c1", "alice", "198.51.100.9:5555");
    let r = mgmt(&s, "GET", "/api/v1/subscription/show?topic=a/").await;
    assert_eq!(r.status, StatusCode::OK);
    let row = &r.json["rows"][0];
    assert_eq!(row["client_id"], "c1");
    assert_eq!(row["filter"], "a/+");
    assert_eq!(row["share_group"], "g");
    assert_eq!(row["qos"], 1);
    assert_eq!(row["no_local"], true);
    assert_eq!(row["retain_as_published"], false);
    assert_eq!(row["retain_handling"], 2);
    assert_eq!(row["identifier"], 7);
    let r = mgmt(&s, "GET", "/api/v1/subscription/show?topic=zzz").await;
    assert_eq!(r.json["rows"], serde_json::json!([]));
}

#[tokio::test]
async fn disconnect_and_cleanup() {
    let s = state();
    connect(&s, "c1", "alice", "198.51.100.9:5555");
    let broker = s.broker.clone().expect("broker");
    let kick = broker
        .session("c1")
        .and_then(|c| c.state.lock().owner.as_ref().and_then(|o| o.kick.clone()))
        .expect("owner");
    let r = mgmt(&s, "POST", "/api/v1/session/disconnect?client_id=c1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["disconnected_on"], serde_json::json!(["n1"]));
    assert!(kick.is_cancelled(), "the connection is told to close");
    assert!(broker.session("c1").is_some(), "no cleanup: session kept");
    let r = mgmt(
        &s,
        "POST",
        "/api/v1/session/disconnect?client_id=c1&cleanup=true",
    )
    .await;
    assert_eq!(
        (r.status, r.json["cleanup"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    assert!(
        broker.session("c1").is_none(),
        "cleanup deletes the session"
    );
    let r = mgmt(&s, "POST", "/api/v1/session/disconnect?client_id=c1").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.json["error"].as_str().is_some_and(|e| e.contains("c1")));
    let r = mgmt(&s, "POST", "/api/v1/session/disconnect").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "client_id is required");
}

#[tokio::test]
async fn retained_show_and_delete() {
    let s = state();
    let broker = s.broker.clone().expect("broker");
    let msg = crate::session::Message::new(
        Arc::from("a/b"),
        bytes::Bytes::from_static(b"hello"),
        QoS::AtLeastOnce,
        true,
        &crate::codec::Properties::default(),
    );
    broker.publish(Arc::new(msg));
    let r = mgmt(&s, "GET", "/api/v1/retain/show?topic=a/%2B").await;
    assert_eq!(r.status, StatusCode::OK);
    let row = &r.json["rows"][0];
    assert_eq!(
        (row["topic"].as_str(), row["payload"].as_str()),
        (Some("a/b"), Some("hello"))
    );
    assert_eq!(
        (row["qos"].as_u64(), row["size"].as_u64()),
        (Some(1), Some(5))
    );
    let r = mgmt(&s, "GET", "/api/v1/retain/show?topic=x/%23").await;
    assert_eq!(r.json["rows"], serde_json::json!([]));
    let r = mgmt(&s, "GET", "/api/v1/retain/show?topic=a/%23/b").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let r = mgmt(&s, "POST", "/api/v1/retain/delete?topic=a/%2B").await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "wildcards are not topics"
    );
    let r = mgmt(&s, "POST", "/api/v1/retain/delete?topic=a/b").await;
    assert_eq!(
        (r.status, r.json["deleted"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    assert!(broker.retained_for("#").is_empty());
    // The deletion is a tombstone that wins over the old write.
    let snapshot = broker.retained_snapshot();
    assert!(snapshot
        .iter()
        .any(|m| &*m.topic == "a/b" && m.payload.is_empty()));
    let r = mgmt(&s, "POST", "/api/v1/retain/delete?topic=a/b").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn listener_show_lists_the_registered_listeners() {
    let s = state();
    connect(&s, "c1", "alice", "198.51.100.9:5555");
    let r = mgmt(&s, "GET", "/api/v1/listener/show").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json["rows"],
        serde_json::json!([{
            "node": "n1", "kind": "tcp", "bind": "127.0.0.1:1883", "state": "up",
            "connections": 1, "max_connections": 10, "proxy_protocol": true
        }])
    );
    s.health.set("tcp", false);
    let r = mgmt(&s, "GET", "/api/v1/listener/show").await;
    assert_eq!(r.json["rows"][0]["state"], "down");
}

#[tokio::test]
async fn set_is_all_or_nothing() {
    let s = state();
    let knobs = || s.broker.as_ref().expect("broker").knobs();
    let r = mgmt(&s, "POST", "/api/v1/set?mqtt.max_inflight=5&mqtt.nope=1").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json["error"]
            .as_str()
            .is_some_and(|e| e.contains("mqtt.nope")),
        "{}",
        r.json
    );
    assert_eq!(knobs().max_inflight(), 100, "nothing applied");
    let r = mgmt(&s, "POST", "/api/v1/set?mqtt.max_inflight=x").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json["error"]
        .as_str()
        .is_some_and(|e| e.contains("mqtt.max_inflight")));
    let r = mgmt(&s, "POST", "/api/v1/set").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let uri = "/api/v1/set?mqtt.max_inflight=5&limits.max_topic_levels=9";
    let r = mgmt(&s, "POST", uri).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json["applied"],
        serde_json::json!({ "mqtt.max_inflight": 5, "limits.max_topic_levels": 9 })
    );
    assert_eq!((knobs().max_inflight(), knobs().max_topic_levels()), (5, 9));
}

#[tokio::test]
async fn log_level_round_trip() {
    let s = state();
    let r = mgmt(&s, "GET", "/log-level").await;
    assert_eq!(
        (r.status, r.json["level"].as_str()),
        (StatusCode::OK, Some("info"))
    );
    let r = call(
        &s,
        "PUT",
        "/log-level",
        Some(MGMT),
        None,
        "tern_broker=debug,info\n",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["level"], "tern_broker=debug,info");
    let r = call(&s, "PUT", "/log-level", Some(MGMT), None, "loud").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json["error"].as_str().is_some_and(|e| e.contains("loud")));
    let r = call(&s, "PUT", "/log-level", Some(MGMT), None, "").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        s.log.as_ref().expect("log").current(),
        "tern_broker=debug,info"
    );
    let mut s = s;
    s.log = None;
    assert_eq!(
        mgmt(&s, "GET", "/log-level").await.status,
        StatusCode::NOT_IMPLEMENTED
    );
}

#[test]
fn queries_and_answers_round_trip_as_json() {
    let q = AdminQuery::SessionShow(SessionFilter {
        client_id: Some("c".into()),
        online: Some(true),
        ..SessionFilter::default()
    });
    let text = serde_json::to_string(&q).expect("json");
    assert_eq!(serde_json::from_str::<AdminQuery>(&text).expect("back"), q);
    let a = AdminAnswer::Disconnected(true);
    let text = serde_json::to_string(&a).expect("json");
    assert_eq!(serde_json::from_str::<AdminAnswer>(&text).expect("back"), a);
    assert!(serde_json::from_str::<AdminQuery>(r#"{"query":"reboot"}"#).is_err());
}
