//! The admin HTTP listener: `GET /health` (liveness), `GET /ready`
//! (readiness: a set of named latches, as in linkerd2-proxy), `GET /metrics`
//! and `GET /api/v1/cluster/show`.
//!
//! [`router`] needs no socket, so tests drive it with `tower::ServiceExt`.

use crate::broker::Broker;
use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Content type of `/metrics`: prometheus-client emits OpenMetrics text.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Liveness of the client listeners, shared between the accept loops
/// (which report) and `/health` (which reads).
#[derive(Debug, Clone, Default)]
pub struct Health {
    listeners: Arc<RwLock<Vec<(&'static str, bool)>>>,
}

impl Health {
    /// Records whether listener `name` is accepting; registers it on first use.
    pub fn set(&self, name: &'static str, up: bool) {
        let mut listeners = self.listeners.write();
        match listeners.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = up,
            None => listeners.push((name, up)),
        }
    }

    /// Names of the registered listeners that are down.
    pub fn down(&self) -> Vec<&'static str> {
        self.listeners
            .read()
            .iter()
            .filter(|(_, up)| !up)
            .map(|(name, _)| *name)
            .collect()
    }

    /// Whether every registered listener is up (and at least one exists).
    pub fn all_up(&self) -> bool {
        let listeners = self.listeners.read();
        !listeners.is_empty() && listeners.iter().all(|(_, up)| *up)
    }
}

/// Readiness: a set of named latches. Each subsystem holds its latch
/// (with a reason) until it is ready, then releases it; `GET /ready` is
/// 200 only when every latch is released and the listeners are up. A
/// latch can be held again (the drain holds `draining`).
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    latches: Arc<RwLock<BTreeMap<String, Option<String>>>>,
}

impl Readiness {
    /// No latch: ready as soon as the listeners are up.
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// Holds latch `name` with the reason shown in `waiting`.
    pub fn hold(&self, name: &str, reason: impl Into<String>) {
        self.latches
            .write()
            .insert(name.to_string(), Some(reason.into()));
    }

    /// Releases latch `name` (registering it, released, if unknown).
    pub fn release(&self, name: &str) {
        self.latches.write().insert(name.to_string(), None);
    }

    /// Holds (`Err(reason)`) or releases (`Ok`) latch `name`.
    pub fn set(&self, name: &str, state: Result<(), String>) {
        match state {
            Ok(()) => self.release(name),
            Err(reason) => self.hold(name, reason),
        }
    }

    /// Whether latch `name` is registered and released.
    pub fn is_released(&self, name: &str) -> bool {
        matches!(self.latches.read().get(name), Some(None))
    }

    /// `"name: reason"` for every held latch, by name.
    pub fn waiting(&self) -> Vec<String> {
        self.latches
            .read()
            .iter()
            .filter_map(|(name, held)| held.as_ref().map(|r| format!("{name}: {r}")))
            .collect()
    }
}

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// The broker's metrics.
    pub metrics: Metrics,
    /// Listener liveness.
    pub health: Health,
    /// The broker, for cluster membership; `None` in tests of the other routes.
    pub broker: Option<Arc<Broker>>,
    /// Readiness latches (the listeners' come from `health`).
    pub readiness: Readiness,
}

/// One peer in [`ClusterShow`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerShow {
    /// Peer node name.
    pub node: String,
    /// Address dialed.
    pub address: String,
    /// `"up"` or `"down"`.
    pub state: String,
    /// When the state last changed, ms since the Unix epoch.
    pub since_ms: u64,
    /// The peer's incarnation (0 if never seen).
    pub incarnation: u64,
    /// Last heartbeat round trip, ms.
    pub rtt_ms: Option<f64>,
}

/// `GET /api/v1/cluster/show`: this node and its peers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterShow {
    /// This node's name.
    pub node: String,
    /// This node's incarnation (0 for a single node).
    pub incarnation: u64,
    /// Known peers, by name.
    pub peers: Vec<PeerShow>,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/cluster/show", get(cluster_show))
        .with_state(state)
}

async fn cluster_show(State(state): State<AdminState>) -> Response {
    let Some(broker) = state.broker else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let show = broker.remote().show().unwrap_or_else(|| ClusterShow {
        node: broker.node_name().to_string(),
        incarnation: 0,
        peers: Vec::new(),
    });
    Json(show).into_response()
}

async fn health(State(state): State<AdminState>) -> Response {
    if state.health.all_up() {
        (StatusCode::OK, Json(serde_json::json!({ "status": "ok" }))).into_response()
    } else {
        let body = serde_json::json!({ "status": "unavailable", "down": state.health.down() });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn ready(State(state): State<AdminState>) -> Response {
    let mut waiting = Vec::new();
    if !state.health.all_up() {
        waiting.push("listeners: not accepting yet".to_string());
    }
    waiting.extend(state.readiness.waiting());
    if waiting.is_empty() {
        (StatusCode::OK, Json(serde_json::json!({ "ready": true }))).into_response()
    } else {
        let body = serde_json::json!({ "ready": false, "waiting": waiting });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(state: AdminState, uri: &str) -> (StatusCode, String, String) {
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

    fn state() -> AdminState {
        AdminState {
            metrics: Metrics::default(),
            health: Health::default(),
            broker: None,
            readiness: Readiness::new(),
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
        let (status, _, body) = get(s, "/api/v1/cluster/show").await;
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
}
