//! The status page in a real browser: a node with real MQTT clients and
//! live traffic, `/status` loaded in headless Chromium, and the nodes
//! table that the page's script rendered from `/status.json` read back
//! from the DOM. A screenshot is kept at `target/artifacts/status.png`
//! (under `$CARGO_TARGET_DIR` when set).
//!
//! Without Chromium the test prints `SKIPPED: …` and passes, unless
//! `STATUS_BROWSER_REQUIRED=1` is set (as `.ci/run` does): then it fails.
mod common;

use common::*;
use rumqttc::QoS;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;
use tokio::time::Instant;

const NODE: &str = "status-node";
/// One subscriber and this many publishers stay connected.
const PUBLISHERS: usize = 3;
/// Bound on one Chromium run; the process group is killed past it.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(45);
/// Bound on the whole wait for the live table.
const PAGE_DEADLINE: Duration = Duration::from_secs(90);

/// The Chromium binary: `$CHROMIUM`, else the first of the usual names
/// that runs `--version`.
fn chromium() -> Option<PathBuf> {
    let candidates = std::env::var("CHROMIUM")
        .ok()
        .into_iter()
        .chain(["chromium", "chromium-browser", "google-chrome"].map(String::from));
    for c in candidates {
        let ok = std::process::Command::new(&c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(PathBuf::from(c));
        }
    }
    None
}

/// Runs headless Chromium on `url` with `extra` flags; returns stdout.
/// `--virtual-time-budget` lets the page's fetch and render finish
/// before the DOM is dumped or the screenshot taken.
async fn browse(chromium: &Path, profile: &Path, url: &str, extra: &[String]) -> String {
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox", // CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--virtual-time-budget=3000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0)
    .kill_on_drop(true);
    let child = cmd.spawn().expect("spawn chromium");
    let pid = child.id().expect("chromium pid");
    match tokio::time::timeout(BROWSER_TIMEOUT, child.wait_with_output()).await {
        Ok(out) => {
            let out = out.expect("chromium output");
            assert!(
                out.status.success(),
                "chromium failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
        Err(_) => {
            // Its renderer and GPU helpers share the group: end them all.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            panic!("chromium did not finish within {BROWSER_TIMEOUT:?} on {url}");
        }
    }
}

/// One `tr.node` of the dumped DOM, cell text by class.
#[derive(Debug)]
struct Row(String);

impl Row {
    fn cell(&self, class: &str) -> Option<String> {
        let mut rest = self.0.as_str();
        while let Some(i) = rest.find("<td class=\"") {
            rest = &rest[i + "<td class=\"".len()..];
            let classes = &rest[..rest.find('"')?];
            let body = &rest[rest.find('>')? + 1..];
            let body = &body[..body.find("</td>")?];
            if classes.split(' ').any(|c| c == class) {
                return Some(strip_tags(body).trim().to_string());
            }
        }
        None
    }
}

fn strip_tags(s: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// The `tr.node` rows of `dom`'s `table#nodes`.
fn node_rows(dom: &str) -> Vec<Row> {
    let Some(start) = dom.find("<table id=\"nodes\"") else {
        return Vec::new();
    };
    let table = &dom[start
        ..dom[start..]
            .find("</table>")
            .map_or(dom.len(), |e| start + e)];
    table
        .split("<tr ")
        .skip(1)
        .filter(|r| r.starts_with("class=\"node"))
        .map(|r| Row(r[..r.find("</tr>").unwrap_or(r.len())].to_string()))
        .collect()
}

fn artifact_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("artifacts").join("status.png")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_renders_the_live_nodes_table() {
    let Some(chromium) = chromium() else {
        if std::env::var("STATUS_BROWSER_REQUIRED").is_ok_and(|v| v == "1") {
            panic!("chromium is required (STATUS_BROWSER_REQUIRED=1) but not installed");
        }
        eprintln!("SKIPPED: chromium not installed (apt-get install -y chromium)");
        return;
    };
    let s = start_with(|c| c.node.name = NODE.into()).await;

    let mut sub = v4_client(s.addr, &uid("status-sub"), |_| {}).await;
    sub.subscribe("status/#", QoS::AtLeastOnce).await;
    let mut publishers = Vec::new();
    for i in 0..PUBLISHERS {
        let mut p = v4_client(s.addr, &uid("status-pub"), |_| {}).await;
        p.publish(
            &format!("status/retained/{i}"),
            b"kept",
            QoS::AtLeastOnce,
            true,
        )
        .await;
        publishers.push(p);
    }
    for _ in 0..PUBLISHERS {
        sub.recv().await;
    }
    // Steady traffic while the browser looks, so the rates are not zero.
    let mut traffic = publishers.pop().expect("a publisher");
    let keep_publishing = tokio::spawn(async move {
        loop {
            traffic
                .publish("status/live", b"tick", QoS::AtMostOnce, false)
                .await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let clients = (PUBLISHERS + 1) as u64;

    let profile = tempfile::tempdir().expect("profile dir");
    let url = format!("http://{}/status", s.admin());
    let deadline = Instant::now() + PAGE_DEADLINE;
    let (dom, row) = loop {
        let dom = browse(&chromium, profile.path(), &url, &["--dump-dom".into()]).await;
        let live = dom.contains("<table id=\"nodes\" data-source=\"live\">");
        let row = node_rows(&dom)
            .into_iter()
            .find(|r| r.cell("name").as_deref() == Some(NODE));
        let connections = row
            .as_ref()
            .and_then(|r| r.cell("connections"))
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0);
        let moving = row
            .as_ref()
            .and_then(|r| r.cell("msgs-in"))
            .and_then(|c| c.parse::<f64>().ok())
            .is_some_and(|v| v > 0.0);
        if live && connections >= clients && moving {
            break (dom, row.expect("row"));
        }
        assert!(
            Instant::now() < deadline,
            "the script never rendered {NODE} with {clients} connections and traffic \
             (live: {live}, row: {row:?}):\n{dom}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    assert_eq!(row.cell("state").as_deref(), Some("up"), "{row:?}");
    assert!(row.0.starts_with("class=\"node local\""), "{row:?}");
    assert_eq!(
        row.cell("sessions").as_deref(),
        Some(format!("{clients} / 0").as_str())
    );
    let retained: u64 = row
        .cell("retained")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert_eq!(retained, PUBLISHERS as u64, "{row:?}");
    assert_eq!(row.cell("subscriptions").as_deref(), Some("1"), "{row:?}");
    assert!(dom.contains("<tr class=\"totals\">"), "{dom}");
    assert!(
        dom.contains("<span class=\"badge listener up\" data-name=\"tcp\">tcp up</span>"),
        "{dom}"
    );
    assert!(dom.contains("id=\"error\" class=\"error\" hidden"), "{dom}");

    let png = artifact_path();
    std::fs::create_dir_all(png.parent().expect("dir")).expect("artifacts dir");
    let _ = std::fs::remove_file(&png);
    let shot = [
        format!("--screenshot={}", png.display()),
        "--window-size=1280,800".to_string(),
    ];
    browse(&chromium, profile.path(), &url, &shot).await;
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(bytes.len() > 10_000, "screenshot suspiciously small");
    eprintln!("status page screenshot: {}", png.display());

    keep_publishing.abort();
    drop(sub);
    s.stop().await;
}
