//! The admin router driven without a socket.

use super::*;
use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

pub(super) async fn get(state: AdminState, uri: &str) -> (StatusCode, String, String) {
    let request = Request::get(uri).body(Body::empty()).expect("request");
    let response = router(state).oneshot(request).await.expect("infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).expect("utf-8"),
    )
}

pub(super) fn state() -> AdminState {
    let metrics = Metrics::default();
    AdminState {
        status: status::Sampler::new(metrics.clone()),
        metrics,
        health: Health::default(),
        broker: None,
        readiness: Readiness::new(),
        keys: Arc::new(KeyRing::default()),
        log: None,
    }
}

#[test]
fn latches_hold_release_and_name_what_is_missing() {
    let r = Readiness::new();
    assert!(r.waiting().is_empty());
    r.hold("cluster", "dialing 10.0.0.2:44053");
    r.set("discovery", Err("RBAC: forbidden".into()));
    assert_eq!(
        r.waiting(),
        vec![
            "cluster: dialing 10.0.0.2:44053",
            "discovery: RBAC: forbidden"
        ]
    );
    assert!(!r.is_released("cluster"));
    r.release("cluster");
    r.set("discovery", Ok(()));
    assert!(r.waiting().is_empty() && r.is_released("cluster"));
    r.hold("draining", "shutting down");
    assert_eq!(r.waiting(), vec!["draining: shutting down"]);
}

#[tokio::test]
async fn ready_needs_listeners_and_every_latch() {
    let s = state();
    s.readiness.hold("cluster", "initial sync");
    let (status, _, body) = get(s.clone(), "/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("listeners") && body.contains("cluster: initial sync"),
        "{body}"
    );
    s.health.set("tcp", true);
    let (status, _, body) = get(s.clone(), "/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        r#"{"ready":false,"waiting":["cluster: initial sync"]}"#
    );
    s.readiness.release("cluster");
    let (status, _, body) = get(s.clone(), "/ready").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"ready":true}"#)
    );
    let (status, _, _) = get(s, "/health").await;
    assert_eq!(status, StatusCode::OK, "liveness is separate");
}

#[tokio::test]
async fn health_follows_listeners() {
    let s = state();
    let (status, _, _) = get(s.clone(), "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "no listener yet");

    s.health.set("tcp", true);
    s.health.set("tls", true);
    let (status, _, body) = get(s.clone(), "/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, r#"{"status":"ok"}"#);

    s.health.set("tls", false);
    let (status, _, body) = get(s.clone(), "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("\"tls\"") && body.contains("unavailable"),
        "{body}"
    );
}

#[tokio::test]
async fn metrics_renders_openmetrics() {
    let s = state();
    s.metrics.connections.set(3);
    s.metrics.connections_refused.inc();
    let (status, content_type, body) = get(s, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, METRICS_CONTENT_TYPE);
    assert!(body.contains("tern_connections 3"), "{body}");
    assert!(body.contains("tern_connections_refused_total 1"), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
}

#[tokio::test]
async fn single_node_cluster_show_lists_itself_without_peers() {
    let mut config = crate::config::Config::default();
    config.node.name = "solo".into();
    let mut s = state();
    s.broker = Some(Broker::new(Arc::new(config), Metrics::default()));
    s.keys = Arc::new(KeyRing::from_config(&crate::config::AdminConfig {
        api_keys: vec![crate::config::ApiKeyConfig {
            key: "0123456789abcdef".into(),
            scopes: vec![crate::config::Scope::Mgmt],
        }],
        ..Default::default()
    }));
    let request = Request::get("/api/v1/cluster/show")
        .header("x-api-key", "0123456789abcdef")
        .body(Body::empty())
        .expect("request");
    let response = router(s).oneshot(request).await.expect("infallible");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let body = String::from_utf8(body.to_vec()).expect("utf-8");
    assert_eq!(status, StatusCode::OK);
    let show: ClusterShow = serde_json::from_str(&body).expect("json");
    assert_eq!(show.node, "solo");
    assert!(show.peers.is_empty());
}

#[tokio::test]
async fn unknown_path_is_404() {
    let (status, _, _) = get(state(), "/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
