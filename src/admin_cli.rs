//! `tern admin …`: talks to a running node's admin HTTP API, like
//! `vmq-admin`. A tiny HTTP/1.1 client over `tokio::net::TcpStream` is all
//! it needs (no client crate for one request per run). Every command
//! prints a table, or the raw JSON with `--json`.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use tern_broker::admin::ClusterShow;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where the admin API is and the key to present.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `http://host:port`.
    pub url: String,
    /// Sent as `Authorization: Bearer …`.
    pub api_key: Option<String>,
}

/// The first key of a key file: a bare key, or the `KEY SCOPE…` format of
/// `admin.api_keys_file` (so a pod can use the Secret the node reads).
pub fn key_from_file(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
}

/// Percent-encodes a query-string value.
pub fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Builds `?k=v&…` from the pairs whose value is set.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    match parts.is_empty() {
        true => String::new(),
        false => format!("?{}", parts.join("&")),
    }
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .ok_or_else(|| anyhow!("malformed chunked body"))?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .context("malformed chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or_else(|| anyhow!("truncated chunk"))?;
        out.push_str(chunk);
        body = rest.get(size + 2..).unwrap_or("");
    }
}

impl Endpoint {
    /// `{method} {path}` with an optional text body; returns the status
    /// code and the body.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String)> {
        let url = self.url.trim_end_matches('/');
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("only http:// admin URLs are supported, got {url}"))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let mut stream = tokio::net::TcpStream::connect(authority)
            .await
            .with_context(|| format!("cannot connect to {authority}"))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\nConnection: close\r\n"
        );
        if let Some(key) = &self.api_key {
            head.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        let body = body.unwrap_or("");
        head.push_str(&format!(
            "Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        stream.write_all(head.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let text = String::from_utf8(raw).context("response is not UTF-8")?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("malformed HTTP response"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("malformed HTTP status line"))?;
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        let body = if chunked {
            dechunk(body)?
        } else {
            body.to_string()
        };
        Ok((status, body))
    }

    /// Like [`request`](Endpoint::request), but anything but 200 is an
    /// error carrying the API's message.
    pub async fn call(&self, method: &str, path: &str, body: Option<&str>) -> Result<String> {
        let (status, text) = self.request(method, path, body).await?;
        if status != 200 {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| text.trim().to_string());
            bail!(
                "{} {path} answered {status}: {message}",
                method.to_ascii_uppercase()
            );
        }
        Ok(text)
    }
}

/// How long ago `ms` (since the epoch) was, e.g. `42s ago`.
fn since(ms: u64) -> String {
    let secs = tern_broker::session::now_ms().saturating_sub(ms) / 1000;
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}

/// A `vmq-admin`-style table: a header row and rows of cells.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let cells: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!(" {c:<w$} "))
            .collect();
        format!("|{}|\n", cells.join("|"))
    };
    let rule = format!(
        "+{}+\n",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+")
    );
    let mut out = rule.clone();
    out.push_str(&line(header.to_vec()));
    out.push_str(&rule);
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out.push_str(&rule);
    out
}

/// The table `tern admin cluster show` prints, like `vmq-admin cluster show`.
pub fn render(show: &ClusterShow) -> String {
    let mut rows = vec![vec![
        format!("{} (this node)", show.node),
        "up".into(),
        show.incarnation.to_string(),
        "-".into(),
        "-".into(),
    ]];
    for p in &show.peers {
        rows.push(vec![
            p.node.clone(),
            p.state.clone(),
            p.incarnation.to_string(),
            since(p.since_ms),
            p.rtt_ms.map_or("-".into(), |r| format!("{r:.2} ms")),
        ]);
    }
    render_table(&["Node", "State", "Incarnation", "Since", "RTT"], &rows)
}

/// A JSON cell as text: strings bare, null as `-`.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// A column of a `show` table: its title and how a row's JSON becomes text.
type Column = (&'static str, fn(&Value) -> String);

/// Renders a `{rows, nodes, missing, truncated}` answer with `columns`,
/// then who did not answer and whether rows were cut.
pub fn render_rows(answer: &Value, columns: &[Column]) -> String {
    let rows: Vec<Vec<String>> = answer["rows"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| columns.iter().map(|(_, f)| f(r)).collect())
        .collect();
    let header: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    let mut out = render_table(&header, &rows);
    out.push_str(&footer(answer));
    if answer["truncated"].as_bool() == Some(true) {
        out.push_str("(more rows: raise --limit)\n");
    }
    out
}

/// `Not answering: node (reason), …` when some node did not answer.
fn footer(answer: &Value) -> String {
    let missing: Vec<String> = answer["missing"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|m| format!("{} ({})", cell(&m["node"]), cell(&m["reason"])))
        .collect();
    match missing.is_empty() {
        true => String::new(),
        false => format!("Not answering: {}\n", missing.join(", ")),
    }
}

fn time_cell(v: &Value) -> String {
    v.as_u64().map_or("-".into(), since)
}

/// Columns of `session show`.
pub const SESSION_COLUMNS: &[Column] = &[
    ("Client ID", |r| cell(&r["client_id"])),
    ("Node", |r| cell(&r["node"])),
    ("Online", |r| cell(&r["online"])),
    ("User", |r| cell(&r["user"])),
    ("Peer", |r| cell(&r["peer"])),
    ("Proto", |r| cell(&r["protocol"])),
    ("Clean", |r| cell(&r["clean_start"])),
    ("Expiry", |r| cell(&r["expiry_interval"])),
    ("Connected", |r| time_cell(&r["connected_at"])),
    ("Subs", |r| cell(&r["subscriptions"])),
    ("Queued", |r| cell(&r["queued"])),
    ("Inflight", |r| cell(&r["inflight"])),
];

/// Columns of `subscription show`.
pub const SUBSCRIPTION_COLUMNS: &[Column] = &[
    ("Client ID", |r| cell(&r["client_id"])),
    ("Node", |r| cell(&r["node"])),
    ("Filter", |r| cell(&r["filter"])),
    ("QoS", |r| cell(&r["qos"])),
    ("Group", |r| cell(&r["share_group"])),
    ("No Local", |r| cell(&r["no_local"])),
    ("Retain As Pub", |r| cell(&r["retain_as_published"])),
    ("Retain Handling", |r| cell(&r["retain_handling"])),
];

/// Columns of `retain show`.
pub const RETAIN_COLUMNS: &[Column] = &[
    ("Topic", |r| cell(&r["topic"])),
    ("QoS", |r| cell(&r["qos"])),
    ("Size", |r| cell(&r["size"])),
    ("Payload", |r| cell(&r["payload"])),
    ("Origin", |r| cell(&r["origin_node"])),
    ("Written", |r| time_cell(&r["timestamp"])),
];

/// Columns of `listener show`.
pub const LISTENER_COLUMNS: &[Column] = &[
    ("Node", |r| cell(&r["node"])),
    ("Kind", |r| cell(&r["kind"])),
    ("Bind", |r| cell(&r["bind"])),
    ("State", |r| cell(&r["state"])),
    ("Connections", |r| cell(&r["connections"])),
    ("Max", |r| cell(&r["max_connections"])),
    ("PROXY", |r| {
        if r["proxy_protocol"].as_bool() == Some(true) {
            "on".into()
        } else {
            "off".into()
        }
    }),
];

/// One sample of an OpenMetrics/Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_total`, `_bucket`… suffixes).
    pub name: String,
    /// The label set as written, without braces.
    pub labels: String,
    /// The value as written.
    pub value: String,
}

/// Parses the samples of a text exposition (comments skipped).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rfind('}') {
            Some(close) => (&line[..=close], line[close + 1..].trim()),
            None => match line.split_once(' ') {
                Some((s, v)) => (s, v.trim()),
                None => continue,
            },
        };
        // A trailing timestamp is not shown.
        let value = value.split_whitespace().next().unwrap_or("");
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        out.push(Sample {
            name: name.to_string(),
            labels: labels.to_string(),
            value: value.to_string(),
        });
    }
    out
}

/// The `metrics show` table, with samples whose name contains `filter`.
pub fn render_metrics(text: &str, filter: Option<&str>) -> String {
    let rows: Vec<Vec<String>> = parse_metrics(text)
        .into_iter()
        .filter(|s| filter.is_none_or(|f| s.name.contains(f)))
        .map(|s| vec![s.name, s.labels, s.value])
        .collect();
    render_table(&["Name", "Labels", "Value"], &rows)
}

/// `cluster show`.
pub async fn cluster_show(ep: &Endpoint, json: bool) -> Result<String> {
    let body = ep.call("GET", "/api/v1/cluster/show", None).await?;
    if json {
        return Ok(format!("{body}\n"));
    }
    let show: ClusterShow = serde_json::from_str(&body).context("unexpected response")?;
    Ok(render(&show))
}

/// A `show` command: GET `path`, then the table (or the JSON).
pub async fn show(ep: &Endpoint, path: &str, columns: &[Column], json: bool) -> Result<String> {
    let body = ep.call("GET", path, None).await?;
    if json {
        return Ok(format!("{body}\n"));
    }
    let v: Value = serde_json::from_str(&body).context("unexpected response")?;
    Ok(render_rows(&v, columns))
}

/// A command that changes something: POST `path`, then `summary` of the
/// answer (or the JSON).
pub async fn post(
    ep: &Endpoint,
    path: &str,
    json: bool,
    summary: fn(&Value) -> String,
) -> Result<String> {
    let body = ep.call("POST", path, None).await?;
    if json {
        return Ok(format!("{body}\n"));
    }
    let v: Value = serde_json::from_str(&body).context("unexpected response")?;
    Ok(format!("{}{}", summary(&v), footer(&v)))
}

/// `session disconnect`'s summary.
pub fn disconnected(v: &Value) -> String {
    let nodes: Vec<String> = v["disconnected_on"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(cell)
        .collect();
    let cleanup = match v["cleanup"].as_bool() {
        Some(true) => ", session deleted",
        _ => "",
    };
    format!(
        "Disconnected {} on {}{cleanup}\n",
        cell(&v["client_id"]),
        nodes.join(", ")
    )
}

/// `retain delete`'s summary.
pub fn retain_deleted(v: &Value) -> String {
    format!("Deleted the retained message on {}\n", cell(&v["topic"]))
}

/// `set`'s summary: each key with the value now in force.
pub fn applied(v: &Value) -> String {
    let nodes: Vec<String> = v["nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(cell)
        .collect();
    let mut out = String::new();
    if let Some(m) = v["applied"].as_object() {
        for (k, val) in m {
            out.push_str(&format!("{k} = {}\n", cell(val)));
        }
    }
    out.push_str(&format!("Applied on {}\n", nodes.join(", ")));
    out
}

/// `log-level`: shows the filter, or sets it when `directive` is given.
pub async fn log_level(ep: &Endpoint, directive: Option<&str>, json: bool) -> Result<String> {
    let body = match directive {
        Some(d) => ep.call("PUT", "/log-level", Some(d)).await?,
        None => ep.call("GET", "/log-level", None).await?,
    };
    if json {
        return Ok(format!("{body}\n"));
    }
    let v: Value = serde_json::from_str(&body).context("unexpected response")?;
    Ok(format!("{}\n", cell(&v["level"])))
}

/// `metrics show`.
pub async fn metrics_show(ep: &Endpoint, name: Option<&str>, json: bool) -> Result<String> {
    let text = ep.call("GET", "/metrics", None).await?;
    if json {
        let samples: Vec<Value> = parse_metrics(&text)
            .into_iter()
            .filter(|s| name.is_none_or(|f| s.name.contains(f)))
            .map(|s| serde_json::json!({ "name": s.name, "labels": s.labels, "value": s.value }))
            .collect();
        return Ok(format!("{}\n", Value::Array(samples)));
    }
    Ok(render_metrics(&text, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_broker::admin::PeerShow;

    #[test]
    fn table_lists_this_node_then_peers() {
        let show = ClusterShow {
            node: "n1".into(),
            incarnation: 7,
            peers: vec![PeerShow {
                node: "n2".into(),
                address: "10.0.0.2:44053".into(),
                state: "down".into(),
                since_ms: tern_broker::session::now_ms(),
                incarnation: 9,
                rtt_ms: Some(1.5),
            }],
        };
        let out = render(&show);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[1].contains("Node") && lines[1].contains("RTT"),
            "{out}"
        );
        assert!(
            lines[3].contains("n1 (this node)") && lines[3].contains(" 7 "),
            "{out}"
        );
        assert!(
            lines[4].contains("n2") && lines[4].contains("down"),
            "{out}"
        );
        assert!(
            lines[4].contains("1.50 ms") && lines[4].contains("0s ago"),
            "{out}"
        );
    }

    #[test]
    fn rows_render_with_missing_nodes_and_truncation() {
        let v: Value = serde_json::json!({
            "rows": [{"node": "a", "kind": "tcp", "bind": "0.0.0.0:1883", "state": "up",
                      "connections": 2, "max_connections": 10, "proxy_protocol": true}],
            "nodes": ["a"],
            "missing": [{"node": "b", "reason": "down"}],
            "truncated": true,
        });
        let out = render_rows(&v, LISTENER_COLUMNS);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[1].contains("Kind") && lines[1].contains("PROXY"),
            "{out}"
        );
        assert!(
            lines[3].contains("0.0.0.0:1883") && lines[3].contains(" on "),
            "{out}"
        );
        assert!(out.contains("Not answering: b (down)"), "{out}");
        assert!(out.contains("raise --limit"), "{out}");
    }

    #[test]
    fn metrics_text_parses_into_samples() {
        let text = "# TYPE tern_connections gauge\ntern_connections 3\n\
                    tern_x_total{listener=\"tcp\",a=\"b c\"} 5 1700000000\n# EOF\n";
        let s = parse_metrics(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].name, "tern_x_total");
        assert_eq!(s[1].labels, "listener=\"tcp\",a=\"b c\"");
        assert_eq!(s[1].value, "5");
        let out = render_metrics(text, Some("x_total"));
        assert!(
            out.contains("tern_x_total") && !out.contains("tern_connections"),
            "{out}"
        );
    }

    #[test]
    fn query_strings_and_key_files() {
        assert_eq!(
            query(&[("client_id", Some("a b/#".into())), ("user", None)]),
            "?client_id=a%20b%2F%23"
        );
        assert_eq!(query(&[("x", None)]), "");
        assert_eq!(
            key_from_file("# keys\n\n0123456789abcdef mgmt,metrics\n"),
            Some("0123456789abcdef".into())
        );
        assert_eq!(
            dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            "abcde"
        );
    }
}
