//! Overload: a connect storm next to a live client, a flooding publisher
//! held to its rate, a subscriber that never reads (bounded memory, then
//! disconnected), one that never acknowledges, and QoS 1 fan-in into a
//! slow subscriber that loses nothing that was acknowledged.
mod common;

use common::raw::kind;
use common::*;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_storm_does_not_starve_a_live_client() {
    let s = start_with(|c| {
        c.limits.max_connect_rate = 1000;
        c.limits.connect_burst = 200;
    })
    .await;
    let mut live = Raw::v5(s.addr, &uid("live")).await;
    let addr = s.addr;
    let storm = tokio::spawn(async move {
        let gate = Arc::new(tokio::sync::Semaphore::new(300));
        let mut tasks = Vec::new();
        for i in 0..3000 {
            let permit = gate.clone().acquire_owned().await.expect("semaphore");
            tasks.push(tokio::spawn(async move {
                let _permit = permit;
                let Ok(Ok(mut sock)) =
                    tokio::time::timeout(T, tokio::net::TcpStream::connect(addr)).await
                else {
                    return;
                };
                let _ = sock
                    .write_all(&Connect::v4(&format!("storm-{i}")).encode())
                    .await;
                let mut ack = [0u8; 4];
                let _ = tokio::time::timeout(T, sock.read(&mut ack)).await;
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let (mut worst, mut pings) = (Duration::ZERO, 0u32);
    while !storm.is_finished() {
        let t0 = Instant::now();
        tokio::time::timeout(Duration::from_secs(3), live.ping())
            .await
            .expect("the live client starved during the storm");
        worst = worst.max(t0.elapsed());
        pings += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    storm.await.expect("storm task");
    assert!(pings >= 3, "too few round trips measured: {pings}");
    assert!(worst < Duration::from_secs(2), "worst round trip {worst:?}");
    assert!(
        scrape(s.admin(), "tern_connect_rate_refused_total").await >= 1.0,
        "the storm exceeds the connect rate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_publisher_is_held_to_its_rate_while_others_flow() {
    let s = start_with(|c| {
        c.limits.max_publish_rate = 200;
        c.limits.publish_burst = 20;
    })
    .await;
    let (flood, other) = (uid("flood"), uid("other"));
    let mut watch = Raw::v5(s.addr, &uid("watch")).await;
    watch.subscribe(&format!("{flood}/#"), 0).await;
    let mut watch2 = Raw::v5(s.addr, &uid("watch2")).await;
    watch2.subscribe(&format!("{other}/#"), 0).await;

    let mut flooder = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    flooder
        .write_all(&Connect::v5(&uid("flooder")).encode())
        .await
        .expect("CONNECT");
    let mut batch = Vec::new();
    for i in 0..100 {
        batch.extend(Publish::new(&format!("{flood}/x"), format!("{i}").as_bytes()).encode(true));
    }
    let writer = tokio::spawn(async move {
        loop {
            if flooder.write_all(&batch).await.is_err() {
                return;
            }
        }
    });
    // The rate is measured from the first flood message on.
    watch.next_publish().await;
    let window = Duration::from_secs(2);
    let started = Instant::now();
    let mut other_client = Raw::v5(s.addr, &uid("other-pub")).await;
    let mut flooded = 1u32;
    let mut sent = 0u32;
    while started.elapsed() < window {
        if sent < 10 && started.elapsed() > Duration::from_millis(150 * u64::from(sent)) {
            other_client.publish(&format!("{other}/y"), b"hi", 0).await;
            let got = watch2.next_publish_within(Duration::from_secs(1)).await;
            assert!(got.is_some(), "a second client's message must still flow");
            sent += 1;
        }
        if watch
            .next_publish_within(Duration::from_millis(20))
            .await
            .is_some()
        {
            flooded += 1;
        }
    }
    writer.abort();
    let secs = started.elapsed().as_secs_f64();
    let cap = 200.0 * secs + 20.0 + 60.0;
    assert!(
        f64::from(flooded) <= cap,
        "{flooded} flood messages in {secs:.2}s exceed the 200/s rate (cap {cap:.0})"
    );
    assert!(
        flooded >= 100,
        "the flooder must still make progress: {flooded}"
    );
    assert_eq!(sent, 10);
    assert!(scrape(s.admin(), "tern_publish_throttled_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_that_never_reads_is_bounded_and_disconnected() {
    let s = start_with(|c| {
        c.limits.slow_consumer_timeout_secs = 2;
        c.limits.memory_check_interval_ms = 20;
        c.mqtt.max_online_messages = 50;
    })
    .await;
    let topic = uid("slow");
    let mut never = Raw::v5(s.addr, &uid("never")).await;
    never.subscribe(&format!("{topic}/#"), 0).await;
    let rss = || async { scrape(s.admin(), "tern_memory_rss_bytes").await };
    let before = rss().await;
    let mut publisher = Raw::v5(s.addr, &uid("pub")).await;
    let payload = vec![7u8; 64 * 1024];
    let mut peak = before;
    // 96 MiB of QoS 0 towards a client that reads none of it.
    for i in 0..1536 {
        publisher
            .send(&Publish::new(&format!("{topic}/m"), &payload).encode(true))
            .await;
        if i % 64 == 0 {
            peak = peak.max(rss().await);
        }
    }
    publisher.ping().await;
    peak = peak.max(rss().await);
    let grown = (peak - before) / (1024.0 * 1024.0);
    assert!(grown < 64.0, "resident memory grew by {grown:.0} MiB");
    assert!(scrape(s.admin(), "tern_queue_dropped_total").await >= 1.0);
    wait_until(
        Duration::from_secs(8),
        "the slow consumer is disconnected",
        || async { scrape(s.admin(), "tern_slow_consumers_disconnected_total").await >= 1.0 },
    )
    .await;
    drop(never);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_that_never_acks_gets_quota_exceeded() {
    let s = start_with(|c| {
        c.limits.slow_consumer_timeout_secs = 1;
        c.limits.backpressure_max_wait_ms = 50;
        c.mqtt.max_inflight = 5;
        c.mqtt.max_online_messages = 10;
    })
    .await;
    let topic = uid("noack");
    let mut lazy = Raw::v5(s.addr, &uid("lazy")).await;
    lazy.auto_ack = false;
    lazy.subscribe(&format!("{topic}/#"), 1).await;
    let mut publisher = Raw::v5(s.addr, &uid("pub")).await;
    for i in 0..30 {
        publisher
            .publish(&format!("{topic}/m"), format!("{i}").as_bytes(), 1)
            .await;
    }
    lazy.expect_disconnect(&[0x97], Duration::from_secs(6))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_fan_in_to_a_slow_subscriber_loses_nothing_acknowledged() {
    let s = start_with(|c| {
        c.mqtt.max_inflight = 2;
        c.mqtt.max_online_messages = 5;
        c.limits.backpressure_max_wait_ms = 200;
    })
    .await;
    let topic = uid("fan");
    let mut sub = Raw::v5(s.addr, &uid("sink")).await;
    sub.subscribe(&format!("{topic}/#"), 1).await;
    let (publishers, each) = (4u32, 100u32);
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let (addr, topic) = (s.addr, topic.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Raw::v5(addr, &uid("src")).await;
            let mut batch = Vec::new();
            for i in 0..each {
                let mut m =
                    Publish::new(&format!("{topic}/{p}"), format!("{p}-{i}").as_bytes()).qos(1);
                m.pkid = c.pkid();
                batch.extend(m.encode(true));
            }
            c.send(&batch).await;
            let mut acked = 0;
            while acked < each {
                match c.recv_within(Duration::from_secs(20)).await {
                    Recv::Packet(Packet::Ack {
                        kind: kind::PUBACK,
                        reason,
                        ..
                    }) => {
                        assert!(reason < 0x80, "PUBACK refused: {reason:#x}");
                        acked += 1;
                    }
                    Recv::Packet(_) => {}
                    other => panic!("publisher {p}: {other:?} after {acked} PUBACKs"),
                }
            }
        }));
    }
    let mut got = HashSet::new();
    let total = (publishers * each) as usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < total && Instant::now() < deadline {
        match sub.next_publish_within(Duration::from_secs(5)).await {
            Some(p) => {
                got.insert(p.payload);
                // A slow reader.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            None => break,
        }
    }
    for t in tasks {
        t.await.expect("publisher");
    }
    assert_eq!(
        got.len(),
        total,
        "every acknowledged QoS 1 message must arrive"
    );
    assert!(scrape(s.admin(), "tern_backpressure_waits_total").await >= 1.0);
}
