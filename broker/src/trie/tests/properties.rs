//! Property tests: the table against a naive oracle that checks every
//! filter with `topic::matches`.

use super::*;
use crate::topic;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

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
        depth in prop::sample::select(vec![1, 2, MAX_TREE_DEPTH]),
    ) {
        let t = SubscriptionTable::with_limits(2, depth);
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
        depth in prop::sample::select(vec![1, 2, MAX_TREE_DEPTH]),
    ) {
        let t = SubscriptionTable::with_limits(2, depth);
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
