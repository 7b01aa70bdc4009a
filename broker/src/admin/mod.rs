//! The admin HTTP listener: `GET /health` (liveness), `GET /ready`
//! (readiness: a set of named latches, as in linkerd2-proxy), `GET /metrics`,
//! the status page, the management API under `/api/v1/` (answered
//! cluster-wide) and `/log-level`.
//!
//! Routes come in groups, each behind the API-key scope it needs
//! (`keys.rs`): health and readiness are open; `/metrics` → `metrics`,
//! the status group → `status` (both open unless `admin.require_key_for`
//! lists them); `/api/v1/…` and `/log-level` → `mgmt`.
//!
//! [`router`] needs no socket, so tests drive it with `tower::ServiceExt`.

use crate::broker::Broker;
use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

mod api;
mod keys;
mod log;
mod query;
pub mod status;

pub use api::{Missing, Table};
pub use keys::{KeyRing, Refused};
pub use log::LogControl;
pub use query::{
    answer_local, AdminAnswer, AdminQuery, ListenerEntry, ListenerRow, Listeners, PeerReply,
    RetainedRow, SessionFilter, SessionRow, SubscriptionFilter, SubscriptionRow,
};
#[cfg(test)]
mod api_tests;
#[cfg(test)]
mod tests;

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

    /// Every registered listener and whether it is up, in registration order.
    pub fn listeners(&self) -> Vec<(&'static str, bool)> {
        self.listeners.read().clone()
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
    /// Uptime and traffic rates for the status page.
    pub status: status::Sampler,
    /// API keys and the scopes each route group needs.
    pub keys: Arc<KeyRing>,
    /// The process's log filter, if it can be changed (`/log-level`).
    pub log: Option<Arc<dyn LogControl>>,
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

/// The API-key scope a path needs: the route groups. Health and readiness
/// are open; `/metrics` → `metrics`; the status group (`/status`,
/// `/status.json`) → `status`; the management group (`/api/…`,
/// `/log-level`) → `mgmt`. Whether `metrics` and `status` need a key at
/// all is the key ring's decision (`admin.require_key_for`).
pub fn scope_of(path: &str) -> Option<crate::config::Scope> {
    use crate::config::Scope;
    match path {
        "/metrics" => Some(Scope::Metrics),
        "/status" | "/status.json" => Some(Scope::Status),
        "/log-level" => Some(Scope::Mgmt),
        p if p == "/api" || p.starts_with("/api/") => Some(Scope::Mgmt),
        _ => None,
    }
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    let mgmt = api::routes().route("/log-level", get(log::get_level).put(log::put_level));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(status::routes())
        .merge(mgmt)
        .layer(from_fn_with_state(state.clone(), keys::require))
        .with_state(state)
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
