//! Will messages: abnormal close, keep-alive timeout, normal DISCONNECT,
//! DISCONNECT 0x04, will delay, will retain and will QoS.
mod common;

use common::raw::prop;
use common::*;
use std::time::Duration;
use tokio::time::Instant;

async fn observer(s: &TestServer, topic: &str, qos: u8) -> Raw {
    let mut o = Raw::v5(s.addr, &uid("observer")).await;
    o.subscribe(topic, qos).await;
    o
}

async fn will_on_socket_drop(version: u8) {
    let s = start().await;
    let topic = format!("will/drop/{version}");
    let mut o = observer(&s, &topic, 1).await;
    let c = Connect::new(version, &uid("dying")).will(Will::new(&topic, b"gone"));
    let (c, _) = Raw::connect_ok(s.addr, c).await;
    c.drop_socket().await;
    let m = o.next_publish().await;
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        (topic.as_str(), &b"gone"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_will_published_on_abnormal_disconnect() {
    will_on_socket_drop(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_will_published_on_abnormal_disconnect() {
    will_on_socket_drop(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v31_will_published_on_abnormal_disconnect() {
    will_on_socket_drop(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_published_on_keep_alive_timeout() {
    let s = start().await;
    let mut o = observer(&s, "will/ka", 1).await;
    let c = Connect::v4(&uid("silent"))
        .keep_alive(1)
        .will(Will::new("will/ka", b"timeout"));
    let (_silent, _) = Raw::connect_ok(s.addr, c).await; // kept open, never sends again
    let m = o
        .next_publish_within(Duration::from_millis(1500 + 2000))
        .await
        .expect("will must be published within 1.5 × keep-alive + 2 s");
    assert_eq!(m.payload, b"timeout");
}

async fn no_will_after_normal_disconnect(version: u8) {
    let s = start().await;
    let topic = format!("will/normal/{version}");
    let mut o = observer(&s, &topic, 1).await;
    let c = Connect::new(version, &uid("polite")).will(Will::new(&topic, b"should-not-appear"));
    let (c, _) = Raw::connect_ok(s.addr, c).await;
    c.disconnect().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    p.publish(&topic, b"marker", 1).await;
    let got = o.until_payload(b"marker").await;
    assert_eq!(
        got.len(),
        1,
        "will published after a normal DISCONNECT: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_no_will_after_normal_disconnect() {
    no_will_after_normal_disconnect(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_no_will_after_normal_disconnect() {
    no_will_after_normal_disconnect(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_disconnect_with_will_message_0x04_publishes_will() {
    let s = start().await;
    let mut o = observer(&s, "will/x04", 1).await;
    let c = Connect::v5(&uid("w04")).will(Will::new("will/x04", b"asked-for"));
    let (c, _) = Raw::connect_ok(s.addr, c).await;
    c.disconnect_with(0x04, Props::new()).await;
    let m = o.next_publish().await;
    assert_eq!(m.payload, b"asked-for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_will_delay_interval_delays_the_will() {
    let s = start().await;
    let mut o = observer(&s, "will/delay", 1).await;
    let will = Will::new("will/delay", b"late").props(Props::new().u32(prop::WILL_DELAY, 2));
    let c = Connect::v5(&uid("delayed")).session_expiry(30).will(will);
    let (c, _) = Raw::connect_ok(s.addr, c).await;
    let dropped = Instant::now();
    c.drop_socket().await;
    assert!(
        o.next_publish_within(Duration::from_millis(1500))
            .await
            .is_none(),
        "will published before its 2 s delay"
    );
    let m = o
        .next_publish_within(Duration::from_millis(3000))
        .await
        .expect("will published after its delay");
    assert_eq!(m.payload, b"late");
    assert!(
        dropped.elapsed() >= Duration::from_millis(1800),
        "too early: {:?}",
        dropped.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_will_not_published_if_client_reconnects_within_delay() {
    let s = start().await;
    let mut o = observer(&s, "will/back", 1).await;
    let id = uid("comeback");
    let will =
        Will::new("will/back", b"should-not-appear").props(Props::new().u32(prop::WILL_DELAY, 2));
    let (c, _) = Raw::connect_ok(s.addr, Connect::v5(&id).session_expiry(30).will(will)).await;
    c.drop_socket().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (back, ack) =
        Raw::connect_ok(s.addr, Connect::v5(&id).clean(false).session_expiry(30)).await;
    assert!(ack.session_present);
    // Past the original delay.
    tokio::time::sleep(Duration::from_millis(2800)).await;
    let mut p = Raw::v5(s.addr, &uid("pub")).await;
    p.publish("will/back", b"marker", 1).await;
    let got = o.until_payload(b"marker").await;
    assert_eq!(
        got.len(),
        1,
        "will published although the client came back in time: {got:?}"
    );
    back.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_retain_stores_the_will() {
    let s = start().await;
    let c = Connect::v4(&uid("wr")).will(
        Will::new("will/retained", b"last-words")
            .retain(true)
            .qos(1),
    );
    let (c, _) = Raw::connect_ok(s.addr, c).await;
    let mut o = observer(&s, "will/retained", 1).await;
    c.drop_socket().await;
    let live = o.next_publish().await;
    assert_eq!(live.payload, b"last-words");
    // A later subscriber gets it as a retained message.
    let mut late = Raw::v5(s.addr, &uid("late")).await;
    late.subscribe("will/retained", 1).await;
    let m = late.next_publish().await;
    assert_eq!(m.payload, b"last-words");
    assert!(m.retain, "will with Will Retain is stored as retained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_qos_is_honoured() {
    let s = start().await;
    for will_qos in [0u8, 1, 2] {
        let topic = format!("will/qos/{will_qos}");
        let mut o = observer(&s, &topic, 2).await;
        let c = Connect::v5(&uid("wq")).will(Will::new(&topic, b"q").qos(will_qos));
        let (c, _) = Raw::connect_ok(s.addr, c).await;
        c.drop_socket().await;
        let m = o.next_publish().await;
        assert_eq!(m.qos, will_qos, "will published at Will QoS {will_qos}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_will_properties_pass_through() {
    let s = start().await;
    let mut o = observer(&s, "will/props", 1).await;
    let will = Will::new("will/props", b"{}").props(
        Props::new()
            .str(prop::CONTENT_TYPE, "application/json")
            .pair("why", "crash"),
    );
    let (c, _) = Raw::connect_ok(s.addr, Connect::v5(&uid("wp")).will(will)).await;
    c.drop_socket().await;
    let m = o.next_publish().await;
    assert_eq!(
        m.props.str(prop::CONTENT_TYPE).as_deref(),
        Some("application/json")
    );
    assert_eq!(
        m.props.pairs(),
        vec![("why".to_string(), "crash".to_string())]
    );
}
