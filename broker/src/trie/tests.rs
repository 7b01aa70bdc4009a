use super::*;

mod properties;
use crate::codec::QoS;

fn cid(s: &str) -> ClientId {
    Arc::from(s)
}

fn entry(id: u32) -> SubEntry {
    SubEntry {
        options: SubOptions {
            qos: QoS::AtLeastOnce,
            ..SubOptions::default()
        },
        identifier: Some(id),
    }
}

/// A member as (client, identifier).
type Member = (String, Option<u32>);
/// Order-independent view: direct as (client, id), shared as
/// (group, filter, sorted members).
type View = (Vec<Member>, Vec<(String, String, Vec<Member>)>);

fn view(m: &Matches) -> View {
    let mut direct: Vec<_> = m
        .direct
        .iter()
        .map(|(c, e)| (c.to_string(), e.identifier))
        .collect();
    direct.sort();
    let mut shared: Vec<_> = m
        .shared
        .iter()
        .map(|s| {
            let mut members: Vec<_> = s
                .members
                .iter()
                .map(|(c, e)| (c.to_string(), e.identifier))
                .collect();
            members.sort();
            (s.group.to_string(), s.filter.to_string(), members)
        })
        .collect();
    shared.sort();
    (direct, shared)
}

fn matched(t: &SubscriptionTable, topic: &str) -> View {
    let mut m = Matches::default();
    t.matches(topic, &mut m);
    view(&m)
}

/// Clients directly subscribed to something matching `topic`, sorted.
fn direct_clients(t: &SubscriptionTable, topic: &str) -> Vec<String> {
    matched(t, topic).0.into_iter().map(|(c, _)| c).collect()
}

/// Subscribes client `c<i>` to each filter in turn.
fn table_of(filters: &[&str]) -> SubscriptionTable {
    let t = SubscriptionTable::new();
    for (i, f) in filters.iter().enumerate() {
        assert!(t.subscribe(f, &cid(&format!("c{i}")), entry(i as u32)));
    }
    t
}

#[test]
fn wildcards() {
    let t = table_of(&["a/b", "a/+", "a/#", "#", "+/b", "+/+/c", "a/+/c", "b"]);
    assert_eq!(direct_clients(&t, "a/b"), ["c0", "c1", "c2", "c3", "c4"]);
    assert_eq!(direct_clients(&t, "a/x/c"), ["c2", "c3", "c5", "c6"]);
    assert_eq!(direct_clients(&t, "b"), ["c3", "c7"]);
    assert_eq!(direct_clients(&t, "a/b/c/d"), ["c2", "c3"]);
    assert_eq!(direct_clients(&t, "x"), ["c3"]);
}

#[test]
fn hash_matches_parent() {
    let t = table_of(&["a/#", "a/b/#", "#"]);
    assert_eq!(direct_clients(&t, "a"), ["c0", "c2"]);
    assert_eq!(direct_clients(&t, "a/b"), ["c0", "c1", "c2"]);
    assert_eq!(direct_clients(&t, "a/b/c"), ["c0", "c1", "c2"]);
    assert_eq!(direct_clients(&t, "ab"), ["c2"]);
}

#[test]
fn dollar_topics() {
    let t = table_of(&[
        "#",
        "+/x",
        "+",
        "$SYS/#",
        "$SYS/+",
        "$SYS/x",
        "$share/g/#",
        "a/#",
    ]);
    assert_eq!(direct_clients(&t, "$SYS/x"), ["c3", "c4", "c5"]);
    assert_eq!(direct_clients(&t, "$SYS"), ["c3"]);
    assert!(
        matched(&t, "$SYS/x").1.is_empty(),
        "$share/g/# must not match $ topics"
    );
    assert_eq!(direct_clients(&t, "SYS/x"), ["c0", "c1"]);
    // `$` only matters at the start of the topic.
    assert_eq!(direct_clients(&t, "a/$x"), ["c0", "c7"]);
}

#[test]
fn empty_levels() {
    let t = table_of(&["a//b", "a/+/b", "/a", "+/a", "/", "+/+", "#", "a/"]);
    assert_eq!(direct_clients(&t, "a//b"), ["c0", "c1", "c6"]);
    assert_eq!(direct_clients(&t, "/a"), ["c2", "c3", "c5", "c6"]);
    assert_eq!(direct_clients(&t, "/"), ["c4", "c5", "c6"]);
    assert_eq!(direct_clients(&t, "a/"), ["c5", "c6", "c7"]);
    assert_eq!(direct_clients(&t, "a/b"), ["c5", "c6"]);
    assert_eq!(direct_clients(&t, "a"), ["c6"]);
}

#[test]
fn shared_groups() {
    let t = SubscriptionTable::new();
    let (c1, c2) = (cid("c1"), cid("c2"));
    assert!(t.subscribe("$share/g/a/+", &c1, entry(1)));
    assert!(t.subscribe("$share/g/a/+", &c2, entry(2)));
    assert!(t.subscribe("$share/h/a/+", &c1, entry(3)));
    assert!(t.subscribe("$share/g/a/b", &c1, entry(4)));
    assert!(t.subscribe("a/+", &c1, entry(5)));
    assert_eq!(t.len(), 5);
    let (direct, shared) = matched(&t, "a/b");
    assert_eq!(direct, [("c1".into(), Some(5))]);
    let m = |id: u32, c: &str| (c.to_string(), Some(id));
    assert_eq!(
        shared,
        [
            ("g".into(), "a/+".into(), vec![m(1, "c1"), m(2, "c2")]),
            ("g".into(), "a/b".into(), vec![m(4, "c1")]),
            ("h".into(), "a/+".into(), vec![m(3, "c1")]),
        ]
    );
    // Unsubscribing takes the same string: the direct one is independent.
    assert!(!t.unsubscribe("$share/h/a/b", &c1));
    assert!(t.unsubscribe("a/+", &c1));
    assert!(!t.unsubscribe("a/+", &c1));
    assert!(t.unsubscribe("$share/g/a/+", &c1));
    let (direct, shared) = matched(&t, "a/b");
    assert!(direct.is_empty());
    assert_eq!(shared.len(), 3);
    assert_eq!(shared[0].2, [m(2, "c2")]);
}

#[test]
fn replace_keeps_one_entry() {
    let t = SubscriptionTable::new();
    let c = cid("c");
    for f in ["a", "a/+", "$share/g/a"] {
        assert!(t.subscribe(f, &c, entry(1)));
        assert!(!t.subscribe(f, &c, entry(2)), "{f}");
    }
    assert_eq!(t.len(), 3);
    let (direct, shared) = matched(&t, "a");
    assert_eq!(direct, [("c".into(), Some(2))]);
    assert_eq!(shared[0].2, [("c".into(), Some(2))]);
}

#[test]
fn unsubscribe_frees_nodes() {
    let filters = [
        "a/b/c",
        "a/+/c",
        "a/#",
        "#",
        "+",
        "/",
        "a//+",
        "$share/g/x/+/#",
        "$share/g/x",
        "$SYS/#",
    ];
    let t = SubscriptionTable::new();
    for f in filters {
        for c in ["c1", "c2"] {
            t.subscribe(f, &cid(c), entry(0));
        }
    }
    assert_eq!(t.len(), 20);
    assert!(t.node_count() > 0);
    assert!(
        !t.unsubscribe("a/+/c/d", &cid("c1")),
        "missing path must not create or leak"
    );
    for f in filters {
        for c in ["c1", "c2"] {
            assert!(t.unsubscribe(f, &cid(c)), "{f}");
        }
    }
    assert_eq!((t.len(), t.node_count()), (0, 0));
    assert!(t.is_empty());
}

#[test]
fn large_fan_out() {
    let t = SubscriptionTable::new();
    let clients: Vec<_> = (0..2000).map(|i| cid(&format!("c{i}"))).collect();
    for f in ["fan", "fan/+"] {
        for (i, c) in clients.iter().enumerate() {
            assert!(t.subscribe(f, c, entry(i as u32)));
            assert!(!t.subscribe(f, c, entry(i as u32)));
        }
    }
    let mut m = Matches::default();
    t.matches("fan", &mut m);
    assert_eq!(m.direct.len(), 2000);
    // Shrink through the map→list switch and check nothing is lost.
    for c in &clients[3..] {
        assert!(t.unsubscribe("fan/+", c));
    }
    assert_eq!(direct_clients(&t, "fan/x"), ["c0", "c1", "c2"]);
    for c in &clients {
        assert!(t.unsubscribe("fan", c));
    }
    for c in &clients[..3] {
        assert!(t.unsubscribe("fan/+", c));
    }
    assert_eq!((t.len(), t.node_count()), (0, 0));
}

#[test]
fn very_deep_filters_and_topics() {
    // 30k levels: would overflow a 2 MiB thread stack if the trees held them.
    let deep = "a/".repeat(30_000);
    let topic = format!("{deep}z");
    let t = SubscriptionTable::new();
    let c = cid("c");
    let filters = [
        format!("{deep}+"),
        format!("{deep}#"),
        format!("+/{}z", &deep[2..]),
        topic.clone(),
    ];
    for f in &filters {
        assert!(t.subscribe(f, &c, entry(0)));
    }
    assert!(t.subscribe("a/#", &c, entry(0)));
    assert_eq!(direct_clients(&t, &topic), ["c"; 5]);
    assert_eq!(
        direct_clients(&t, &format!("$x/{topic}")),
        Vec::<String>::new()
    );
    for f in &filters {
        assert!(t.unsubscribe(f, &c));
    }
    assert!(t.unsubscribe("a/#", &c));
    assert_eq!((t.len(), t.node_count()), (0, 0));
}

#[test]
fn concurrent_use() {
    let t = SubscriptionTable::with_shards(4);
    let filters = ["a/b", "a/+", "#", "a/#", "+/b", "$share/g/a/b", "b/+/c"];
    std::thread::scope(|s| {
        for th in 0..4 {
            let t = &t;
            s.spawn(move || {
                let c = cid(&format!("t{th}"));
                for round in 0..500 {
                    for f in filters {
                        t.subscribe(f, &c, entry(round));
                    }
                    for f in &filters[..(round as usize % filters.len())] {
                        assert!(t.unsubscribe(f, &c));
                    }
                }
                // Leave exactly "a/b" (round 499 unsubscribed filters[..2]).
                for f in &filters[2..] {
                    assert!(t.unsubscribe(f, &c));
                }
                t.subscribe("a/b", &c, entry(7));
            });
        }
        for _ in 0..2 {
            let t = &t;
            s.spawn(move || {
                let mut m = Matches::default();
                for _ in 0..2000 {
                    m.clear();
                    t.matches("a/b", &mut m);
                    // 5 direct filters match "a/b", each at most once per thread.
                    assert!(m.direct.len() <= 5 * 4);
                }
            });
        }
    });
    assert_eq!(t.len(), 4);
    assert_eq!(direct_clients(&t, "a/b"), ["t0", "t1", "t2", "t3"]);
    for th in 0..4 {
        assert!(t.unsubscribe("a/b", &cid(&format!("t{th}"))));
    }
    assert_eq!((t.len(), t.node_count()), (0, 0));
}

#[test]
fn table_and_store_are_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<SubscriptionTable>();
    check::<crate::retained::RetainedStore<bytes::Bytes>>();
}

/// Rough throughput check: `cargo test --release -p tern-broker bench_matches -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_matches() {
    let t = SubscriptionTable::new();
    for i in 0..100_000 {
        t.subscribe(&format!("dev/{i}/state"), &cid(&format!("c{i}")), entry(0));
    }
    for i in 0..1_000 {
        let c = cid(&format!("w{i}"));
        t.subscribe(&format!("dev/{i}/+"), &c, entry(0));
        t.subscribe(&format!("site{}/+/state", i % 10), &c, entry(0));
    }
    t.subscribe("$share/g/dev/+/state", &cid("s"), entry(0));
    let per_thread = 1_000_000;
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        for th in 0..2 {
            let t = &t;
            s.spawn(move || {
                let topics: Vec<_> = (0..1000)
                    .map(|i| format!("dev/{}/state", i * 7 + th))
                    .collect();
                let mut m = Matches::default();
                for i in 0..per_thread {
                    m.clear();
                    t.matches(&topics[i % topics.len()], &mut m);
                    assert!(!m.direct.is_empty());
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:.2} M matches/s over 2 threads",
        2.0 * per_thread as f64 / secs / 1e6
    );
}
