//! Soak: a million QoS 1 messages queued for one offline persistent
//! session keep the node's memory bounded (the queue past
//! `storage.max_in_memory_per_session` lives in the store only), and all of
//! them are delivered, in order, when the client comes back.
//!
//! The publishers are pipelined raw clients on several connections (each
//! keeps up to the broker's Receive Maximum unacknowledged); the
//! subscriber acknowledges as it reads. Durability is `none`: every
//! message is still written to the store (that is what is measured), but
//! PUBACKs do not wait for fdatasync — with `group`, a connection gets one
//! PUBACK per commit, and a million take minutes on two cores. Group
//! commit and crashes are covered by `durable_crash.rs`.
//!
//! On a 2-core machine (debug build, 384-byte payloads): ~18 s to publish
//! (~55k/s), ~30 s to drain (~33k/s), peak RSS ~160 MiB against ≥ 524 MiB
//! for the same queue held in memory.
mod common;

use common::node::Node;
use common::{Connect, Raw};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_broker::session::{Delivery, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

const TOTAL: u32 = 1_000_000;
const PUBLISHERS: u32 = 16;
/// Unacknowledged QoS 1 PUBLISHes per publisher: the broker's Receive Maximum.
const WINDOW: usize = 100;
const TOPIC: &str = "soak/t";
/// Payload bytes: (publisher, index) then filler. Large enough that the
/// queue held in memory would be well over [`RSS_BOUND`] (messages are
/// ~0.1 KB before their payload), so staying under it shows the spill.
const PAYLOAD: usize = 384;
/// Memory the node may use at most while holding the million messages.
const RSS_BOUND: u64 = 240 * 1024 * 1024;

const ENV: &[(&str, &str)] = &[
    ("TERN_MQTT__MAX_OFFLINE_MESSAGES", "2000000"),
    ("TERN_STORAGE__MAX_IN_MEMORY_PER_SESSION", "1000"),
    ("TERN_STORAGE__DURABILITY", "none"),
];

/// Resident memory of process `pid`, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU time (user + system) of process `pid` so far, seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the 12th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

/// Reads one whole packet: (first byte, body).
async fn read_packet(rd: &mut OwnedReadHalf, buf: &mut Vec<u8>) -> (u8, Vec<u8>) {
    loop {
        if let Some((first, start, len)) = frame(buf) {
            let body = buf[start..start + len].to_vec();
            buf.drain(..start + len);
            return (first, body);
        }
        read_more(rd, buf).await;
    }
}

async fn read_more(rd: &mut OwnedReadHalf, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(30), rd.read(&mut chunk))
        .await
        .expect("broker silent for 30 s")
        .expect("read from broker");
    assert!(n > 0, "broker closed the connection");
    buf.extend_from_slice(&chunk[..n]);
}

/// The first whole packet in `buf`: (first byte, body start, body length).
fn frame(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let mut len = 0usize;
    for i in 1..5 {
        let b = *buf.get(i)?;
        len |= usize::from(b & 0x7F) << (7 * (i - 1));
        if b & 0x80 == 0 {
            return (buf.len() >= i + 1 + len).then_some((buf[0], i + 1, len));
        }
    }
    panic!("remaining length over 4 bytes");
}

/// A connection after its CONNACK: halves, what was read past the
/// CONNACK, and the session-present flag.
struct Conn {
    rd: OwnedReadHalf,
    wr: tokio::net::tcp::OwnedWriteHalf,
    buf: Vec<u8>,
    present: bool,
}

async fn connect(node: &Node, c: Connect) -> Conn {
    let s = TcpStream::connect(node.tcp).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let (mut rd, mut wr) = s.into_split();
    wr.write_all(&c.encode()).await.expect("CONNECT");
    let mut buf = Vec::new();
    let (first, body) = read_packet(&mut rd, &mut buf).await;
    assert_eq!(first, 0x20, "CONNACK expected");
    assert_eq!(body[1], 0, "CONNACK success");
    Conn {
        rd,
        wr,
        buf,
        present: body[0] & 1 == 1,
    }
}

fn publish(pkid: u16, payload: &[u8; PAYLOAD], out: &mut Vec<u8>) {
    let len = 2 + TOPIC.len() + 2 + 1 + payload.len();
    assert!(len < 1 << 14, "two-byte remaining length");
    out.extend_from_slice(&[0x32, (len as u8) | 0x80, (len >> 7) as u8]);
    out.extend_from_slice(&(TOPIC.len() as u16).to_be_bytes());
    out.extend_from_slice(TOPIC.as_bytes());
    out.extend_from_slice(&pkid.to_be_bytes());
    out.push(0); // no properties
    out.extend_from_slice(payload);
}

/// Publisher `id` sends `n` messages with payload (id, index), pipelined
/// within the window; returns once all are acknowledged with success.
async fn publish_all(node: &Node, id: u32, n: u32) {
    let Conn {
        mut rd,
        mut wr,
        mut buf,
        ..
    } = connect(node, Connect::v5(&format!("soak-pub-{id}"))).await;
    let window = Arc::new(Semaphore::new(WINDOW));
    let w = window.clone();
    let writer = tokio::spawn(async move {
        let mut out = Vec::with_capacity(WINDOW * (PAYLOAD + 16));
        let mut i = 0u32;
        while i < n {
            w.acquire().await.expect("window").forget();
            loop {
                let mut payload = [0x5A; PAYLOAD];
                payload[..4].copy_from_slice(&id.to_be_bytes());
                payload[4..8].copy_from_slice(&i.to_be_bytes());
                publish((i % 65_000) as u16 + 1, &payload, &mut out);
                i += 1;
                if i == n || w.try_acquire().map(|p| p.forget()).is_err() {
                    break;
                }
            }
            wr.write_all(&out).await.expect("write PUBLISHes");
            out.clear();
        }
        wr
    });
    let mut acked = 0;
    while acked < n {
        read_more(&mut rd, &mut buf).await;
        let mut used = 0;
        let mut got = 0;
        while let Some((first, start, len)) = frame(&buf[used..]) {
            assert_eq!(first, 0x40, "PUBACK expected");
            let reason = if len > 2 { buf[used + start + 2] } else { 0 };
            assert_eq!(reason, 0, "PUBACK success (the offline session matched)");
            used += start + len;
            got += 1;
        }
        buf.drain(..used);
        acked += got;
        window.add_permits(got as usize);
    }
    let _wr = writer.await.expect("writer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_million_qos1_offline_queue_bounded_memory_in_order() {
    // What a queue fully in memory would hold at least: per message its
    // shared `Message`, its `Delivery` in the queue, topic and payload.
    let naive = u64::from(TOTAL)
        * (std::mem::size_of::<Message>() + std::mem::size_of::<Delivery>() + TOPIC.len() + PAYLOAD)
            as u64;
    assert!(
        TOTAL < 1_000_000 || naive > 2 * RSS_BOUND,
        "the bound ({RSS_BOUND}) must be well under a naive queue ({naive})"
    );
    tokio::time::timeout(Duration::from_secs(300), async {
        let data = tempfile::tempdir().expect("temp dir");
        let node = Node::start(data.path(), ENV).await;
        let pid = node.pid();
        let sub = Connect::v5("soak-sub").clean(false).session_expiry(3600);
        let (mut s, _) = Raw::connect_ok(node.tcp, sub.clone()).await;
        s.subscribe(TOPIC, 1).await;
        s.disconnect().await;

        let peak = Arc::new(AtomicU64::new(0));
        let p = peak.clone();
        let sampler = tokio::spawn(async move {
            loop {
                p.fetch_max(rss(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let started = Instant::now();
        let node = Arc::new(node);
        let mut pubs = Vec::new();
        for id in 0..PUBLISHERS {
            let node = node.clone();
            pubs.push(tokio::spawn(async move {
                publish_all(&node, id, TOTAL / PUBLISHERS).await
            }));
        }
        for p in pubs {
            p.await.expect("publisher");
        }
        let published = started.elapsed();
        peak.fetch_max(rss(pid), Ordering::Relaxed);
        let after_publish = peak.load(Ordering::Relaxed);
        eprintln!(
            "soak: {TOTAL} QoS 1 published in {published:.1?} ({:.0}/s), peak RSS {} MiB, broker CPU {:.1} s",
            f64::from(TOTAL) / published.as_secs_f64(),
            after_publish >> 20,
            cpu_secs(pid)
        );

        let started = Instant::now();
        let Conn {
            mut rd,
            mut wr,
            mut buf,
            present,
        } = connect(&node, sub).await;
        assert!(present, "the session is still there");
        let mut next = vec![0u32; PUBLISHERS as usize];
        let mut acks = Vec::new();
        let mut received = 0u32;
        loop {
            let mut used = 0;
            while let Some((first, start, len)) = frame(&buf[used..]) {
                let body = &buf[used + start..used + start + len];
                assert_eq!(first & 0xF6, 0x32, "QoS 1 PUBLISH expected");
                let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
                let pkid = &body[2 + tlen..4 + tlen];
                let props = usize::from(body[4 + tlen]);
                assert!(props < 0x80, "short properties");
                let payload = &body[5 + tlen + props..];
                let id = u32::from_be_bytes(payload[..4].try_into().expect("id"));
                let index = u32::from_be_bytes(payload[4..8].try_into().expect("index"));
                let want = &mut next[id as usize];
                assert_eq!(index, *want, "publisher {id}: message {want} next, in order");
                *want += 1;
                acks.extend_from_slice(&[0x40, 2, pkid[0], pkid[1]]);
                used += start + len;
                received += 1;
            }
            buf.drain(..used);
            wr.write_all(&acks).await.expect("PUBACKs");
            acks.clear();
            if received == TOTAL {
                break;
            }
            read_more(&mut rd, &mut buf).await;
        }
        let drained = started.elapsed();
        assert!(
            next.iter().all(|n| *n == TOTAL / PUBLISHERS),
            "every message of every publisher"
        );
        let mut tail = Vec::new();
        let quiet = tokio::time::timeout(Duration::from_millis(300), rd.read_buf(&mut tail)).await;
        assert!(quiet.is_err(), "nothing beyond the {TOTAL} messages: {tail:?}");
        sampler.abort();
        let peak = peak.load(Ordering::Relaxed);
        eprintln!(
            "soak: drained in {drained:.1?} ({:.0}/s), broker CPU {:.1} s in all, peak RSS {} MiB (bound {} MiB, naive queue ≥ {} MiB)",
            f64::from(TOTAL) / drained.as_secs_f64(),
            cpu_secs(pid),
            peak >> 20,
            RSS_BOUND >> 20,
            naive >> 20
        );
        assert!(
            peak < RSS_BOUND,
            "peak RSS {} MiB over the {} MiB bound",
            peak >> 20,
            RSS_BOUND >> 20
        );
        drop(wr);
        Arc::try_unwrap(node).ok().expect("publishers done").kill9().await;
    })
    .await
    .expect("soak deadline");
}
