//! Retained messages: store, replace, delete, delivery on subscribe, retain
//! flag rules, retain handling, retain-as-published, expiry, retain_available.
mod common;

use common::raw::{prop, retain_handling, RETAIN_AS_PUBLISHED};
use common::*;
use std::time::Duration;

/// Subscribes `c` to `filter` with `options`, then publishes a non-retained
/// marker on `marker_topic` (which `filter` must match) and returns the
/// messages received before it.
async fn sub_and_collect(
    c: &mut Raw,
    p: &mut Raw,
    filter: &str,
    options: u8,
    marker_topic: &str,
) -> Vec<RxPublish> {
    c.subscribe(filter, options).await;
    p.publish(marker_topic, b"__marker__", 1).await;
    let mut got = c.until_payload(b"__marker__").await;
    got.pop();
    got
}

async fn store_and_deliver(version: u8) {
    let s = start().await;
    let (mut p, _) = Raw::connect_ok(s.addr, Connect::new(version, &uid("pub"))).await;
    p.publish_retained("ret/a", b"kept", 1).await;
    let (mut c, _) = Raw::connect_ok(s.addr, Connect::new(version, &uid("sub"))).await;
    let got = sub_and_collect(&mut c, &mut p, "ret/a", 1, "ret/a").await;
    assert_eq!(got.len(), 1, "one retained message on subscribe: {got:?}");
    assert_eq!(got[0].payload, b"kept");
    assert!(
        got[0].retain,
        "a message sent because of a new subscription has RETAIN=1"
    );
    // A live retained publish to an established 3.x subscription arrives with RETAIN=0.
    if version < 5 {
        p.publish_retained("ret/a", b"live", 1).await;
        let m = c.next_publish().await;
        assert_eq!(m.payload, b"live");
        assert!(
            !m.retain,
            "established subscription: RETAIN must be 0 [MQTT-3.3.1-9]"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_retained_stored_and_delivered_on_subscribe() {
    store_and_deliver(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_retained_stored_and_delivered_on_subscribe() {
    store_and_deliver(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_replaced_and_deleted() {
    let s = start().await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    p.publish_retained("ret/r", b"one", 1).await;
    p.publish_retained("ret/r", b"two", 1).await;
    let mut c = Raw::v5(s.addr, &uid("sub1")).await;
    let got = sub_and_collect(&mut c, &mut p, "ret/r", 1, "ret/r").await;
    let payloads: Vec<_> = got.iter().map(|m| m.payload.clone()).collect();
    assert_eq!(
        payloads,
        vec![b"two".to_vec()],
        "only the latest retained message is kept"
    );

    // Empty retained payload deletes it.
    p.publish_retained("ret/r", b"", 1).await;
    let mut c2 = Raw::v5(s.addr, &uid("sub2")).await;
    let got = sub_and_collect(&mut c2, &mut p, "ret/r", 1, "ret/r").await;
    assert!(
        got.is_empty(),
        "retained message must be deleted by an empty payload: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_delivered_for_wildcard_subscription() {
    let s = start().await;
    let mut p = Raw::v4(s.addr, &uid("pub")).await;
    for t in ["retw/a", "retw/b/c", "other/x"] {
        p.publish_retained(t, t.as_bytes(), 0).await;
    }
    let mut c = Raw::v4(s.addr, &uid("sub")).await;
    let got = sub_and_collect(&mut c, &mut p, "retw/#", 1, "retw/m").await;
    let mut topics: Vec<_> = got.iter().map(|m| m.topic.clone()).collect();
    topics.sort();
    assert_eq!(topics, vec!["retw/a", "retw/b/c"]);
    assert!(got.iter().all(|m| m.retain));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_handling_0_1_2() {
    let s = start().await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    p.publish_retained("rh/t", b"r", 1).await;

    // 0: sent on every subscribe, including a re-subscribe.
    let mut c0 = Raw::v5(s.addr, &uid("rh0")).await;
    let got = sub_and_collect(&mut c0, &mut p, "rh/t", 1 | retain_handling(0), "rh/t").await;
    assert_eq!(got.len(), 1, "RH 0, first subscribe: {got:?}");
    let got = sub_and_collect(&mut c0, &mut p, "rh/t", 1 | retain_handling(0), "rh/t").await;
    assert_eq!(got.len(), 1, "RH 0, re-subscribe sends it again: {got:?}");

    // 1: only if the subscription did not exist.
    let mut c1 = Raw::v5(s.addr, &uid("rh1")).await;
    let got = sub_and_collect(&mut c1, &mut p, "rh/t", 1 | retain_handling(1), "rh/t").await;
    assert_eq!(got.len(), 1, "RH 1, new subscription: {got:?}");
    let got = sub_and_collect(&mut c1, &mut p, "rh/t", 1 | retain_handling(1), "rh/t").await;
    assert!(
        got.is_empty(),
        "RH 1, existing subscription: nothing: {got:?}"
    );

    // 2: never.
    let mut c2 = Raw::v5(s.addr, &uid("rh2")).await;
    let got = sub_and_collect(&mut c2, &mut p, "rh/t", 1 | retain_handling(2), "rh/t").await;
    assert!(got.is_empty(), "RH 2: no retained messages: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_as_published() {
    let s = start().await;
    let mut rap = Raw::v5(s.addr, &uid("rap")).await;
    rap.subscribe("rap/t", 1 | RETAIN_AS_PUBLISHED).await;
    let mut norap = Raw::v5(s.addr, &uid("norap")).await;
    norap.subscribe("rap/t", 1).await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    p.publish_retained("rap/t", b"r", 1).await;
    p.publish("rap/t", b"n", 1).await;
    let (a, b) = (rap.next_publish().await, rap.next_publish().await);
    assert!(
        a.retain && !b.retain,
        "RAP=1 keeps the publisher's RETAIN flag: {a:?} {b:?}"
    );
    let (a, b) = (norap.next_publish().await, norap.next_publish().await);
    assert!(
        !a.retain && !b.retain,
        "RAP=0 clears RETAIN on forwarded messages: {a:?} {b:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_expiry_respected() {
    let s = start().await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    p.publish_msg(
        Publish::new("rexp/short", b"short")
            .qos(1)
            .retain(true)
            .props(Props::new().u32(prop::MESSAGE_EXPIRY, 1)),
    )
    .await;
    p.publish_msg(
        Publish::new("rexp/long", b"long")
            .qos(1)
            .retain(true)
            .props(Props::new().u32(prop::MESSAGE_EXPIRY, 30)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let mut c = Raw::v5(s.addr, &uid("sub")).await;
    let got = sub_and_collect(&mut c, &mut p, "rexp/#", 1, "rexp/m").await;
    let payloads: Vec<_> = got.iter().map(|m| m.payload.clone()).collect();
    assert_eq!(
        payloads,
        vec![b"long".to_vec()],
        "expired retained message must not be delivered"
    );
    let left = got[0]
        .props
        .u32(prop::MESSAGE_EXPIRY)
        .expect("expiry forwarded");
    assert!(
        (1..=29).contains(&left),
        "retained expiry decremented, got {left}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_unavailable_is_announced_and_enforced() {
    let s = start_with(|c| c.mqtt.retain_available = false).await;
    let (mut p, ack) = Raw::connect_ok(s.addr, Connect::v5(&uid("pub"))).await;
    assert_eq!(
        ack.props.byte(prop::RETAIN_AVAILABLE),
        Some(0),
        "CONNACK Retain Available = 0"
    );
    p.send(&Publish::new("noret/t", b"x").retain(true).encode(true))
        .await;
    p.expect_disconnect(&[0x9A], T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_keeps_its_properties() {
    let s = start().await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    let props = Props::new()
        .str(prop::CONTENT_TYPE, "text/plain")
        .str(prop::RESPONSE_TOPIC, "rp/reply")
        .bin(prop::CORRELATION_DATA, b"cid")
        .pair("k", "v");
    p.publish_msg(Publish::new("rp/t", b"r").qos(1).retain(true).props(props))
        .await;
    let mut c = Raw::v5(s.addr, &uid("sub")).await;
    c.subscribe("rp/t", 1).await;
    let m = c.next_publish().await;
    assert!(m.retain);
    assert_eq!(
        m.props.str(prop::CONTENT_TYPE).as_deref(),
        Some("text/plain")
    );
    assert_eq!(
        m.props.str(prop::RESPONSE_TOPIC).as_deref(),
        Some("rp/reply")
    );
    assert_eq!(m.props.bin(prop::CORRELATION_DATA), Some(b"cid".to_vec()));
    assert_eq!(m.props.pairs(), vec![("k".to_string(), "v".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_dollar_topics_not_sent_to_hash_subscription() {
    let s = start().await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    p.publish_retained("$internal/x", b"hidden", 1).await;
    p.publish_retained("visible/x", b"shown", 1).await;
    let mut c = Raw::v5(s.addr, &uid("sub")).await;
    let got = sub_and_collect(&mut c, &mut p, "#", 1, "visible/m").await;
    let payloads: Vec<_> = got.iter().map(|m| m.payload.clone()).collect();
    assert_eq!(
        payloads,
        vec![b"shown".to_vec()],
        "`#` must not match retained `$` topics"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_delivered_at_min_of_stored_and_subscription_qos() {
    let s = start().await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    p.publish_retained("rq/two", b"2", 2).await;
    p.publish_retained("rq/zero", b"0", 0).await;
    let mut c = Raw::v5(s.addr, &uid("sub")).await;
    c.subscribe("rq/two", 1).await;
    assert_eq!(
        c.next_publish().await.qos,
        1,
        "QoS 2 retained to a QoS 1 subscription"
    );
    c.subscribe("rq/zero", 2).await;
    assert_eq!(c.next_publish().await.qos, 0, "QoS 0 retained stays QoS 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_retained_resent_on_identical_resubscribe() {
    let s = start().await;
    let mut p = Raw::v4(s.addr, &uid("pub")).await;
    p.publish_retained("rr/t", b"again", 1).await;
    let mut c = Raw::v4(s.addr, &uid("sub")).await;
    c.subscribe("rr/t", 1).await;
    assert_eq!(c.next_publish().await.payload, b"again");
    // [MQTT-3.8.4-3]: a replaced subscription re-sends matching retained messages.
    c.subscribe("rr/t", 1).await;
    let m = c.next_publish().await;
    assert!(
        m.retain && m.payload == b"again",
        "retained message re-sent: {m:?}"
    );
}
