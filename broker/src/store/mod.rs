//! Durable state: the [`Store`] seam the broker writes through, and its
//! implementations — [`NoStore`] (the default: nothing is written) and the
//! fjall-backed [`DiskStore`] with group commit.
//!
//! - `codec.rs`   the versioned on-disk encoding of values
//! - `engine.rs`  [`DiskStore`]: keyspaces, group commit, commit waiters, loading
//! - `track.rs`   per-session bookkeeping: which queued message is which key
//! - `spill.rs`   the tail of a long queue kept in the store only, read back in batches
//!
//! Rebuilding the broker from [`Loaded`] state is `Broker::restore`
//! (`broker/restore.rs`), beside the registry it fills.
//!
//! What is written: a record per persistent session (subscriptions,
//! expiry, will, QoS 2 ids received, released outgoing QoS 2 ids), one key
//! per queued or in-flight QoS 1/2 message `(client, seq)`, one per
//! retained message, and the node name. Sessions with expiry 0 end with
//! their connection, so they are never written.

pub mod codec;
mod engine;
pub(crate) mod spill;
pub(crate) mod track;

pub use engine::DiskStore;

use crate::auth::BoxFuture;
use crate::session::{Delivery, Message, Will};
use crate::trie::SubEntry;
use std::path::PathBuf;

/// Errors of the durable store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine failed (I/O, or a corrupt file it detected).
    #[error("storage engine error in {dir}: {source}")]
    Engine {
        /// The data directory.
        dir: PathBuf,
        /// The engine's error.
        #[source]
        source: fjall::Error,
    },
    /// A value could not be decoded.
    #[error("corrupt record: {0}")]
    Decode(&'static str),
    /// A value was written by an unknown (newer) format.
    #[error("record written in an unknown format (newer Tern?)")]
    Format,
    /// The journal came back older than the last commit known durable:
    /// committed state was lost (a corrupt or truncated journal file).
    #[error(
        "journal {journal} is corrupt or truncated: it holds commits up to {found}, \
         but commit {expected} was durable; refusing to start without that state \
         (restore the data directory from a backup, or move it away to start empty)"
    )]
    Lost {
        /// The journal file(s).
        journal: String,
        /// The generation the journal holds.
        found: u64,
        /// The generation known durable.
        expected: u64,
    },
    /// A record in the data directory is unreadable.
    #[error("corrupt store in {dir}: keyspace {keyspace}, key {key}: {source}")]
    Corrupt {
        /// The data directory.
        dir: PathBuf,
        /// The keyspace (subdirectory) holding the record.
        keyspace: &'static str,
        /// The record's key, escaped.
        key: String,
        /// Why it is unreadable.
        #[source]
        source: Box<StoreError>,
    },
}

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A session's record: everything of `SessionData` but its messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionMeta {
    /// Session Expiry Interval, seconds.
    pub expiry_interval: u32,
    /// Last packet id handed out.
    pub last_pkid: u16,
    /// When its connection left (ms since epoch); `None` while online.
    pub offline_since: Option<u64>,
    /// Filter → options, sorted by filter.
    pub subscriptions: Vec<(String, SubEntry)>,
    /// Incoming QoS 2 ids received and not yet released, sorted.
    pub incoming_qos2: Vec<u16>,
    /// Outgoing QoS 2 ids released (PUBREL sent), awaiting PUBCOMP.
    pub released: Vec<u16>,
    /// The will.
    pub will: Option<Will>,
}

/// A session as loaded from the store.
#[derive(Debug, Clone)]
pub struct StoredSession {
    /// Client identifier.
    pub client_id: String,
    /// Its record.
    pub meta: SessionMeta,
    /// Its messages in order: `(seq, pkid, delivery)`, pkid 0 if queued:
    /// every in-flight one, and the queued ones up to the in-memory cap.
    pub messages: Vec<(u64, u16, Delivery)>,
    /// Queued messages left in the store (past the in-memory cap).
    pub spilled: usize,
    /// The first of them's sequence number.
    pub spill_from: u64,
}

/// Messages read back from the store, in sequence order.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// `(seq, pkid, delivery)`.
    pub messages: Vec<(u64, u16, Delivery)>,
    /// Where the next read starts (after the last message scanned).
    pub next: u64,
    /// True if the session has no message at or after `next`.
    pub end: bool,
}

/// Everything loaded from the store at start.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Persistent sessions.
    pub sessions: Vec<StoredSession>,
    /// Retained messages.
    pub retained: Vec<Message>,
    /// The node name recorded by the previous run.
    pub node: Option<String>,
}

/// Where the broker's durable state goes. Writes are buffered and made
/// durable according to the policy; [`durable`](Store::durable) gives a
/// future that resolves once everything written so far is on disk.
pub trait Store: Send + Sync {
    /// False for [`NoStore`]: callers skip their bookkeeping.
    fn enabled(&self) -> bool;
    /// Writes (replaces) a session's record.
    fn put_session(&self, client: &str, meta: &SessionMeta);
    /// Deletes a session's record and all its messages.
    fn delete_session(&self, client: &str);
    /// Writes a queued (`pkid` 0) or in-flight message of a session.
    fn put_message(&self, client: &str, seq: u64, pkid: u16, d: &Delivery);
    /// Deletes a message of a session (acknowledged, dropped or expired).
    fn delete_message(&self, client: &str, seq: u64);
    /// A fresh message sequence number (increasing).
    fn next_seq(&self) -> u64;
    /// Messages of one session's queue kept in memory; the rest stay in
    /// the store only (`usize::MAX` when nothing is stored).
    fn memory_cap(&self) -> usize;
    /// Up to `max` messages of `client` with sequence ≥ `from`, in order.
    /// Unreadable ones are logged and skipped.
    fn read_messages(&self, client: &str, from: u64, max: usize) -> Batch;
    /// Keeps the first `keep` queued messages of `client` with sequence
    /// ≥ `from` and deletes the queued ones after them; returns how many
    /// were deleted.
    fn truncate_messages(&self, client: &str, from: u64, keep: usize) -> usize;
    /// Writes a retained message.
    fn put_retained(&self, msg: &Message);
    /// Deletes the retained message of `topic`.
    fn delete_retained(&self, topic: &str);
    /// Resolves once everything written so far is durable; `None` when
    /// there is nothing to wait for (no store, `durability = "none"`, or
    /// already durable).
    fn durable(&self) -> Option<BoxFuture<'static, ()>>;
}

/// Opens the store `config` names: `None` without a `dir` (state in
/// memory only), else the store and everything loaded from it.
pub fn open(
    config: &crate::config::StorageConfig,
    node: &str,
) -> Result<Option<(std::sync::Arc<dyn Store>, Loaded)>> {
    if config.data_dir().is_none() {
        return Ok(None);
    }
    let (store, loaded) = DiskStore::open(config, node)?;
    if let Some(prev) = loaded.node.as_deref().filter(|p| *p != node) {
        tracing::warn!(
            previous = prev,
            node,
            "data directory was written by another node name"
        );
    }
    let store: std::sync::Arc<dyn Store> = store;
    Ok(Some((store, loaded)))
}

/// The default store: writes nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoStore;

impl Store for NoStore {
    fn enabled(&self) -> bool {
        false
    }
    fn put_session(&self, _: &str, _: &SessionMeta) {}
    fn delete_session(&self, _: &str) {}
    fn put_message(&self, _: &str, _: u64, _: u16, _: &Delivery) {}
    fn delete_message(&self, _: &str, _: u64) {}
    fn next_seq(&self) -> u64 {
        0
    }
    fn memory_cap(&self) -> usize {
        usize::MAX
    }
    fn read_messages(&self, _: &str, from: u64, _: usize) -> Batch {
        Batch {
            messages: Vec::new(),
            next: from,
            end: true,
        }
    }
    fn truncate_messages(&self, _: &str, _: u64, _: usize) -> usize {
        0
    }
    fn put_retained(&self, _: &Message) {}
    fn delete_retained(&self, _: &str) {}
    fn durable(&self) -> Option<BoxFuture<'static, ()>> {
        None
    }
}

#[cfg(test)]
mod tests;
