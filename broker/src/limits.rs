//! Overload protection that is not tied to one socket: token buckets (the
//! listener connect rate, per-client publish rates), the resident-memory
//! sampler, and the "target full" signal of QoS 1/2 backpressure.
//!
//! Backpressure: [`Broker::deliver`](crate::broker::Broker::deliver) runs
//! synchronously inside the publishing connection's task. When it queues a
//! QoS 1/2 message for an online session whose queue is at
//! `mqtt.max_online_messages`, it keeps the message (up to
//! `limits.qos_queue_headroom` more) and calls [`note_full`]; the
//! publisher's connection then calls [`take_full`] and delays its next
//! socket read until those sessions drain (bounded by
//! `limits.backpressure_max_wait_ms`). A thread-local is enough because
//! nothing between the two calls yields.

use crate::broker::SessionCell;
use crate::metrics::Metrics;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
/// Taking more than is there leaves a debt that is paid back over time.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. `rate` must be positive.
    pub fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens, going into debt if needed; returns how long to
    /// wait until the debt is paid (zero if none).
    pub fn take(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// A client's publish rate limits: messages and bytes per second.
#[derive(Debug, Clone)]
pub struct PublishLimiter {
    messages: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
}

impl PublishLimiter {
    /// The limiter `[limits]` asks for, or `None` when both rates are 0.
    pub fn from_config(l: &crate::config::LimitsConfig) -> Option<Box<PublishLimiter>> {
        let now = Instant::now();
        let messages = (l.max_publish_rate > 0).then(|| {
            TokenBucket::new(
                f64::from(l.max_publish_rate),
                f64::from(l.publish_burst),
                now,
            )
        });
        let bytes = (l.max_publish_bytes_rate > 0).then(|| {
            TokenBucket::new(
                l.max_publish_bytes_rate as f64,
                l.publish_bytes_burst as f64,
                now,
            )
        });
        (messages.is_some() || bytes.is_some())
            .then(|| Box::new(PublishLimiter { messages, bytes }))
    }

    /// Accounts for `messages` PUBLISHes of `bytes` in all; returns how
    /// long further input must wait.
    pub fn account(&mut self, messages: u32, bytes: usize) -> Duration {
        let now = Instant::now();
        let a = match &mut self.messages {
            Some(b) if messages > 0 => b.take(f64::from(messages), now),
            _ => Duration::ZERO,
        };
        let b = match &mut self.bytes {
            Some(b) => b.take(bytes as f64, now),
            None => Duration::ZERO,
        };
        a.max(b)
    }
}

thread_local! {
    static FULL: RefCell<Vec<Arc<SessionCell>>> = const { RefCell::new(Vec::new()) };
}

/// Records that a QoS 1/2 delivery went to a session whose online queue
/// is full (called by the publish path, in the publisher's task).
pub fn note_full(cell: &Arc<SessionCell>) {
    FULL.with(|f| {
        let mut f = f.borrow_mut();
        if !f.iter().any(|c| Arc::ptr_eq(c, cell)) && f.len() < 64 {
            f.push(cell.clone());
        }
    });
}

/// The full sessions noted since the last call on this thread.
pub fn take_full() -> Vec<Arc<SessionCell>> {
    FULL.with(|f| std::mem::take(&mut *f.borrow_mut()))
}

/// Forgets any noted full sessions (before a publish, so that a stale
/// note from another task on this thread is not blamed on this one).
pub fn clear_full() {
    FULL.with(|f| f.borrow_mut().clear());
}

/// Resident memory of this process in bytes, from `/proc/self/statm`
/// (`None` where that file does not exist).
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    // 4 KiB on every Linux platform Tern targets; avoids libc for one call.
    4096
}

/// Samples resident memory into `metrics.edge.memory_rss_bytes` every
/// `interval` until `stop` is cancelled. Samples once before returning the
/// task, so the first CONNECT already sees a value.
pub fn spawn_memory_sampler(
    metrics: Metrics,
    interval: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let sample = move |m: &Metrics| {
        if let Some(rss) = rss_bytes() {
            m.edge
                .memory_rss_bytes
                .set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
    };
    sample(&metrics);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => sample(&metrics),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3.0, t0);
        assert!((0..3).all(|_| b.try_take(t0)));
        assert!(!b.try_take(t0));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        assert!(!b.try_take(t0 + Duration::from_millis(100)));
    }

    #[test]
    fn debt_becomes_a_wait() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 10.0, t0);
        assert_eq!(b.take(10.0, t0), Duration::ZERO);
        let wait = b.take(50.0, t0);
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert_eq!(b.take(0.0, t0 + Duration::from_millis(600)), Duration::ZERO);
    }

    #[test]
    fn reads_rss() {
        if std::path::Path::new("/proc/self/statm").exists() {
            assert!(rss_bytes().is_some_and(|b| b > 0));
        }
    }
}
