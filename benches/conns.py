#!/usr/bin/env python3
"""Idle-connection RSS as compare.py's conns scenario (10,000 idle 3.1.1 connections, broker on CPU 0,
loadgen on CPU 1, TERN_LOG=warn, VmRSS growth / connections), variants interleaved per round.
usage: conns.py LOADGEN BASE_TERN NEW_TERN ROUNDS"""
import json, os, subprocess, sys, time, socket, statistics, signal
HOST="127.0.0.1"; PORT=27930; ADMIN=27950
LOADGEN, BASE, NEW = sys.argv[1], sys.argv[2], sys.argv[3]; ROUNDS=int(sys.argv[4])
VARIANTS=[("tern-base",BASE,{}),("tern-new (off)",NEW,{}),
          ("tern-new hibernate 1000ms",NEW,{"TERN_LIMITS__HIBERNATE_AFTER_MS":"1000"}),
          ("tern-new hibernate 100ms",NEW,{"TERN_LIMITS__HIBERNATE_AFTER_MS":"100"}),
          ("mosquitto",None,{})]
def wait_port(p):
    for _ in range(200):
        try:
            socket.create_connection((HOST,p),timeout=0.5).close(); return
        except OSError: time.sleep(0.1)
    raise SystemExit("no port")
def start(binary, extra):
    if binary is None:
        open("/tmp/mosq.conf","w").write(f"listener {PORT} {HOST}\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\nmax_inflight_messages 100\nlog_dest none\n")
        return subprocess.Popen(["taskset","-c","0","mosquitto","-c","/tmp/mosq.conf"],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
    env=dict(os.environ, TERN_LOG="warn", TERN_LISTENERS__TCP__BIND=f"{HOST}:{PORT}", TERN_ADMIN__BIND=f"{HOST}:{ADMIN}",
             TERN_MQTT__MAX_ONLINE_MESSAGES="100000", TERN_MQTT__MAX_OFFLINE_MESSAGES="100000", TERN_MQTT__MAX_INFLIGHT="100", **extra)
    return subprocess.Popen(["taskset","-c","0",binary],env=env,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
res={}
for r in range(ROUNDS):
    for name,binary,extra in VARIANTS:
        p=start(binary,extra); wait_port(PORT); time.sleep(0.5)
        out=subprocess.run(["taskset","-c","1",LOADGEN,"--host",HOST,"--port",str(PORT),"--label",name,"--scenario","conns","--clients","10000","--broker-pid",str(p.pid)],capture_output=True,text=True,timeout=300).stdout
        rec=json.loads(out.strip().splitlines()[-1])
        p.send_signal(signal.SIGTERM)
        try: p.wait(timeout=20)
        except subprocess.TimeoutExpired: p.kill(); p.wait()
        print(r,name,rec.get("connected"),rec.get("errors"),rec.get("rss_per_conn_kib"),flush=True)
        res.setdefault(name,[]).append(rec.get("rss_per_conn_kib"))
        time.sleep(1)
for k,v in res.items(): print(f"{k}: median {statistics.median(v):.3f} KiB/conn {v}")
