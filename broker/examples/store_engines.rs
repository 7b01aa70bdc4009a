//! Micro-measurement behind the choice of embedded store (see
//! `docs/ARCHITECTURE.md`, "Durable state"): Tern's workload on fjall and
//! redb with group commit (one durable commit per batch of writes).
//!
//! `cargo run --release -p tern-broker --example store_engines`

use std::time::Instant;

const CLIENTS: u64 = 100;
const MESSAGES: u64 = 50_000;
/// Writes per group commit: roughly what 2 ms gathers at ~30k msg/s.
const BATCH: u64 = 64;
const READS: u64 = 20_000;

fn key(client: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&client.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn rate(n: u64, t: Instant) -> String {
    let s = t.elapsed().as_secs_f64();
    format!("{:>9.0} ops/s ({:.2} s)", n as f64 / s, s)
}

fn fjall_run(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    use fjall::{Database, KeyspaceCreateOptions, PersistMode};
    let db = Database::builder(dir).manual_journal_persist(true).open()?;
    let q = db.keyspace("queue", KeyspaceCreateOptions::default)?;
    let s = db.keyspace("sessions", KeyspaceCreateOptions::default)?;
    let payload = vec![7u8; 120];
    let t = Instant::now();
    for i in 0..MESSAGES {
        q.insert(key(i % CLIENTS, i), payload.as_slice())?;
        if i % BATCH == BATCH - 1 {
            db.persist(PersistMode::SyncData)?;
        }
    }
    db.persist(PersistMode::SyncData)?;
    println!("fjall append  {}", rate(MESSAGES, t));
    let t = Instant::now();
    for i in 0..MESSAGES {
        q.remove(key(i % CLIENTS, i))?;
        if i % BATCH == BATCH - 1 {
            db.persist(PersistMode::SyncData)?;
        }
    }
    db.persist(PersistMode::SyncData)?;
    println!("fjall delete  {}", rate(MESSAGES, t));
    for c in 0..10_000u64 {
        s.insert(c.to_be_bytes(), payload.as_slice())?;
    }
    db.persist(PersistMode::SyncData)?;
    let t = Instant::now();
    let mut x = 1u64;
    for _ in 0..READS {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let _ = s.get(((x >> 33) % 10_000).to_be_bytes())?;
    }
    println!("fjall read    {}", rate(READS, t));
    Ok(())
}

fn redb_run(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    use redb::{Database, ReadableDatabase, TableDefinition};
    const Q: TableDefinition<&[u8], &[u8]> = TableDefinition::new("queue");
    const S: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
    let db = Database::create(dir.join("redb"))?;
    let payload = vec![7u8; 120];
    let t = Instant::now();
    let mut i = 0;
    while i < MESSAGES {
        let tx = db.begin_write()?;
        {
            let mut q = tx.open_table(Q)?;
            for j in i..(i + BATCH).min(MESSAGES) {
                q.insert(key(j % CLIENTS, j).as_slice(), payload.as_slice())?;
            }
        }
        tx.commit()?;
        i += BATCH;
    }
    println!("redb  append  {}", rate(MESSAGES, t));
    let t = Instant::now();
    let mut i = 0;
    while i < MESSAGES {
        let tx = db.begin_write()?;
        {
            let mut q = tx.open_table(Q)?;
            for j in i..(i + BATCH).min(MESSAGES) {
                q.remove(key(j % CLIENTS, j).as_slice())?;
            }
        }
        tx.commit()?;
        i += BATCH;
    }
    println!("redb  delete  {}", rate(MESSAGES, t));
    let tx = db.begin_write()?;
    {
        let mut s = tx.open_table(S)?;
        for c in 0..10_000u64 {
            s.insert(c.to_be_bytes().as_slice(), payload.as_slice())?;
        }
    }
    tx.commit()?;
    let t = Instant::now();
    let rx = db.begin_read()?;
    let s = rx.open_table(S)?;
    let mut x = 1u64;
    for _ in 0..READS {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let _ = s.get(((x >> 33) % 10_000).to_be_bytes().as_slice())?;
    }
    println!("redb  read    {}", rate(READS, t));
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::var_os("STORE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let a = tempfile::tempdir_in(&base)?;
    fjall_run(a.path())?;
    let b = tempfile::tempdir_in(&base)?;
    redb_run(b.path())?;
    Ok(())
}
