//! `tern-loadgen`: a broker-agnostic MQTT 3.1.1 load generator.
//!
//! It speaks raw MQTT over TCP (the few packets it needs are written by
//! hand) and knows nothing of any broker's internals, so the same run can
//! be pointed at Tern, Mosquitto or anything else. Every payload carries
//! the publisher's number, a sequence number and a send timestamp, so each
//! subscriber counts lost and duplicated messages and measures latency.
//!
//! Scenarios (`--scenario`):
//! - `fanin`: `--clients` publishers → 1 subscriber (`bench/fanin/+`).
//! - `fanout`: 1 publisher → `--clients` subscribers.
//! - `pairs`: `--clients` publisher/subscriber pairs, one topic each.
//! - `latency`: 1 publisher at `--rate` msg/s for `--seconds`, 1 subscriber;
//!   p50/p99/p999 from the timestamps.
//! - `conns`: `--clients` idle connections; connect rate and, with
//!   `--broker-pid`, the broker's RSS growth per connection.
//! - `fill`: a persistent subscriber `fill-sub` subscribes to `bench/fill`
//!   at QoS 1 and leaves; `--clients` publishers then queue `--messages`
//!   QoS 1 messages for it (restart benchmarks, benches/restart.py).
//!
//! `--persistent` makes subscribers keep a session (clean session 0), so a
//! broker with persistence writes their queues (durable throughput).
//!
//! `--sub-port` puts the subscribers on another node (cluster cross-node
//! runs). Publishers are flow-controlled, never dropping: QoS 1 publishers
//! keep at most `--window` PUBLISHes unacknowledged, and every publisher
//! stops while more than `--e2e-window` deliveries are outstanding end to
//! end (sent × subscribers − received), so a broker's queue limit is never
//! what a run measures. One JSON object per run is printed on stdout.

use anyhow::{bail, Context, Result};
use bytes::{Buf, BufMut, BytesMut};
use clap::Parser;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};

/// Command line.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "tern-loadgen",
    about = "MQTT load generator (raw MQTT 3.1.1 over TCP)"
)]
struct Args {
    /// fanin, fanout, pairs, latency or conns.
    #[arg(long)]
    scenario: String,
    /// Broker host (loopback only).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Broker MQTT port (publishers; everyone unless --sub-port).
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Port of the node the subscribers use (cluster cross-node runs).
    #[arg(long)]
    sub_port: Option<u16>,
    /// QoS of publications and subscriptions (0 or 1).
    #[arg(long, default_value_t = 0)]
    qos: u8,
    /// Publishers (fanin), subscribers (fanout), pairs, or connections.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Messages published in total (fanout: by the one publisher).
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Payload size in bytes (at least 20: id, sequence, timestamp).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// QoS 1 PUBLISHes a publisher keeps unacknowledged.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Deliveries allowed outstanding end to end before publishers wait.
    #[arg(long, default_value_t = 20_000)]
    e2e_window: u64,
    /// Latency scenario: publish rate, messages per second.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Latency scenario: duration in seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Broker PID whose VmRSS is read (conns scenario).
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Label copied into the JSON (e.g. the broker's name).
    #[arg(long, default_value = "")]
    label: String,
    /// Wait after subscribing before publishing (route propagation), ms.
    #[arg(long, default_value_t = 0)]
    settle_ms: u64,
    /// Give up when no message arrives for this long, ms.
    #[arg(long, default_value_t = 3000)]
    idle_ms: u64,
    /// Concurrent handshakes in the conns scenario.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Seconds to hold idle connections before measuring RSS.
    #[arg(long, default_value_t = 2.0)]
    hold: f64,
    /// Subscribers keep their session (clean session 0): on a broker with
    /// a data directory their queues are written, and QoS 1 PUBACKs wait
    /// for the durable commit.
    #[arg(long)]
    persistent: bool,
}

/// Smallest payload: publisher id (u32), sequence (u64), timestamp ns (u64).
const HEADER: usize = 20;

fn main() -> Result<()> {
    let args = Args::parse();
    if args.payload < HEADER {
        bail!("--payload must be at least {HEADER}");
    }
    if args.qos > 1 {
        bail!("--qos must be 0 or 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(async {
        match args.scenario.as_str() {
            "fanin" | "fanout" | "pairs" | "latency" => flow(&args).await,
            "conns" => conns(&args).await,
            "fill" => fill(&args).await,
            s => bail!("unknown scenario {s}"),
        }
    })?;
    println!("{out}");
    Ok(())
}

// ---------------------------------------------------------------- packets

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_u16(s.len() as u16);
    b.put_slice(s.as_bytes());
}

fn put_len(b: &mut BytesMut, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        b.put_u8(byte);
        if n == 0 {
            break;
        }
    }
}

fn connect_packet(client_id: &str, keep_alive: u16, clean: bool) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u8(0x10);
    put_len(&mut b, 10 + 2 + client_id.len());
    put_str(&mut b, "MQTT");
    b.put_u8(4); // 3.1.1
    b.put_u8(if clean { 0x02 } else { 0x00 }); // clean session
    b.put_u16(keep_alive);
    put_str(&mut b, client_id);
    b
}

fn subscribe_packet(filter: &str, qos: u8) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u8(0x82);
    put_len(&mut b, 2 + 2 + filter.len() + 1);
    b.put_u16(1);
    put_str(&mut b, filter);
    b.put_u8(qos);
    b
}

fn put_publish(b: &mut BytesMut, topic: &str, qos: u8, pkid: u16, payload: &[u8]) {
    b.put_u8(0x30 | (qos << 1));
    let pk = if qos > 0 { 2 } else { 0 };
    put_len(b, 2 + topic.len() + pk + payload.len());
    put_str(b, topic);
    if qos > 0 {
        b.put_u16(pkid);
    }
    b.put_slice(payload);
}

/// The frame at the front of `buf`: (first byte, header length, remaining length).
fn frame(buf: &[u8]) -> Result<Option<(u8, usize, usize)>> {
    let Some(&b1) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    let mut mult = 1usize;
    for i in 1..5 {
        let Some(&byte) = buf.get(i) else {
            return Ok(None);
        };
        len += usize::from(byte & 0x7F) * mult;
        mult *= 128;
        if byte & 0x80 == 0 {
            let header = i + 1;
            if buf.len() < header + len {
                return Ok(None);
            }
            return Ok(Some((b1, header, len)));
        }
    }
    bail!("malformed remaining length from broker")
}

/// Connects, sends CONNECT and waits for a successful CONNACK.
async fn mqtt_connect(
    host: &str,
    port: u16,
    client_id: &str,
    keep_alive: u16,
    clean: bool,
) -> Result<TcpStream> {
    let mut s = TcpStream::connect((host, port))
        .await
        .with_context(|| format!("connect to {host}:{port}"))?;
    s.set_nodelay(true)?;
    s.write_all(&connect_packet(client_id, keep_alive, clean))
        .await?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await.context("reading CONNACK")?;
    if ack[0] != 0x20 || ack[3] != 0 {
        bail!("CONNACK refused for {client_id}: {ack:?}");
    }
    Ok(s)
}

// ---------------------------------------------------------------- shared state

/// Counters shared by all clients of a run.
struct Shared {
    /// Deliveries received (every subscriber, duplicates included).
    received: AtomicU64,
    /// PUBLISHes written by all publishers.
    sent: AtomicU64,
    /// Deliveries each PUBLISH should produce.
    factor: u64,
    /// Woken as deliveries arrive (end-to-end flow control).
    progress: Notify,
    /// Set when publishers are done (subscribers may then time out).
    done_publishing: AtomicBool,
    /// Last time any subscriber received a message.
    last_rx: Mutex<Instant>,
    /// Times publishers went on after waiting --idle-ms for deliveries.
    stalls: AtomicU64,
    /// Latency samples in ns (latency scenario only).
    latencies: Mutex<Vec<u64>>,
    /// Process-wide time base for payload timestamps.
    base: Instant,
}

impl Shared {
    /// Nothing counted yet; each PUBLISH should produce `factor` deliveries.
    fn new(factor: u64) -> Shared {
        Shared {
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            factor,
            progress: Notify::new(),
            stalls: AtomicU64::new(0),
            done_publishing: AtomicBool::new(false),
            last_rx: Mutex::new(Instant::now()),
            latencies: Mutex::new(Vec::new()),
            base: Instant::now(),
        }
    }
}

fn now_ns(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// Per-subscriber result.
#[derive(Default)]
struct SubResult {
    unique: u64,
    dup: u64,
}

// ---------------------------------------------------------------- subscriber

struct SubPlan {
    id: String,
    filter: String,
    /// Messages expected per publisher id.
    expect: Vec<u64>,
    record_latency: bool,
}

/// Subscribes and returns the halves once SUBACK arrives.
async fn subscribe(
    args: &Args,
    plan: &SubPlan,
) -> Result<(OwnedReadHalf, OwnedWriteHalf, BytesMut)> {
    let port = args.sub_port.unwrap_or(args.port);
    let s = mqtt_connect(&args.host, port, &plan.id, 0, !args.persistent).await?;
    let (mut rd, mut wr) = s.into_split();
    wr.write_all(&subscribe_packet(&plan.filter, args.qos))
        .await?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        if let Some((b1, h, len)) = frame(&buf)? {
            if b1 != 0x90 {
                bail!("expected SUBACK, got packet type {}", b1 >> 4);
            }
            let code = buf[h + len - 1];
            if code > 1 {
                bail!("subscription refused ({code:#x})");
            }
            buf.advance(h + len);
            return Ok((rd, wr, buf));
        }
        if rd.read_buf(&mut buf).await? == 0 {
            bail!("closed before SUBACK");
        }
    }
}

/// Receives until every expected message arrived or the stream goes idle.
async fn receive(
    args: Arc<Args>,
    plan: SubPlan,
    mut rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
    mut buf: BytesMut,
    shared: Arc<Shared>,
) -> Result<SubResult> {
    let total: u64 = plan.expect.iter().sum();
    let mut seen: Vec<Vec<u64>> = plan
        .expect
        .iter()
        .map(|&n| vec![0u64; (n as usize).div_ceil(64)])
        .collect();
    let mut res = SubResult::default();
    let mut acks = BytesMut::new();
    let mut local_lat = Vec::new();
    let idle = Duration::from_millis(args.idle_ms);
    let mut since_notify = 0u32;
    while res.unique < total {
        // Decode every whole frame in the buffer.
        while let Some((b1, h, len)) = frame(&buf)? {
            let body = &buf[h..h + len];
            if b1 >> 4 == 3 {
                let qos = (b1 >> 1) & 3;
                let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
                let mut at = 2 + tlen;
                if qos > 0 {
                    acks.put_slice(&[0x40, 2, body[at], body[at + 1]]);
                    at += 2;
                }
                let p = &body[at..];
                if p.len() < HEADER {
                    bail!("foreign message on a benchmark topic");
                }
                let pubid = u32::from_be_bytes(p[0..4].try_into()?) as usize;
                let seq = u64::from_be_bytes(p[4..12].try_into()?);
                let ts = u64::from_be_bytes(p[12..20].try_into()?);
                if plan.record_latency {
                    local_lat.push(now_ns(shared.base).saturating_sub(ts));
                }
                match seen.get_mut(pubid) {
                    Some(bits) if (seq as usize) / 64 < bits.len() => {
                        let (w, m) = ((seq / 64) as usize, 1u64 << (seq % 64));
                        if bits[w] & m != 0 {
                            res.dup += 1;
                        } else {
                            bits[w] |= m;
                            res.unique += 1;
                        }
                    }
                    _ => bail!("unexpected publisher {pubid} / sequence {seq}"),
                }
                shared.received.fetch_add(1, Relaxed);
                since_notify += 1;
            }
            buf.advance(h + len);
        }
        if since_notify > 0 {
            since_notify = 0;
            *shared.last_rx.lock().expect("lock") = Instant::now();
            shared.progress.notify_waiters();
        }
        if !acks.is_empty() {
            wr.write_all(&acks).await?;
            acks.clear();
        }
        if res.unique >= total {
            break;
        }
        buf.reserve(64 * 1024);
        match tokio::time::timeout(idle, rd.read_buf(&mut buf)).await {
            Ok(Ok(0)) => bail!("subscriber {}: connection closed by broker", plan.id),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e).context("subscriber read"),
            Err(_) if shared.done_publishing.load(Relaxed) => break,
            Err(_) => {}
        }
    }
    if !local_lat.is_empty() {
        shared.latencies.lock().expect("lock").extend(local_lat);
    }
    // Let late duplicates (if any) be seen, then disconnect cleanly.
    let _ = wr.write_all(&[0xE0, 0]).await;
    Ok(res)
}

// ---------------------------------------------------------------- publisher

struct PubPlan {
    id: String,
    pubid: u32,
    topic: String,
    count: u64,
    /// Latency scenario: messages per second (0: as fast as allowed).
    rate: u64,
}

async fn publish(args: Arc<Args>, plan: PubPlan, shared: Arc<Shared>) -> Result<()> {
    let s = mqtt_connect(&args.host, args.port, &plan.id, 0, true).await?;
    let (mut rd, mut wr) = s.into_split();
    let qos = args.qos;
    let window = Arc::new(Semaphore::new(args.window));
    let acker = {
        let window = window.clone();
        tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(8 * 1024);
            let mut acked = 0u64;
            loop {
                while let Some((b1, h, len)) = frame(&buf)? {
                    if b1 >> 4 == 4 {
                        acked += 1;
                        window.add_permits(1);
                    }
                    buf.advance(h + len);
                }
                buf.reserve(8 * 1024);
                if rd.read_buf(&mut buf).await? == 0 {
                    return Ok::<u64, anyhow::Error>(acked);
                }
            }
        })
    };
    let mut payload = vec![0u8; args.payload];
    payload[0..4].copy_from_slice(&plan.pubid.to_be_bytes());
    let mut out = BytesMut::with_capacity(64 * 1024);
    let batch_max: u64 = if plan.rate > 0 { 1 } else { 64 };
    let started = Instant::now();
    let mut seq = 0u64;
    let mut pkid = 0u16;
    while seq < plan.count {
        if plan.rate > 0 {
            // Fixed rate: message `seq` is due at seq / rate seconds.
            let due = started + Duration::from_secs_f64(seq as f64 / plan.rate as f64);
            tokio::time::sleep_until(due.into()).await;
        } else {
            // End-to-end flow control (never lets a broker queue overflow).
            // `sent` is read once: deliveries may overtake the counter.
            // Bounded: if deliveries stop (a broker lost messages), go on
            // after --idle-ms and count a stall instead of hanging.
            let mut waited = Duration::ZERO;
            loop {
                let notified = shared.progress.notified();
                let want = shared.sent.load(Relaxed) * shared.factor;
                let outstanding = want - shared.received.load(Relaxed).min(want);
                if outstanding <= args.e2e_window || shared.stalls.load(Relaxed) > 0 {
                    break;
                }
                if waited >= Duration::from_millis(args.idle_ms) {
                    // Deliveries stopped: flow control is off for the rest
                    // of the run, which then ends and reports the loss.
                    shared.stalls.fetch_add(1, Relaxed);
                    break;
                }
                let t = Instant::now();
                let _ = tokio::time::timeout(Duration::from_millis(20), notified).await;
                waited += t.elapsed();
            }
        }
        let mut n = batch_max.min(plan.count - seq);
        if qos > 0 {
            tokio::time::timeout(Duration::from_secs(30), window.acquire())
                .await
                .with_context(|| format!("{}: no PUBACK for 30 s at sequence {seq}", plan.id))??
                .forget();
            let mut got = 1;
            while got < n {
                match window.try_acquire() {
                    Ok(p) => {
                        p.forget();
                        got += 1;
                    }
                    Err(_) => break,
                }
            }
            n = got;
        }
        for _ in 0..n {
            payload[4..12].copy_from_slice(&seq.to_be_bytes());
            payload[12..20].copy_from_slice(&now_ns(shared.base).to_be_bytes());
            pkid = pkid.wrapping_add(1).max(1);
            put_publish(&mut out, &plan.topic, qos, pkid, &payload);
            seq += 1;
        }
        wr.write_all(&out).await.context("publisher write")?;
        out.clear();
        shared.sent.fetch_add(n, Relaxed);
    }
    if qos > 0 {
        // Every PUBLISH acknowledged.
        let all = u32::try_from(args.window)?;
        tokio::time::timeout(Duration::from_secs(30), window.acquire_many(all))
            .await
            .context("PUBACKs missing after 30 s")??
            .forget();
    }
    wr.write_all(&[0xE0, 0]).await?;
    drop(wr);
    let _ = tokio::time::timeout(Duration::from_secs(2), acker).await;
    Ok(())
}

// ---------------------------------------------------------------- flow scenarios

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn flow(args: &Args) -> Result<serde_json::Value> {
    let args = Arc::new(args.clone());
    let n = args.clients.max(1);
    let run = std::process::id();
    let (pubs, subs, factor): (Vec<PubPlan>, Vec<SubPlan>, u64) = match args.scenario.as_str() {
        "fanin" => {
            let per = args.messages / n as u64;
            let pubs = (0..n)
                .map(|i| PubPlan {
                    id: format!("lg{run}-p{i}"),
                    pubid: i as u32,
                    topic: format!("bench/{run}/fanin/{i}"),
                    count: per,
                    rate: 0,
                })
                .collect();
            let sub = SubPlan {
                id: format!("lg{run}-s0"),
                filter: format!("bench/{run}/fanin/+"),
                expect: vec![per; n],
                record_latency: false,
            };
            (pubs, vec![sub], 1)
        }
        "fanout" => {
            let p = PubPlan {
                id: format!("lg{run}-p0"),
                pubid: 0,
                topic: format!("bench/{run}/fanout"),
                count: args.messages,
                rate: 0,
            };
            let subs = (0..n)
                .map(|i| SubPlan {
                    id: format!("lg{run}-s{i}"),
                    filter: format!("bench/{run}/fanout"),
                    expect: vec![args.messages],
                    record_latency: false,
                })
                .collect();
            (vec![p], subs, n as u64)
        }
        "pairs" => {
            let per = args.messages / n as u64;
            let pubs = (0..n)
                .map(|i| PubPlan {
                    id: format!("lg{run}-p{i}"),
                    pubid: 0,
                    topic: format!("bench/{run}/pair/{i}"),
                    count: per,
                    rate: 0,
                })
                .collect();
            let subs = (0..n)
                .map(|i| SubPlan {
                    id: format!("lg{run}-s{i}"),
                    filter: format!("bench/{run}/pair/{i}"),
                    expect: vec![per],
                    record_latency: false,
                })
                .collect();
            (pubs, subs, 1)
        }
        "latency" => {
            let count = (args.rate as f64 * args.seconds) as u64;
            let p = PubPlan {
                id: format!("lg{run}-p0"),
                pubid: 0,
                topic: format!("bench/{run}/latency"),
                count,
                rate: args.rate,
            };
            let s = SubPlan {
                id: format!("lg{run}-s0"),
                filter: format!("bench/{run}/latency"),
                expect: vec![count],
                record_latency: true,
            };
            (vec![p], vec![s], 1)
        }
        _ => unreachable!(),
    };
    let expected: u64 = subs.iter().map(|s| s.expect.iter().sum::<u64>()).sum();
    let shared = Arc::new(Shared::new(factor));
    // Subscribe everyone first.
    let mut sub_tasks = Vec::new();
    for plan in subs {
        let (rd, wr, buf) = subscribe(&args, &plan)
            .await
            .with_context(|| format!("subscriber {}", plan.id))?;
        sub_tasks.push((plan, rd, wr, buf));
    }
    if args.settle_ms > 0 {
        tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    }
    let start = Instant::now();
    let subs: Vec<_> = sub_tasks
        .into_iter()
        .map(|(plan, rd, wr, buf)| {
            tokio::spawn(receive(args.clone(), plan, rd, wr, buf, shared.clone()))
        })
        .collect();
    let pubs: Vec<_> = pubs
        .into_iter()
        .map(|p| tokio::spawn(publish(args.clone(), p, shared.clone())))
        .collect();
    let mut errors = Vec::new();
    for p in pubs {
        if let Err(e) = p.await? {
            errors.push(format!("publisher: {e:#}"));
        }
    }
    shared.done_publishing.store(true, Relaxed);
    let (mut unique, mut dup) = (0u64, 0u64);
    for s in subs {
        match s.await? {
            Ok(r) => {
                unique += r.unique;
                dup += r.dup;
            }
            Err(e) => errors.push(format!("subscriber: {e:#}")),
        }
    }
    let last = *shared.last_rx.lock().expect("lock");
    let secs = last
        .saturating_duration_since(start)
        .as_secs_f64()
        .max(1e-9);
    let mut lat = std::mem::take(&mut *shared.latencies.lock().expect("lock"));
    lat.sort_unstable();
    let mut v = json!({
        "label": args.label,
        "scenario": args.scenario,
        "qos": args.qos,
        "clients": n,
        "payload": args.payload,
        "cross_node": args.sub_port.is_some(),
        "expected": expected,
        "received": unique,
        "lost": expected - unique.min(expected),
        "dup": dup,
        "seconds": secs,
        "msgs_per_s": unique as f64 / secs,
        "stalls": shared.stalls.load(Relaxed),
        "errors": errors,
    });
    if args.scenario == "latency" {
        v["rate"] = json!(args.rate);
        v["p50_us"] = json!(percentile(&lat, 0.50));
        v["p99_us"] = json!(percentile(&lat, 0.99));
        v["p999_us"] = json!(percentile(&lat, 0.999));
        v["max_us"] = json!(lat.last().map_or(0.0, |&x| x as f64 / 1000.0));
    }
    Ok(v)
}

// ---------------------------------------------------------------- fill

/// Queues `--messages` QoS 1 messages for the offline persistent session
/// `fill-sub` (topic `bench/fill`), from `--clients` publishers.
async fn fill(args: &Args) -> Result<serde_json::Value> {
    let mut a = args.clone();
    a.qos = 1;
    a.persistent = true;
    let args = Arc::new(a);
    let plan = SubPlan {
        id: "fill-sub".into(),
        filter: "bench/fill".into(),
        expect: Vec::new(),
        record_latency: false,
    };
    let (_rd, mut wr, _) = subscribe(&args, &plan).await.context("fill-sub")?;
    wr.write_all(&[0xE0, 0]).await?;
    drop((_rd, wr));
    // Nobody receives: no end-to-end flow control (factor 0).
    let shared = Arc::new(Shared::new(0));
    let run = std::process::id();
    let n = args.clients.max(1);
    let per = args.messages / n as u64;
    let start = Instant::now();
    let pubs: Vec<_> = (0..n)
        .map(|i| PubPlan {
            id: format!("lg{run}-p{i}"),
            pubid: i as u32,
            topic: "bench/fill".into(),
            count: per,
            rate: 0,
        })
        .map(|p| tokio::spawn(publish(args.clone(), p, shared.clone())))
        .collect();
    let mut errors = Vec::new();
    for p in pubs {
        if let Err(e) = p.await? {
            errors.push(format!("publisher: {e:#}"));
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let queued = per * n as u64;
    Ok(json!({
        "label": args.label,
        "scenario": "fill",
        "clients": n,
        "payload": args.payload,
        "queued": queued,
        "seconds": secs,
        "msgs_per_s": queued as f64 / secs,
        "errors": errors,
    }))
}

// ---------------------------------------------------------------- connection scale

fn rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

async fn conns(args: &Args) -> Result<serde_json::Value> {
    let run = std::process::id();
    let before = match args.broker_pid {
        Some(pid) => Some(rss_kib(pid)?),
        None => None,
    };
    let sem = Arc::new(Semaphore::new(args.connect_concurrency));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let permit = sem.clone().acquire_owned().await?;
        let host = args.host.clone();
        let port = args.port;
        tasks.push(tokio::spawn(async move {
            let r = mqtt_connect(&host, port, &format!("lg{run}-idle{i}"), 0, true).await;
            drop(permit);
            r
        }));
    }
    let mut streams = Vec::with_capacity(args.clients);
    let mut errors = 0u64;
    let mut first_error = String::new();
    for t in tasks {
        match t.await? {
            Ok(s) => streams.push(s),
            Err(e) => {
                if errors == 0 {
                    first_error = format!("{e:#}");
                }
                errors += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    let after = match args.broker_pid {
        Some(pid) => Some(rss_kib(pid)?),
        None => None,
    };
    let ok = streams.len() as u64;
    let per_conn = match (before, after) {
        (Some(b), Some(a)) if ok > 0 => Some(a.saturating_sub(b) as f64 / ok as f64),
        _ => None,
    };
    drop(streams);
    Ok(json!({
        "label": args.label,
        "scenario": "conns",
        "clients": args.clients,
        "connected": ok,
        "errors": errors,
        "first_error": first_error,
        "seconds": secs,
        "connects_per_s": ok as f64 / secs,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "rss_per_conn_kib": per_conn,
    }))
}
