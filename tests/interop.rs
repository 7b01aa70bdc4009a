//! Interoperability with real clients: mosquitto_pub / mosquitto_sub
//! (MQTT 3.1, 3.1.1, 5.0) and Python paho-mqtt 2.x. Each completes QoS 0/1/2
//! round trips, a retained message and a will message against tern.
//!
//! A missing tool prints `SKIPPED: …` and the test returns, unless
//! `MQTT_INTEROP_REQUIRED=1` is set (as `.ci/run` does): then it fails.
mod common;

use common::*;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const TOOL_TIMEOUT: Duration = Duration::from_secs(20);

fn available(tool: &str, probe: &[&str]) -> bool {
    let found = std::process::Command::new(tool)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success() || tool.starts_with("mosquitto"));
    if !found {
        if std::env::var("MQTT_INTEROP_REQUIRED").is_ok_and(|v| v == "1") {
            panic!("{tool} is required (MQTT_INTEROP_REQUIRED=1) but not usable");
        }
        eprintln!("SKIPPED: {tool} not installed");
    }
    found
}

/// Short client ids: MQTT 3.1 allows at most 23 characters.
fn short_id(p: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{p}{}x{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

struct Sub {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    log: Vec<String>,
}

impl Sub {
    /// Starts `mosquitto_sub -d` and waits until its SUBACK is printed.
    async fn start(port: u16, version: &str, topic: &str, qos: u8, extra: &[&str]) -> Sub {
        // stdbuf: line-buffer its stdout so the SUBACK line arrives at once.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-V",
                version,
                "-d",
            ])
            .args(["-i", &short_id("ms"), "-t", topic, "-q", &qos.to_string()])
            .args(["-C", "1", "-W", "20"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn mosquitto_sub");
        let out = child.stdout.take().expect("stdout");
        let mut s = Sub {
            child,
            lines: BufReader::new(out).lines(),
            log: Vec::new(),
        };
        s.until(|l| l.contains("SUBACK"), "SUBACK").await;
        s
    }

    async fn until(&mut self, pred: impl Fn(&str) -> bool, what: &str) -> String {
        let deadline = tokio::time::Instant::now() + TOOL_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
                Err(_) => panic!(
                    "mosquitto_sub: no {what} within {TOOL_TIMEOUT:?}; output: {:#?}",
                    self.log
                ),
                Ok(Ok(Some(l))) => {
                    self.log.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Ok(_) => panic!("mosquitto_sub ended before {what}; output: {:#?}", self.log),
            }
        }
    }

    /// Waits for the PUBLISH debug line and the payload line; returns the
    /// debug line (it shows d/q/r flags).
    async fn expect_message(&mut self, payload: &str) -> String {
        let header = self
            .until(|l| l.contains("received PUBLISH"), "PUBLISH")
            .await;
        self.until(|l| l == payload, payload).await;
        let status = tokio::time::timeout(TOOL_TIMEOUT, self.child.wait())
            .await
            .expect("mosquitto_sub exits after -C 1")
            .expect("wait mosquitto_sub");
        assert!(
            status.success(),
            "mosquitto_sub exit status {status}; output {:#?}",
            self.log
        );
        header
    }
}

async fn mosquitto_pub(port: u16, version: &str, args: &[&str]) {
    let out = tokio::time::timeout(
        TOOL_TIMEOUT,
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version])
            .args(["-i", &short_id("mp")])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("mosquitto_pub timed out")
    .expect("run mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn mosquitto_case(version: &str) {
    if !available("mosquitto_sub", &["--help"]) || !available("mosquitto_pub", &["--help"]) {
        return;
    }
    let s = start().await;
    let port = s.addr.port();
    let tag = short_id("t");

    for qos in 0..=2u8 {
        let topic = format!("mq/{tag}/q{qos}");
        let payload = format!("{version}-qos{qos}");
        let mut sub = Sub::start(port, version, &topic, 2, &[]).await;
        mosquitto_pub(
            port,
            version,
            &["-t", &topic, "-q", &qos.to_string(), "-m", &payload],
        )
        .await;
        let header = sub.expect_message(&payload).await;
        assert!(
            header.contains(&format!("q{qos}")),
            "delivered at QoS {qos}: {header}"
        );
    }

    // Retained.
    let rtopic = format!("mq/{tag}/retained");
    mosquitto_pub(
        port,
        version,
        &["-t", &rtopic, "-q", "1", "-r", "-m", "kept"],
    )
    .await;
    let mut sub = Sub::start(port, version, &rtopic, 1, &[]).await;
    let header = sub.expect_message("kept").await;
    assert!(
        header.contains("r1"),
        "retained message has the retain flag: {header}"
    );

    // Will: a mosquitto_sub with a will, killed without DISCONNECT.
    let wtopic = format!("mq/{tag}/will");
    let mut observer = Sub::start(port, version, &wtopic, 1, &[]).await;
    let dying = Sub::start(
        port,
        version,
        &format!("mq/{tag}/idle"),
        0,
        &[
            "--will-topic",
            &wtopic,
            "--will-payload",
            "last-words",
            "--will-qos",
            "1",
        ],
    )
    .await;
    let mut dying_child = dying.child;
    dying_child.start_kill().expect("SIGKILL mosquitto_sub");
    let _ = dying_child.wait().await;
    observer.expect_message("last-words").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_mqttv31() {
    mosquitto_case("mqttv31").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_mqttv311() {
    mosquitto_case("mqttv311").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_mqttv5() {
    mosquitto_case("mqttv5").await;
}

async fn paho_case(version: &str) {
    if !available(
        "python3",
        &[
            "-c",
            "import paho.mqtt.client as m; assert m.CallbackAPIVersion",
        ],
    ) {
        eprintln!("SKIPPED: python3 with paho-mqtt>=2 not installed");
        return;
    }
    let s = start().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/paho_roundtrip.py"
    );
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        Command::new("python3")
            .args([script, "127.0.0.1", &s.addr.port().to_string(), version])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("paho script timed out")
    .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK"),
        "paho MQTT {version}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_mqttv31() {
    paho_case("31").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_mqttv311() {
    paho_case("311").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_mqttv5() {
    paho_case("5").await;
}
