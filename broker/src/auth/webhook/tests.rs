//! Webhook chains against tiny HTTP endpoints on loopback.

use super::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An endpoint answering every request with `status`, `headers` and
/// `body`, counting requests; `None` as the body accepts and never answers.
async fn endpoint(
    status: u16,
    headers: &'static str,
    body: Option<&'static str>,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Keep-alive: answer each request on the connection.
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    buf.drain(..end + 4 + len);
                    seen.fetch_add(1, Ordering::SeqCst);
                    let Some(body) = body else {
                        std::future::pending::<()>().await;
                        return;
                    };
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{headers}content-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}/hook"), count)
}

fn hooks(list: Vec<WebhookConfig>) -> (Arc<Webhooks>, WebhookMetrics) {
    let metrics = WebhookMetrics::default();
    let h = Webhooks::from_config(&list, 100, metrics.clone())
        .expect("builds")
        .expect("some hooks");
    (h, metrics)
}

fn publish_req(topic: &str) -> Request {
    wire::publish("c", Some("u"), topic, QoS::AtLeastOnce, false, b"x")
}

fn counted(f: &Family<HookLabel, prometheus_client::metrics::counter::Counter>) -> u64 {
    f.get_or_create(&label(HookKind::AuthOnPublish)).get()
}

use prometheus_client::metrics::family::Family;

#[tokio::test]
async fn timeout_fails_closed_unless_fail_open() {
    let (url, calls) = endpoint(200, "", None).await;
    let mut cfg = WebhookConfig::new(HookKind::AuthOnPublish, url.clone());
    cfg.timeout_ms = 100;
    let (h, m) = hooks(vec![cfg.clone()]);
    let started = Instant::now();
    let d = h
        .check(HookKind::AuthOnPublish, publish_req("a"))
        .decide()
        .await;
    assert!(
        matches!(&d, Decision::Deny(why) if why.contains("webhook failed")),
        "{d:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by the timeout"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(counted(&m.failures), 1);
    assert_eq!(counted(&m.denials), 1);
    // A failure is never cached: the next request calls again.
    let d = h
        .check(HookKind::AuthOnPublish, publish_req("a"))
        .decide()
        .await;
    assert!(matches!(d, Decision::Deny(_)));
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    cfg.fail_open = true;
    let (h, _) = hooks(vec![cfg]);
    let d = h
        .check(HookKind::AuthOnPublish, publish_req("a"))
        .decide()
        .await;
    assert_eq!(d, Decision::Next, "fail_open: a failure counts as next");
}

#[tokio::test]
async fn errors_statuses_and_bad_answers_fail_closed() {
    let (bad_answer, _) = endpoint(200, "", Some("{}")).await;
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let (status_500, _) = endpoint(500, "", Some(r#"{"result":"ok"}"#)).await;
    for url in [bad_answer, format!("http://{closed_port}/"), status_500] {
        let (h, m) = hooks(vec![WebhookConfig::new(
            HookKind::AuthOnPublish,
            url.clone(),
        )]);
        let d = h
            .check(HookKind::AuthOnPublish, publish_req("a"))
            .decide()
            .await;
        assert!(matches!(d, Decision::Deny(_)), "{url}: {d:?}");
        assert_eq!(counted(&m.failures), 1, "{url}");
    }
}

#[tokio::test]
async fn answers_are_cached_for_max_age_or_the_configured_ttl() {
    let (url, calls) = endpoint(
        200,
        "cache-control: max-age=60\r\n",
        Some(r#"{"result":{"error":"no"}}"#),
    )
    .await;
    let (h, m) = hooks(vec![WebhookConfig::new(HookKind::AuthOnPublish, url)]);
    for _ in 0..3 {
        let d = h
            .check(HookKind::AuthOnPublish, publish_req("a"))
            .decide()
            .await;
        assert_eq!(d, Decision::Deny("no".into()));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "a refusal is cached too");
    assert_eq!(counted(&m.cache_hits), 2);
    assert!(
        matches!(
            h.check(HookKind::AuthOnPublish, publish_req("a")),
            Check::Now(_)
        ),
        "answered without waiting"
    );
    h.check(HookKind::AuthOnPublish, publish_req("b"))
        .decide()
        .await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "another topic is another key"
    );

    // No header and no cache_ttl_s: nothing is cached.
    let (url, calls) = endpoint(200, "", Some(r#"{"result":"ok"}"#)).await;
    let (h, _) = hooks(vec![WebhookConfig::new(
        HookKind::AuthOnPublish,
        url.clone(),
    )]);
    for _ in 0..2 {
        h.check(HookKind::AuthOnPublish, publish_req("a"))
            .decide()
            .await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let mut cfg = WebhookConfig::new(HookKind::AuthOnPublish, url);
    cfg.cache_ttl_s = 60;
    let (h, _) = hooks(vec![cfg]);
    for _ in 0..2 {
        h.check(HookKind::AuthOnPublish, publish_req("a"))
            .decide()
            .await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3, "cache_ttl_s caches");
}

#[tokio::test]
async fn next_walks_the_chain_in_order() {
    let (first, first_calls) = endpoint(
        200,
        "cache-control: max-age=60\r\n",
        Some(r#"{"result":"next"}"#),
    )
    .await;
    let (second, second_calls) = endpoint(200, "", Some(r#"{"result":"ok"}"#)).await;
    let (h, _) = hooks(vec![
        WebhookConfig::new(HookKind::AuthOnPublish, first),
        WebhookConfig::new(HookKind::AuthOnPublish, second),
    ]);
    for _ in 0..2 {
        let d = h
            .check(HookKind::AuthOnPublish, publish_req("a"))
            .decide()
            .await;
        assert_eq!(d, Decision::Allow { topics: None });
    }
    assert_eq!(first_calls.load(Ordering::SeqCst), 1, "its next is cached");
    assert_eq!(second_calls.load(Ordering::SeqCst), 2);
    assert!(!h.has(HookKind::AuthOnSubscribe));
}
