use super::*;
use crate::topic;
use proptest::prelude::*;

fn store_of(topics: &[&str]) -> RetainedStore<u32> {
    let s = RetainedStore::new();
    for (i, t) in topics.iter().enumerate() {
        assert!(s.set(t, i as u32));
    }
    s
}

fn matching(s: &RetainedStore<u32>, filter: &str) -> Vec<String> {
    let mut out = Vec::new();
    s.matching(filter, &mut out);
    let mut topics: Vec<_> = out.into_iter().map(|(t, _)| t).collect();
    topics.sort();
    topics
}

const TOPICS: [&str; 11] = [
    "a", "a/b", "a/b/c", "a//b", "/a", "/", "b", "$SYS/x", "$SYS", "a/$x", "a/",
];

#[test]
fn exact_and_wildcards() {
    let s = store_of(&TOPICS);
    assert_eq!(matching(&s, "a/b"), ["a/b"]);
    assert_eq!(matching(&s, "a/x"), Vec::<String>::new());
    assert_eq!(matching(&s, "a/+"), ["a/", "a/$x", "a/b"]);
    assert_eq!(
        matching(&s, "a/#"),
        ["a", "a/", "a/$x", "a//b", "a/b", "a/b/c"]
    );
    assert_eq!(matching(&s, "+/+/c"), ["a/b/c"]);
    assert_eq!(matching(&s, "+"), ["a", "b"]);
    assert_eq!(matching(&s, "a/+/b"), ["a//b"]);
    assert_eq!(matching(&s, "+/a"), ["/a"]);
    assert_eq!(matching(&s, "/+"), ["/", "/a"]);
}

#[test]
fn dollar_topics() {
    let s = store_of(&TOPICS);
    let all = matching(&s, "#");
    assert_eq!(all.len(), TOPICS.len() - 2);
    assert!(all.iter().all(|t| !t.starts_with('$')));
    assert_eq!(matching(&s, "+/x"), Vec::<String>::new());
    assert_eq!(matching(&s, "$SYS/#"), ["$SYS", "$SYS/x"]);
    assert_eq!(matching(&s, "$SYS/+"), ["$SYS/x"]);
}

#[test]
fn set_replace_remove() {
    let s = RetainedStore::new();
    assert!(s.set("a/b", 1));
    assert!(!s.set("a/b", 2));
    assert!(s.set("a", 3));
    assert_eq!((s.len(), s.get("a/b")), (2, Some(2)));
    let mut out = Vec::new();
    s.matching("a/b", &mut out);
    assert_eq!(out, [("a/b".to_string(), 2)]);
    assert!(!s.remove("a/b/c"));
    assert!(!s.remove("x"));
    assert!(s.remove("a"));
    assert!(!s.remove("a"));
    assert_eq!(s.get("a"), None);
    assert_eq!(s.get("a/b"), Some(2));
    assert!(s.remove("a/b"));
    assert!(s.is_empty());
    assert_eq!(s.node_count(), 0);
}

#[test]
fn retain_where_prunes() {
    let s = store_of(&TOPICS);
    let mut seen = Vec::new();
    let removed = s.retain_where(|t, v| {
        seen.push(t.to_string());
        v % 2 == 0
    });
    seen.sort();
    let mut all: Vec<_> = TOPICS.iter().map(|t| t.to_string()).collect();
    all.sort();
    assert_eq!(seen, all, "retain_where must pass the full topic");
    assert_eq!(removed, TOPICS.len() / 2);
    assert_eq!(s.len(), TOPICS.len() - removed);
    assert_eq!(s.retain_where(|_, _| false), TOPICS.len() - removed);
    assert_eq!((s.len(), s.node_count()), (0, 0));
}

#[test]
fn very_deep_topics() {
    // 30k levels: would overflow a 2 MiB thread stack if the trees held them.
    let deep = format!("{}z", "a/".repeat(30_000));
    let s = store_of(&[&deep, "a/b"]);
    assert_eq!(s.get(&deep), Some(0));
    assert_eq!(matching(&s, &deep), vec![deep.clone()]);
    assert_eq!(matching(&s, "a/#"), [deep.clone(), "a/b".into()]);
    assert_eq!(
        matching(&s, &format!("+/{}", &deep[2..])),
        vec![deep.clone()]
    );
    assert_eq!(matching(&s, "a/+"), ["a/b"]);
    assert_eq!(s.retain_where(|t, _| t != "a/b"), 1);
    assert!(s.remove(&deep));
    assert_eq!((s.len(), s.node_count()), (0, 0));
}

#[test]
fn concurrent_use() {
    let s = RetainedStore::with_shards(4);
    std::thread::scope(|scope| {
        for th in 0..4u32 {
            let s = &s;
            scope.spawn(move || {
                for i in 0..500u32 {
                    let topic = format!("t{th}/{}", i % 10);
                    s.set(&topic, i);
                    if i % 3 == 0 {
                        s.remove(&topic);
                    }
                    let mut out = Vec::new();
                    s.matching("#", &mut out);
                    s.matching(&format!("t{th}/+"), &mut out);
                }
                // Leave t{th}/0..10 holding 1000 + i.
                for i in 0..10 {
                    s.set(&format!("t{th}/{i}"), 1000 + i);
                }
            });
        }
    });
    assert_eq!(s.len(), 40);
    let mut out = Vec::new();
    s.matching("+/+", &mut out);
    assert_eq!(out.len(), 40);
    assert!(out.iter().all(|(_, v)| *v >= 1000));
    assert_eq!(s.retain_where(|_, _| false), 40);
    assert_eq!((s.len(), s.node_count()), (0, 0));
}

const LEVELS: [&str; 4] = ["", "$sys", "a", "b"];

fn topic_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(&LEVELS[..]), 1..5)
        .prop_map(|l| l.join("/"))
        .prop_filter("valid topic", |t| topic::valid_topic_name(t))
}

fn filter_strategy() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["", "$sys", "a", "b", "+", "#"]);
    prop::collection::vec(level, 1..5)
        .prop_map(|mut levels| {
            if let Some(i) = levels.iter().position(|l| *l == "#") {
                levels.truncate(i + 1);
            }
            levels.join("/")
        })
        .prop_filter("valid filter", |f| topic::valid_topic_filter(f))
}

proptest! {
    #[test]
    fn matching_agrees_with_scan(
        ops in prop::collection::vec((topic_strategy(), any::<bool>()), 0..60),
        filters in prop::collection::vec(filter_strategy(), 1..20),
        depth in prop::sample::select(vec![1, 2, MAX_TREE_DEPTH]),
    ) {
        let s = RetainedStore::with_limits(2, depth);
        let mut model = std::collections::HashMap::new();
        for (i, (t, set)) in ops.into_iter().enumerate() {
            if set {
                prop_assert_eq!(s.set(&t, i), model.insert(t, i).is_none());
            } else {
                prop_assert_eq!(s.remove(&t), model.remove(&t).is_some());
            }
            prop_assert_eq!(s.len(), model.len());
        }
        for f in &filters {
            let mut got = Vec::new();
            s.matching(f, &mut got);
            got.sort();
            let mut want: Vec<_> = model
                .iter()
                .filter(|(t, _)| topic::matches(f, t))
                .map(|(t, v)| (t.clone(), *v))
                .collect();
            want.sort();
            prop_assert_eq!(got, want, "filter {:?}", f);
        }
        let removed = s.retain_where(|_, v| v % 2 == 0);
        let before = model.len();
        model.retain(|_, v| *v % 2 == 0);
        prop_assert_eq!(removed, before - model.len());
        prop_assert_eq!(s.len(), model.len());
        for t in model.keys() {
            prop_assert!(s.remove(t));
        }
        prop_assert_eq!((s.len(), s.node_count()), (0, 0));
    }
}
