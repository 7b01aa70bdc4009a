//! The management API answered cluster-wide by real `tern` processes:
//! node A lists a client connected to node B and disconnects it (B's 5.0
//! client sees 0x98), lists both nodes' listeners, applies `set` on both,
//! deletes a retained message everywhere, and names a dead node as not
//! answering without waiting on it.

mod cluster_support;
mod common;

use cluster_support::{uid, Cluster};
use common::raw::{Connect, Raw};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const T: Duration = Duration::from_secs(10);

/// One request to a node's admin API (loopback: no key is configured).
async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, Value) {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        let text = String::from_utf8_lossy(&buf).to_string();
        let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        (
            status.expect("status"),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    };
    tokio::time::timeout(T, fut)
        .await
        .expect("admin API answered in time")
}

/// Polls `f` until it returns `Some`, within `within`.
async fn eventually<R, F, Fut>(within: Duration, what: &str, mut f: F) -> R
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<R>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(r) = f().await {
            return r;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_a_manages_a_client_on_node_b() {
    let mut c = Cluster::start("adm", 2).await;
    let (a, b) = (c.admin(0), c.name(1).to_string());
    let id = uid("adm-b");
    let (mut client, ack) = Raw::connect_ok(c.mqtt(1), Connect::v5(&id)).await;
    assert_eq!(ack.code, 0);

    let path = format!("/api/v1/session/show?client_id={id}");
    let row = eventually(T, "node A lists the client on node B", || async {
        let (status, v) = http(a, "GET", &path).await;
        assert_eq!(status, 200, "{v}");
        v["rows"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(
        (row["node"].as_str(), row["online"].as_bool()),
        (Some(b.as_str()), Some(true))
    );
    assert!(
        row["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{row}"
    );
    let (_, v) = http(a, "GET", &path).await;
    assert_eq!(names(&v["nodes"]).len(), 2, "both nodes answered: {v}");
    assert_eq!(v["missing"], serde_json::json!([]));

    // The status page on A shows B's numbers, asked over the mesh.
    eventually(T, "A's /status.json carries B's connection", || async {
        let (status, v) = http(a, "GET", "/status.json").await;
        assert_eq!(status, 200, "{v}");
        let peer = v["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["name"].as_str() == Some(b.as_str()))?
            .clone();
        (peer["stats"]["connections"].as_u64()? >= 1
            && v["totals"]["nodes_reporting"].as_u64() == Some(2))
        .then_some(())
    })
    .await;

    let (_, v) = http(a, "GET", "/api/v1/listener/show").await;
    let nodes: Vec<&str> = v["rows"]
        .as_array()
        .map(|r| r.iter().filter_map(|l| l["node"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        nodes.contains(&c.name(0)) && nodes.contains(&b.as_str()),
        "{v}"
    );

    let (status, v) = http(a, "POST", "/api/v1/set?mqtt.max_online_messages=500").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(names(&v["nodes"]).len(), 2, "applied on both: {v}");

    // Disconnect through A: B's client gets 0x98.
    let (status, v) = http(
        a,
        "POST",
        &format!("/api/v1/session/disconnect?client_id={id}"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(names(&v["disconnected_on"]), vec![b.clone()]);
    client.expect_disconnect(&[0x98], T).await;

    // A retained message published on A, deleted through B, is gone on A.
    let topic = format!("adm/{}", uid("r"));
    let (mut p, _) = Raw::connect_ok(c.mqtt(0), Connect::v5(&uid("pub"))).await;
    p.publish_retained(&topic, b"on", 1).await;
    let show = format!("/api/v1/retain/show?topic={}", topic.replace('/', "%2F"));
    eventually(T, "the retained message replicates to B", || async {
        let (_, v) = http(c.admin(1), "GET", &show).await;
        (v["rows"].as_array()?.len() == 1).then_some(())
    })
    .await;
    let del = format!("/api/v1/retain/delete?topic={}", topic.replace('/', "%2F"));
    let (status, v) = http(c.admin(1), "POST", &del).await;
    assert_eq!((status, v["deleted"].as_bool()), (200, Some(true)), "{v}");
    eventually(T, "the deletion reaches A", || async {
        let (_, v) = http(a, "GET", &show).await;
        v["rows"].as_array()?.is_empty().then_some(())
    })
    .await;

    // A dead node is listed as not answering; the answer does not wait on it.
    c.kill9(1);
    let started = Instant::now();
    let (status, v) = http(a, "GET", "/api/v1/session/show").await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    let missing: Vec<&str> = v["missing"]
        .as_array()
        .map(|m| m.iter().filter_map(|x| x["node"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(missing, vec![b.as_str()], "{v}");
}
