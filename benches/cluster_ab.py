#!/usr/bin/env python3
"""Interleaved A/B of compare.py's cluster scenarios for builds of Tern: per round and
build, the single node (unpinned) and the 3-node cluster, msg/s and the CPU seconds of
each node (its threads' schedstat around each loadgen run). The order of the builds
alternates per round. CPU seconds are the steadier figure on a shared machine.

usage: cluster_ab.py ROUNDS NAME=RELEASE_DIR ...   (each dir holds `tern`; the first one's
       `tern-loadgen` drives every build). Raw rows go to $AB_OUT (default /tmp/cluster_ab.jsonl).
       AB_MESSAGES=N runs N messages instead of 500,000; AB_QOS=0 or 1 keeps one QoS level.
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
    """CPU seconds of the process's live threads, to the nanosecond (schedstat); the
    clock-tick figure of /proc/PID/stat (10 ms) is too coarse for one run."""
    total = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass  # a thread that just ended
    except OSError:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / TICK
    return total / 1e9


def scenarios():
    """compare.py's cluster scenarios; AB_MESSAGES scales the message count, AB_QOS
    keeps one QoS level."""
    out = []
    for scen, args in c.cluster_scenarios(False):
        if os.environ.get("AB_QOS") and not scen.endswith("q" + os.environ["AB_QOS"]):
            continue
        if os.environ.get("AB_MESSAGES"):
            args = [os.environ["AB_MESSAGES"] if a == "500000" else a for a in args]
        out.append((scen, args))
    return out


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
                        for scen, args in scenarios():
                            before = [cpu(p.pid) for p in procs]
                            rec = c.loadgen(args, port, kind, sub_port=sub, pinned=False)
                            after = [cpu(p.pid) for p in procs]
                            row = {"variant": name, "kind": kind, "scen": scen, "round": r,
                                   "msgs_per_s": rec.get("msgs_per_s"), "lost": rec.get("lost"),
                                   "dup": rec.get("dup"), "errors": rec.get("errors"),
                                   "cpu": [round(b - a, 3) for a, b in zip(before, after)],
                                   "load": os.getloadavg()[0]}
                            res.append(row)
                            out.write(json.dumps(row) + "\n")
                            out.flush()
                            print(f"r{r} {name} {kind} {scen} {row['msgs_per_s']} cpu={row['cpu']} "
                                  f"lost={row['lost']} dup={row['dup']} load={row['load']:.1f}", flush=True)
                    finally:
                        for p in procs:
                            c.stop(p)
    for scen, _ in scenarios():
        for name, _ in variants:
            def rows(k):
                return [x for x in res if x["variant"] == name and x["scen"] == scen and x["kind"] == k]
            cm = med([x["msgs_per_s"] for x in rows("cluster")])
            sm = med([x["msgs_per_s"] for x in rows("single")])
            n1 = med([x["cpu"][0] for x in rows("cluster")])
            n2 = med([x["cpu"][1] for x in rows("cluster")])
            s1 = med([x["cpu"][0] for x in rows("single")])
            ratios = [x["msgs_per_s"] / y["msgs_per_s"] for x, y in zip(rows("cluster"), rows("single"))
                      if x["msgs_per_s"] and y["msgs_per_s"]]
            print(f"{scen} {name}: cross {cm:,.0f} single {sm:,.0f} cross/single {cm / sm:.2f} "
                  f"(per round {med(ratios):.2f}); CPU-s node 1 {n1:.3f}, node 2 {n2:.3f}, single {s1:.3f}")


if __name__ == "__main__":
    main()
