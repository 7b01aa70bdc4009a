//! Long queues of persistent sessions with a store: at most
//! `storage.max_in_memory_per_session` in memory, the rest read back in
//! order; limits, drop policies, expiry, export and restart over the whole
//! queue. A real fjall store in a temporary directory, no sockets.

use super::*;
use crate::codec::{Properties, QoS, SubOptions};
use crate::config::{DropPolicy, StorageConfig};
use crate::session::{Delivery, Message};
use crate::store::DiskStore;
use bytes::Bytes;

fn open(dir: &std::path::Path, cap: usize) -> (Arc<dyn Store>, crate::store::Loaded) {
    let config = StorageConfig {
        dir: Some(dir.to_path_buf()),
        group_commit_ms: 1,
        max_in_memory_per_session: cap,
        ..StorageConfig::default()
    };
    let (store, loaded) = DiskStore::open(&config, "n1").expect("open store");
    (store, loaded)
}

fn broker(store: Arc<dyn Store>, limit: usize, policy: DropPolicy) -> Arc<Broker> {
    let mut cfg = Config::default();
    cfg.node.name = "n1".into();
    cfg.mqtt.max_offline_messages = limit;
    cfg.mqtt.queue_drop_policy = policy;
    let auth = Arc::new(crate::auth::AnonymousAuth {
        allow_anonymous: true,
    });
    Broker::with_store(
        Arc::new(cfg),
        Metrics::default(),
        auth,
        Arc::new(crate::auth::AllowAll),
        store,
    )
}

/// A persistent session subscribed to `t`, now offline.
fn offline_subscriber(b: &Arc<Broker>, id: &str) -> Arc<SessionCell> {
    let a = b.attach(&ClientId::from(id), true);
    a.cell.state.lock().data.expiry_interval = 3600;
    let entry = SubEntry {
        options: SubOptions {
            qos: QoS::AtLeastOnce,
            ..SubOptions::default()
        },
        identifier: None,
    };
    assert_eq!(b.subscribe(&a.cell, a.owner_id, "t", entry), Some(true));
    b.detach(&a.cell, a.owner_id, CloseKind::Normal, None);
    a.cell
}

fn publish(b: &Broker, from: usize, to: usize, expires_at: Option<u64>) {
    for i in from..to {
        let mut m = Message::new(
            "t".into(),
            Bytes::from(i.to_string()),
            QoS::AtLeastOnce,
            false,
            &Properties::default(),
        );
        m.expires_at = expires_at;
        b.publish(Arc::new(m));
    }
}

fn payloads<'a>(ds: impl IntoIterator<Item = &'a Delivery>) -> Vec<usize> {
    ds.into_iter()
        .map(|d| {
            String::from_utf8_lossy(&d.msg.payload)
                .parse()
                .expect("number")
        })
        .collect()
}

/// Takes everything sendable at `now`, acknowledging as it goes; asserts
/// memory never holds more than `cap`.
fn drain(cell: &SessionCell, cap: usize, now: u64) -> (Vec<usize>, u64) {
    let mut out = Vec::new();
    let mut expired = 0;
    let mut st = cell.state.lock();
    while let Some((d, pkid)) = st.next_sendable(10, now, &mut expired) {
        assert!(st.data.queue.len() <= cap, "at most {cap} in memory");
        out.extend(payloads([&d]));
        assert!(st.puback(pkid));
    }
    (out, expired)
}

#[test]
fn a_long_offline_queue_is_mostly_on_disk_and_drains_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, _) = open(dir.path(), 10);
    let b = broker(store, 1000, DropPolicy::DropNewest);
    let cell = offline_subscriber(&b, "c");
    publish(&b, 0, 100, None);
    {
        let st = cell.state.lock();
        assert_eq!(st.data.queue.len(), 10, "memory holds the cap");
        assert_eq!(st.queue_len(), 100, "the rest is counted");
    }
    let all: Vec<usize> = (0..100).collect();
    assert_eq!(
        payloads(&cell.export().queue),
        all,
        "export has the whole queue"
    );
    let (got, _) = drain(&cell, 10, now_ms());
    assert_eq!(got, all, "read back in order");
    assert_eq!(cell.state.lock().queue_len(), 0);
}

#[test]
fn limits_and_drop_policies_count_the_whole_queue() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, _) = open(dir.path(), 4);
    let newest = broker(store.clone(), 10, DropPolicy::DropNewest);
    let cell = offline_subscriber(&newest, "n");
    publish(&newest, 0, 15, None);
    assert_eq!(payloads(&cell.export().queue), (0..10).collect::<Vec<_>>());
    drop(newest);

    let oldest = broker(store, 10, DropPolicy::DropOldest);
    let cell = offline_subscriber(&oldest, "o");
    publish(&oldest, 0, 15, None);
    assert_eq!(payloads(&cell.export().queue), (5..15).collect::<Vec<_>>());
    assert_eq!(
        cell.state.lock().trim_queue(3),
        7,
        "trimmed to 3, newest dropped"
    );
    let (got, _) = drain(&cell, 4, now_ms());
    assert_eq!(got, vec![5, 6, 7]);
}

#[test]
fn expired_messages_are_purged_when_read_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, _) = open(dir.path(), 5);
    let b = broker(store, 1000, DropPolicy::DropNewest);
    let cell = offline_subscriber(&b, "e");
    let soon = now_ms() + 60_000;
    publish(&b, 0, 20, None);
    publish(&b, 20, 40, Some(soon));
    publish(&b, 40, 50, None);
    let (got, expired) = drain(&cell, 5, soon + 1);
    let want: Vec<usize> = (0..20).chain(40..50).collect();
    assert_eq!(got, want);
    assert_eq!(expired, 20);
}

#[test]
fn a_restart_loads_only_the_in_memory_part() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let (store, _) = open(dir.path(), 5);
        let b = broker(store, 1000, DropPolicy::DropNewest);
        offline_subscriber(&b, "r");
        publish(&b, 0, 50, None);
    }
    let (store, loaded) = open(dir.path(), 5);
    let s = &loaded.sessions[0];
    assert_eq!((s.messages.len(), s.spilled), (5, 45));
    let b = broker(store, 1000, DropPolicy::DropNewest);
    let r = b.restore(loaded);
    assert_eq!((r.sessions, r.messages), (1, 50));
    let cell = b.session("r").expect("restored");
    publish(&b, 50, 55, None);
    let (got, _) = drain(&cell, 5, now_ms());
    assert_eq!(
        got,
        (0..55).collect::<Vec<_>>(),
        "new messages behind the stored ones"
    );
}
