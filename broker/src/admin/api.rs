//! The management API under `/api/v1/`, answered cluster-wide: this node
//! answers with [`answer_local`], every peer is asked the same
//! [`AdminQuery`] over the mesh, and the answers are merged. A response
//! names the nodes that answered and those that did not (with why).

use super::query::{
    answer_local, retained, AdminAnswer, AdminQuery, SessionFilter, SubscriptionFilter,
    DEFAULT_LIMIT,
};
use super::{AdminState, ClusterShow};
use crate::broker::Broker;
use crate::knobs;
use crate::topic;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The `/api/v1/` routes.
pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/api/v1/cluster/show", get(cluster_show))
        .route("/api/v1/session/show", get(session_show))
        .route("/api/v1/session/disconnect", post(session_disconnect))
        .route("/api/v1/subscription/show", get(subscription_show))
        .route("/api/v1/retain/show", get(retain_show))
        .route("/api/v1/retain/delete", post(retain_delete))
        .route("/api/v1/listener/show", get(listener_show))
        .route("/api/v1/set", post(set))
}

/// A node that did not answer, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missing {
    /// The node.
    pub node: String,
    /// Down, timed out, or the error it returned.
    pub reason: String,
}

/// A `show` response: the merged rows of every node that answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table<T> {
    /// The rows, sorted, at most `limit`.
    pub rows: Vec<T>,
    /// Nodes that answered, this one first.
    pub nodes: Vec<String>,
    /// Nodes that did not.
    pub missing: Vec<Missing>,
    /// Rows were left out because of the limit.
    pub truncated: bool,
}

/// Every node's answer to one query.
struct Gathered {
    answers: Vec<AdminAnswer>,
    nodes: Vec<String>,
    missing: Vec<Missing>,
}

impl Gathered {
    /// Every node's rows of one kind, picked out of its answer.
    fn rows<T: Clone>(&self, pick: impl Fn(&AdminAnswer) -> Option<&Vec<T>>) -> Vec<T> {
        self.answers
            .iter()
            .filter_map(pick)
            .flatten()
            .cloned()
            .collect()
    }
}

/// Answers `query` here and on every peer.
async fn gather(broker: &Broker, query: AdminQuery) -> Gathered {
    let local = answer_local(broker, &query);
    let mut g = Gathered {
        answers: vec![local],
        nodes: vec![broker.node_name().to_string()],
        missing: Vec::new(),
    };
    for reply in broker.remote().admin(&query).await {
        match reply.answer {
            Ok(AdminAnswer::Error(reason)) | Err(reason) => g.missing.push(Missing {
                node: reply.node,
                reason,
            }),
            Ok(answer) => {
                g.nodes.push(reply.node);
                g.answers.push(answer);
            }
        }
    }
    g
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// The node's broker; 503 when this admin listener has none.
struct Node(Arc<Broker>);

impl FromRequestParts<AdminState> for Node {
    type Rejection = Response;

    async fn from_request_parts(_: &mut Parts, state: &AdminState) -> Result<Self, Response> {
        state.broker.clone().map(Node).ok_or_else(|| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no broker behind this listener",
            )
        })
    }
}

/// The query string as `T`; a malformed one is a 400 saying why.
struct Params<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(t)) => Ok(Params(t)),
            Err(r) => Err(error(StatusCode::BAD_REQUEST, r.body_text())),
        }
    }
}

fn table<T: Serialize>(mut rows: Vec<T>, limit: usize, g: Gathered) -> Response {
    let truncated = rows.len() > limit;
    rows.truncate(limit);
    Json(Table {
        rows,
        nodes: g.nodes,
        missing: g.missing,
        truncated,
    })
    .into_response()
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

async fn session_show(Node(broker): Node, Params(mut f): Params<SessionFilter>) -> Response {
    let limit = f.limit.unwrap_or(DEFAULT_LIMIT);
    // One more row than shown tells whether any were left out.
    f.limit = Some(limit.saturating_add(1));
    let g = gather(&broker, AdminQuery::SessionShow(f)).await;
    let mut rows = g.rows(|a| match a {
        AdminAnswer::Sessions(r) => Some(r),
        _ => None,
    });
    rows.sort_by(|a, b| (&a.client_id, &a.node).cmp(&(&b.client_id, &b.node)));
    table(rows, limit, g)
}

#[derive(Debug, Deserialize)]
struct DisconnectParams {
    client_id: String,
    #[serde(default)]
    cleanup: bool,
}

async fn session_disconnect(Node(broker): Node, Params(p): Params<DisconnectParams>) -> Response {
    let query = AdminQuery::SessionDisconnect {
        client_id: p.client_id.clone(),
        cleanup: p.cleanup,
    };
    let g = gather(&broker, query).await;
    let on: Vec<String> = g
        .answers
        .iter()
        .zip(&g.nodes)
        .filter(|(a, _)| matches!(a, AdminAnswer::Disconnected(true)))
        .map(|(_, n)| n.clone())
        .collect();
    let body = serde_json::json!({
        "client_id": p.client_id,
        "cleanup": p.cleanup,
        "disconnected_on": on,
        "nodes": g.nodes,
        "missing": g.missing,
    });
    if on.is_empty() {
        let mut body = body;
        body["error"] = format!("no node knows client {:?}", p.client_id).into();
        return (StatusCode::NOT_FOUND, Json(body)).into_response();
    }
    Json(body).into_response()
}

async fn subscription_show(
    Node(broker): Node,
    Params(mut f): Params<SubscriptionFilter>,
) -> Response {
    let limit = f.limit.unwrap_or(DEFAULT_LIMIT);
    // One more row than shown tells whether any were left out.
    f.limit = Some(limit.saturating_add(1));
    let g = gather(&broker, AdminQuery::SubscriptionShow(f)).await;
    let mut rows = g.rows(|a| match a {
        AdminAnswer::Subscriptions(r) => Some(r),
        _ => None,
    });
    rows.sort_by(|a, b| {
        (&a.client_id, &a.node, &a.filter).cmp(&(&b.client_id, &b.node, &b.filter))
    });
    table(rows, limit, g)
}

#[derive(Debug, Deserialize)]
struct RetainParams {
    topic: Option<String>,
    limit: Option<usize>,
}

/// Retained messages are replicated to every node, so this node's store
/// is the cluster's answer.
async fn retain_show(Node(broker): Node, Params(p): Params<RetainParams>) -> Response {
    let filter = p.topic.unwrap_or_else(|| "#".into());
    if !topic::valid_topic_filter(&filter) || topic::parse_shared(&filter).is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            format!("topic {filter:?} is not a valid MQTT topic filter"),
        );
    }
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    let rows = retained(&broker, &filter, limit.saturating_add(1));
    let g = Gathered {
        answers: Vec::new(),
        nodes: vec![broker.node_name().to_string()],
        missing: Vec::new(),
    };
    table(rows, limit, g)
}

#[derive(Debug, Deserialize)]
struct TopicParam {
    topic: String,
}

async fn retain_delete(Node(broker): Node, Params(p): Params<TopicParam>) -> Response {
    if !topic::valid_topic_name(&p.topic) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "topic {:?} is not a valid topic name (no wildcards)",
                p.topic
            ),
        );
    }
    // One marker, written here, applied everywhere: last writer wins.
    let marker = broker.retained_tombstone(&p.topic);
    let query = AdminQuery::RetainDelete {
        topic: p.topic.clone(),
        timestamp: marker.timestamp,
        node: broker.node_name().to_string(),
    };
    let g = gather(&broker, query).await;
    let deleted = g
        .answers
        .iter()
        .any(|a| matches!(a, AdminAnswer::RetainDeleted(true)));
    let body = serde_json::json!({
        "topic": p.topic,
        "deleted": deleted,
        "nodes": g.nodes,
        "missing": g.missing,
    });
    if !deleted {
        let mut body = body;
        body["error"] = format!("no retained message on {:?}", p.topic).into();
        return (StatusCode::NOT_FOUND, Json(body)).into_response();
    }
    Json(body).into_response()
}

async fn listener_show(Node(broker): Node) -> Response {
    let g = gather(&broker, AdminQuery::ListenerShow).await;
    let mut rows = g.rows(|a| match a {
        AdminAnswer::Listeners(r) => Some(r),
        _ => None,
    });
    rows.sort_by(|a, b| (&a.node, &a.kind).cmp(&(&b.node, &b.kind)));
    table(rows, usize::MAX, g)
}

async fn set(Node(broker): Node, Params(pairs): Params<Vec<(String, String)>>) -> Response {
    // Checked as a whole before any node applies anything.
    let settings = match knobs::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let g = gather(&broker, AdminQuery::Set { settings }).await;
    let in_force: serde_json::Map<String, serde_json::Value> = broker
        .knobs()
        .show()
        .into_iter()
        .map(|s| (s.key, s.value.into()))
        .collect();
    let applied: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .filter_map(|(k, _)| in_force.get(k).map(|v| (k.clone(), v.clone())))
        .collect();
    Json(serde_json::json!({
        "applied": applied,
        "nodes": g.nodes,
        "missing": g.missing,
    }))
    .into_response()
}
