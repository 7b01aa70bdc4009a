#!/usr/bin/env python3
"""Profiles Tern under compare.py's pairs scenario, single node or 3-node cluster.

  profile.py stat   [--qos Q] [--dir RELEASE_DIR]
      perf stat (task-clock, context switches, page faults, futex/read/write
      syscalls) of the single node, then of cluster nodes 1 and 2 and the load
      generator, during one pairs run each.
  profile.py record [--qos Q] [--dir RELEASE_DIR] [--messages N] [--out PREFIX]
      perf record --call-graph dwarf of cluster nodes 1 and 2 during one pairs
      run (PREFIX.n1.data, PREFIX.n2.data); PERF_FREQ sets the sampling rate
      (250 Hz by default).
  profile.py callees DATA SYMBOL
      for samples whose stack holds SYMBOL: the frames right below it, as % of
      all samples (what a function's time is made of).
  profile.py shares DATA [MARKER ...]
      each sample counted under the first MARKER its stack holds (outermost
      first in the list): where a node's time goes, by task.

RELEASE_DIR holds `tern` and `tern-loadgen` (default: compare.py's build). Needs
`perf` (linux-perf); the machine's noise makes single runs rough: compare shares
of one profile, and CPU seconds across interleaved runs (cluster_ab.py).
"""
import argparse
import collections
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare as c  # noqa: E402  (the same brokers, cluster and loadgen handling)

STAT_EVENTS = ",".join([
    "task-clock", "context-switches", "cpu-migrations", "page-faults",
    "syscalls:sys_enter_futex", "syscalls:sys_enter_writev", "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_recvfrom", "syscalls:sys_enter_epoll_wait",
])
SHARES = ["process_all_input", "ProstDecoder", "service::handle", "fill_wbuf", "write_now",
          "Streaming<T>", "link::connect", "h2::", "hyper::", "schedule", "park", "epoll"]


def scenario(qos, messages=None):
    args = dict(c.cluster_scenarios(False))[f"pairs_q{qos}"]
    if messages:
        args = [str(messages) if a == "500000" else a for a in args]
    return args


def use(d):
    c.TERN = os.path.join(d, "tern")
    c.LOADGEN = os.path.join(d, "tern-loadgen")


def stat_rows(path):
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].replace(",", "").replace(".", "").isdigit():
                rows.append(f"{parts[1].replace('syscalls:sys_enter_', '')}={parts[0]}")
    return " ".join(r for r in rows if not r.startswith("seconds"))


def stat(a):
    use(a.dir)
    for kind in ("single", "cluster"):
        procs, port, sub = c.start_tern(pinned=False) if kind == "single" else c.start_cluster()
        outs = [f"/tmp/tern-stat.{kind}.{i}" for i in range(1 if kind == "single" else 2)]
        try:
            perfs = [subprocess.Popen(["perf", "stat", "-e", STAT_EVENTS, "-p", str(procs[i].pid), "-o", o],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for i, o in enumerate(outs)]
            time.sleep(0.3)
            lg = f"/tmp/tern-stat.{kind}.loadgen"
            cmd = ["perf", "stat", "-e", STAT_EVENTS, "-o", lg, "--", c.LOADGEN, "--host", c.HOST,
                   "--port", str(port), "--label", kind] + scenario(a.qos) + (["--sub-port", str(sub)] if sub else [])
            out = subprocess.run(cmd, capture_output=True, text=True).stdout
            for p in perfs:
                p.send_signal(2)
            for p in perfs:
                p.wait()
        finally:
            for p in procs:
                c.stop(p)
        rate = out.strip().splitlines()[-1] if out.strip() else "{}"
        print(kind, rate[:200])
        for name, o in zip(["node 1" if kind == "cluster" else "broker", "node 2"], outs):
            print(f"  {name}: {stat_rows(o)}")
        print(f"  loadgen: {stat_rows(lg)}")


def record(a):
    use(a.dir)
    procs, port, sub = c.start_cluster()
    try:
        perfs = [subprocess.Popen(["perf", "record", "-F", os.environ.get("PERF_FREQ", "250"), "--call-graph", "dwarf,16384",
                                   "-o", f"{a.out}.n{i + 1}.data", "-p", str(procs[i].pid)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in (0, 1)]
        time.sleep(0.5)
        rec = c.loadgen(scenario(a.qos, a.messages), port, "profile", sub_port=sub, pinned=False)
        for p in perfs:
            p.send_signal(2)
        for p in perfs:
            p.wait()
        print(f"{rec.get('msgs_per_s')} msg/s, lost {rec.get('lost')}; wrote {a.out}.n1.data, {a.out}.n2.data")
    finally:
        for p in procs:
            c.stop(p)


def samples(data):
    out = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym"],
                         capture_output=True, text=True, check=True).stdout
    stacks, cur = [], []
    for line in out.splitlines():
        if not line.strip():
            if cur:
                stacks.append(cur)
            cur = []
            continue
        cur.append(line.strip().split(" ", 1)[-1])
    if cur:
        stacks.append(cur)
    return stacks


def callees(a):
    stacks = samples(a.data)
    count = collections.Counter()
    hits = 0
    for s in stacks:
        at = [i for i, f in enumerate(s) if a.symbol in f]
        if not at:
            continue
        hits += 1
        i = at[-1]  # the outermost frame of the symbol: recursion counted once
        count[s[i - 1][:120] if i > 0 else "<self>"] += 1
    n = len(stacks) or 1
    print(f"{a.symbol}: {hits}/{len(stacks)} samples = {100 * hits / n:.1f} %")
    for k, v in count.most_common(25):
        print(f"  {100 * v / n:5.1f} %  {k}")


def shares(a):
    stacks = samples(a.data)
    markers = a.markers or SHARES
    count = collections.Counter()
    for s in stacks:
        joined = "\n".join(s)
        count[next((m for m in markers if m in joined), "other: " + s[0][:60])] += 1
    n = len(stacks) or 1
    for k, v in count.most_common(30):
        print(f"{100 * v / n:5.1f} %  {k}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("stat", "record"):
        p = sub.add_parser(name)
        p.add_argument("--qos", default="0", choices=["0", "1"])
        p.add_argument("--dir", default=os.path.join(c.TARGET, "release"))
        if name == "record":
            p.add_argument("--messages", type=int, default=3_000_000)
            p.add_argument("--out", default="/tmp/tern-profile")
    p = sub.add_parser("callees")
    p.add_argument("data")
    p.add_argument("symbol")
    p = sub.add_parser("shares")
    p.add_argument("data")
    p.add_argument("markers", nargs="*")
    a = ap.parse_args()
    {"stat": stat, "record": record, "callees": callees, "shares": shares}[a.cmd](a)


if __name__ == "__main__":
    main()
