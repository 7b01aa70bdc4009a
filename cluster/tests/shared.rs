//! Shared subscriptions served cluster-wide, and the netsplit knobs.

mod harness;

use anyhow::Result;
use harness::{within, Harness, Mqtt, Settings, Step, DEADLINE};
use rumqttc::QoS;
use std::collections::BTreeSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_group_gets_each_message_once_across_nodes() -> Result<()> {
    let mut h = Harness::new();
    h.run(vec![Step::Add("a"), Step::Add("b")]).await?;
    h.converged().await?;
    let mut sa = Mqtt::connect(h.node("a").mqtt(), "sa", true).await?;
    sa.subscribe("$share/g/s/#", QoS::AtLeastOnce).await?;
    let mut sb = Mqtt::connect(h.node("b").mqtt(), "sb", true).await?;
    sb.subscribe("$share/g/s/#", QoS::AtLeastOnce).await?;
    h.routes("a", "b", &["$share/g/s/#"]).await?;
    h.routes("b", "a", &["$share/g/s/#"]).await?;
    let mut p = Mqtt::connect(h.node("a").mqtt(), "p", true).await?;
    for i in 0..10 {
        p.publish("s/x", QoS::AtLeastOnce, false, &i.to_string())
            .await?;
    }
    let (mut got, mut on_a, mut on_b) = (Vec::new(), 0, 0);
    while got.len() < 10 {
        tokio::select! {
            m = sa.message() => { got.push(m?.payload); on_a += 1; }
            m = sb.message() => { got.push(m?.payload); on_b += 1; }
        }
    }
    let distinct: BTreeSet<_> = got.iter().collect();
    assert_eq!(distinct.len(), 10, "each message once: {got:?}");
    assert!(
        on_a > 0 && on_b > 0,
        "round robin spans nodes: a={on_a} b={on_b}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strict_nodes_refuse_connect_during_a_split() -> Result<()> {
    let mut h = Harness::with(Settings {
        strict: true,
        ..Settings::default()
    });
    h.run(vec![Step::Add("a"), Step::Add("b")]).await?;
    h.converged().await?;
    Mqtt::connect(h.node("a").mqtt(), "before", true).await?;
    h.step(Step::Cut("a", "b")).await?;
    within("split", DEADLINE, || !h.node("a").cluster.is_up("b")).await?;
    assert!(
        Mqtt::connect(h.node("a").mqtt(), "during", true)
            .await
            .is_err(),
        "CONNECT refused while a peer is unreachable"
    );
    h.step(Step::Heal("a", "b")).await?;
    h.converged().await?;
    Mqtt::connect(h.node("a").mqtt(), "after", true).await?;
    Ok(())
}
