//! Message allocations handed back for reuse.
//!
//! A message is made on one thread (the publisher's connection, or the
//! task that decodes what the cluster mesh forwards) and freed on another
//! (the subscriber's connection, once written or acknowledged). glibc's
//! per-thread caches then never see the memory come back: the maker is
//! served from its arena, under a lock that the other threads' frees take
//! too, for nearly every message. Instead, the connection that holds a
//! message last gives it back here ([`release`]), in runs of [`RUN`]
//! through one shared list, and the next messages are built in those
//! allocations ([`make`]).

use crate::session::Message;
use bytes::Bytes;
use parking_lot::Mutex;
use std::cell::RefCell;
use std::sync::Arc;

/// Messages a thread gathers before it passes them on, in one lock.
const RUN: usize = 128;
/// Runs the shared list holds at most; beyond, freed messages are freed.
const RUNS: usize = 32;
/// Bytes of topic and client id a message given back may hold: what
/// waits here stays small (at most `RUNS × RUN` messages, and `RUN` per
/// thread twice).
const NAMES_MAX: usize = 256;

static RUNS_READY: Mutex<Vec<Vec<Arc<Message>>>> = Mutex::new(Vec::new());

thread_local! {
    /// Given back on this thread, not yet passed on.
    static FREED: RefCell<Vec<Arc<Message>>> = const { RefCell::new(Vec::new()) };
    /// Taken from the shared list, for this thread's next messages.
    static READY: RefCell<Vec<Arc<Message>>> = const { RefCell::new(Vec::new()) };
}

/// Done with `msg`: if this was its last holder, its allocation goes back
/// for reuse (its payload and properties are let go at once, so a message
/// waiting here holds no buffer). Otherwise this is a plain drop.
pub fn release(mut msg: Arc<Message>) {
    let Some(m) = Arc::get_mut(&mut msg) else {
        return;
    };
    // The names stay until the allocation is reused: long ones are not
    // kept waiting (a topic may be 64 KiB).
    let names = m.topic.len() + m.origin.as_ref().map_or(0, |o| o.len());
    if names > NAMES_MAX {
        return;
    }
    m.payload = Bytes::new();
    m.properties = Default::default();
    let run = FREED.with(|f| {
        let mut f = f.borrow_mut();
        f.push(msg);
        (f.len() >= RUN).then(|| std::mem::take(&mut *f))
    });
    if let Some(run) = run {
        let mut ready = RUNS_READY.lock();
        if ready.len() < RUNS {
            ready.push(run);
            return;
        }
        // More given back than taken (messages made before a burst of
        // deliveries): freed, outside the lock.
        drop(ready);
        drop(run);
    }
}

/// `msg` in an allocation given back earlier, when there is one (this
/// thread's own first, then a run passed on by another); a new one
/// otherwise.
pub fn make(msg: Message) -> Arc<Message> {
    let reused = FREED
        .with(|f| f.borrow_mut().pop())
        .or_else(|| READY.with(|r| r.borrow_mut().pop()))
        .or_else(|| {
            let run = RUNS_READY.lock().pop()?;
            READY.with(|r| {
                let mut r = r.borrow_mut();
                *r = run;
                r.pop()
            })
        });
    match reused {
        Some(mut arc) => match Arc::get_mut(&mut arc) {
            // The old message's names are let go here.
            Some(slot) => {
                *slot = msg;
                arc
            }
            None => Arc::new(msg),
        },
        None => Arc::new(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Properties, QoS};

    fn message(payload: &'static [u8]) -> Message {
        Message::new(
            "t".into(),
            Bytes::from_static(payload),
            QoS::AtMostOnce,
            false,
            &Properties::default(),
        )
    }

    /// Only a last holder gives a message back, without its payload; the
    /// next message made on the thread takes its allocation.
    #[test]
    fn a_last_holder_gives_back_and_the_next_message_reuses() {
        let shared = Arc::new(message(b"kept"));
        let other = shared.clone();
        release(shared);
        assert_eq!(&other.payload[..], b"kept", "another holder keeps it");
        let last = Arc::new(message(b"old"));
        let addr = Arc::as_ptr(&last);
        release(last);
        // (The address alone would not tell: the allocator may hand a
        // freed chunk straight back.)
        assert_eq!(FREED.with(|f| f.borrow().len()), 1, "given back");
        let m = make(message(b"new"));
        assert_eq!(&m.payload[..], b"new");
        assert_eq!(Arc::as_ptr(&m), addr, "the allocation was reused");
        // A long topic is not kept waiting.
        let mut long = message(b"old");
        long.topic = "t/".repeat(NAMES_MAX).into();
        let before = FREED.with(|f| f.borrow().len());
        release(Arc::new(long));
        assert_eq!(
            FREED.with(|f| f.borrow().len()),
            before,
            "a long topic was kept"
        );
        // A run goes to the shared list (or is freed, if it is full): what
        // comes back from anywhere holds the new contents only.
        for _ in 0..RUN {
            release(Arc::new(message(b"old")));
        }
        assert_eq!(FREED.with(|f| f.borrow().len()), 0, "the run was passed on");
        for _ in 0..RUN {
            assert_eq!(&make(message(b"new")).payload[..], b"new");
        }
    }
}
