//! [`DiskStore`]: the fjall-backed [`Store`]. Four keyspaces — `sessions`
//! (client → record), `queue` ((client, seq) → message), `retained`
//! (topic → message) and `meta` (format version, node name) — in one
//! fjall database whose journal is persisted by us: a commit thread calls
//! `persist` every `group_commit_ms` and publishes how far it got, which
//! is what [`Store::durable`] waiters watch.

use super::{codec, Batch, Loaded, Result, SessionMeta, Store, StoreError, StoredSession};
use crate::auth::BoxFuture;
use crate::config::{Durability, StorageConfig};
use crate::session::{Delivery, Message};
use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// The layout of keys and keyspaces; bumped on an incompatible change.
const LAYOUT: &[u8] = b"1";

/// Side file holding the last commit generation known durable (written at
/// most once a second). fjall discards a corrupt journal tail silently, as
/// it must after a crash; a journal that comes back *older* than this
/// generation lost committed state, and the node refuses to start.
const WATERMARK: &str = "tern-commit";

/// Memtable size of the `queue` keyspace. Smaller than fjall's 64 MiB
/// default: with long offline queues spilled to disk, the memtables are
/// most of the node's memory.
const QUEUE_MEMTABLE: u64 = 16 * 1024 * 1024;

/// The fjall-backed store.
pub struct DiskStore {
    dir: PathBuf,
    db: Database,
    sessions: Keyspace,
    queue: Keyspace,
    retained: Keyspace,
    mode: Durability,
    seq: AtomicU64,
    written: AtomicU64,
    committed: watch::Sender<u64>,
    meta: Keyspace,
    /// Commit generation: written to `meta` before each sync.
    generation: AtomicU64,
    /// When the watermark file was last written.
    watermark_at: parking_lot::Mutex<std::time::Instant>,
    /// `storage.max_in_memory_per_session`.
    cap: usize,
}

fn queue_prefix(client: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + client.len() + 8);
    k.extend_from_slice(&(client.len() as u16).to_be_bytes());
    k.extend_from_slice(client.as_bytes());
    k
}

fn queue_key(client: &str, seq: u64) -> Vec<u8> {
    let mut k = queue_prefix(client);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn split_queue_key(k: &[u8]) -> Option<(&str, u64)> {
    let n = usize::from(u16::from_be_bytes([*k.first()?, *k.get(1)?]));
    let client = std::str::from_utf8(k.get(2..2 + n)?).ok()?;
    let seq = u64::from_be_bytes(k.get(2 + n..)?.try_into().ok()?);
    Some((client, seq))
}

/// The packet id of an encoded delivery without decoding it (0: queued).
fn peek_pkid(v: &[u8]) -> u16 {
    v.get(1..3).map_or(0, |p| u16::from_be_bytes([p[0], p[1]]))
}

/// A session's state as it is loaded: its record, and its messages up to
/// the in-memory cap.
struct Loading {
    meta: SessionMeta,
    messages: Vec<(u64, u16, crate::session::Delivery)>,
    queued: usize,
    spilled: usize,
    spill_from: u64,
}

impl DiskStore {
    /// Opens (or creates) the store in `config.dir`, loads everything in
    /// it, and starts the commit thread. Any unreadable file or record is
    /// an error naming it: the node refuses to start rather than start
    /// without the state it had.
    pub fn open(config: &StorageConfig, node: &str) -> Result<(Arc<DiskStore>, Loaded)> {
        let Some(dir) = config.data_dir().map(Path::to_path_buf) else {
            return Err(StoreError::Decode("no storage.dir"));
        };
        let engine = |source| StoreError::Engine {
            dir: dir.clone(),
            source,
        };
        let db = Database::builder(&dir)
            .manual_journal_persist(true)
            .open()
            .map_err(engine)?;
        let ks = |name: &str| {
            db.keyspace(name, KeyspaceCreateOptions::default)
                .map_err(engine)
        };
        let (sessions, retained, meta) = (ks("sessions")?, ks("retained")?, ks("meta")?);
        let queue = db
            .keyspace("queue", || {
                KeyspaceCreateOptions::default().max_memtable_size(QUEUE_MEMTABLE)
            })
            .map_err(engine)?;
        match meta.get("layout").map_err(engine)? {
            Some(v) if &*v != LAYOUT => return Err(StoreError::Format),
            _ => meta.insert("layout", LAYOUT).map_err(engine)?,
        }
        let generation = match meta.get("commit").map_err(engine)? {
            Some(v) => u64::from_be_bytes(
                (*v).try_into()
                    .map_err(|_| StoreError::Decode("commit generation"))?,
            ),
            None => 0,
        };
        let watermark = std::fs::read_to_string(dir.join(WATERMARK))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if watermark > generation {
            return Err(StoreError::Lost {
                journal: journal_files(&dir),
                found: generation,
                expected: watermark,
            });
        }
        let previous = meta.get("node").map_err(engine)?;
        meta.insert("node", node.as_bytes()).map_err(engine)?;
        let (committed, _) = watch::channel(0);
        let store = DiskStore {
            dir: dir.clone(),
            db,
            sessions,
            queue,
            retained,
            mode: config.durability,
            seq: AtomicU64::new(1),
            written: AtomicU64::new(0),
            committed,
            meta,
            generation: AtomicU64::new(generation),
            watermark_at: parking_lot::Mutex::new(std::time::Instant::now()),
            cap: config.max_in_memory_per_session.max(1),
        };
        let mut loaded = store.load()?;
        loaded.node = previous.map(|v| String::from_utf8_lossy(&v).into_owned());
        store.db.persist(PersistMode::SyncData).map_err(engine)?;
        let store = Arc::new(store);
        if store.mode != Durability::Fsync {
            let weak = Arc::downgrade(&store);
            let every = Duration::from_millis(config.group_commit_ms);
            std::thread::Builder::new()
                .name("tern-commit".into())
                .spawn(move || commit_loop(weak, every))
                .map_err(|e| engine(fjall::Error::from(e)))?;
        }
        Ok((store, loaded))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn corrupt(&self, keyspace: &'static str, key: &[u8], e: StoreError) -> StoreError {
        StoreError::Corrupt {
            dir: self.dir.clone(),
            keyspace,
            key: String::from_utf8_lossy(key).escape_debug().to_string(),
            source: Box::new(e),
        }
    }

    fn load(&self) -> Result<Loaded> {
        let engine = |source| StoreError::Engine {
            dir: self.dir.clone(),
            source,
        };
        let mut out = Loaded::default();
        for kv in self.retained.iter() {
            let (k, v) = kv.into_inner().map_err(engine)?;
            let m = codec::decode_retained(Bytes::copy_from_slice(&v))
                .map_err(|e| self.corrupt("retained", &k, e))?;
            out.retained.push(m);
        }
        let mut sessions = BTreeMap::new();
        for kv in self.sessions.iter() {
            let (k, v) = kv.into_inner().map_err(engine)?;
            let meta = codec::decode_meta(Bytes::copy_from_slice(&v))
                .map_err(|e| self.corrupt("sessions", &k, e))?;
            let client = String::from_utf8(k.to_vec())
                .map_err(|_| self.corrupt("sessions", &k, StoreError::Decode("client id")))?;
            let s = Loading {
                meta,
                messages: Vec::new(),
                queued: 0,
                spilled: 0,
                spill_from: 0,
            };
            sessions.insert(client, s);
        }
        let mut max_seq = 0;
        let mut orphans = Vec::new();
        // One pass in key order: a session's messages are contiguous and
        // in sequence order. Past the cap, queued ones are only counted.
        for kv in self.queue.iter() {
            let (k, v) = kv.into_inner().map_err(engine)?;
            let (client, seq) = split_queue_key(&k)
                .ok_or_else(|| self.corrupt("queue", &k, StoreError::Decode("key")))?;
            max_seq = max_seq.max(seq);
            let Some(s) = sessions.get_mut(client) else {
                orphans.push(k);
                continue;
            };
            let queued = peek_pkid(&v) == 0;
            if queued && (s.spilled > 0 || s.queued >= self.cap) {
                if s.spilled == 0 {
                    s.spill_from = seq;
                }
                s.spilled += 1;
                continue;
            }
            let (pkid, d) = codec::decode_delivery(Bytes::copy_from_slice(&v))
                .map_err(|e| self.corrupt("queue", &k, e))?;
            s.queued += usize::from(queued);
            s.messages.push((seq, pkid, d));
        }
        for k in orphans {
            // A message whose session was deleted in the same unsynced window.
            self.queue.remove(k).map_err(engine)?;
        }
        self.seq.store(max_seq + 1, Ordering::Relaxed);
        out.sessions = sessions
            .into_iter()
            .map(|(client_id, s)| StoredSession {
                client_id,
                meta: s.meta,
                messages: s.messages,
                spilled: s.spilled,
                spill_from: s.spill_from,
            })
            .collect();
        Ok(out)
    }

    /// Notes one write; in `fsync` mode, makes it durable now.
    fn wrote(&self, r: std::result::Result<(), fjall::Error>) {
        if let Err(e) = r {
            tracing::error!(dir = %self.dir.display(), error = %e, "store write failed");
            return;
        }
        self.written.fetch_add(1, Ordering::AcqRel);
        if self.mode == Durability::Fsync {
            self.sync_once();
        }
    }

    fn sync_once(&self) {
        let target = self.written.load(Ordering::Acquire);
        if target <= *self.committed.borrow() {
            return;
        }
        let mode = match self.mode {
            Durability::None => PersistMode::Buffer,
            Durability::Group | Durability::Fsync => PersistMode::SyncData,
        };
        let g = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        if let Err(e) = self.meta.insert("commit", g.to_be_bytes()) {
            tracing::error!(dir = %self.dir.display(), error = %e, "store write failed");
        }
        match self.db.persist(mode) {
            Ok(()) => {
                self.mark(g);
                self.committed.send_if_modified(|c| {
                    let newer = target > *c;
                    *c = (*c).max(target);
                    newer
                });
            }
            Err(e) => tracing::error!(dir = %self.dir.display(), error = %e, "group commit failed"),
        }
    }
}

/// The journal files of a data directory, for error messages.
fn journal_files(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jnl"))
        .map(|p| p.display().to_string())
        .collect();
    names.sort();
    if names.is_empty() {
        format!("{}/*.jnl (none found)", dir.display())
    } else {
        names.join(", ")
    }
}

impl DiskStore {
    /// Records generation `g` as durable in the side file, once a second.
    fn mark(&self, g: u64) {
        let mut at = self.watermark_at.lock();
        if at.elapsed() < Duration::from_secs(1) {
            return;
        }
        *at = std::time::Instant::now();
        let tmp = self.dir.join(format!("{WATERMARK}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, format!("{g}\n").as_bytes())?;
            f.sync_data()?;
            std::fs::rename(&tmp, self.dir.join(WATERMARK))
        };
        if let Err(e) = write() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the commit watermark");
        }
    }
}

fn commit_loop(store: Weak<DiskStore>, every: Duration) {
    loop {
        std::thread::sleep(every);
        let Some(s) = store.upgrade() else { return };
        s.sync_once();
    }
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        if let Err(e) = self.db.persist(PersistMode::SyncData) {
            tracing::error!(dir = %self.dir.display(), error = %e, "final sync failed");
        }
    }
}

impl Store for DiskStore {
    fn enabled(&self) -> bool {
        true
    }

    fn put_session(&self, client: &str, meta: &SessionMeta) {
        let v = codec::encode_meta(meta);
        self.wrote(self.sessions.insert(client.as_bytes(), &*v));
    }

    fn delete_session(&self, client: &str) {
        let mut r = self.sessions.remove(client.as_bytes());
        for kv in self.queue.prefix(queue_prefix(client)) {
            if r.is_err() {
                break;
            }
            r = kv.key().and_then(|k| self.queue.remove(k));
        }
        self.wrote(r);
    }

    fn put_message(&self, client: &str, seq: u64, pkid: u16, d: &Delivery) {
        let v = codec::encode_delivery(pkid, d);
        self.wrote(self.queue.insert(queue_key(client, seq), &*v));
    }

    fn delete_message(&self, client: &str, seq: u64) {
        self.wrote(self.queue.remove(queue_key(client, seq)));
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn memory_cap(&self) -> usize {
        self.cap
    }

    fn read_messages(&self, client: &str, from: u64, max: usize) -> Batch {
        let mut out = Batch {
            messages: Vec::with_capacity(max.min(4096)),
            next: from,
            end: true,
        };
        let range = queue_key(client, from)..=queue_key(client, u64::MAX);
        for kv in self.queue.range(range) {
            if out.messages.len() >= max {
                out.end = false;
                break;
            }
            let (k, v) = match kv.into_inner() {
                Ok(kv) => kv,
                Err(e) => {
                    tracing::error!(dir = %self.dir.display(), client_id = client, error = %e, "store read failed");
                    out.end = false;
                    break;
                }
            };
            let Some((_, seq)) = split_queue_key(&k) else {
                continue;
            };
            out.next = seq.saturating_add(1);
            match codec::decode_delivery(Bytes::copy_from_slice(&v)) {
                Ok((pkid, d)) => out.messages.push((seq, pkid, d)),
                Err(e) => {
                    let e = self.corrupt("queue", &k, e);
                    tracing::error!(error = %e, "unreadable queued message skipped");
                }
            }
        }
        out
    }

    fn truncate_messages(&self, client: &str, from: u64, keep: usize) -> usize {
        let range = queue_key(client, from)..=queue_key(client, u64::MAX);
        let mut kept = 0;
        let mut doomed = Vec::new();
        for kv in self.queue.range(range) {
            let Ok((k, v)) = kv.into_inner() else { break };
            if peek_pkid(&v) != 0 {
                continue;
            }
            if kept < keep {
                kept += 1;
            } else {
                doomed.push(k);
            }
        }
        let n = doomed.len();
        for k in doomed {
            self.wrote(self.queue.remove(k));
        }
        n
    }

    fn put_retained(&self, msg: &Message) {
        let v = codec::encode_retained(msg);
        self.wrote(self.retained.insert(msg.topic.as_bytes(), &*v));
    }

    fn delete_retained(&self, topic: &str) {
        self.wrote(self.retained.remove(topic.as_bytes()));
    }

    fn durable(&self) -> Option<BoxFuture<'static, ()>> {
        if self.mode == Durability::None {
            return None;
        }
        let target = self.written.load(Ordering::Acquire);
        let mut rx = self.committed.subscribe();
        if *rx.borrow() >= target {
            return None;
        }
        Some(Box::pin(async move {
            // An error means the store is gone (shutdown): nothing to wait for.
            let _ = rx.wait_for(|c| *c >= target).await;
        }))
    }
}
