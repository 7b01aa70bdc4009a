//! The `/status` page: one self-contained HTML document (inline CSS and
//! script, no external assets) rendered here from a [`StatusReport`], so it
//! reads without JavaScript; `page.js` then refreshes it from
//! `status.json` with the same markup.
//!
//! Stable hooks for tests and scrapers: `table#nodes` (`data-source` is
//! `server` until the script has rendered it, then `live`), one
//! `tr.node` per node (`tr.node.local` for this one) with `td.name`,
//! `td.state`, `td.connections`, `td.sessions`, `td.subscriptions`,
//! `td.retained`, `td.queued`, `td.msgs-in`, `td.msgs-out`, `td.bytes-in`,
//! `td.bytes-out`, `td.rtt`; `tfoot tr.totals`; `#listeners .listener`.

use super::model::{NodeStats, StatusReport, Totals};
use std::fmt::Write;

const CSS: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");
const DASH: &str = "\u{2013}";

/// The whole page for `report`.
pub fn render(report: &StatusReport) -> String {
    let t = &report.totals;
    let mut rows = String::new();
    for n in &report.nodes {
        let class = if n.local { "node local" } else { "node" };
        let _ = writeln!(
            rows,
            "<tr class=\"{class}\" data-name=\"{name}\"><td class=\"name\">{name}</td>\
             <td class=\"state {state}\"><span>{state}</span></td>{numbers}\
             <td class=\"rtt\">{rtt}</td></tr>",
            name = escape(&n.name),
            state = escape(&n.state),
            numbers = numbers(n.stats.as_ref()),
            rtt = n.rtt_ms.map_or(DASH.to_string(), |v| format!("{v:.1} ms")),
        );
    }
    let mut badges = String::new();
    for l in &report.listeners {
        let _ = write!(
            badges,
            "<span class=\"badge listener {state}\" data-name=\"{name}\">{name} {state}</span>",
            name = escape(&l.name),
            state = escape(&l.state),
        );
    }
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tern status · {node}</title>
<style>
{CSS}</style>
</head>
<body>
<header>
<div class="brand"><span class="logo">&#9670;</span> Tern</div>
<div class="meta">node <b id="node">{node}</b> · version <b id="version">{version}</b> · up <b id="uptime">{uptime}</b></div>
<div id="listeners">{badges}</div>
</header>
<main>
<div id="error" class="error" hidden></div>
<section class="cards" id="summary">
{cards}</section>
<h2>Nodes</h2>
<div class="scroll">
<table id="nodes" data-source="server">
<thead><tr><th>Node</th><th>State</th><th>Connections</th><th>Sessions on/off</th><th>Subscriptions</th><th>Retained</th><th>Queued</th><th>Msgs in/s</th><th>Msgs out/s</th><th>Bytes in/s</th><th>Bytes out/s</th><th>RTT</th></tr></thead>
<tbody>
{rows}</tbody>
<tfoot>{totals}</tfoot>
</table>
</div>
</main>
<footer>Refreshes every 2 s · <span id="updated">rendered by the server</span> · <a href="status.json">status.json</a> · <a href="metrics">metrics</a> · <a href="health/listeners">listeners</a></footer>
<script>
{SCRIPT}</script>
</body>
</html>
"#,
        node = escape(&report.node),
        version = escape(&report.version),
        uptime = duration(report.uptime_secs),
        cards = cards(t),
        totals = totals_row(t),
    )
}

fn cards(t: &Totals) -> String {
    let s = &t.stats;
    let cards = [
        ("nodes", "Nodes up", format!("{} / {}", t.nodes_up, t.nodes)),
        ("connections", "Connections", s.connections.to_string()),
        ("msgs-in", "Msgs in/s", rate(s.rates.messages_in_per_sec)),
        ("msgs-out", "Msgs out/s", rate(s.rates.messages_out_per_sec)),
        ("retained", "Retained", s.retained.to_string()),
        ("queued", "Queued", s.queued.to_string()),
    ];
    let mut out = String::new();
    for (id, label, value) in cards {
        let _ = writeln!(
            out,
            "<div class=\"card\"><div class=\"label\">{label}</div>\
             <div class=\"value\" id=\"sum-{id}\">{value}</div></div>"
        );
    }
    out
}

fn totals_row(t: &Totals) -> String {
    format!(
        "<tr class=\"totals\"><td class=\"name\">Total</td>\
         <td class=\"state\">{} / {} up</td>{}<td class=\"rtt\"></td></tr>",
        t.nodes_up,
        t.nodes,
        numbers(Some(&t.stats)),
    )
}

/// The numeric cells of a row, dashes for a node without numbers.
fn numbers(s: Option<&NodeStats>) -> String {
    let cells: [(&str, String); 9] = match s {
        Some(s) => [
            ("connections", s.connections.to_string()),
            (
                "sessions",
                format!("{} / {}", s.sessions_online, s.sessions_offline),
            ),
            ("subscriptions", s.subscriptions.to_string()),
            ("retained", s.retained.to_string()),
            ("queued", s.queued.to_string()),
            ("msgs-in", rate(s.rates.messages_in_per_sec)),
            ("msgs-out", rate(s.rates.messages_out_per_sec)),
            ("bytes-in", bytes(s.rates.bytes_in_per_sec)),
            ("bytes-out", bytes(s.rates.bytes_out_per_sec)),
        ],
        None => [
            "connections",
            "sessions",
            "subscriptions",
            "retained",
            "queued",
            "msgs-in",
            "msgs-out",
            "bytes-in",
            "bytes-out",
        ]
        .map(|c| (c, DASH.to_string())),
    };
    let mut out = String::new();
    for (class, text) in cells {
        let _ = write!(out, "<td class=\"{class}\">{text}</td>");
    }
    out
}

fn rate(v: f64) -> String {
    format!("{v:.1}")
}

/// Bytes per second in binary units, as `page.js` writes them.
pub(super) fn bytes(mut v: f64) -> String {
    const UNITS: [&str; 4] = ["B/s", "KiB/s", "MiB/s", "GiB/s"];
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    match i {
        0 => format!("{v:.0} {}", UNITS[0]),
        _ => format!("{v:.1} {}", UNITS[i]),
    }
}

/// `1d 2h`, `3h 4m`, `5m 6s` or `7s`, as `page.js` writes them.
pub(super) fn duration(s: u64) -> String {
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// Escapes text for HTML content and double-quoted attributes.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
