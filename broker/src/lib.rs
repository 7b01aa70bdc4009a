//! The Tern MQTT broker: one node, complete for MQTT 3.1, 3.1.1 and 5.0.
//!
//! Modules, from the wire inwards:
//! - [`codec`]: packets and their strict encoding/decoding.
//! - [`topic`]: topic name and filter rules and matching.
//! - [`trie`]: the subscription table.
//! - [`retained`]: the retained-message store.
//! - [`session`]: a session's state (subscriptions, queue, in-flight), exportable as a value.
//! - [`routes`]: the seam where the cluster plugs in remote routes.
//! - [`broker`]: the node's shared state and the publish path (local match + remote routes).
//! - [`connection`]: the per-connection protocol loop.
//! - [`auth`]: authentication and authorization: password and ACL files, webhooks.
//! - [`server`]: listeners (TCP, TLS, WebSocket), admin HTTP, shutdown tree.
//! - [`ws`], [`proxy`]: MQTT over WebSocket frames; PROXY protocol v1/v2 headers.
//! - [`limits`]: overload protection (token buckets, memory watermark, backpressure).
//! - [`admin`], [`knobs`]: the admin HTTP API (management answered cluster-wide, API
//!   keys) and the runtime settings it may change.
//! - [`config`], [`metrics`]: configuration tree and Prometheus metrics.

#![warn(missing_docs)]

pub mod admin;
pub mod auth;
pub mod broker;
pub mod codec;
pub mod config;
pub mod connection;
pub mod knobs;
pub mod limits;
pub mod metrics;
pub mod proxy;
pub mod recycle;
pub mod retained;
pub mod routes;
pub mod server;
pub mod session;
pub mod store;
pub mod tls;
pub mod topic;
pub mod trie;
pub mod ws;
