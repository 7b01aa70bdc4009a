use super::*;
use crate::codec::QoS;
use crate::topic;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

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

/// Levels for generated topics; filters also get `+` and `#`.
const LEVELS: [&str; 4] = ["", "$sys", "a", "b"];

fn topic_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(&LEVELS[..]), 1..5)
        .prop_map(|l| l.join("/"))
        .prop_filter("valid topic", |t| topic::valid_topic_name(t))
}

fn filter_strategy() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["", "$sys", "a", "b", "+", "#"]);
    let share = prop::option::weighted(0.25, prop::sample::select(vec!["g1", "g2"]));
    (prop::collection::vec(level, 1..5), share)
        .prop_map(|(mut levels, share)| {
            if let Some(i) = levels.iter().position(|l| *l == "#") {
                levels.truncate(i + 1);
            }
            let plain = levels.join("/");
            match share {
                Some(g) => format!("$share/{g}/{plain}"),
                None => plain,
            }
        })
        .prop_filter("valid filter", |f| topic::valid_topic_filter(f))
}

/// (filter, client) → identifier.
type Model = HashMap<(String, String), u32>;

/// What `matches` should return, computed by checking every filter.
fn oracle(model: &Model, topic: &str) -> View {
    let mut direct = Vec::new();
    let mut groups: BTreeMap<(String, String), Vec<Member>> = BTreeMap::new();
    for ((f, c), id) in model {
        match topic::parse_shared(f) {
            Some((g, plain)) if topic::matches(plain, topic) => {
                groups
                    .entry((g.into(), plain.into()))
                    .or_default()
                    .push((c.clone(), Some(*id)));
            }
            None if topic::matches(f, topic) => direct.push((c.clone(), Some(*id))),
            _ => {}
        }
    }
    direct.sort();
    let shared = groups
        .into_iter()
        .map(|((g, f), mut m)| {
            m.sort();
            (g, f, m)
        })
        .collect();
    (direct, shared)
}

#[derive(Debug, Clone)]
enum Op {
    Sub(String, usize, u32),
    Unsub(String, usize),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        (filter_strategy(), 0..3usize, any::<u32>()).prop_map(|(f, c, id)| Op::Sub(f, c, id)),
        (filter_strategy(), 0..3usize).prop_map(|(f, c)| Op::Unsub(f, c)),
    ]
}

proptest! {
    #[test]
    fn matches_agree_with_oracle(
        subs in prop::collection::vec((filter_strategy(), 0..3usize), 0..40),
        topics in prop::collection::vec(topic_strategy(), 1..20),
    ) {
        let t = SubscriptionTable::with_shards(2);
        let mut model = Model::new();
        for (i, (f, c)) in subs.iter().enumerate() {
            let client = format!("c{c}");
            let new = model.insert((f.clone(), client.clone()), i as u32).is_none();
            prop_assert_eq!(t.subscribe(f, &cid(&client), entry(i as u32)), new);
        }
        prop_assert_eq!(t.len(), model.len());
        for topic in &topics {
            prop_assert_eq!(matched(&t, topic), oracle(&model, topic), "topic {:?}", topic);
        }
    }

    #[test]
    fn interleavings_agree_with_model(
        ops in prop::collection::vec(op_strategy(), 0..80),
        topics in prop::collection::vec(topic_strategy(), 1..10),
    ) {
        let t = SubscriptionTable::with_shards(2);
        let mut model = Model::new();
        for op in ops {
            match op {
                Op::Sub(f, c, id) => {
                    let key = (f.clone(), format!("c{c}"));
                    let new = model.insert(key.clone(), id).is_none();
                    prop_assert_eq!(t.subscribe(&f, &cid(&key.1), entry(id)), new);
                }
                Op::Unsub(f, c) => {
                    let key = (f.clone(), format!("c{c}"));
                    prop_assert_eq!(t.unsubscribe(&f, &cid(&key.1)), model.remove(&key).is_some());
                }
            }
            prop_assert_eq!(t.len(), model.len());
        }
        for topic in &topics {
            prop_assert_eq!(matched(&t, topic), oracle(&model, topic), "topic {:?}", topic);
        }
        for (f, c) in model.keys() {
            prop_assert!(t.unsubscribe(f, &cid(c)));
        }
        prop_assert_eq!((t.len(), t.node_count()), (0, 0));
    }
}
