//! A rolling restart on real processes: every node in turn is SIGTERMed
//! (drain, hand-off, leave) and restarted with the same name, while a
//! publisher keeps publishing QoS 1 and a persistent subscriber follows the
//! live nodes. No message the broker acknowledged may be lost.

mod k8s_support;

use k8s_support::{free_port, spawn, Node};
use parking_lot::Mutex;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOPIC: &str = "roll/t";

/// Addresses of the nodes clients may use now (a node is taken out before
/// it is stopped and put back once ready again).
type Live = Arc<Mutex<Vec<SocketAddr>>>;

fn pick(live: &Live, n: usize) -> Option<SocketAddr> {
    let l = live.lock();
    (!l.is_empty()).then(|| l[n % l.len()])
}

/// Subscribes once, then follows the live nodes with clean session = 0,
/// recording every sequence number received (and other payloads in `seen`).
async fn subscriber(
    live: Live,
    got: Arc<Mutex<Vec<u64>>>,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) {
    let mut attempt = 0usize;
    while !stop.load(Ordering::Relaxed) {
        attempt += 1;
        let Some(addr) = pick(&live, attempt) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut o = MqttOptions::new("roll-sub", addr.ip().to_string(), addr.port());
        o.set_clean_session(false);
        o.set_keep_alive(Duration::from_secs(5));
        let (c, mut el) = AsyncClient::new(o, 1000);
        if c.subscribe(TOPIC, QoS::AtLeastOnce).await.is_err() {
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            match tokio::time::timeout(Duration::from_millis(500), el.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    let text = String::from_utf8_lossy(&p.payload).into_owned();
                    match text.parse() {
                        Ok(n) => got.lock().push(n),
                        Err(_) => seen.lock().push(text),
                    }
                }
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(_)) => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes 0, 1, 2, … one at a time at QoS 1, recording each number once
/// its PUBACK arrives; on a lost connection it resends the current one
/// through another live node.
async fn publisher(live: Live, acked: Arc<Mutex<BTreeSet<u64>>>, stop: Arc<AtomicBool>) {
    let mut seq = 0u64;
    let mut attempt = 0usize;
    while !stop.load(Ordering::Relaxed) {
        attempt += 1;
        let Some(addr) = pick(&live, attempt) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut o = MqttOptions::new("roll-pub", addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(5));
        let (c, mut el) = AsyncClient::new(o, 10);
        'conn: while !stop.load(Ordering::Relaxed) {
            if c.publish(TOPIC, QoS::AtLeastOnce, false, seq.to_string())
                .await
                .is_err()
            {
                break;
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                if Instant::now() > deadline {
                    break 'conn;
                }
                match tokio::time::timeout(Duration::from_millis(500), el.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                        acked.lock().insert(seq);
                        seq += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        break;
                    }
                    Ok(Ok(_)) | Err(_) => {}
                    Ok(Err(_)) => break 'conn,
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One QoS 1 message through `addr`, best effort.
async fn warm_up(addr: SocketAddr, payload: &str) {
    let o = MqttOptions::new(
        format!("roll-warm-{}", addr.port()),
        addr.ip().to_string(),
        addr.port(),
    );
    let (c, mut el) = AsyncClient::new(o, 10);
    if c.publish(TOPIC, QoS::AtLeastOnce, false, payload.to_string())
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_loses_no_acknowledged_message() {
    let ports = [free_port(), free_port(), free_port()];
    let names = ["r1", "r2", "r3"];
    let mut nodes: Vec<Node> = names
        .iter()
        .zip(ports)
        .map(|(n, p)| spawn(n, p, &ports, &[]))
        .collect();
    for n in &nodes {
        n.wait_ready(Duration::from_secs(15)).await;
    }
    nodes[0]
        .wait_peers_up(&["r2", "r3"], Duration::from_secs(10))
        .await;
    let live: Live = Arc::new(Mutex::new(nodes.iter().map(|n| n.tcp).collect()));
    let got = Arc::new(Mutex::new(Vec::new()));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let stop_pub = Arc::new(AtomicBool::new(false));
    let stop_sub = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sub = tokio::spawn(subscriber(
        live.clone(),
        got.clone(),
        seen.clone(),
        stop_sub.clone(),
    ));
    // Counting starts once the subscription routes from every node: a
    // warm-up message through each node must reach the subscriber.
    for n in &nodes {
        let tag = format!("warm-{}", n.name);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !seen.lock().contains(&tag) {
            assert!(
                Instant::now() < deadline,
                "warm-up through {} never arrived",
                n.name
            );
            warm_up(n.tcp, &tag).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let publ = tokio::spawn(publisher(live.clone(), acked.clone(), stop_pub.clone()));

    for i in 0..nodes.len() {
        let before = acked.lock().len();
        let deadline = Instant::now() + Duration::from_secs(10);
        while acked.lock().len() < before + 20 {
            assert!(
                Instant::now() < deadline,
                "publishing stalled before restarting {}",
                names[i]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        live.lock().retain(|a| *a != nodes[i].tcp);
        nodes[i].term();
        let status = nodes[i].wait_exit(Duration::from_secs(20)).await;
        assert!(status.success(), "{} exited with {status}", names[i]);
        let restarted = spawn(names[i], ports[i], &ports, &[]);
        restarted.wait_ready(Duration::from_secs(20)).await;
        let others: Vec<&str> = names.iter().copied().filter(|n| *n != names[i]).collect();
        restarted
            .wait_peers_up(&others, Duration::from_secs(15))
            .await;
        live.lock().push(restarted.tcp);
        nodes[i] = restarted;
    }

    // Keep publishing briefly on the restarted cluster, then stop and let
    // the subscriber catch up.
    let before = acked.lock().len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked.lock().len() < before + 20 {
        assert!(
            Instant::now() < deadline,
            "publishing stalled after the rolling restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_pub.store(true, Ordering::Relaxed);
    let _ = publ.await;
    let acked: BTreeSet<u64> = acked.lock().clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    let missing = loop {
        let received: BTreeSet<u64> = got.lock().iter().copied().collect();
        let missing: Vec<u64> = acked.difference(&received).copied().collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop_sub.store(true, Ordering::Relaxed);
    let _ = sub.await;
    let total = got.lock().len();
    eprintln!(
        "rolling restart: {} acknowledged, {} received ({} duplicates)",
        acked.len(),
        total,
        total.saturating_sub(acked.len())
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged messages lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
}
