//! The status page and what feeds it:
//!
//! - `GET /status`: an HTML page ([`page`]) of the nodes and their numbers,
//!   refreshing itself every 2 s from `/status.json`;
//! - `GET /status.json`: a [`StatusReport`] ([`model`]);
//! - `GET /health/listeners`: each client listener's state, 503 naming the
//!   down ones.
//!
//! Rates come from a [`Sampler`] ([`rates`]) that the server runs beside
//! the admin listener.

use super::AdminState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

pub mod model;
pub mod page;
pub mod rates;
#[cfg(test)]
mod tests;

pub use model::{ListenerStatus, NodeStats, NodeStatus, StatusReport, Totals};
pub use rates::{Rates, Sampler};

/// The status routes.
pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/status", get(status_page))
        .route("/status.json", get(status_json))
        .route("/health/listeners", get(listeners))
}

async fn status_json(State(state): State<AdminState>) -> Response {
    let Some(broker) = &state.broker else {
        return StatusCode::NOT_FOUND.into_response();
    };
    Json(model::report(&state, broker).await).into_response()
}

async fn status_page(State(state): State<AdminState>) -> Response {
    let Some(broker) = &state.broker else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let html = page::render(&model::report(&state, broker).await);
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

async fn listeners(State(state): State<AdminState>) -> Response {
    let listeners = model::listeners(&state.health);
    if state.health.all_up() {
        let body = serde_json::json!({ "status": "ok", "listeners": listeners });
        (StatusCode::OK, Json(body)).into_response()
    } else {
        let body = serde_json::json!({
            "status": "unavailable",
            "down": state.health.down(),
            "listeners": listeners,
        });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}
