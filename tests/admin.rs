//! Admin HTTP: /health and /metrics with counters that move.
mod common;

use common::*;
use std::net::SocketAddr;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_200() {
    let s = start().await;
    let (status, _) = http_get(s.admin(), "/health").await;
    assert_eq!(status, 200, "GET /health");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_path_is_404() {
    let s = start().await;
    let (status, _) = http_get(s.admin(), "/no-such-page").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_lists_every_tern_metric() {
    let s = start().await;
    let (status, body) = http_get(s.admin(), "/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "tern_connections",
        "tern_messages_received",
        "tern_messages_sent",
        "tern_bytes_received",
        "tern_bytes_sent",
        "tern_subscriptions",
        "tern_retained_messages",
        "tern_queue_dropped",
        "tern_sessions",
    ] {
        assert!(
            metric(&body, name).is_some(),
            "{name} missing from /metrics:\n{body}"
        );
    }
}

async fn until_metric(
    admin: SocketAddr,
    name: &'static str,
    what: &str,
    pred: impl Fn(f64) -> bool + Copy,
) {
    wait_until(T, what, || async move { pred(scrape(admin, name).await) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_counters_move() {
    let s = start().await;
    let a = s.admin();
    let rx0 = scrape(a, "tern_messages_received").await;
    let tx0 = scrape(a, "tern_messages_sent").await;
    let brx0 = scrape(a, "tern_bytes_received").await;
    let btx0 = scrape(a, "tern_bytes_sent").await;

    let mut sub = Raw::v5(s.addr, &uid("msub")).await;
    let mut publ = Raw::v4(s.addr, &uid("mpub")).await;
    until_metric(a, "tern_connections", "tern_connections == 2", |v| v == 2.0).await;
    until_metric(a, "tern_sessions", "tern_sessions == 2", |v| v == 2.0).await;

    sub.subscribe("met/a", 1).await;
    sub.subscribe("met/b", 1).await;
    until_metric(a, "tern_subscriptions", "tern_subscriptions == 2", |v| {
        v == 2.0
    })
    .await;

    publ.publish_retained("met/a", b"kept", 1).await;
    publ.publish("met/b", b"live", 1).await;
    sub.next_publish().await;
    sub.next_publish().await;
    until_metric(
        a,
        "tern_retained_messages",
        "tern_retained_messages == 1",
        |v| v == 1.0,
    )
    .await;
    until_metric(
        a,
        "tern_messages_received",
        "messages_received += 2",
        move |v| v - rx0 == 2.0,
    )
    .await;
    until_metric(a, "tern_messages_sent", "messages_sent += 2", move |v| {
        v - tx0 == 2.0
    })
    .await;
    until_metric(a, "tern_bytes_received", "bytes_received grows", move |v| {
        v - brx0 >= 20.0
    })
    .await;
    until_metric(a, "tern_bytes_sent", "bytes_sent grows", move |v| {
        v - btx0 >= 20.0
    })
    .await;

    sub.unsubscribe("met/b").await;
    until_metric(
        a,
        "tern_subscriptions",
        "tern_subscriptions == 1 after UNSUBSCRIBE",
        |v| v == 1.0,
    )
    .await;
    publ.publish_retained("met/a", b"", 1).await;
    until_metric(a, "tern_retained_messages", "retained deleted", |v| {
        v == 0.0
    })
    .await;
    publ.disconnect().await;
    until_metric(
        a,
        "tern_connections",
        "tern_connections == 1 after DISCONNECT",
        |v| v == 1.0,
    )
    .await;
    until_metric(a, "tern_sessions", "clean session removed", |v| v == 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_listener_health_and_node_label_over_http() {
    let s = start().await;
    let a = s.admin();
    let _client = v4_client(s.addr, &uid("status"), |_| {}).await;
    let status = || async move {
        let (code, body) = http_get(a, "/status.json").await;
        assert_eq!(code, 200, "GET /status.json: {body}");
        serde_json::from_str::<serde_json::Value>(&body).expect("status.json is JSON")
    };
    wait_until(T, "status.json shows the connection", || async move {
        status().await["nodes"][0]["stats"]["connections"] == 1
    })
    .await;
    let v = status().await;
    assert_eq!(v["node"], "test");
    assert_eq!(v["nodes"][0]["name"], "test");
    assert_eq!(v["nodes"][0]["state"], "up");
    assert_eq!(v["nodes"][0]["stats"]["sessions_online"], 1);
    assert_eq!(v["totals"]["nodes_up"], 1);
    assert_eq!(v["listeners"][0]["name"], "tcp");

    let (code, body) = http_get(a, "/health/listeners").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        r#"{"listeners":[{"name":"tcp","state":"up"}],"status":"ok"}"#
    );

    let (code, html) = http_get(a, "/status").await;
    assert_eq!(code, 200);
    assert!(
        html.contains(r#"<tr class="node local" data-name="test">"#),
        "{html}"
    );

    let (_, metrics) = http_get(a, "/metrics").await;
    assert!(
        metrics.contains(r#"tern_connections{node="test"} 1"#),
        "{metrics}"
    );
}
