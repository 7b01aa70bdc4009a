//! `[limits]` caps: the CONNECT timeout, the memory watermark, topic depth,
//! subscriptions per client, and the listener connect rate.
mod common;

use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_socket_closed_after_configured_connect_timeout() {
    let s = start_with(|c| c.limits.connect_timeout_secs = 1).await;
    let mut raw = Raw::tcp(s.addr).await;
    let started = tokio::time::Instant::now();
    // The old built-in timeout was 10 s; 1 s is configured here.
    raw.expect_closed(Duration::from_secs(4)).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_watermark_refuses_new_connections_as_busy() {
    // Any test process is above 1 MiB of resident memory.
    let s = start_with(|c| c.limits.max_memory_mb = 1).await;
    let (_c, ack) = Raw::connect(s.addr, Connect::v5(&uid("m5"))).await;
    assert_eq!(ack.code, 0x89, "5.0: server busy");
    let (_c, ack) = Raw::connect(s.addr, Connect::v4(&uid("m4"))).await;
    assert_eq!(ack.code, 3, "3.1.1: server unavailable");
    assert!(scrape(s.admin(), "tern_memory_refused_total").await >= 2.0);
    assert!(scrape(s.admin(), "tern_memory_rss_bytes").await > 1024.0 * 1024.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_depth_is_capped_for_filters_and_names() {
    let s = start_with(|c| c.limits.max_topic_levels = 3).await;
    let mut c5 = Raw::v5(s.addr, &uid("d5")).await;
    assert_eq!(
        c5.subscribe_with(&[("a/b/c/d", 0)], Props::new()).await,
        vec![0x8F],
        "5.0: topic filter invalid"
    );
    assert_eq!(
        c5.subscribe("$share/g/a/b/c", 0).await,
        0,
        "the share prefix is not a level"
    );
    assert_eq!(c5.subscribe("a/b/#", 0).await, 0);
    let mut c4 = Raw::v4(s.addr, &uid("d4")).await;
    assert_eq!(
        c4.subscribe_with(&[("a/b/c/d", 0)], Props::new()).await,
        vec![0x80],
        "3.1.1: failure"
    );
    c5.send(&Publish::new("a/b/c/d", b"x").encode(true)).await;
    c5.expect_disconnect(&[0x90], T).await;
    c4.send(&Publish::new("a/b/c/d", b"x").encode(false)).await;
    c4.expect_closed(T).await;
    assert!(scrape(s.admin(), "tern_limit_rejections_total").await >= 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_per_client_are_capped() {
    let s = start_with(|c| c.limits.max_subscriptions_per_client = 2).await;
    let mut c5 = Raw::v5(s.addr, &uid("s5")).await;
    assert_eq!(c5.subscribe("x/1", 1).await, 1);
    assert_eq!(c5.subscribe("x/2", 1).await, 1);
    assert_eq!(
        c5.subscribe_with(&[("x/3", 1)], Props::new()).await,
        vec![0x97],
        "5.0: quota exceeded"
    );
    assert_eq!(
        c5.subscribe("x/2", 0).await,
        0,
        "replacing a subscription is fine"
    );
    let mut c4 = Raw::v4(s.addr, &uid("s4")).await;
    assert_eq!(c4.subscribe("y/1", 0).await, 0);
    assert_eq!(c4.subscribe("y/2", 0).await, 0);
    assert_eq!(
        c4.subscribe_with(&[("y/3", 0)], Props::new()).await,
        vec![0x80],
        "3.1.1: failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_rate_closes_the_excess_right_after_accept() {
    let s = start_with(|c| {
        c.limits.max_connect_rate = 5;
        c.limits.connect_burst = 5;
    })
    .await;
    let started = tokio::time::Instant::now();
    let mut accepted = 0u32;
    let mut open = Vec::new();
    for i in 0..30 {
        let mut raw = Raw::tcp(s.addr).await;
        raw.name = format!("storm {i}");
        let _ = raw.try_send(&Connect::v5(&uid("rate")).encode()).await;
        if let Recv::Packet(Packet::ConnAck { code: 0, .. }) =
            raw.recv_within(Duration::from_secs(2)).await
        {
            accepted += 1;
            open.push(raw);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let allowed = 5.0 + 5.0 * secs + 1.0;
    assert!(
        f64::from(accepted) <= allowed,
        "{accepted} accepted in {secs:.2}s; the bucket allows {allowed:.1}"
    );
    assert!(accepted >= 5, "the burst must be accepted");
    assert!(scrape(s.admin(), "tern_connect_rate_refused_total").await >= 1.0);
}
