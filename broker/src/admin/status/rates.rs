//! Per-second traffic rates over a sliding window. A task samples the
//! counters once a second ([`Sampler::spawn`]); a request subtracts the
//! oldest sample in the window from the newest, so it costs one lock and
//! four divisions, whatever the traffic.

use crate::metrics::Metrics;
use crate::session::now_ms;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the counters are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How far back the rates look.
pub const WINDOW: Duration = Duration::from_secs(5);

/// The traffic counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// PUBLISH packets received from clients.
    pub messages_in: u64,
    /// PUBLISH packets sent to clients.
    pub messages_out: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
}

impl Counters {
    /// Reads the counters from `metrics`.
    pub fn read(metrics: &Metrics) -> Counters {
        Counters {
            messages_in: metrics.messages_in.get(),
            messages_out: metrics.messages_out.get(),
            bytes_in: metrics.bytes_in.get(),
            bytes_out: metrics.bytes_out.get(),
        }
    }
}

/// Per-second rates, as `/status.json` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// PUBLISH packets received per second.
    pub messages_in_per_sec: f64,
    /// PUBLISH packets sent per second.
    pub messages_out_per_sec: f64,
    /// Bytes read per second.
    pub bytes_in_per_sec: f64,
    /// Bytes written per second.
    pub bytes_out_per_sec: f64,
}

/// Timestamped samples covering at least `span` once enough are taken:
/// the oldest kept sample is the newest one at least `span` old.
#[derive(Debug, Clone)]
pub struct RateWindow {
    samples: VecDeque<(Duration, Counters)>,
    span: Duration,
}

impl RateWindow {
    /// An empty window looking `span` back.
    pub fn new(span: Duration) -> RateWindow {
        RateWindow {
            samples: VecDeque::new(),
            span,
        }
    }

    /// Adds the counters as read at `at` (monotonic, from any origin).
    pub fn push(&mut self, at: Duration, counters: Counters) {
        if self.samples.back().is_some_and(|(last, _)| at < *last) {
            return; // out of order: keep the window monotonic
        }
        self.samples.push_back((at, counters));
        while self.samples.len() > 2 && at - self.samples[1].0 >= self.span {
            self.samples.pop_front();
        }
    }

    /// Rates between the oldest and the newest sample; zero until two
    /// samples at different instants exist. A counter never decreases, so
    /// a smaller reading (impossible in practice) counts as no traffic.
    pub fn rates(&self) -> Rates {
        let (Some((t0, a)), Some((t1, b))) = (self.samples.front(), self.samples.back()) else {
            return Rates::default();
        };
        let secs = (*t1 - *t0).as_secs_f64();
        if secs <= 0.0 {
            return Rates::default();
        }
        let per_sec = |new: u64, old: u64| new.saturating_sub(old) as f64 / secs;
        Rates {
            messages_in_per_sec: per_sec(b.messages_in, a.messages_in),
            messages_out_per_sec: per_sec(b.messages_out, a.messages_out),
            bytes_in_per_sec: per_sec(b.bytes_in, a.bytes_in),
            bytes_out_per_sec: per_sec(b.bytes_out, a.bytes_out),
        }
    }
}

/// Samples a node's counters into a [`RateWindow`]; also knows when the
/// node started. Cloning shares the window.
#[derive(Clone)]
pub struct Sampler {
    metrics: Metrics,
    started: Instant,
    started_ms: u64,
    window: Arc<Mutex<RateWindow>>,
}

impl Sampler {
    /// A sampler of `metrics`; the node's uptime counts from now.
    pub fn new(metrics: Metrics) -> Sampler {
        Sampler {
            metrics,
            started: Instant::now(),
            started_ms: now_ms(),
            window: Arc::new(Mutex::new(RateWindow::new(WINDOW))),
        }
    }

    /// Records the counters now.
    pub fn sample(&self) {
        let counters = Counters::read(&self.metrics);
        self.window.lock().push(self.started.elapsed(), counters);
    }

    /// The current rates.
    pub fn rates(&self) -> Rates {
        self.window.lock().rates()
    }

    /// Time since [`new`](Sampler::new).
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// When the node started, ms since the Unix epoch.
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// Samples every [`SAMPLE_EVERY`] until `stop` is cancelled.
    pub fn spawn(&self, stop: CancellationToken) -> JoinHandle<()> {
        let sampler = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => sampler.sample(),
                }
            }
        })
    }
}
