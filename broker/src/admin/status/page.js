// Refreshes the status page from status.json every 2 s. The markup it
// produces is the same as the server's first render (see page.rs).
(function () {
  "use strict";
  var REFRESH_MS = 2000;
  var DASH = "\u2013";
  var $ = function (id) { return document.getElementById(id); };

  function rate(v) { return v.toFixed(1); }
  function bytes(v) {
    var units = ["B/s", "KiB/s", "MiB/s", "GiB/s"], i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
  }
  function duration(s) {
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600),
        m = Math.floor(s % 3600 / 60), sec = s % 60;
    if (d > 0) return d + "d " + h + "h";
    if (h > 0) return h + "h " + m + "m";
    if (m > 0) return m + "m " + sec + "s";
    return sec + "s";
  }
  function rtt(v) { return v === null || v === undefined ? DASH : v.toFixed(1) + " ms"; }

  function td(tr, cls, text) {
    var cell = document.createElement("td");
    cell.className = cls;
    cell.textContent = text;
    tr.appendChild(cell);
    return cell;
  }
  // The numeric cells of a row: [class, text] pairs, dashes without stats.
  function numbers(s) {
    var v = function (f) { return s ? f(s) : DASH; };
    return [
      ["connections", v(function (s) { return String(s.connections); })],
      ["sessions", v(function (s) { return s.sessions_online + " / " + s.sessions_offline; })],
      ["subscriptions", v(function (s) { return String(s.subscriptions); })],
      ["retained", v(function (s) { return String(s.retained); })],
      ["queued", v(function (s) { return String(s.queued); })],
      ["msgs-in", v(function (s) { return rate(s.messages_in_per_sec); })],
      ["msgs-out", v(function (s) { return rate(s.messages_out_per_sec); })],
      ["bytes-in", v(function (s) { return bytes(s.bytes_in_per_sec); })],
      ["bytes-out", v(function (s) { return bytes(s.bytes_out_per_sec); })]
    ];
  }
  function nodeRow(n) {
    var tr = document.createElement("tr");
    tr.className = n.local ? "node local" : "node";
    tr.dataset.name = n.name;
    td(tr, "name", n.name);
    var state = td(tr, "state " + n.state, "");
    var badge = document.createElement("span");
    badge.textContent = n.state;
    state.appendChild(badge);
    numbers(n.stats).forEach(function (c) { td(tr, c[0], c[1]); });
    td(tr, "rtt", rtt(n.rtt_ms));
    return tr;
  }
  function totalsRow(t) {
    var tr = document.createElement("tr");
    tr.className = "totals";
    td(tr, "name", "Total");
    td(tr, "state", t.nodes_up + " / " + t.nodes + " up");
    numbers(t).forEach(function (c) { td(tr, c[0], c[1]); });
    td(tr, "rtt", "");
    return tr;
  }
  function listenerBadges(list) {
    var box = $("listeners");
    box.textContent = "";
    list.forEach(function (l) {
      var b = document.createElement("span");
      b.className = "badge listener " + l.state;
      b.dataset.name = l.name;
      b.textContent = l.name + " " + l.state;
      box.appendChild(b);
    });
  }

  function render(r) {
    $("node").textContent = r.node;
    $("version").textContent = r.version;
    $("uptime").textContent = duration(r.uptime_secs);
    listenerBadges(r.listeners);
    var t = r.totals;
    $("sum-nodes").textContent = t.nodes_up + " / " + t.nodes;
    $("sum-connections").textContent = String(t.connections);
    $("sum-msgs-in").textContent = rate(t.messages_in_per_sec);
    $("sum-msgs-out").textContent = rate(t.messages_out_per_sec);
    $("sum-retained").textContent = String(t.retained);
    $("sum-queued").textContent = String(t.queued);
    var table = $("nodes");
    var body = document.createElement("tbody");
    r.nodes.forEach(function (n) { body.appendChild(nodeRow(n)); });
    table.replaceChild(body, table.tBodies[0]);
    var foot = document.createElement("tfoot");
    foot.appendChild(totalsRow(t));
    table.replaceChild(foot, table.tFoot);
    table.dataset.source = "live";
    $("updated").textContent = "updated " + new Date(r.generated_ms).toLocaleTimeString();
  }

  function refresh() {
    fetch("status.json", { cache: "no-store" })
      .then(function (res) {
        if (!res.ok) throw new Error("HTTP " + res.status);
        return res.json();
      })
      .then(function (r) { render(r); $("error").hidden = true; })
      .catch(function (e) {
        $("error").textContent = "Cannot refresh from status.json (" + e.message + "); showing the last data.";
        $("error").hidden = false;
      });
  }
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
