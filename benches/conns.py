#!/usr/bin/env python3
"""Idle-connection RSS as compare.py's conns scenario (10,000 idle 3.1.1 connections, broker on CPU 0,
loadgen on CPU 1, TERN_LOG=warn, VmRSS growth / connections), variants interleaved per round, for
before/after comparisons of builds and settings.

usage: conns.py LOADGEN ROUNDS NAME=BINARY[,ENV=VALUE...] ...
  BINARY `mosquitto` runs Mosquitto (Debian package) with compare.py's configuration.
example:
  conns.py target/release/tern-loadgen 3 before=/tmp/tern-old after=target/release/tern \\
      after-off=target/release/tern,TERN_LIMITS__HIBERNATE_AFTER_MS=0 mosquitto=mosquitto
"""
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import stop, wait_port  # noqa: E402  (the same broker handling as the full comparison)

HOST = "127.0.0.1"
PORT = 27930
ADMIN = 27950


def variants(args):
    out = []
    for a in args:
        name, rest = a.split("=", 1)
        binary, *env = rest.split(",")
        out.append((name, None if binary == "mosquitto" else binary, dict(e.split("=", 1) for e in env)))
    return out


def start(binary, extra):
    if binary is None:
        with open("/tmp/conns-mosquitto.conf", "w") as f:
            f.write(f"listener {PORT} {HOST}\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 100000\nmax_inflight_messages 100\nlog_dest none\n")
        cmd = ["taskset", "-c", "0", "mosquitto", "-c", "/tmp/conns-mosquitto.conf"]
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(os.environ, TERN_LOG="warn", TERN_LISTENERS__TCP__BIND=f"{HOST}:{PORT}",
               TERN_ADMIN__BIND=f"{HOST}:{ADMIN}", TERN_MQTT__MAX_ONLINE_MESSAGES="100000",
               TERN_MQTT__MAX_OFFLINE_MESSAGES="100000", TERN_MQTT__MAX_INFLIGHT="100", **extra)
    return subprocess.Popen(["taskset", "-c", "0", binary], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    loadgen, rounds, runs = sys.argv[1], int(sys.argv[2]), variants(sys.argv[3:])
    res = {}
    for r in range(rounds):
        for name, binary, extra in runs:
            p = start(binary, extra)
            try:
                wait_port(PORT, p)
                time.sleep(0.5)
                cmd = ["taskset", "-c", "1", loadgen, "--host", HOST, "--port", str(PORT), "--label", name,
                       "--scenario", "conns", "--clients", "10000", "--broker-pid", str(p.pid)]
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
                rec = json.loads(out.strip().splitlines()[-1])
            finally:
                stop(p)
            print(r, name, "connected", rec.get("connected"), "errors", rec.get("errors"),
                  "KiB/conn", rec.get("rss_per_conn_kib"), "conn/s", round(rec.get("connects_per_s") or 0),
                  flush=True)
            res.setdefault(name, []).append(rec.get("rss_per_conn_kib"))
            time.sleep(1)
    for k, v in res.items():
        print(f"{k}: median {statistics.median(v):.3f} KiB/conn {v}")


if __name__ == "__main__":
    main()
