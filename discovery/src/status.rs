//! A source's health, shared with the node's readiness.
//!
//! `Pending` until the first full peer set is known, `Ok` while the source
//! works, `Error` with a message a human can act on (for example "RBAC:
//! endpointslices is forbidden …"). Readiness stays false unless `Ok`.

use std::fmt;
use std::sync::Arc;
use tokio::sync::watch;

/// The state of a peer source.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SourceStatus {
    /// No full peer set known yet.
    #[default]
    Pending,
    /// The published set is current.
    Ok,
    /// The source is failing (and retrying); the message says why.
    Error(String),
}

impl fmt::Display for SourceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceStatus::Pending => f.write_str("pending"),
            SourceStatus::Ok => f.write_str("ok"),
            SourceStatus::Error(message) => write!(f, "error: {message}"),
        }
    }
}

/// Shared, cloneable handle on a source's [`SourceStatus`]: the source
/// writes it, readiness reads it or waits for changes.
#[derive(Debug, Clone)]
pub struct StatusHandle(Arc<watch::Sender<SourceStatus>>);

impl Default for StatusHandle {
    fn default() -> Self {
        StatusHandle::new()
    }
}

impl StatusHandle {
    /// A new handle, `Pending`.
    pub fn new() -> StatusHandle {
        StatusHandle(Arc::new(watch::Sender::new(SourceStatus::Pending)))
    }

    /// Sets the status; true if it changed. A change into `Error` is logged
    /// at warn level, a recovery at info level, a repeat not at all.
    pub fn set(&self, status: SourceStatus) -> bool {
        self.0.send_if_modified(|current| {
            if *current == status {
                return false;
            }
            match &status {
                SourceStatus::Error(message) => tracing::warn!(%message, "peer discovery failing"),
                SourceStatus::Ok if matches!(current, SourceStatus::Error(_)) => {
                    tracing::info!("peer discovery recovered")
                }
                _ => {}
            }
            *current = status;
            true
        })
    }

    /// The current status.
    pub fn get(&self) -> SourceStatus {
        self.0.borrow().clone()
    }

    /// True when the status is `Ok`.
    pub fn is_ready(&self) -> bool {
        matches!(*self.0.borrow(), SourceStatus::Ok)
    }

    /// A receiver to wait on status changes.
    pub fn subscribe(&self) -> watch::Receiver<SourceStatus> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        let h = StatusHandle::new();
        assert_eq!(h.get(), SourceStatus::Pending);
        assert!(!h.is_ready());
        let rx = h.subscribe();
        assert!(h.set(SourceStatus::Error("RBAC: forbidden".into())));
        assert!(!h.set(SourceStatus::Error("RBAC: forbidden".into())));
        assert!(!h.is_ready());
        assert_eq!(h.get().to_string(), "error: RBAC: forbidden");
        assert!(h.clone().set(SourceStatus::Ok));
        assert!(h.is_ready());
        assert_eq!(*rx.borrow(), SourceStatus::Ok);
    }
}
