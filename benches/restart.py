#!/usr/bin/env python3
"""Restart time with a long offline queue: Tern (data directory) vs Mosquitto
(persistence true).

    python3 benches/restart.py [--messages 1000000] [--runs 3] [--no-build]

For each broker: a persistent subscriber `fill-sub` subscribes to
`bench/fill` (QoS 1) and leaves; `tern-loadgen --scenario fill` queues
`--messages` QoS 1 messages for it (64-byte payloads). Then, `--runs` times,
the broker is stopped and started again, and we measure from process start
to: the listener accepting (`listen`), `/ready` answering 200 (Tern),
CONNACK with session present for `fill-sub` (`connack`), and its first
queued message (`first`); and the broker's VmRSS at that point.

Tern is stopped with SIGKILL (a crash: the journal is replayed); it is
filled with `durability = "none"` (the fill is setup, not what is measured;
the restart reads the same store either way). Mosquitto is stopped with
SIGTERM, because it writes its database only at `autosave_interval`
(default 1800 s) and at exit: after SIGKILL it would come back empty.

Used by compare.py (`--only restart`); prints one JSON object per broker.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (shared paths and process helpers)

HOST = compare.HOST
PORT, ADMIN = 27870, 27871


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def connect_fill_sub(deadline):
    """CONNECT as fill-sub (clean session 0); returns (socket, session_present)."""
    while True:
        try:
            s = socket.create_connection((HOST, PORT), timeout=max(0.1, deadline - time.monotonic()))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    cid = b"fill-sub"
    body = b"\x00\x04MQTT\x04\x00\x00\x00" + len(cid).to_bytes(2, "big") + cid
    s.sendall(bytes([0x10, len(body)]) + body)
    ack = recv_exact(s, 4)
    if ack[0] != 0x20 or ack[3] != 0:
        raise RuntimeError(f"CONNACK refused: {ack!r}")
    return s, bool(ack[2] & 1)


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise RuntimeError("closed by broker")
        out += chunk
    return out


def first_publish(s):
    first = recv_exact(s, 1)[0]
    if first >> 4 != 3:
        raise RuntimeError(f"expected PUBLISH, got packet type {first >> 4}")
    return first


def wait_ready(deadline):
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{ADMIN}/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError("/ready not 200 in time")


def wait_listen(deadline):
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, PORT), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.005)
    raise RuntimeError("not listening in time")


def tern_env(data, durability):
    return compare.tern_env(PORT, ADMIN, {
        "TERN_STORAGE__DIR": data,
        "TERN_STORAGE__DURABILITY": durability,
        "TERN_MQTT__MAX_OFFLINE_MESSAGES": "2000000",
    })


def mosquitto_conf(tmp):
    path = os.path.join(tmp, "mosquitto.conf")
    with open(path, "w") as f:
        f.write("\n".join([
            f"listener {PORT} {HOST}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {tmp}/",
            "max_queued_messages 2000000",
            "max_inflight_messages 100",
            "log_dest none",
            "",
        ]))
    return path


def measure(start, is_tern, timeout=600):
    """Starts the broker, returns the timings (s) and RSS once the first message arrived."""
    t0 = time.monotonic()
    p = start()
    deadline = t0 + timeout
    out = {}
    try:
        wait_listen(deadline)
        out["listen_s"] = time.monotonic() - t0
        if is_tern:
            wait_ready(deadline)
            out["ready_s"] = time.monotonic() - t0
        s, present = connect_fill_sub(deadline)
        out["connack_s"] = time.monotonic() - t0
        out["session_present"] = present
        first_publish(s)
        out["first_s"] = time.monotonic() - t0
        out["rss_mib"] = rss_mib(p.pid)
        s.close()  # no PUBACK: the message stays queued for the next run
    except Exception:
        compare.stop(p)
        raise
    return p, out


def run_broker(name, start, stop, fill_env_start, messages, runs):
    fill_p = fill_env_start()
    compare.wait_port(PORT, fill_p)
    fill = compare.loadgen(["--scenario", "fill", "--clients", "16", "--messages", str(messages),
                            "--window", "64"], PORT, name, pinned=False)
    stop(fill_p)
    results = []
    for _ in range(runs):
        p, r = measure(start, name == "tern")
        stop(p)
        results.append(r)
    return {"broker": name, "fill": fill, "runs": results}


def kill9(p):
    p.send_signal(signal.SIGKILL)
    p.wait()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=1000000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--skip-mosquitto", action="store_true")
    a = ap.parse_args(argv)
    if not a.no_build:
        compare.build()
    return run(a.messages, a.runs, not a.skip_mosquitto)


def run(messages, runs, mosquitto=True):
    out = []
    tmp = tempfile.mkdtemp(prefix="tern-restart-")
    os.chmod(tmp, 0o755)
    try:
        data = os.path.join(tmp, "tern")
        os.makedirs(data)
        devnull = subprocess.DEVNULL

        def tern(durability):
            return lambda: subprocess.Popen([compare.TERN], env=tern_env(data, durability),
                                            stdout=devnull, stderr=devnull)
        res = run_broker("tern", tern("group"), kill9, tern("none"), messages, runs)
        res["data_dir_mib"] = dir_mib(data)
        out.append(res)
        print(json.dumps(res), flush=True)
        if mosquitto:
            compare.ensure_mosquitto()
            mtmp = os.path.join(tmp, "mosquitto")
            os.makedirs(mtmp)
            os.chmod(mtmp, 0o777)  # started as root, Mosquitto runs as user mosquitto
            conf = mosquitto_conf(mtmp)

            def mosq():
                return subprocess.Popen(["mosquitto", "-c", conf], stdout=devnull, stderr=devnull)
            res = run_broker("mosquitto", mosq, compare.stop, mosq, messages, runs)
            res["data_dir_mib"] = dir_mib(mtmp)
            out.append(res)
            print(json.dumps(res), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def dir_mib(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total / 1048576


if __name__ == "__main__":
    main()
