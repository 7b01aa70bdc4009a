//! `GET /log-level` and `PUT /log-level`: the tracing filter in force,
//! changed at run time. The binary owns the subscriber and injects a
//! [`LogControl`] (a `tracing_subscriber::reload` handle); the broker only
//! sees this trait.

use super::AdminState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Reads and replaces the process's log filter.
pub trait LogControl: Send + Sync + 'static {
    /// The directive in force, e.g. `info` or `tern_broker=debug,info`.
    fn current(&self) -> String;
    /// Replaces the filter; `Err` names what is wrong with `directive`.
    fn set(&self, directive: &str) -> Result<(), String>;
}

fn unavailable() -> Response {
    let body = serde_json::json!({ "error": "this process has no adjustable log filter" });
    (StatusCode::NOT_IMPLEMENTED, Json(body)).into_response()
}

pub(super) async fn get_level(State(state): State<AdminState>) -> Response {
    match &state.log {
        Some(log) => Json(serde_json::json!({ "level": log.current() })).into_response(),
        None => unavailable(),
    }
}

pub(super) async fn put_level(State(state): State<AdminState>, body: String) -> Response {
    let Some(log) = &state.log else {
        return unavailable();
    };
    let directive = body.trim();
    if directive.is_empty() {
        let body = serde_json::json!({ "error": "empty body: send a level or filter directive, e.g. `info` or `tern_broker=debug,info`" });
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    match log.set(directive) {
        Ok(()) => {
            tracing::info!(level = %directive, "log level changed");
            Json(serde_json::json!({ "level": log.current() })).into_response()
        }
        Err(e) => {
            let body =
                serde_json::json!({ "error": format!("invalid log directive {directive:?}: {e}") });
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
    }
}
