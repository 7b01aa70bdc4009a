//! Shared subscriptions are cluster-wide: with one member of `$share/g/jobs/#`
//! on each of three nodes, every message is delivered to exactly one member
//! across the cluster, and the load is spread over more than one member.

mod cluster_support;

use cluster_support::mqtt::Client;
use cluster_support::{is_probe, uid, Cluster};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

const JOBS: usize = 300;
const FILTER: &str = "$share/g/jobs/#";

/// Polls every member briefly and returns what each received.
async fn poll(members: &mut [Client], each: Duration) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for m in members.iter_mut() {
        let mut got: Vec<String> = m.take_received().iter().map(|m| m.text()).collect();
        if let Some(x) = m.recv(each).await {
            got.push(x.text());
        }
        got.extend(m.take_received().iter().map(|m| m.text()));
        out.push(got);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_group_spread_over_three_nodes_gets_each_message_exactly_once() {
    let c = Cluster::start("shared", 3).await;
    let mut members = Vec::new();
    for i in 0..3 {
        let mut m = c.v5(i, &uid(&format!("shared-m{}", i + 1))).await;
        m.subscribe(FILTER, 1).await;
        members.push(m);
    }
    let mut publ = c.v5(0, &uid("shared-pub")).await;

    // Readiness: probes until members on at least two nodes have had one
    // (the group's remote members are known to node 1).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut probed = [0usize; 3];
    let mut k = 0;
    while probed.iter().filter(|&&n| n > 0).count() < 2 {
        assert!(
            Instant::now() < deadline,
            "shared-group probes published on node 1 reached members {probed:?} (per node) \
             within 15 s; expected members on at least two nodes"
        );
        k += 1;
        publ.publish("jobs/probe", format!("probe-{k}").as_bytes(), 1)
            .await;
        for (i, got) in poll(&mut members, Duration::from_millis(30))
            .await
            .into_iter()
            .enumerate()
        {
            probed[i] += got.len();
        }
    }

    // The jobs.
    let acked = publ.acked(1);
    for j in 0..JOBS {
        publ.publish("jobs/work", format!("job-{j:03}").as_bytes(), 1)
            .await;
    }
    if let Err(e) = publ
        .wait_acked(1, acked + JOBS as u64, Duration::from_secs(20))
        .await
    {
        panic!("publisher on node 1: {e}");
    }

    let mut per_member: Vec<BTreeMap<String, usize>> = vec![BTreeMap::new(); 3];
    let unique = |pm: &Vec<BTreeMap<String, usize>>| {
        let mut all = std::collections::BTreeSet::new();
        for m in pm {
            all.extend(m.keys().cloned());
        }
        all.len()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut quiet_until: Option<Instant> = None;
    loop {
        let mut any = false;
        for (i, got) in poll(&mut members, Duration::from_millis(20))
            .await
            .into_iter()
            .enumerate()
        {
            for t in got {
                if t.starts_with("probe-") {
                    continue;
                }
                any = true;
                *per_member[i].entry(t).or_default() += 1;
            }
        }
        let now = Instant::now();
        if unique(&per_member) >= JOBS {
            // Everything arrived; keep listening 1 s for duplicates.
            let q = *quiet_until.get_or_insert(now + Duration::from_secs(1));
            if now >= q && !any {
                break;
            }
        } else if now >= deadline {
            break;
        }
    }

    let mut total: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, m) in per_member.iter().enumerate() {
        for (t, n) in m {
            for _ in 0..*n {
                total.entry(t.clone()).or_default().push(i + 1);
            }
        }
    }
    let counts: Vec<usize> = per_member.iter().map(|m| m.values().sum()).collect();
    eprintln!("shared: deliveries per member (node 1, 2, 3): {counts:?}");
    let missing: Vec<String> = (0..JOBS)
        .map(|j| format!("job-{j:03}"))
        .filter(|t| !total.contains_key(t))
        .collect();
    let repeated: Vec<(&String, &Vec<usize>)> = total.iter().filter(|(_, v)| v.len() > 1).collect();
    let strays: Vec<&String> = total.keys().filter(|t| !t.starts_with("job-")).collect();
    assert!(strays.is_empty(), "unexpected payloads: {strays:?}");
    assert!(
        missing.is_empty(),
        "{} of {JOBS} jobs never reached any member (first: {:?}); per member {counts:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert!(
        repeated.is_empty(),
        "{} jobs were delivered more than once across the group (job -> members): {:?}",
        repeated.len(),
        &repeated[..repeated.len().min(20)]
    );
    assert!(
        counts.iter().filter(|&&n| n > 0).count() >= 2,
        "all {JOBS} jobs went to a single member: per member {counts:?}"
    );
    for m in &mut members {
        let gone = m.gone();
        assert!(gone.is_none(), "member {} disconnected: {gone:?}", m.id);
        let late: Vec<_> = m
            .take_received()
            .into_iter()
            .filter(|x| !is_probe(x))
            .collect();
        assert!(late.is_empty(), "late deliveries to {}: {late:?}", m.id);
    }
}
