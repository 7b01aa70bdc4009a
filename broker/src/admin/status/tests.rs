//! `/status`, `/status.json` and `/health/listeners` driven without a
//! socket, and the pure parts (rate window, formatting).

use super::rates::{Counters, RateWindow};
use super::*;
use crate::admin::tests::{get, state};
use crate::admin::{ClusterShow, PeerShow};
use crate::auth::BoxFuture;
use crate::broker::{Broker, CloseKind};
use crate::codec::{Properties, QoS, SubOptions};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::routes::RemoteRoutes;
use crate::session::Message;
use crate::trie::{ClientId, SharedMatch, SubEntry};
use axum::http::StatusCode;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// An admin state around a broker named `name` sharing its metrics.
fn with_broker(name: &str) -> (AdminState, Arc<Broker>) {
    let mut config = Config::default();
    config.node.name = name.into();
    let metrics = Metrics::for_node(name);
    let broker = Broker::new(Arc::new(config), metrics.clone());
    let mut s = state();
    s.metrics = metrics.clone();
    s.status = Sampler::new(metrics);
    s.broker = Some(broker.clone());
    (s, broker)
}

/// Two sessions subscribed to `t/#` (one online, one offline), one
/// message published to both and one retained.
fn populate(b: &Arc<Broker>) {
    let entry = SubEntry {
        options: SubOptions {
            qos: QoS::AtLeastOnce,
            ..SubOptions::default()
        },
        identifier: None,
    };
    for id in ["on", "off"] {
        let a = b.attach(&ClientId::from(id), true);
        a.cell.state.lock().data.expiry_interval = 3600;
        assert_eq!(
            b.subscribe(&a.cell, a.owner_id, "t/#", entry.clone()),
            Some(true)
        );
        if id == "off" {
            b.detach(&a.cell, a.owner_id, CloseKind::Normal, None);
        }
    }
    let msg = |retain| {
        Arc::new(Message::new(
            "t/1".into(),
            Bytes::from_static(b"x"),
            QoS::AtLeastOnce,
            retain,
            &Properties::default(),
        ))
    };
    b.publish(msg(false));
    b.publish(msg(true));
}

#[tokio::test]
async fn status_json_reports_this_node() {
    let (s, b) = with_broker("solo");
    populate(&b);
    s.metrics.connections.set(1);
    s.health.set("tcp", true);
    s.health.set("ws", false);
    let (status, content_type, body) = get(s, "/status.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let r: StatusReport = serde_json::from_str(&body).expect("StatusReport");
    assert_eq!(r.node, "solo");
    assert_eq!(r.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(r.nodes.len(), 1);
    let n = &r.nodes[0];
    assert!(n.local && n.name == "solo" && n.state == "up", "{n:?}");
    let stats = n.stats.expect("this node's numbers");
    assert_eq!(stats.connections, 1);
    assert_eq!((stats.sessions_online, stats.sessions_offline), (1, 1));
    assert_eq!(stats.subscriptions, 2);
    assert_eq!(stats.retained, 1);
    assert_eq!(stats.queued, 4, "two messages queued in each session");
    assert_eq!(
        r.listeners,
        vec![
            ListenerStatus {
                name: "tcp".into(),
                state: "up".into()
            },
            ListenerStatus {
                name: "ws".into(),
                state: "down".into()
            },
        ]
    );
    assert_eq!((r.totals.nodes, r.totals.nodes_up), (1, 1));
    assert_eq!(r.totals.stats, stats);
}

#[tokio::test]
async fn status_json_field_names_are_stable() {
    let (s, _) = with_broker("solo");
    let (_, _, body) = get(s, "/status.json").await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k.join(",")
    };
    assert_eq!(
        keys(&v),
        "generated_ms,listeners,node,nodes,totals,uptime_secs,version"
    );
    assert_eq!(
        keys(&v["nodes"][0]),
        "address,incarnation,local,name,rtt_ms,since_ms,state,stats"
    );
    let stats = "bytes_in_per_sec,bytes_out_per_sec,connections,inflight,\
                 messages_in_per_sec,messages_out_per_sec,queued,retained,\
                 sessions_offline,sessions_online,subscriptions";
    assert_eq!(keys(&v["nodes"][0]["stats"]), stats);
    assert_eq!(
        keys(&v["totals"]),
        format!("{stats},nodes,nodes_reporting,nodes_up")
            .split(',')
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(",")
    );
}

/// A cluster view with one peer up and one down.
struct TwoPeers;

impl RemoteRoutes for TwoPeers {
    fn forward(
        &self,
        _: &Arc<Message>,
        _: &[SharedMatch],
        _: &mut [bool],
    ) -> Option<BoxFuture<'static, ()>> {
        None
    }

    fn show(&self) -> Option<ClusterShow> {
        let peer = |node: &str, state: &str, rtt_ms| PeerShow {
            node: node.into(),
            address: format!("{node}:44053"),
            state: state.into(),
            since_ms: 1_700_000_000_000,
            incarnation: 7,
            rtt_ms,
        };
        Some(ClusterShow {
            node: "a".into(),
            incarnation: 42,
            peers: vec![peer("b", "up", Some(1.25)), peer("c", "down", None)],
        })
    }
}

#[tokio::test]
async fn peers_come_from_the_cluster_view() {
    let (s, b) = with_broker("a");
    assert!(b.set_remote(Arc::new(TwoPeers)));
    s.metrics.connections.set(5);
    let (_, _, body) = get(s.clone(), "/status.json").await;
    let r: StatusReport = serde_json::from_str(&body).expect("StatusReport");
    let names: Vec<_> = r.nodes.iter().map(|n| (n.name.as_str(), n.local)).collect();
    assert_eq!(names, [("a", true), ("b", false), ("c", false)]);
    assert_eq!(r.nodes[0].incarnation, 42);
    assert_eq!(r.nodes[1].rtt_ms, Some(1.25));
    assert_eq!(r.nodes[1].address.as_deref(), Some("b:44053"));
    assert_eq!(r.nodes[2].state, "down");
    assert!(r.nodes[1].stats.is_none(), "no numbers for peers yet");
    let t = r.totals;
    assert_eq!((t.nodes, t.nodes_up, t.nodes_reporting), (3, 2, 1));
    assert_eq!(t.stats.connections, 5);

    let (_, _, html) = get(s, "/status").await;
    assert!(
        html.contains(r#"<tr class="node" data-name="c"><td class="name">c</td><td class="state down"><span>down</span></td><td class="connections">–</td>"#),
        "{html}"
    );
    assert!(html.contains(r#"<td class="rtt">1.2 ms</td>"#), "{html}");
    assert!(
        html.contains(r#"<td class="state">2 / 3 up</td>"#),
        "{html}"
    );
}

#[tokio::test]
async fn status_page_is_self_contained_html_with_the_nodes_table() {
    let (s, b) = with_broker("solo");
    populate(&b);
    s.metrics.connections.set(1);
    s.health.set("tcp", true);
    let (status, content_type, html) = get(s, "/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/html; charset=utf-8");
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert!(html.contains(r#"<table id="nodes" data-source="server">"#));
    assert!(
        html.contains(r#"<tr class="node local" data-name="solo"><td class="name">solo</td><td class="state up"><span>up</span></td><td class="connections">1</td><td class="sessions">1 / 1</td><td class="subscriptions">2</td><td class="retained">1</td><td class="queued">4</td>"#),
        "{html}"
    );
    assert!(html.contains(r#"<tr class="totals">"#));
    assert!(html.contains(r#"<span class="badge listener up" data-name="tcp">tcp up</span>"#));
    assert!(html.contains("setInterval(refresh, REFRESH_MS)") && html.contains("<style>"));
    for external in ["src=", "href=\"http", "@import", "url("] {
        assert!(!html.contains(external), "external asset ({external})");
    }
    assert!(
        !html.contains("{{") && !html.contains("}}\n<"),
        "format leftovers"
    );
}

#[tokio::test]
async fn node_names_are_escaped() {
    let (s, _) = with_broker("<b>\"x\"&");
    let (_, _, html) = get(s, "/status").await;
    assert!(html.contains("&lt;b&gt;&quot;x&quot;&amp;"), "{html}");
    assert!(!html.contains("<b>\"x\""));
}

#[tokio::test]
async fn without_a_broker_status_is_404() {
    for path in ["/status", "/status.json"] {
        let (status, _, _) = get(state(), path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn health_listeners_is_200_when_all_up_and_503_naming_the_down() {
    let s = state();
    let (status, _, body) = get(s.clone(), "/health/listeners").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "none yet: {body}");
    assert_eq!(body, r#"{"down":[],"listeners":[],"status":"unavailable"}"#);

    s.health.set("tcp", true);
    s.health.set("wss", true);
    let (status, _, body) = get(s.clone(), "/health/listeners").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        r#"{"listeners":[{"name":"tcp","state":"up"},{"name":"wss","state":"up"}],"status":"ok"}"#
    );

    s.health.set("wss", false);
    let (status, _, body) = get(s, "/health/listeners").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        r#"{"down":["wss"],"listeners":[{"name":"tcp","state":"up"},{"name":"wss","state":"down"}],"status":"unavailable"}"#
    );
}

fn counters(n: u64) -> Counters {
    Counters {
        messages_in: n,
        messages_out: 2 * n,
        bytes_in: 100 * n,
        bytes_out: 200 * n,
    }
}

#[test]
fn rates_are_zero_until_two_samples() {
    let mut w = RateWindow::new(Duration::from_secs(5));
    assert_eq!(w.rates(), Rates::default());
    w.push(Duration::from_secs(1), counters(10));
    assert_eq!(w.rates(), Rates::default());
    w.push(Duration::from_secs(1), counters(20));
    assert_eq!(w.rates(), Rates::default(), "no time passed");
}

#[test]
fn rates_span_the_window_and_slide() {
    let mut w = RateWindow::new(Duration::from_secs(5));
    for t in 0..=3 {
        w.push(Duration::from_secs(t), counters(10 * t));
    }
    assert_eq!(
        w.rates(),
        Rates {
            messages_in_per_sec: 10.0,
            messages_out_per_sec: 20.0,
            bytes_in_per_sec: 1000.0,
            bytes_out_per_sec: 2000.0,
        }
    );
    // Traffic stops: once the busy seconds leave the window, the rate is 0.
    for t in 4..=20 {
        w.push(Duration::from_secs(t), counters(30));
    }
    assert_eq!(w.rates(), Rates::default());
    // A burst of 50 messages in the last second, averaged over 5 s.
    w.push(Duration::from_secs(21), counters(80));
    assert_eq!(w.rates().messages_in_per_sec, 10.0);
}

#[test]
fn rates_ignore_out_of_order_and_decreasing_samples() {
    let mut w = RateWindow::new(Duration::from_secs(5));
    w.push(Duration::from_secs(10), counters(100));
    w.push(Duration::from_secs(9), counters(0));
    w.push(Duration::from_secs(11), counters(50));
    assert_eq!(w.rates(), Rates::default());
}

#[tokio::test]
async fn sampler_reads_the_metrics() {
    let metrics = Metrics::default();
    let sampler = Sampler::new(metrics.clone());
    sampler.sample();
    metrics.messages_in.inc_by(1000);
    tokio::time::sleep(Duration::from_millis(20)).await;
    sampler.sample();
    let r = sampler.rates();
    assert!(r.messages_in_per_sec > 1000.0, "{r:?}");
    assert_eq!(r.messages_out_per_sec, 0.0);
}

#[test]
fn formatting_matches_the_script() {
    assert_eq!(page::bytes(0.0), "0 B/s");
    assert_eq!(page::bytes(1023.0), "1023 B/s");
    assert_eq!(page::bytes(1536.0), "1.5 KiB/s");
    assert_eq!(page::bytes(5.0 * 1024.0 * 1024.0), "5.0 MiB/s");
    assert_eq!(page::duration(7), "7s");
    assert_eq!(page::duration(306), "5m 6s");
    assert_eq!(page::duration(3 * 3600 + 4 * 60 + 5), "3h 4m");
    assert_eq!(page::duration(86_400 + 2 * 3600), "1d 2h");
}

#[tokio::test]
async fn metrics_carry_the_node_label() {
    let (s, _) = with_broker("n-1");
    s.metrics.connections.set(2);
    let (_, _, body) = get(s, "/metrics").await;
    let series: Vec<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert!(series.len() > 20, "{body}");
    for line in series {
        assert!(line.contains(r#"{node="n-1"}"#), "{line}");
    }
    assert!(body.contains(r#"tern_connections{node="n-1"} 2"#), "{body}");
}
