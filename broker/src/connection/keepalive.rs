//! One keep-alive timer for every connection of the process, instead of a
//! `Sleep` in each connection's future. A connection registers the time by
//! which its client must have sent something; when that time comes, one
//! sweeper thread wakes the connection through its session's `Notify`, and
//! the connection checks lazily: still silent → close; heard from since →
//! register again for the new deadline. A busy connection therefore costs
//! one registration per keep-alive period, an idle one a pointer in a slot.
//!
//! Deadlines are rounded up to [`SLOT_MS`]: a silent client is closed at
//! most that much after 1.5 × its keep-alive, never before.

use crate::broker::SessionCell;
use parking_lot::{Condvar, Mutex};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Resolution of the shared timer.
pub(super) const SLOT_MS: u64 = 50;

/// Slot number → sessions whose connection wants a look then.
#[derive(Default)]
struct Wheel {
    slots: Mutex<BTreeMap<u64, Vec<Weak<SessionCell>>>>,
    /// Signalled when a registration lands before the earliest slot.
    earlier: Condvar,
}

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Milliseconds on the process's monotonic clock.
pub(super) fn now_ms() -> u64 {
    u64::try_from(base().elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn wheel() -> &'static Wheel {
    static WHEEL: OnceLock<&'static Wheel> = OnceLock::new();
    WHEEL.get_or_init(|| {
        let wheel: &'static Wheel = Box::leak(Box::default());
        // A plain thread, not a task: connections of every runtime (tests
        // run many) share it, and it never competes with a runtime worker.
        std::thread::Builder::new()
            .name("tern-keepalive".into())
            .spawn(move || sweep(wheel))
            .expect("spawn the keep-alive thread");
        wheel
    })
}

/// Wakes `cell`'s connection at `due_ms` (on [`now_ms`]'s clock) or a
/// little after.
pub(super) fn wake_at(due_ms: u64, cell: &Arc<SessionCell>) {
    let slot = due_ms.div_ceil(SLOT_MS);
    let wheel = wheel();
    let mut slots = wheel.slots.lock();
    let earliest = slots.first_key_value().is_none_or(|(&s, _)| slot < s);
    slots.entry(slot).or_default().push(Arc::downgrade(cell));
    drop(slots);
    if earliest {
        wheel.earlier.notify_one();
    }
}

/// The sweeper: sleeps until the earliest slot, then wakes its connections.
fn sweep(wheel: &Wheel) {
    let mut slots = wheel.slots.lock();
    loop {
        let Some((&slot, _)) = slots.first_key_value() else {
            wheel.earlier.wait(&mut slots);
            continue;
        };
        let now = now_ms();
        let at = slot.saturating_mul(SLOT_MS);
        if at > now {
            wheel
                .earlier
                .wait_for(&mut slots, Duration::from_millis(at - now));
            continue;
        }
        let due = slots
            .pop_first()
            .map(|(_, cells)| cells)
            .unwrap_or_default();
        // Not under the lock: connections register from their own threads.
        drop(slots);
        for cell in due.iter().filter_map(Weak::upgrade) {
            // A connection hibernating meanwhile checks under its session's
            // lock that its keep-alive is not due yet, so no wake-up is lost.
            cell.wake();
        }
        drop(due);
        slots = wheel.slots.lock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionData;

    #[tokio::test]
    async fn wakes_the_connection_after_its_deadline_not_before() {
        let cell = SessionCell::with_track(None, SessionData::new("ka".into()));
        let start = now_ms();
        wake_at(start + 200, &cell);
        // An earlier registration of another cell must not wake this one.
        let other = SessionCell::with_track(None, SessionData::new("other".into()));
        wake_at(start + 20, &other);
        tokio::time::timeout(Duration::from_secs(5), cell.notify.notified())
            .await
            .expect("woken within 5 s");
        let took = now_ms() - start;
        assert!(took >= 200, "woken after {took} ms, before the deadline");
    }

    #[tokio::test]
    async fn a_gone_session_is_skipped() {
        let cell = SessionCell::with_track(None, SessionData::new("gone".into()));
        wake_at(now_ms(), &cell);
        drop(cell);
        // The sweeper goes on serving others.
        let live = SessionCell::with_track(None, SessionData::new("live".into()));
        wake_at(now_ms() + 10, &live);
        tokio::time::timeout(Duration::from_secs(5), live.notify.notified())
            .await
            .expect("woken within 5 s");
    }
}
