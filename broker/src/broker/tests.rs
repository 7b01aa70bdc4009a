//! The broker's cluster-facing behaviour, driven without sockets.

use super::*;
use crate::auth::BoxFuture;
use crate::codec::{Properties, QoS, SubOptions};
use crate::routes::RemoteRoutes;
use crate::session::Message;
use crate::trie::SharedMatch;
use bytes::Bytes;

fn broker() -> Arc<Broker> {
    let mut cfg = Config::default();
    cfg.node.name = "n1".into();
    Broker::new(Arc::new(cfg), Metrics::default())
}

fn msg(topic: &str, payload: &'static [u8], qos: QoS, retain: bool) -> Arc<Message> {
    Arc::new(Message::new(
        topic.into(),
        Bytes::from_static(payload),
        qos,
        retain,
        &Properties::default(),
    ))
}

fn sub(qos: QoS) -> SubEntry {
    SubEntry {
        options: SubOptions {
            qos,
            ..SubOptions::default()
        },
        identifier: None,
    }
}

/// A connected session for `id` subscribed to `filters`; returns its owner id.
fn online(b: &Broker, id: &str, filters: &[&str]) -> (Arc<SessionCell>, u64) {
    let a = b.attach(&ClientId::from(id), true);
    a.cell.state.lock().data.expiry_interval = 3600;
    for f in filters {
        assert_eq!(
            b.subscribe(&a.cell, a.owner_id, f, sub(QoS::AtLeastOnce)),
            Some(true)
        );
    }
    (a.cell, a.owner_id)
}

fn queued(cell: &SessionCell) -> Vec<String> {
    let st = cell.state.lock();
    st.data
        .queue
        .iter()
        .map(|d| String::from_utf8_lossy(&d.msg.payload).into_owned())
        .collect()
}

#[test]
fn retained_last_writer_wins_by_timestamp_then_node() {
    let b = broker();
    let mut newer = (*msg("r/t", b"new", QoS::AtMostOnce, true)).clone();
    newer.timestamp = 2_000;
    newer.origin_node = Some("n2".into());
    let mut older = newer.clone();
    older.timestamp = 1_000;
    older.payload = Bytes::from_static(b"old");
    assert!(b.apply_retained(Arc::new(newer.clone())));
    assert!(
        !b.apply_retained(Arc::new(older)),
        "an older write must not replace a newer one"
    );
    let mut tie = newer.clone();
    tie.origin_node = Some("n3".into());
    tie.payload = Bytes::from_static(b"tie");
    assert!(
        b.apply_retained(Arc::new(tie)),
        "same timestamp: the larger node name wins"
    );
    let mut stale_delete = newer.clone();
    stale_delete.payload = Bytes::new();
    assert!(
        !b.apply_retained(Arc::new(stale_delete)),
        "a stale delete is ignored"
    );
    let got = b.retained_for("r/t");
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].1.payload[..], b"tie");
    assert_eq!(b.retained_snapshot().len(), 1);
}

#[test]
fn retained_snapshot_includes_dollar_topics() {
    let b = broker();
    b.publish(msg("$SYS/x", b"1", QoS::AtMostOnce, true));
    b.publish(msg("a/b", b"2", QoS::AtMostOnce, true));
    assert_eq!(b.retained_snapshot().len(), 2);
}

#[test]
fn take_session_moves_state_and_routes_away() {
    let b = broker();
    let (cell, owner) = online(&b, "c1", &["t/#"]);
    b.detach(&cell, owner, CloseKind::Normal, None);
    b.publish(msg("t/1", b"m1", QoS::AtLeastOnce, false));
    assert_eq!(queued(&cell), ["m1"]);
    let data = b.take_session("c1", true).expect("kept session");
    assert_eq!(data.queue.len(), 1);
    assert!(data.subscriptions.contains_key("t/#"));
    assert!(b.session("c1").is_none());
    assert_eq!(
        b.publish(msg("t/2", b"m2", QoS::AtLeastOnce, false)).0,
        0,
        "routes left with it"
    );

    // Imported elsewhere, it receives again.
    let other = broker();
    assert!(other.import_session(data));
    other.publish(msg("t/3", b"m3", QoS::AtLeastOnce, false));
    let cell = other.session("c1").expect("imported");
    assert_eq!(queued(&cell), ["m1", "m3"]);
    assert_eq!(
        other.local_routes(),
        vec![("t/#".to_string(), ClientId::from("c1"))]
    );
}

#[test]
fn take_session_kicks_a_live_connection_and_can_discard() {
    let b = broker();
    let a = b.attach(&ClientId::from("c2"), true);
    assert_eq!(b.connected_clients().len(), 1);
    assert!(b.take_session("c2", false).is_none(), "discarded");
    assert!(a.kicked.is_cancelled(), "the live connection is told to go");
    assert!(b.connected_clients().is_empty());
}

/// Records what the broker forwards and sends every shared group remote.
#[derive(Default)]
struct AllRemote {
    forwarded: parking_lot::Mutex<Vec<(String, usize)>>,
}

impl RemoteRoutes for AllRemote {
    fn forward(
        &self,
        msg: &Arc<Message>,
        shared: &[SharedMatch],
        local: &mut [bool],
    ) -> Option<BoxFuture<'static, ()>> {
        self.forwarded
            .lock()
            .push((msg.topic.to_string(), shared.len()));
        local.iter_mut().for_each(|l| *l = false);
        None
    }
}

#[test]
fn remote_plan_decides_shared_groups_and_sees_every_message() {
    let b = broker();
    let remote = Arc::new(AllRemote::default());
    assert!(b.set_remote(remote.clone()));
    assert!(!b.set_remote(Arc::new(AllRemote::default())), "set once");
    let (member, _) = online(&b, "m", &["$share/g/jobs/+"]);
    let (plain, _) = online(&b, "p", &["jobs/+"]);
    b.publish(msg("jobs/1", b"j1", QoS::AtLeastOnce, false));
    assert!(
        queued(&member).is_empty(),
        "the group was sent to another node"
    );
    assert_eq!(
        queued(&plain),
        ["j1"],
        "ordinary subscribers are always local"
    );
    assert_eq!(
        remote.forwarded.lock().as_slice(),
        [("jobs/1".to_string(), 1)]
    );
}

#[test]
fn forwarded_messages_reach_only_what_the_origin_chose() {
    let b = broker();
    let (member, _) = online(&b, "m", &["$share/g/jobs/+"]);
    let (plain, _) = online(&b, "p", &["jobs/+"]);
    let m = msg("jobs/1", b"a", QoS::AtLeastOnce, false);
    assert_eq!(
        b.deliver_forwarded(&m, false, &[("g".into(), "jobs/+".into())]),
        1
    );
    assert_eq!((queued(&member).len(), queued(&plain).len()), (1, 0));
    assert_eq!(b.deliver_forwarded(&m, true, &[]), 1);
    assert_eq!((queued(&member).len(), queued(&plain).len()), (1, 1));
}

#[test]
fn a_retained_delete_is_remembered_against_stale_copies() {
    let b = broker();
    let mut set = (*msg("r/x", b"v1", QoS::AtMostOnce, true)).clone();
    set.timestamp = 1_000;
    set.origin_node = Some("n2".into());
    assert!(b.apply_retained(Arc::new(set.clone())));
    let mut delete = set.clone();
    delete.timestamp = 2_000;
    delete.payload = Bytes::new();
    assert!(b.apply_retained(Arc::new(delete)));
    assert_eq!(b.retained_count(), 0);
    assert!(
        b.retained_for("r/#").is_empty(),
        "a tombstone is never delivered"
    );
    // A snapshot taken before the delete arrives late: it must not win.
    assert!(!b.apply_retained(Arc::new(set.clone())));
    assert_eq!(b.retained_count(), 0);
    // Snapshots carry the tombstone, so peers learn of the delete too.
    let snap = b.retained_snapshot();
    assert_eq!(snap.len(), 1);
    assert!(snap[0].payload.is_empty());
    // A newer write brings it back; the count follows.
    let mut newer = set;
    newer.timestamp = 3_000;
    assert!(b.apply_retained(Arc::new(newer)));
    assert_eq!(b.retained_count(), 1);
    // Expired tombstones and messages are purged by housekeeping.
    assert_eq!(
        b.expire_retained(u64::MAX),
        0,
        "the live message has no expiry"
    );
}

/// A mesh batch's deliveries go through a `Fanout`: many sessions (past
/// its scan limit), reached by interleaved runs of messages on several
/// topics and a shared group, each get exactly their messages, in order,
/// and nothing is queued before the flush.
#[test]
fn a_fanout_delivers_each_sessions_messages_in_order() {
    let b = broker();
    let cells: Vec<_> = (0..40)
        .map(|i| online(&b, &format!("c{i}"), &[&format!("t/{}", i % 4)]).0)
        .collect();
    let (member, _) = online(&b, "m", &["$share/g/t/+"]);
    let group = [("g".into(), "t/+".into())];
    let mut f = Fanout::default();
    let mut sent = Vec::new();
    for n in 0..200 {
        let topic = format!("t/{}", (n / 3) % 4);
        let payload: &'static [u8] = format!("{n}").into_bytes().leak();
        let m = msg(&topic, payload, QoS::AtLeastOnce, false);
        b.stage_forwarded(&mut f, &m, true, if n % 2 == 0 { &group } else { &[] });
        sent.push((topic, n.to_string()));
    }
    assert!(
        cells.iter().all(|c| queued(c).is_empty()),
        "queued before the flush"
    );
    assert_eq!(b.flush_fanout(&mut f), 200 * 10 + 100);
    for (i, c) in cells.iter().enumerate() {
        let topic = format!("t/{}", i % 4);
        let want: Vec<&String> = sent
            .iter()
            .filter(|(t, _)| *t == topic)
            .map(|(_, n)| n)
            .collect();
        let got = queued(c);
        assert_eq!(got.iter().collect::<Vec<_>>(), want, "session c{i}");
    }
    let even: Vec<String> = (0..200).step_by(2).map(|n: i32| n.to_string()).collect();
    assert_eq!(queued(&member), even, "the shared member");
}

/// The fanout's match of a topic does not outlive its flush: a session
/// that subscribes between two batches gets the second one's message.
#[test]
fn a_fanout_matches_again_after_its_flush() {
    let b = broker();
    let (first, _) = online(&b, "first", &["t/x"]);
    let mut f = Fanout::default();
    b.stage_forwarded(&mut f, &msg("t/x", b"1", QoS::AtMostOnce, false), true, &[]);
    b.flush_fanout(&mut f);
    let (late, _) = online(&b, "late", &["t/x"]);
    b.stage_forwarded(&mut f, &msg("t/x", b"2", QoS::AtMostOnce, false), true, &[]);
    b.flush_fanout(&mut f);
    assert_eq!(queued(&first), ["1", "2"]);
    assert_eq!(queued(&late), ["2"]);
}
