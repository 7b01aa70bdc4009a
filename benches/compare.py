#!/usr/bin/env python3
"""Tern vs Mosquitto, side by side on this machine.

    python3 benches/compare.py            # full run, writes benches/RESULTS.md

Builds Tern and tern-loadgen in release mode, installs Mosquitto with apt if
it is missing, then runs every scenario against Tern (single node), Mosquitto
and a 3-node Tern cluster (cross-node), interleaved per round, `--runs` rounds
(3 by default). Brokers are pinned to CPU 0 and the load generator to CPU 1
with taskset. Raw results go to benches/results.jsonl, the summary (medians,
ratios, loss/dup) to benches/RESULTS.md.

Options: --runs N, --quick (smaller runs, for trying the script),
--no-build, --skip-cluster, --out FILE, --only GROUPS (comma-separated, all by
default): `main` (the single-node table), `cluster`, `durable` (QoS 1 with
persistence: Tern with a data directory vs Mosquitto with `persistence
true`, persistent subscribers) and `restart` (benches/restart.py: restart
time with a million queued messages). `durable` and `restart` write their
own section at the end of RESULTS.md, between markers, and leave the rest
of the file as it is when `main` is not run.
Environment: BENCH_TARGET_DIR (default <repo>/target/bench).
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("BENCH_TARGET_DIR", os.path.join(REPO, "target", "bench"))
TERN = os.path.join(TARGET, "release", "tern")
LOADGEN = os.path.join(TARGET, "release", "tern-loadgen")
HOST = "127.0.0.1"
TERN_PORT, MOSQ_PORT = 27830, 27831
TERN_ADMIN = 27850
CLUSTER_MQTT = [27841, 27842, 27843]
CLUSTER_ADMIN = [27851, 27852, 27853]
CLUSTER_MESH = [27861, 27862, 27863]
BROKER_CPU, LOADGEN_CPU = "0", "1"

# Queue and in-flight limits shared by both brokers.
MAX_QUEUED = 100000
MAX_INFLIGHT = 100


def scenarios(quick):
    """(name, loadgen args) for every scenario of one broker round."""
    k = 4 if quick else 1
    conns = 2000 if quick else 10000
    out = [("conns", ["--scenario", "conns", "--clients", str(conns)])]
    for qos in (0, 1):
        q = ["--qos", str(qos)]
        out += [
            (f"fanin_q{qos}", ["--scenario", "fanin", "--clients", "10", "--messages", str(500000 // k)] + q),
            (f"fanout_q{qos}", ["--scenario", "fanout", "--clients", "10", "--messages", str(50000 // k)] + q),
            (f"pairs_q{qos}", ["--scenario", "pairs", "--clients", "10", "--messages", str(500000 // k)] + q),
            (f"latency_q{qos}", ["--scenario", "latency", "--rate", "5000", "--seconds", "2" if quick else "5"] + q),
        ]
    return out


def durable_scenarios(quick):
    """QoS 1 to persistent subscribers, so both brokers persist their queues."""
    n = 12500 if quick else 50000
    common = ["--clients", "10", "--messages", str(n), "--qos", "1", "--persistent"]
    return [("durable_fanin_q1", ["--scenario", "fanin"] + common),
            ("durable_pairs_q1", ["--scenario", "pairs"] + common)]


def cluster_scenarios(quick):
    k = 4 if quick else 1
    return [
        (f"pairs_q{qos}", ["--scenario", "pairs", "--clients", "10", "--messages", str(500000 // k),
                           "--qos", str(qos), "--settle-ms", "1500"])
        for qos in (0, 1)
    ]


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, **kw).stdout.strip()


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def port_free(port):
    """Refuses to run against a listener that is not ours (another broker)."""
    with socket.socket() as s:
        if s.connect_ex((HOST, port)) == 0:
            raise RuntimeError(f"port {port} is already in use by another process")


def wait_port(port, proc, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited early with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} not listening after {timeout}s")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def taskset(cpu):
    return ["taskset", "-c", cpu] if shutil.which("taskset") else []


def tern_env(mqtt_port, admin_port, extra=None):
    env = dict(os.environ)
    env.update({
        "TERN_LOG": "warn",
        "TERN_LISTENERS__TCP__BIND": f"{HOST}:{mqtt_port}",
        "TERN_ADMIN__BIND": f"{HOST}:{admin_port}",
        "TERN_MQTT__MAX_ONLINE_MESSAGES": str(MAX_QUEUED),
        "TERN_MQTT__MAX_OFFLINE_MESSAGES": str(MAX_QUEUED),
        "TERN_MQTT__MAX_INFLIGHT": str(MAX_INFLIGHT),
    })
    env.update(extra or {})
    return env


TERN_CONFIG_DESC = (
    f"embedded defaults plus `TERN_LISTENERS__TCP__BIND={HOST}:{TERN_PORT}`, "
    f"`TERN_MQTT__MAX_ONLINE_MESSAGES={MAX_QUEUED}`, `TERN_MQTT__MAX_OFFLINE_MESSAGES={MAX_QUEUED}`, "
    f"`TERN_MQTT__MAX_INFLIGHT={MAX_INFLIGHT}`, `TERN_LOG=warn` (no persistence: Tern keeps sessions in memory)"
)


def start_tern(pinned=True):
    port_free(TERN_PORT)
    p = subprocess.Popen((taskset(BROKER_CPU) if pinned else []) + [TERN], env=tern_env(TERN_PORT, TERN_ADMIN),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(TERN_PORT, p)
    return [p], TERN_PORT, None


def start_tern_durable(data):
    port_free(TERN_PORT)
    env = tern_env(TERN_PORT, TERN_ADMIN, {"TERN_STORAGE__DIR": data})
    p = subprocess.Popen(taskset(BROKER_CPU) + [TERN], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(TERN_PORT, p)
    return [p], TERN_PORT, None


def mosquitto_conf(path, persistence=None):
    """Mosquitto's config; with `persistence` (a directory) its database
    goes there, autosave settings at their defaults."""
    store = ["persistence true", f"persistence_location {persistence}/"] if persistence else ["persistence false"]
    text = "\n".join([
        f"listener {MOSQ_PORT} {HOST}",
        "allow_anonymous true",
    ] + store + [
        f"max_queued_messages {MAX_QUEUED}",
        f"max_inflight_messages {MAX_INFLIGHT}",
        "log_dest none",
        "",
    ])
    with open(path, "w") as f:
        f.write(text)
    return text


def start_mosquitto(conf):
    port_free(MOSQ_PORT)
    p = subprocess.Popen(taskset(BROKER_CPU) + ["mosquitto", "-c", conf],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(MOSQ_PORT, p)
    return [p], MOSQ_PORT, None


def start_cluster():
    procs = []
    for port in CLUSTER_MQTT + CLUSTER_ADMIN + CLUSTER_MESH:
        port_free(port)
    for i in range(3):
        peers = ",".join(f"{HOST}:{CLUSTER_MESH[j]}" for j in range(3) if j != i)
        env = tern_env(CLUSTER_MQTT[i], CLUSTER_ADMIN[i], {
            "TERN_CLUSTER__ENABLED": "true",
            "TERN_CLUSTER__BIND": f"{HOST}:{CLUSTER_MESH[i]}",
            "TERN_CLUSTER__PEERS": peers,
            "TERN_CLUSTER__SECRET": "bench",
            "TERN_NODE__NAME": f"n{i + 1}",
        })
        procs.append(subprocess.Popen([TERN], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for i, p in enumerate(procs):
        wait_port(CLUSTER_MQTT[i], p)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            ups = []
            for a in CLUSTER_ADMIN:
                with urllib.request.urlopen(f"http://{HOST}:{a}/api/v1/cluster/show", timeout=2) as r:
                    body = r.read().decode()
                ups.append(body.count('"state":"up"'))
            if all(u >= 2 for u in ups):
                return procs, CLUSTER_MQTT[0], CLUSTER_MQTT[1]
        except OSError:
            pass
        time.sleep(0.3)
    for p in procs:
        stop(p)
    raise RuntimeError("cluster peers not up after 30 s")


def loadgen(args, port, label, pid=None, sub_port=None, pinned=True):
    cmd = (taskset(LOADGEN_CPU) if pinned else []) + [LOADGEN, "--host", HOST, "--port", str(port), "--label", label] + args
    if pid is not None:
        cmd += ["--broker-pid", str(pid)]
    if sub_port is not None:
        cmd += ["--sub-port", str(sub_port)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        return {"label": label, "errors": ["loadgen timed out after 180 s"]}
    if r.returncode != 0 or not r.stdout.strip():
        return {"label": label, "errors": [f"loadgen exit {r.returncode}: {r.stderr.strip()[-500:]}"]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def metric(rec, name):
    if name.startswith("conns"):
        return rec.get("rss_per_conn_kib") if name == "conns_rss" else rec.get("connects_per_s")
    if name.startswith("latency"):
        return rec.get("p99_us")
    return rec.get("msgs_per_s")


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=0):
    if x is None:
        return "n/a"
    if nd == 0:
        return f"{x:,.0f}"
    return f"{x:,.{nd}f}"


def machine():
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    model = sh("lscpu | sed -n 's/^Model name: *//p'") or platform.processor()
    return {
        "nproc": sh("nproc"),
        "cpu": model,
        "memory": f"{mem_kib / 1048576:.1f} GiB",
        "kernel": platform.release(),
    }


def ensure_mosquitto():
    if not shutil.which("mosquitto"):
        log("installing mosquitto with apt")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run("apt-get update -qq && apt-get install -y -qq --no-install-recommends mosquitto",
                       shell=True, check=True, env=env)
    # A packaged service would hold port 1883 and CPU: stop it (ours use other ports).
    if os.path.exists("/run/mosquitto/mosquitto.pid") or sh("pidof mosquitto"):
        subprocess.run("service mosquitto stop || systemctl stop mosquitto", shell=True,
                       capture_output=True)


def build():
    env = dict(os.environ, CARGO_TARGET_DIR=TARGET)
    log(f"building release binaries into {TARGET}")
    subprocess.run(["cargo", "build", "--release", "-p", "tern", "-p", "tern-bench"],
                   cwd=REPO, env=env, check=True)


GROUPS = ("main", "cluster", "durable", "restart")
SECTION_BEGIN = "<!-- durable-results:begin (benches/compare.py --only durable,restart) -->"
SECTION_END = "<!-- durable-results:end -->"


def read_section(path):
    """The durable section of `path` (markers included), or None."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    i, j = text.find(SECTION_BEGIN), text.find(SECTION_END)
    return text[i:j + len(SECTION_END)] if i >= 0 and j > i else None


def splice_section(path, section):
    """Replaces the durable section of `path`, or appends it."""
    if not section.startswith(SECTION_BEGIN):
        section = f"{SECTION_BEGIN}\n{section.rstrip()}\n{SECTION_END}"
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        text = ""
    old = read_section(path)
    text = text.replace(old, section) if old else text.rstrip() + "\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(text)


def durable_section(a, groups, raw, restarts, vals, totals, load_before, load_after, mosq_conf):
    """Markdown for the durable-throughput and restart results."""
    commit = sh(f"git -C {REPO} rev-parse --short HEAD")
    mach = machine()
    out = []
    w = out.append
    w("## Durable state: QoS 1 with persistence, and restart time\n")
    cmd = "python3 benches/compare.py" + ("" if "main" in groups else
                                          f" --only {','.join(sorted(groups & {'durable', 'restart'}))}")
    w(f"Generated by `{cmd}` on "
      f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} at commit `{commit}`, {a.runs} rounds, "
      f"{'quick sizes' if a.quick else 'full sizes'}; `nproc` {mach['nproc']}, {mach['cpu']}; load average "
      f"{load_before[0]:.2f} before, {load_after[0]:.2f} after (shared machine: absolute figures are noisy).\n")
    if "durable" in groups:
        n = 12500 if a.quick else 50000
        w("### QoS 1 throughput with persistence\n")
        w(f"Subscribers hold persistent sessions (clean session 0, `tern-loadgen --persistent`), so both brokers "
          f"persist their queues; {n:,} messages of 64 bytes, 10 clients, publishers keep 64 QoS 1 unacknowledged, "
          "brokers pinned to CPU 0 as in the main table.\n")
        w("- Tern: a data directory (`TERN_STORAGE__DIR`), `durability = \"group\"` and `group_commit_ms = 2` "
          "(defaults): a PUBACK is sent once the message is fdatasync'ed in every queue it went to.")
        w("- Mosquitto: `persistence true`, `autosave_interval` 1800 s and `autosave_on_changes false` (defaults): "
          "PUBACK at once, the in-memory state written to `mosquitto.db` every 30 minutes and at exit, so a crash "
          "loses up to 30 minutes of acknowledged messages.\n")
        if mosq_conf:
            w("```\n" + mosq_conf + "```\n")
        w("| scenario | Tern (data dir) msg/s | Mosquitto (persistence) msg/s | Tern/Mosquitto | Tern lost/dup/err | Mosquitto lost/dup/err |")
        w("| --- | ---: | ---: | ---: | ---: | ---: |")
        for scen, _ in durable_scenarios(a.quick):
            t = med(vals("tern-durable", scen, "msgs_per_s"))
            m = med(vals("mosquitto-persist", scen, "msgs_per_s"))
            tl, ml = totals("tern-durable", scen), totals("mosquitto-persist", scen)
            ratio = (t / m) if (t is not None and m) else None
            w(f"| {scen} | {fmt(t)} | {fmt(m)} | {fmt(ratio, 2)} | {tl[0]}/{tl[1]}/{tl[2]} | {ml[0]}/{ml[1]}/{ml[2]} |")
        w("")
        w("A Tern connection pipelines its QoS 1 acknowledgements: every PUBLISH it has read goes into the "
          "next group commit, and the PUBACKs follow in order once that commit is durable.\n")
    if restarts:
        w("### Restart with a million queued messages\n")
        queued = restarts[0].get("fill", {}).get("queued")
        w(f"`benches/restart.py`: {queued:,} QoS 1 messages (64 bytes) queued for one offline persistent "
          "session, then the broker restarted "
          f"{len(restarts[0]['runs'])} times; times from process start (medians). Tern is killed with SIGKILL "
          "(a crash); Mosquitto is stopped with SIGTERM (it saves its database only at exit and autosave, so "
          "after SIGKILL it would restart empty). Unpinned.\n")
        w("| broker | listening | /ready | CONNACK (session present) | first message | RSS then | data on disk | fill rate |")
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for rec in restarts:
            runs = rec["runs"]

            def m(key, runs=runs):
                v = med([r.get(key) for r in runs])
                return "n/a" if v is None else f"{v * 1000:,.0f} ms"
            rss = med([r.get("rss_mib") for r in runs])
            present = all(r.get("session_present") for r in runs)
            fill = rec.get("fill", {})
            w(f"| {rec['broker']} | {m('listen_s')} | {m('ready_s')} | {m('connack_s')}{'' if present else ' (no session!)'} "
              f"| {m('first_s')} | {fmt(rss)} MiB | {fmt(rec.get('data_dir_mib'))} MiB "
              f"| {fmt(fill.get('msgs_per_s'))} msg/s |")
        w("")
        w("Tern reads at start only each session's first `storage.max_in_memory_per_session` (1,000) queued "
          "messages and counts the rest; Mosquitto loads its whole database into memory. "
          "Raw results: `benches/results.jsonl` after a full run, `benches/results-durable.jsonl` after "
          "`--only durable,restart`.\n")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--skip-cluster", action="store_true")
    ap.add_argument("--out", default=os.path.join(REPO, "benches", "RESULTS.md"))
    ap.add_argument("--notes", default=os.path.join(REPO, "benches", "NOTES.md"),
                    help="markdown appended to RESULTS.md (changes made, analysis)")
    ap.add_argument("--only", default=",".join(GROUPS),
                    help=f"comma-separated scenario groups to run, of {', '.join(GROUPS)}")
    a = ap.parse_args()
    groups = {g.strip() for g in a.only.split(",") if g.strip()}
    unknown = groups - set(GROUPS)
    if unknown:
        ap.error(f"unknown group(s) {', '.join(sorted(unknown))}; known: {', '.join(GROUPS)}")
    if a.skip_cluster:
        groups.discard("cluster")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))

    ensure_mosquitto()
    if not a.no_build:
        build()
    started = time.time()
    load_before = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="tern-bench-")
    os.chmod(tmp, 0o755)
    conf_path = os.path.join(tmp, "mosquitto.conf")
    mosq_conf = mosquitto_conf(conf_path)

    raw = []
    # results.jsonl is the main table's, results-durable.jsonl the durable
    # section's; a run of neither (e.g. `--only cluster`) keeps its raw
    # results in its temporary directory and overwrites neither.
    if "main" in groups:
        jsonl_path = os.path.join(REPO, "benches", "results.jsonl")
    elif groups & {"durable", "restart"}:
        jsonl_path = os.path.join(REPO, "benches", "results-durable.jsonl")
    else:
        jsonl_path = os.path.join(tmp, "results.jsonl")
    log(f"raw results: {jsonl_path}")
    jsonl = open(jsonl_path, "w")

    def record(broker, scen, rnd, rec):
        rec.update({"broker": broker, "name": scen, "round": rnd})
        raw.append(rec)
        jsonl.write(json.dumps(rec) + "\n")
        jsonl.flush()
        errs = rec.get("errors") or []
        log(f"  {broker:10} {scen:12} msgs/s={fmt(rec.get('msgs_per_s'))} p99={rec.get('p99_us')} "
            f"rss/conn={rec.get('rss_per_conn_kib')} lost={rec.get('lost')} dup={rec.get('dup')} {errs[:1]}")

    for rnd in range(1, a.runs + 1):
        log(f"round {rnd}/{a.runs} (load {os.getloadavg()[0]:.2f})")
        for broker, starter in (("tern", start_tern), ("mosquitto", lambda: start_mosquitto(conf_path))):
            if "main" not in groups:
                break
            procs, port, _ = starter()
            try:
                for scen, args in scenarios(a.quick):
                    record(broker, scen, rnd, loadgen(args, port, broker, pid=procs[0].pid))
            finally:
                for p in procs:
                    stop(p)
        if "durable" in groups:
            # Fresh data directories each round: every run starts empty.
            rtmp = tempfile.mkdtemp(prefix=f"tern-durable-{rnd}-", dir=tmp)
            os.makedirs(os.path.join(rtmp, "tern"))
            os.makedirs(os.path.join(rtmp, "mosquitto"))
            os.chmod(os.path.join(rtmp, "mosquitto"), 0o777)  # started as root, Mosquitto runs as mosquitto
            os.chmod(rtmp, 0o755)
            mconf = os.path.join(rtmp, "mosquitto.conf")
            durable_conf = mosquitto_conf(mconf, persistence=os.path.join(rtmp, "mosquitto"))
            for broker, starter in (("tern-durable", lambda: start_tern_durable(os.path.join(rtmp, "tern"))),
                                    ("mosquitto-persist", lambda: start_mosquitto(mconf))):
                procs, port, _ = starter()
                try:
                    for scen, args in durable_scenarios(a.quick):
                        record(broker, scen, rnd, loadgen(args, port, broker))
                finally:
                    for p in procs:
                        stop(p)
        if "cluster" in groups:
            # Unpinned, like the single-node reference run next to it: three
            # nodes on one core would measure CPU sharing, not the cluster.
            procs, port, _ = start_tern(pinned=False)
            try:
                for scen, args in cluster_scenarios(a.quick):
                    record("tern-unpinned", scen, rnd, loadgen(args, port, "tern-unpinned", pinned=False))
            finally:
                for p in procs:
                    stop(p)
            procs, pub_port, sub_port = start_cluster()
            try:
                for scen, args in cluster_scenarios(a.quick):
                    record("tern-cluster", scen, rnd,
                           loadgen(args, pub_port, "tern-cluster", sub_port=sub_port, pinned=False))
            finally:
                for p in procs:
                    stop(p)
    restarts = []
    if "restart" in groups:
        import restart
        restarts = restart.run(250000 if a.quick else 1000000, a.runs)
        for rec in restarts:
            jsonl.write(json.dumps(rec) + "\n")
    jsonl.close()
    load_after = os.getloadavg()
    elapsed = time.time() - started

    def vals(broker, scen, key):
        return [r.get(key) for r in raw if r["broker"] == broker and r["name"] == scen]

    def totals(broker, scen):
        lost = sum((r.get("lost") or 0) for r in raw if r["broker"] == broker and r["name"] == scen)
        dup = sum((r.get("dup") or 0) for r in raw if r["broker"] == broker and r["name"] == scen)
        errs = sum(len(r.get("errors") or []) for r in raw if r["broker"] == broker and r["name"] == scen)
        return lost, dup, errs

    if groups & {"durable", "restart"}:
        section = durable_section(a, groups, raw, restarts, vals, totals, load_before, load_after,
                                  durable_conf if "durable" in groups else None)
        splice_section(a.out, section)
        log(f"wrote the durable section of {a.out}")
    if "main" not in groups:
        # No table to write: the cluster medians go to the log.
        if "cluster" in groups:
            for scen, _ in cluster_scenarios(a.quick):
                c = med(vals("tern-cluster", scen, "msgs_per_s"))
                s = med(vals("tern-unpinned", scen, "msgs_per_s"))
                ratio = f"{c / s:.2f}" if (c and s) else "n/a"
                lost, dup, errs = totals("tern-cluster", scen)
                log(f"cluster {scen}: cross-node {fmt(c)} msg/s, single node {fmt(s)} msg/s, "
                    f"cross/single {ratio}, lost/dup/err {lost}/{dup}/{errs}")
        return

    rows = []
    for scen, _ in scenarios(a.quick):
        if scen == "conns":
            specs = [("conns: broker RSS per idle connection (KiB, lower is better)", "rss_per_conn_kib", False),
                     ("conns: connect rate (conn/s)", "connects_per_s", True)]
        elif scen.startswith("latency"):
            specs = [(f"{scen}: p50 at 5k msg/s (µs)", "p50_us", False),
                     (f"{scen}: p99 at 5k msg/s (µs, lower is better)", "p99_us", False),
                     (f"{scen}: p999 at 5k msg/s (µs)", "p999_us", False)]
        else:
            specs = [(f"{scen}: throughput (msg/s delivered)", "msgs_per_s", True)]
        for title, key, higher in specs:
            t = med(vals("tern", scen, key))
            m = med(vals("mosquitto", scen, key))
            ratio = (t / m) if (t is not None and m) else None
            tl = totals("tern", scen)
            ml = totals("mosquitto", scen)
            rows.append((title, t, m, ratio, higher, tl, ml))

    cluster_rows = []
    if not a.skip_cluster:
        for scen, _ in cluster_scenarios(a.quick):
            c = med(vals("tern-cluster", scen, "msgs_per_s"))
            s = med(vals("tern-unpinned", scen, "msgs_per_s"))
            cluster_rows.append((scen, c, s, (c / s) if (c and s) else None, totals("tern-cluster", scen)))

    mach = machine()
    tern_version = sh(f"{TERN} --version") or "tern"
    mosq_version = sh("mosquitto -h | head -1")
    commit = sh(f"git -C {REPO} rev-parse --short HEAD")
    out = []
    w = out.append
    w("# Tern vs Mosquitto: benchmark results\n")
    w(f"Generated by `python3 benches/compare.py` on {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} "
      f"at commit `{commit}`, {a.runs} interleaved rounds (Tern, Mosquitto, Tern cluster, then again), "
      f"{'quick sizes' if a.quick else 'full sizes'}; the run took {elapsed / 60:.1f} min. "
      "Each figure is the median of the rounds; raw JSON lines are in `benches/results.jsonl`.\n")
    w("## Machine\n")
    w(f"- `nproc`: {mach['nproc']}; CPU: {mach['cpu']}; memory: {mach['memory']}; kernel: {mach['kernel']}")
    w(f"- Load average (1/5/15 min) before the run: {load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f}; "
      f"after: {load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f}. The machine is shared with other "
      "engineers' builds, so absolute numbers are noisy; ratios come from the same rounds.")
    w(f"- Pinning: brokers on CPU {BROKER_CPU} (`taskset`), the load generator on CPU {LOADGEN_CPU}. "
      "Tern's tokio runtime therefore has one worker: a per-core comparison with single-threaded Mosquitto. "
      "The cluster comparison runs unpinned (3 nodes, load generator and a single-node reference alike).\n")
    w("## Brokers\n")
    w(f"- Tern: `{tern_version}`, release build (`lto = \"thin\"`), {TERN_CONFIG_DESC}.")
    w(f"- Mosquitto: `{mosq_version}` (Debian package), config:\n")
    w("```\n" + mosq_conf + "```\n")
    w("- rumqttd: not included (its dependency tree does not build quickly enough for this run; see notes).\n")
    w("## Scenarios\n")
    w("`tern-loadgen` (benches/src/bin/loadgen.rs) speaks raw MQTT 3.1.1; payloads carry publisher id, "
      "sequence number and timestamp, so every subscriber counts losses and duplicates. Publishers never drop: "
      "QoS 1 publishers keep at most 64 PUBLISHes unacknowledged, and all publishers pause while more than "
      "20,000 deliveries are outstanding end to end. 64-byte payloads.\n")
    k = 4 if a.quick else 1
    w(f"- fanin: 10 publishers → 1 subscriber (`+` filter), {500000 // k:,} messages.")
    w(f"- fanout: 1 publisher → 10 subscribers, {50000 // k:,} messages ({500000 // k:,} deliveries).")
    w(f"- pairs: 10 publisher/subscriber pairs, {500000 // k:,} messages.")
    w("- latency: 1 publisher at 5,000 msg/s, 1 subscriber; percentiles of publish-to-receive time.")
    w(f"- conns: {2000 if a.quick else 10000:,} idle connections (64 handshakes in flight); broker VmRSS growth / connections.")
    w("- cluster: pairs with publishers on node 1 and subscribers on node 2 of a 3-node Tern cluster.\n")
    w("## Results (medians)\n")
    w("| scenario | Tern | Mosquitto | Tern/Mosquitto | Tern lost/dup/err | Mosquitto lost/dup/err |")
    w("| --- | ---: | ---: | ---: | ---: | ---: |")
    for title, t, m, ratio, higher, tl, ml in rows:
        # Three decimals: the two brokers differ in the second one.
        nd = 3 if "KiB" in title else 0
        w(f"| {title} | {fmt(t, nd)} | {fmt(m, nd)} | {fmt(ratio, 2)}{'' if higher else ' (lower is better)' if ratio is not None and False else ''} "
          f"| {tl[0]}/{tl[1]}/{tl[2]} | {ml[0]}/{ml[1]}/{ml[2]} |")
    w("")
    w("Ratios are Tern ÷ Mosquitto: above 1 is better for Tern in throughput and connect rate, below 1 is better "
      "for Tern in latency and memory. lost/dup/err are summed over the rounds.\n")
    if cluster_rows:
        w("## Cluster cross-node (Tern, 3 nodes)\n")
        w("| scenario | cross-node msg/s | single node msg/s | cross/single | lost/dup/err |")
        w("| --- | ---: | ---: | ---: | ---: |")
        for scen, c, s, ratio, tot in cluster_rows:
            w(f"| {scen} | {fmt(c)} | {fmt(s)} | {fmt(ratio, 2)} | {tot[0]}/{tot[1]}/{tot[2]} |")
        w("")
    if os.path.exists(a.notes):
        with open(a.notes) as f:
            w(f.read())
    kept = read_section(a.out)
    with open(a.out, "w") as f:
        f.write("\n".join(out) + "\n")
    if kept:
        splice_section(a.out, kept)
    log(f"wrote {a.out} in {elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
