//! Subscriptions: wildcards, `$` topics, overlapping subscriptions, no-local,
//! retain-as-published, subscription identifiers, shared subscriptions,
//! unsubscribe.
mod common;

use common::raw::{prop, NO_LOCAL};
use common::*;
use std::collections::{BTreeSet, HashMap};

/// Publishes each topic with its own name as payload, then a marker on
/// `marker_topic`; returns the topics `sub` received before the marker.
async fn received_topics(
    sub: &mut Raw,
    publisher: &mut Raw,
    topics: &[&str],
    marker_topic: &str,
) -> BTreeSet<String> {
    for t in topics {
        publisher.publish(t, t.as_bytes(), 1).await;
    }
    publisher.publish(marker_topic, b"__marker__", 1).await;
    sub.until_payload(b"__marker__")
        .await
        .into_iter()
        .filter(|p| p.payload != b"__marker__")
        .map(|p| p.topic)
        .collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_level_wildcard() {
    let s = start().await;
    let mut sub = Raw::v5(s.addr, &uid("sub")).await;
    sub.subscribe("w1/+/c", 1).await;
    sub.subscribe("w1/m", 1).await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    let got = received_topics(
        &mut sub,
        &mut p,
        &["w1/a/c", "w1/b/c", "w1/a/d", "w1/a/c/d", "w1/c", "w1//c"],
        "w1/m",
    )
    .await;
    assert_eq!(got, set(&["w1/a/c", "w1/b/c", "w1//c"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_level_wildcard() {
    let s = start().await;
    let mut sub = Raw::v4(s.addr, &uid("sub")).await;
    sub.subscribe("w2/a/#", 1).await;
    sub.subscribe("w2/m", 1).await;
    let mut p = Raw::v4(s.addr, &uid("pub")).await;
    let got = received_topics(
        &mut sub,
        &mut p,
        &["w2/a", "w2/a/b", "w2/a/b/c", "w2/b", "w2/ab"],
        "w2/m",
    )
    .await;
    assert_eq!(
        got,
        set(&["w2/a", "w2/a/b", "w2/a/b/c"]),
        "`a/#` also matches the parent `a`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dollar_topics_not_matched_by_leading_wildcards() {
    let s = start().await;
    let mut sub = Raw::v5(s.addr, &uid("sub")).await;
    sub.subscribe("#", 1).await;
    sub.subscribe("+/x", 1).await;
    let mut dsub = Raw::v5(s.addr, &uid("dsub")).await;
    dsub.subscribe("$app/#", 1).await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    p.publish("$app/x", b"$app/x", 1).await;
    // `$app/#` does match it.
    assert_eq!(dsub.next_publish().await.topic, "$app/x");
    let got = received_topics(&mut sub, &mut p, &["$app/y", "$app/x"], "dollar/m").await;
    assert!(
        got.is_empty(),
        "`#` and `+/x` must not match `$` topics, got {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery() {
    let s = start().await;
    let mut sub = Raw::v5(s.addr, &uid("sub")).await;
    sub.subscribe("un/a", 1).await;
    sub.subscribe("un/m", 1).await;
    sub.unsubscribe("un/a").await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    let got = received_topics(&mut sub, &mut p, &["un/a"], "un/m").await;
    assert!(got.is_empty(), "unsubscribed topic delivered: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_overlapping_subscriptions_one_delivery_with_all_identifiers() {
    let s = start().await;
    let mut sub = Raw::v5(s.addr, &uid("sub")).await;
    let c1 = sub
        .subscribe_with(
            &[("ov5/+", 1)],
            Props::new().varint(prop::SUBSCRIPTION_ID, 1),
        )
        .await;
    let c2 = sub
        .subscribe_with(
            &[("ov5/#", 2)],
            Props::new().varint(prop::SUBSCRIPTION_ID, 2),
        )
        .await;
    let c3 = sub.subscribe_with(&[("ov5/m", 1)], Props::new()).await;
    assert_eq!((c1, c2, c3), (vec![1], vec![2], vec![1]));
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    p.publish("ov5/x", b"x", 2).await;
    p.publish("ov5/m", b"marker", 1).await;
    let got = sub.until_payload(b"marker").await;
    let xs: Vec<_> = got.iter().filter(|p| p.payload == b"x").collect();
    assert_eq!(
        xs.len(),
        1,
        "exactly one delivery for overlapping subscriptions: {got:?}"
    );
    assert_eq!(
        xs[0].props.sub_ids(),
        vec![1, 2],
        "every matching Subscription Identifier"
    );
    assert_eq!(xs[0].qos, 2, "delivered at the highest granted QoS");
    // The marker matches `ov5/#` (id 2), `ov5/+` (id 1) and `ov5/m` (no id).
    let m = got.last().expect("marker");
    assert_eq!(m.props.sub_ids(), vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_overlapping_subscriptions_one_delivery_at_highest_qos() {
    let s = start().await;
    let mut sub = Raw::v4(s.addr, &uid("sub")).await;
    assert_eq!(sub.subscribe("ov4/+", 0).await, 0);
    assert_eq!(sub.subscribe("ov4/#", 2).await, 2);
    sub.subscribe("ov4m", 1).await;
    let mut p = Raw::v4(s.addr, &uid("pub")).await;
    p.publish("ov4/x", b"x", 2).await;
    p.publish("ov4m", b"marker", 1).await;
    let got = sub.until_payload(b"marker").await;
    let xs: Vec<_> = got.iter().filter(|p| p.payload == b"x").collect();
    assert_eq!(
        xs.len(),
        1,
        "one delivery for overlapping subscriptions: {got:?}"
    );
    assert_eq!(xs[0].qos, 2, "at the highest granted QoS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_identifier_only_on_matching_subscription() {
    let s = start().await;
    let mut sub = Raw::v5(s.addr, &uid("sub")).await;
    sub.subscribe_with(
        &[("sid/a", 1)],
        Props::new().varint(prop::SUBSCRIPTION_ID, 268_435_455),
    )
    .await;
    sub.subscribe("sid/b", 1).await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    p.publish("sid/a", b"a", 1).await;
    let a = sub.next_publish().await;
    assert_eq!(
        a.props.sub_ids(),
        vec![268_435_455],
        "max-value Subscription Identifier echoed"
    );
    p.publish("sid/b", b"b", 1).await;
    let b = sub.next_publish().await;
    assert!(
        b.props.sub_ids().is_empty(),
        "no identifier for a subscription without one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_suppresses_own_messages() {
    let s = start().await;
    let mut c = Raw::v5(s.addr, &uid("nl")).await;
    c.subscribe("nl/t", 1 | NO_LOCAL).await;
    c.subscribe("nl/echo", 1).await; // control: without No Local
    c.publish("nl/t", b"own", 1).await;
    c.publish("nl/echo", b"own-echo", 1).await;
    assert_eq!(
        c.next_publish().await.payload,
        b"own-echo",
        "own message on No Local topic delivered"
    );
    let mut other = Raw::v5(s.addr, &uid("other")).await;
    other.publish("nl/t", b"theirs", 1).await;
    assert_eq!(
        c.next_publish().await.payload,
        b"theirs",
        "others' messages still arrive"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_v5_each_message_to_exactly_one_member() {
    shared_case(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_v311_each_message_to_exactly_one_member() {
    shared_case(4).await;
}

async fn shared_case(version: u8) {
    let s = start().await;
    let topic = format!("sh{version}/t");
    let filter = format!("$share/g/{topic}");
    let mut members = Vec::new();
    for i in 0..3 {
        let (mut m, _) =
            Raw::connect_ok(s.addr, Connect::new(version, &uid(&format!("m{i}")))).await;
        m.subscribe(&filter, 1).await;
        members.push(m);
    }
    // A plain subscriber gets everything, independently of the group.
    let (mut plain, _) = Raw::connect_ok(s.addr, Connect::new(version, &uid("plain"))).await;
    plain.subscribe(&topic, 1).await;

    let (mut p, _) = Raw::connect_ok(s.addr, Connect::new(version, &uid("pub"))).await;
    let n = 30;
    for i in 0..n {
        p.publish(&topic, format!("{i}").as_bytes(), 1).await;
    }
    p.publish(&topic, b"end", 1).await;
    assert_eq!(
        plain.until_payload(b"end").await.len(),
        n + 1,
        "plain subscriber gets all"
    );

    // Drain the members until all n+1 messages are accounted for.
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut per_member = [0usize; 3];
    let deadline = tokio::time::Instant::now() + T;
    while seen.len() < n + 1 && tokio::time::Instant::now() < deadline {
        for (i, m) in members.iter_mut().enumerate() {
            while let Some(msg) = m
                .next_publish_within(std::time::Duration::from_millis(30))
                .await
            {
                *seen.entry(msg.payload).or_default() += 1;
                per_member[i] += 1;
            }
        }
    }
    // One more quiet sweep to catch duplicates.
    for (i, m) in members.iter_mut().enumerate() {
        while let Some(msg) = m
            .next_publish_within(std::time::Duration::from_millis(200))
            .await
        {
            *seen.entry(msg.payload).or_default() += 1;
            per_member[i] += 1;
        }
    }
    assert_eq!(
        seen.len(),
        n + 1,
        "every message reached the group: {per_member:?}"
    );
    let dups: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        dups.is_empty(),
        "messages delivered to more than one member: {dups:?}"
    );
    assert_eq!(per_member.iter().sum::<usize>(), n + 1);
    // Round robin spreads the load over every member.
    for (i, c) in per_member.iter().enumerate() {
        assert!(
            *c >= 5,
            "member {i} got only {c} of {} messages: {per_member:?}",
            n + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_unsuback_reason_codes() {
    let s = start().await;
    let mut c = Raw::v5(s.addr, &uid("unsub")).await;
    c.subscribe("us/a", 1).await;
    assert_eq!(c.unsubscribe("us/a").await, vec![0x00], "Success");
    assert_eq!(
        c.unsubscribe("us/a").await,
        vec![0x11],
        "No subscription existed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribe_replaces_the_subscription() {
    for version in [4u8, 5] {
        let s = start().await;
        let (mut c, _) = Raw::connect_ok(s.addr, Connect::new(version, &uid("resub"))).await;
        assert_eq!(c.subscribe("rs/t", 0).await, 0);
        assert_eq!(c.subscribe("rs/t", 2).await, 2);
        let (mut p, _) = Raw::connect_ok(s.addr, Connect::new(version, &uid("pub"))).await;
        p.publish("rs/t", b"x", 2).await;
        p.publish("rs/t", b"marker", 0).await;
        let got = c.until_payload(b"marker").await;
        let xs: Vec<_> = got.iter().filter(|m| m.payload == b"x").collect();
        assert_eq!(
            xs.len(),
            1,
            "v{version}: one subscription, one delivery: {got:?}"
        );
        assert_eq!(xs[0].qos, 2, "v{version}: the new QoS applies");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_topic_filters_are_refused() {
    for version in [4u8, 5] {
        for bad in ["a/#/b", "a+/b", "a/b#", ""] {
            let s = start().await;
            let mut w = Witness::new(s.addr).await;
            let (mut c, _) = Raw::connect_ok(s.addr, Connect::new(version, &uid("badf"))).await;
            let pkid = c.pkid();
            c.send(&raw::subscribe(
                version == 5,
                pkid,
                &[("ok/t", 1), (bad, 1)],
                &Props::new(),
            ))
            .await;
            // Either SUBACK refusing that filter, or (5.0) DISCONNECT / (3.x) a close.
            match c.recv_within(T).await {
                Recv::Packet(Packet::SubAck { codes, .. }) => {
                    assert_eq!(codes.len(), 2, "v{version} {bad:?}: one code per filter");
                    assert!(codes[0] < 0x80, "v{version}: the valid filter is granted");
                    assert!(
                        codes[1] >= 0x80,
                        "v{version}: filter {bad:?} must be refused, got {:#04x}",
                        codes[1]
                    );
                }
                Recv::Packet(Packet::Disconnect { reason, .. }) if version == 5 => {
                    assert!(
                        [0x81, 0x82, 0x8F].contains(&reason),
                        "v5 {bad:?}: DISCONNECT {reason:#04x}"
                    );
                }
                Recv::Closed => {}
                other => panic!("v{version} {bad:?}: expected a refusal, got {other:?}"),
            }
            w.round_trip().await;
        }
    }
}
