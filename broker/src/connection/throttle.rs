//! Per-connection overload protection: the client's publish rate (its next
//! read is delayed, nothing is dropped), backpressure from full QoS 1/2
//! targets (the next read waits until they drain, bounded), slow-consumer
//! detection, and the memory watermark at CONNECT.

use super::{Close, Conn};
use crate::broker::{Broker, CloseKind, SessionCell};
use crate::codec::{reason, Protocol};
use crate::config::LimitsConfig;
use crate::limits::PublishLimiter;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

/// How often a backpressure wait re-checks its targets.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// The connection's throttling state: boxed, and made only when needed (a
/// publish-rate limit, a full target, a stall), so idle connections have none.
#[derive(Default)]
pub(crate) struct Throttle {
    limiter: Option<Box<PublishLimiter>>,
    /// The publish rate says: no input is handled before this.
    resume_at: Option<Instant>,
    /// Decoding stopped for the rate with input left in the read buffer.
    pub backlog: bool,
    /// Sessions this client published QoS 1/2 to while they were full.
    full: Vec<Arc<SessionCell>>,
    /// The backpressure wait ends here, drained or not.
    full_deadline: Option<Instant>,
    /// Messages have been waiting, with nothing sent, since then.
    stall_since: Option<Instant>,
    /// The timer for the waits above, made on first use.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Throttle {
    /// The state `[limits]` asks for at the start: none without a
    /// publish-rate limit.
    pub(crate) fn new(limits: &LimitsConfig) -> Option<Box<Throttle>> {
        let limiter = PublishLimiter::from_config(limits)?;
        Some(Box::new(Throttle {
            limiter: Some(limiter),
            ..Throttle::default()
        }))
    }
}

/// Sleeps until `at`; never completes for `None`. The timer is boxed and
/// made on first use: most connections never wait for one.
pub(super) fn timer(
    throttle: &mut Option<Box<Throttle>>,
    at: Option<Instant>,
) -> impl Future<Output = ()> + '_ {
    let sleep = at.map(|at| {
        let sleep = throttle
            .get_or_insert_with(Box::default)
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        sleep.as_mut().reset(at);
        sleep
    });
    async move {
        match sleep {
            Some(sleep) => sleep.await,
            None => std::future::pending().await,
        }
    }
}

/// True when resident memory is above `limits.max_memory_mb`.
pub(super) fn over_memory(broker: &Broker) -> bool {
    let max_mb = broker.knobs().max_memory_mb();
    let rss = broker.metrics().edge.memory_rss_bytes.get();
    max_mb > 0 && u64::try_from(rss).unwrap_or(0) > max_mb.saturating_mul(1024 * 1024)
}

/// The CONNACK code for "server busy" in `protocol`.
pub(super) fn busy_code(protocol: Protocol) -> u8 {
    if protocol.is_v5() {
        reason::SERVER_BUSY
    } else {
        reason::v3::SERVER_UNAVAILABLE
    }
}

/// The close of a subscriber that made no progress.
pub(super) fn slow_consumer() -> Close {
    Close {
        kind: CloseKind::Abnormal,
        disconnect: Some(reason::QUOTA_EXCEEDED),
        why: "slow consumer",
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Conn<S> {
    /// The slow-consumer timeout.
    pub(super) fn slow_timeout(&self) -> Duration {
        Duration::from_secs(self.broker.knobs().slow_consumer_timeout_secs())
    }

    /// Collects the full targets noted by the publish path since
    /// [`crate::limits::clear_full`]; called right after input is processed.
    pub(super) fn collect_full(&mut self) {
        let full = crate::limits::take_full();
        if full.is_empty() {
            return;
        }
        let t = self.throttle.get_or_insert_with(Box::default);
        for cell in full {
            if !Arc::ptr_eq(&cell, &self.cell) && !t.full.iter().any(|c| Arc::ptr_eq(c, &cell)) {
                t.full.push(cell);
            }
        }
        if !t.full.is_empty() && t.full_deadline.is_none() {
            let wait = Duration::from_millis(self.broker.knobs().backpressure_max_wait_ms());
            t.full_deadline = Some(Instant::now() + wait);
            self.broker.metrics().edge.backpressure_waits.inc();
            tracing::debug!(
                targets = t.full.len(),
                "QoS 1/2 target full; slowing this publisher"
            );
        }
    }

    /// Charges one PUBLISH of `bytes` (topic and payload) to the rate.
    pub(super) fn account_publish(&mut self, bytes: usize) {
        let Some(t) = &mut self.throttle else {
            return;
        };
        let Some(limiter) = &mut t.limiter else {
            return;
        };
        let wait = limiter.account(1, bytes);
        if !wait.is_zero() {
            t.resume_at = Some(Instant::now() + wait);
            self.broker.metrics().edge.publish_throttled.inc();
        }
    }

    /// True while the publish rate holds input back; decoding stops and
    /// resumes from the read buffer once the time has come.
    pub(super) fn rate_paused(&mut self) -> bool {
        let Some(t) = &mut self.throttle else {
            return false;
        };
        let paused = t.resume_at.is_some_and(|at| at > Instant::now());
        t.backlog |= paused;
        paused
    }

    /// When the next read may happen, if not now: after the publish-rate
    /// delay, and not while a full target is still draining.
    pub(super) fn read_hold(&mut self) -> Option<Instant> {
        let t = self.throttle.as_mut()?;
        let now = Instant::now();
        if let Some(at) = t.resume_at {
            if at > now {
                return Some(at);
            }
            t.resume_at = None;
        }
        let deadline = t.full_deadline?;
        let limit = self.broker.knobs().max_online_messages();
        t.full.retain(|c| {
            let st = c.state.lock();
            st.owner.is_some() && st.queue_len() >= limit
        });
        if t.full.is_empty() || now >= deadline {
            t.full.clear();
            t.full_deadline = None;
            return None;
        }
        Some((now + DRAIN_POLL).min(deadline))
    }

    /// Slow-consumer watch, once per round: messages waiting while nothing
    /// could be sent (in-flight window full of unacknowledged messages).
    /// Returns when to look again, or the close once the timeout is over.
    pub(super) fn stall_check(&mut self, wrote: bool) -> Result<Option<Instant>, Close> {
        let waiting = !wrote && self.cell.state.lock().queue_len() > 0;
        if !waiting {
            if let Some(t) = &mut self.throttle {
                t.stall_since = None;
            }
            return Ok(None);
        }
        let now = Instant::now();
        let t = self.throttle.get_or_insert_with(Box::default);
        let since = *t.stall_since.get_or_insert(now);
        let deadline = since + self.slow_timeout();
        if now >= deadline {
            return Err(slow_consumer());
        }
        Ok(Some(deadline))
    }

    /// After a slow consumer is detached: its offline queue keeps at most
    /// `mqtt.max_offline_messages`; the newest beyond are dropped, counted
    /// and logged.
    pub(super) fn trim_offline_queue(&self) {
        let max = self.broker.knobs().max_offline_messages();
        let dropped = self.cell.state.lock().trim_queue(max);
        if dropped > 0 {
            self.broker.metrics().queue_drops.inc_by(dropped as u64);
            tracing::warn!(
                dropped,
                max,
                "slow consumer: messages beyond the offline limit dropped"
            );
        }
        self.broker.metrics().edge.slow_consumers.inc();
    }
}
