//! Loopback ports for test processes that must be told their port before
//! they start (mesh peers name each other's ports; a restarted node binds
//! its old ports again).
//!
//! A port from `bind(":0")` is an *ephemeral* port: once released, the
//! kernel may hand it to any outgoing connection as its local port, and a
//! node that then binds it fails with "Address already in use". So these
//! ports come from below (or above) the kernel's ephemeral range, where
//! only an explicit bind can take them, and this process never hands the
//! same one out twice.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

/// Lowest port handed out (clear of well-known service ports).
const FLOOR: u32 = 10_000;

/// The kernel's ephemeral range (`ip_local_port_range`), Linux's default
/// when it cannot be read.
fn ephemeral_range() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

/// The candidate ports: the larger span outside the ephemeral range.
fn span() -> (u32, u32) {
    let (lo, hi) = ephemeral_range();
    let below = lo.saturating_sub(FLOOR);
    let above = 65_535u32.saturating_sub(hi);
    if below >= above {
        (FLOOR, lo.max(FLOOR))
    } else {
        (hi + 1, 65_536)
    }
}

/// A port on 127.0.0.1 outside the ephemeral range that was free when
/// picked and that no other call in this process returns.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let (start, end) = span();
    let len = end.saturating_sub(start);
    if len < 64 {
        // No room outside the ephemeral range: the kernel's pick is all
        // there is.
        return std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0");
    }
    // Processes started at the same time begin at different offsets.
    let seed = (std::process::id().wrapping_mul(7_919)) % len;
    let _ = NEXT.compare_exchange(u32::MAX, seed, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..len {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % len;
        let port = (start + n) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {start}..{end}");
}
