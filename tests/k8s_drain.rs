//! Graceful drain on real processes: persistent sessions with queued
//! messages move to the remaining nodes, the node leaves (gone, not down),
//! and 5.0 clients are sent elsewhere with DISCONNECT 0x9C.

mod k8s_support;

use k8s_support::{free_port, spawn, Node};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const MESSAGES: usize = 200;

fn options(id: &str, addr: SocketAddr) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_clean_session(false);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Connects, returns the client, its event loop and CONNACK's session present.
async fn connect(id: &str, addr: SocketAddr) -> (AsyncClient, rumqttc::EventLoop, bool) {
    let (c, mut el) = AsyncClient::new(options(id, addr), 500);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "{id}: no CONNACK");
        match tokio::time::timeout(Duration::from_secs(10), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(a)))) => return (c, el, a.session_present),
            Ok(Ok(_)) => {}
            other => panic!("{id}: connect failed: {other:?}"),
        }
    }
}

async fn three_nodes() -> (Node, Node, Node) {
    let ports = [free_port(), free_port(), free_port()];
    let n1 = spawn("n1", ports[0], &ports, &[]);
    let n2 = spawn("n2", ports[1], &ports, &[]);
    let n3 = spawn("n3", ports[2], &ports, &[]);
    for n in [&n1, &n2, &n3] {
        n.wait_ready(Duration::from_secs(15)).await;
    }
    n1.wait_peers_up(&["n2", "n3"], Duration::from_secs(10))
        .await;
    (n1, n2, n3)
}

#[tokio::test]
async fn drain_hands_sessions_to_the_remaining_nodes() {
    let (n1, mut n2, n3) = three_nodes().await;
    let ids: Vec<String> = (0..3).map(|i| format!("drain-sub-{i}")).collect();
    for id in &ids {
        let (c, mut el, _) = connect(id, n2.tcp).await;
        c.subscribe(format!("drain/{id}"), QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = el.poll().await.expect("suback") {
                break;
            }
        }
        c.disconnect().await.expect("disconnect");
        let _ = tokio::time::timeout(Duration::from_secs(2), el.poll()).await;
    }
    // Routes reach n1 before publishing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (publisher, mut el, _) = connect("drain-pub", n1.tcp).await;
    let total = ids.len() * MESSAGES;
    let pub_task = tokio::spawn(async move {
        let mut acked = 0;
        while acked < total {
            match el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("publisher: {e}"),
            }
        }
        acked
    });
    for i in 0..MESSAGES {
        for id in &ids {
            publisher
                .publish(
                    format!("drain/{id}"),
                    QoS::AtLeastOnce,
                    false,
                    i.to_string(),
                )
                .await
                .expect("publish");
        }
    }
    let acked = tokio::time::timeout(Duration::from_secs(20), pub_task)
        .await
        .expect("every PUBACK in time")
        .expect("publisher task");
    assert_eq!(acked, total);

    let started = Instant::now();
    n2.term();
    let status = n2.wait_exit(Duration::from_secs(12)).await;
    assert!(status.success(), "n2 exit: {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "within the grace period"
    );
    for n in [&n1, &n3] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while n.peers().await.iter().any(|(p, _)| p == "n2") {
            assert!(
                Instant::now() < deadline,
                "{}: n2 still shown: {:?}",
                n.name,
                n.peers().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    for (k, id) in ids.iter().enumerate() {
        let node = if k % 2 == 0 { &n1 } else { &n3 };
        let (_c, mut el, present) = connect(id, node.tcp).await;
        assert!(present, "{id}: session present at {}", node.name);
        let mut seen = HashSet::new();
        let mut duplicates = 0;
        let deadline = Instant::now() + Duration::from_secs(15);
        while seen.len() < MESSAGES {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, el.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    let n: usize = String::from_utf8_lossy(&p.payload).parse().expect("seq");
                    if !seen.insert(n) {
                        duplicates += 1;
                    }
                }
                Ok(Ok(_)) => {}
                other => panic!("{id}: got {} of {MESSAGES} ({other:?})", seen.len()),
            }
        }
        eprintln!("{id}: {MESSAGES} received, {duplicates} duplicates");
    }
}

#[tokio::test]
async fn draining_node_sends_5_0_clients_to_another_server() {
    let (a, b) = (free_port(), free_port());
    let na = spawn("ra", a, &[b], &[]);
    let mut nb = spawn(
        "rb",
        b,
        &[a],
        &[("TERN_SHUTDOWN__SERVER_REFERENCE", "tern-0.tern:1883")],
    );
    nb.wait_ready(Duration::from_secs(15)).await;
    na.wait_ready(Duration::from_secs(15)).await;
    // A raw 5.0 client: rumqttc surfaces the reason code but not the
    // DISCONNECT's properties.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(nb.tcp)
        .await
        .expect("connect");
    let mut connect = vec![
        0x10, 18, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 5,
    ];
    connect.extend_from_slice(b"ref-5");
    s.write_all(&connect).await.expect("CONNECT");
    let mut connack = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut connack))
        .await
        .expect("CONNACK in time")
        .expect("CONNACK");
    assert_eq!(connack[0], 0x20);
    let mut rest = vec![0u8; usize::from(connack[1])];
    s.read_exact(&mut rest).await.expect("CONNACK body");
    nb.term();
    let mut tail = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut tail))
        .await
        .expect("closed in time")
        .expect("read");
    assert!(
        tail.len() > 3 && tail[0] == 0xE0,
        "DISCONNECT expected: {tail:x?}"
    );
    assert_eq!(tail[2], 0x9C, "use another server");
    let text = String::from_utf8_lossy(&tail);
    assert!(
        text.contains("tern-0.tern:1883"),
        "server reference: {tail:x?}"
    );
    assert!(nb.wait_exit(Duration::from_secs(12)).await.success());
}
