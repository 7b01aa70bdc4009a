#!/usr/bin/env python3
"""Interleaved A/B of compare.py's cluster scenarios for builds of Tern: per round and
build, the single node (unpinned) and the 3-node cluster, msg/s and the CPU seconds of
each node (/proc/<pid>/stat utime+stime around each loadgen run). The order of the builds
alternates per round. CPU seconds are the steadier figure on a shared machine.

usage: cluster_ab.py ROUNDS NAME=RELEASE_DIR ...   (each dir holds `tern`; the first one's
       `tern-loadgen` drives every build). Raw rows go to $AB_OUT (default /tmp/cluster_ab.jsonl).
example:
  cluster_ab.py 4 before=/tmp/old/release after=target/bench/release
"""
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare as c  # noqa: E402  (the same brokers, cluster and loadgen handling)

TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / TICK


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    rounds = int(sys.argv[1])
    variants = [a.split("=", 1) for a in sys.argv[2:]]
    c.LOADGEN = os.path.join(variants[0][1], "tern-loadgen")
    res = []
    with open(os.environ.get("AB_OUT", "/tmp/cluster_ab.jsonl"), "a") as out:
        for r in range(rounds):
            for name, d in (variants if r % 2 == 0 else variants[::-1]):
                c.TERN = os.path.join(d, "tern")
                for kind in ("single", "cluster"):
                    procs, port, sub = c.start_tern(pinned=False) if kind == "single" else c.start_cluster()
                    try:
                        for scen, args in c.cluster_scenarios(False):
                            before = [cpu(p.pid) for p in procs]
                            rec = c.loadgen(args, port, kind, sub_port=sub, pinned=False)
                            after = [cpu(p.pid) for p in procs]
                            row = {"variant": name, "kind": kind, "scen": scen, "round": r,
                                   "msgs_per_s": rec.get("msgs_per_s"), "lost": rec.get("lost"),
                                   "dup": rec.get("dup"), "errors": rec.get("errors"),
                                   "cpu": [round(b - a, 2) for a, b in zip(before, after)],
                                   "load": os.getloadavg()[0]}
                            res.append(row)
                            out.write(json.dumps(row) + "\n")
                            out.flush()
                            print(f"r{r} {name} {kind} {scen} {row['msgs_per_s']} cpu={row['cpu']} "
                                  f"lost={row['lost']} dup={row['dup']} load={row['load']:.1f}", flush=True)
                    finally:
                        for p in procs:
                            c.stop(p)
    for scen, _ in c.cluster_scenarios(False):
        for name, _ in variants:
            def rows(k):
                return [x for x in res if x["variant"] == name and x["scen"] == scen and x["kind"] == k]
            cm = med([x["msgs_per_s"] for x in rows("cluster")])
            sm = med([x["msgs_per_s"] for x in rows("single")])
            n1 = med([x["cpu"][0] for x in rows("cluster")])
            n2 = med([x["cpu"][1] for x in rows("cluster")])
            s1 = med([x["cpu"][0] for x in rows("single")])
            print(f"{scen} {name}: cross {cm:,.0f} single {sm:,.0f} cross/single {cm / sm:.2f}; "
                  f"CPU-s node 1 {n1:.2f}, node 2 {n2:.2f}, single {s1:.2f}")


if __name__ == "__main__":
    main()
