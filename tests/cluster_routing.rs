//! Three real `tern` processes form one cluster: a PUBLISH on one node
//! reaches subscribers on the other nodes at QoS 0, 1 and 2, and the
//! operator tooling (`tern admin cluster show`, `/api/v1/cluster/show`,
//! `/health`, `/metrics`) reports the cluster.

mod cluster_support;

use cluster_support::mqtt::{Msg, Opts};
use cluster_support::{await_route, http_get, is_probe, peer_state, tern_bin, uid, Cluster};
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

const N: usize = 50;

fn data(ms: &[Msg]) -> Vec<&Msg> {
    ms.iter().filter(|m| !is_probe(m)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_on_node3_reaches_subscribers_on_node1_and_node2_at_every_qos() {
    let c = Cluster::start("routing", 3).await;
    let base = uid("routing");
    let filter = format!("{base}/#");

    let mut sub1 = c.v5(0, &uid("rt-sub1")).await;
    sub1.subscribe(&filter, 2).await;
    let mut sub2 = c.client(1, &uid("rt-sub2"), &Opts::v4()).await;
    sub2.subscribe(&filter, 2).await;
    let mut publ = c.v5(2, &uid("rt-pub")).await;

    let probe = format!("{base}/probe");
    await_route(&mut publ, &mut sub1, &probe, Duration::from_secs(15)).await;
    await_route(&mut publ, &mut sub2, &probe, Duration::from_secs(15)).await;

    for qos in [0u8, 1, 2] {
        let topic = format!("{base}/q{qos}");
        let expected: Vec<String> = (0..N).map(|k| format!("q{qos}-{k:03}")).collect();
        let acked_before = publ.acked(qos);
        for p in &expected {
            publ.publish(&topic, p.as_bytes(), qos).await;
        }
        if let Err(e) = publ
            .wait_acked(qos, acked_before + N as u64, Duration::from_secs(10))
            .await
        {
            panic!("publisher on node 3: {e}");
        }
        for (who, sub) in [("node 1 (v5)", &mut sub1), ("node 2 (v3.1.1)", &mut sub2)] {
            let (got, complete) = sub
                .collect_until(Duration::from_secs(10), |ms| data(ms).len() >= N)
                .await;
            let got = data(&got);
            let texts: Vec<String> = got.iter().map(|m| m.text()).collect();
            assert!(
                complete,
                "QoS {qos}: subscriber on {who} got {} of {N} messages published on node 3 \
                 within 10 s: {texts:?}",
                texts.len()
            );
            for m in &got {
                assert_eq!(m.topic, topic, "QoS {qos}: topic on {who}");
                assert_eq!(m.qos, qos, "QoS {qos}: delivered QoS on {who}");
            }
            if qos == 0 {
                let mut sorted = texts.clone();
                sorted.sort();
                assert_eq!(sorted, expected, "QoS 0 payloads on {who}");
            } else {
                assert_eq!(
                    texts, expected,
                    "QoS {qos} payloads on {who}: exact and in publish order"
                );
            }
            // Nothing extra (no duplicates) behind the expected ones.
            let extra = data(&sub.take_received())
                .iter()
                .map(|m| m.text())
                .collect::<Vec<_>>();
            assert!(
                extra.is_empty(),
                "QoS {qos}: extra messages on {who}: {extra:?}"
            );
        }
    }
}

/// Runs the tern binary with `args`, killing it after 15 s.
async fn run_tern(args: &[String]) -> (std::process::ExitStatus, String, String) {
    let mut child = tokio::process::Command::new(tern_bin())
        .args(args)
        .env_remove("TERN_BOUND_ADDRS_FILE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tern admin");
    let out = tokio::time::timeout(Duration::from_secs(15), async {
        use tokio::io::AsyncReadExt;
        let mut so = String::new();
        let mut se = String::new();
        let mut o = child.stdout.take().expect("stdout");
        let mut e = child.stderr.take().expect("stderr");
        let (a, b) = tokio::join!(o.read_to_string(&mut so), e.read_to_string(&mut se));
        a.expect("read stdout");
        b.expect("read stderr");
        let st = child.wait().await.expect("wait");
        (st, so, se)
    })
    .await;
    out.unwrap_or_else(|_| panic!("`tern {}` did not finish within 15 s", args.join(" ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_cli_and_http_show_three_nodes_up() {
    let c = Cluster::start("rtadmin", 3).await;
    let url = format!("http://{}", c.admin(0));
    let names: Vec<String> = (0..3).map(|i| c.name(i).to_string()).collect();

    // Human-readable output: every node named, every peer "up", no "down".
    let args: Vec<String> = ["admin", "cluster", "show", "--url", &url]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (st, out, err) = run_tern(&args).await;
    assert!(
        st.success(),
        "`tern {}` failed ({st}); stdout:\n{out}\nstderr:\n{err}",
        args.join(" ")
    );
    for name in &names {
        assert!(
            out.contains(name.as_str()),
            "`tern admin cluster show` does not mention {name}:\n{out}"
        );
    }
    for name in &names[1..] {
        assert!(
            out.lines()
                .any(|l| l.contains(name.as_str()) && l.split_whitespace().any(|w| w == "up")),
            "`tern admin cluster show` has no line showing {name} up:\n{out}"
        );
    }
    assert!(
        !out.lines()
            .any(|l| l.split_whitespace().any(|w| w == "down")),
        "`tern admin cluster show` reports a node down:\n{out}"
    );

    // --json parses and says the same.
    let mut json_args = args.clone();
    json_args.push("--json".into());
    let (st, out, err) = run_tern(&json_args).await;
    assert!(
        st.success(),
        "`tern {}` failed ({st}); stdout:\n{out}\nstderr:\n{err}",
        json_args.join(" ")
    );
    let v: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("`tern admin cluster show --json` is not JSON ({e}):\n{out}"));
    assert_eq!(
        v.get("node").and_then(Value::as_str),
        Some(names[0].as_str()),
        "--json node: {v}"
    );
    for name in &names[1..] {
        assert_eq!(
            peer_state(&v, name).as_deref(),
            Some("up"),
            "--json: {name} should be up: {v}"
        );
    }
    assert!(
        v.get("incarnation").is_some(),
        "--json lacks incarnation: {v}"
    );

    // Every node's HTTP view, /health and cluster metrics.
    for (i, name) in names.iter().enumerate() {
        let v = c.show(i).await.expect("cluster show");
        let peers = v["peers"].as_array().cloned().unwrap_or_default();
        for p in &peers {
            for key in [
                "node",
                "address",
                "state",
                "since_ms",
                "incarnation",
                "rtt_ms",
            ] {
                assert!(
                    p.get(key).is_some(),
                    "{}: peer entry lacks {key}: {p}",
                    name
                );
            }
        }
        let (status, body) = http_get(c.admin(i), "/health").await.expect("GET /health");
        assert_eq!(status, 200, "{}: /health: {body}", name);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, body) = http_get(c.admin(i), "/metrics")
                .await
                .expect("GET /metrics");
            assert_eq!(status, 200, "{}: /metrics", name);
            if body.lines().any(|l| l.starts_with("tern_cluster_")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: /metrics has no tern_cluster_ series:\n{body}",
                name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
