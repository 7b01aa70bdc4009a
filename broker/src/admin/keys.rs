//! API keys and scopes for the admin routes.
//!
//! A key arrives as `Authorization: Bearer <key>` or `x-api-key: <key>` and
//! is compared in constant time with every configured key. Route groups are
//! wrapped with [`require`]: management (`mgmt`) always needs a key with
//! that scope; `metrics` and `status` only when `admin.require_key_for`
//! lists them. With no `mgmt` key configured at all, management is open to
//! loopback clients only (`admin.loopback_without_key`), so a local
//! `cargo run` or `kubectl exec … tern admin` works out of the box.

use super::AdminState;
use crate::config::{parse_key_file, AdminConfig, ApiKeyConfig, Scope};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::SystemTime;
use subtle::ConstantTimeEq;

/// The configured keys: inline ones, plus a file re-read when it changes.
#[derive(Debug, Default)]
pub struct KeyRing {
    inline: Vec<ApiKeyConfig>,
    file: Option<PathBuf>,
    /// The file's keys as of its modification time.
    loaded: Mutex<(Option<SystemTime>, Vec<ApiKeyConfig>)>,
    require: Vec<Scope>,
    loopback_without_key: bool,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.0 });
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(body),
        )
            .into_response()
    }
}

impl KeyRing {
    /// The keys of `[admin]`.
    pub fn from_config(c: &AdminConfig) -> KeyRing {
        let ring = KeyRing {
            inline: c.api_keys.clone(),
            file: c.api_keys_file.clone(),
            loaded: Mutex::new((None, Vec::new())),
            require: c.require_key_for.clone(),
            loopback_without_key: c.loopback_without_key,
        };
        ring.reload();
        ring
    }

    /// Re-reads the key file if its modification time changed. A file that
    /// became unreadable or invalid keeps the last good keys (logged).
    fn reload(&self) {
        let Some(path) = &self.file else { return };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut loaded = self.loaded.lock();
        if modified.is_some() && loaded.0 == modified {
            return;
        }
        match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| parse_key_file(&t))
        {
            Ok(keys) => {
                tracing::info!(file = %path.display(), keys = keys.len(), "admin API keys loaded");
                *loaded = (modified, keys);
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "admin API key file unusable; keeping the previous keys");
                loaded.0 = modified;
            }
        }
    }

    /// Whether `scope` needs a key at all.
    fn needs_key(&self, scope: Scope) -> bool {
        scope == Scope::Mgmt || self.require.contains(&scope)
    }

    /// Scopes of `presented`, if it is a configured key (every key is
    /// compared, in constant time, whatever matches first).
    fn scopes_of(&self, presented: &str) -> Option<Vec<Scope>> {
        let file = self.loaded.lock().1.clone();
        let mut found = None;
        for k in self.inline.iter().chain(file.iter()) {
            if bool::from(k.key.as_bytes().ct_eq(presented.as_bytes())) && found.is_none() {
                found = Some(k.scopes.clone());
            }
        }
        found
    }

    fn any_key_with(&self, scope: Scope) -> bool {
        let loaded = self.loaded.lock();
        self.inline
            .iter()
            .chain(loaded.1.iter())
            .any(|k| k.scopes.contains(&scope))
    }

    /// Decides a request for `scope` with these headers from `peer`.
    pub fn check(
        &self,
        scope: Scope,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Result<(), Refused> {
        if !self.needs_key(scope) {
            return Ok(());
        }
        self.reload();
        let presented = presented_key(headers);
        if scope == Scope::Mgmt && !self.any_key_with(Scope::Mgmt) && presented.is_none() {
            let loopback = peer.is_some_and(|p| p.ip().is_loopback());
            if self.loopback_without_key && loopback {
                return Ok(());
            }
            return Err(Refused(
                "no management API key is configured: add one to [admin] api_keys \
                 (key = \"...\", scopes = [\"mgmt\"]) or admin.api_keys_file \
                 (a line `KEY mgmt`), then send it as `Authorization: Bearer KEY`"
                    .into(),
            ));
        }
        let Some(key) = presented else {
            return Err(Refused(format!(
                "an API key with scope `{}` is required (Authorization: Bearer KEY or x-api-key)",
                scope.name()
            )));
        };
        match self.scopes_of(key) {
            None => Err(Refused("invalid API key".into())),
            Some(s) if !s.contains(&scope) => Err(Refused(format!(
                "this API key lacks scope `{}`",
                scope.name()
            ))),
            Some(_) => Ok(()),
        }
    }
}

/// The key in `Authorization: Bearer …` or `x-api-key`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
        });
    bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
}

/// Middleware: the request needs the scope of its route group
/// ([`super::scope_of`]).
pub(super) async fn require(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(scope) = super::scope_of(request.uri().path()) else {
        return next.run(request).await;
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    match state.keys.check(scope, request.headers(), peer) {
        Ok(()) => next.run(request).await,
        Err(refused) => {
            tracing::info!(?peer, path = %request.uri().path(), reason = %refused.0, "admin request refused");
            refused.into_response()
        }
    }
}
