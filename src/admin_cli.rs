//! `tern admin …`: talks to a running node's admin HTTP API. A tiny
//! HTTP/1.1 GET over `tokio::net::TcpStream` is all it needs (no client
//! crate for one request).

use anyhow::{anyhow, bail, Context, Result};
use tern_broker::admin::ClusterShow;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET {url}{path}`; returns the body of a 200 response.
pub async fn get(url: &str, path: &str) -> Result<String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("only http:// admin URLs are supported, got {url}"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("cannot connect to {authority}"))?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8(raw).context("response is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!("{url}{path} answered {status}");
    }
    Ok(body.to_string())
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

/// The table `tern admin cluster show` prints, like `vmq-admin cluster show`.
pub fn render(show: &ClusterShow) -> String {
    let mut rows = vec![[
        "Node".to_string(),
        "State".to_string(),
        "Incarnation".to_string(),
        "Since".to_string(),
        "RTT".to_string(),
    ]];
    rows.push([
        format!("{} (this node)", show.node),
        "up".into(),
        show.incarnation.to_string(),
        "-".into(),
        "-".into(),
    ]);
    for p in &show.peers {
        rows.push([
            p.node.clone(),
            p.state.clone(),
            p.incarnation.to_string(),
            since(p.since_ms),
            p.rtt_ms.map_or("-".into(), |r| format!("{r:.2} ms")),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let line = |r: &[String; 5]| {
        let cells: Vec<String> = r
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
    out.push_str(&line(&rows[0]));
    out.push_str(&rule);
    for r in &rows[1..] {
        out.push_str(&line(r));
    }
    out.push_str(&rule);
    out
}

/// `tern admin cluster show`.
pub async fn cluster_show(url: &str, json: bool) -> Result<String> {
    let body = get(url.trim_end_matches('/'), "/api/v1/cluster/show").await?;
    if json {
        return Ok(format!("{body}\n"));
    }
    let show: ClusterShow = serde_json::from_str(&body).context("unexpected response")?;
    Ok(render(&show))
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
}
