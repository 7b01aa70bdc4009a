#!/usr/bin/env python3
"""Interop check with Eclipse Paho (paho-mqtt 2.x) against a running broker.

Usage: paho_roundtrip.py HOST PORT VERSION   (VERSION: 31, 311 or 5)
       paho_roundtrip.py HOST PORT VERSION --will-child TOPIC PAYLOAD CLIENT_ID

Checks a QoS 0, 1 and 2 round trip, a retained message and a will message.
Prints "OK" and exits 0 on success; prints the failure and exits 1 otherwise.
Every wait has a timeout.
"""
import os
import queue
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt

TIMEOUT = 10.0
PROTOCOLS = {"31": mqtt.MQTTv31, "311": mqtt.MQTTv311, "5": mqtt.MQTTv5}


class Client:
    def __init__(self, host, port, version, client_id, will=None):
        self.proto = PROTOCOLS[version]
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=self.proto)
        self.connected = threading.Event()
        self.connect_rc = None
        self.subacks = {}
        self.sub_event = threading.Condition()
        self.messages = queue.Queue()
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = lambda client, userdata, msg: self.messages.put(msg)
        if will:
            self.c.will_set(will[0], will[1], qos=1, retain=False)
        self.c.connect(host, port, keepalive=30)
        self.c.loop_start()
        if not self.connected.wait(TIMEOUT):
            raise AssertionError(f"{client_id}: no CONNACK within {TIMEOUT}s")
        if self.connect_rc.is_failure:
            raise AssertionError(f"{client_id}: CONNACK refused: {self.connect_rc}")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connect_rc = reason_code
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self.sub_event:
            self.subacks[mid] = reason_codes
            self.sub_event.notify_all()

    def subscribe(self, topic, qos):
        rc, mid = self.c.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe send failed: {rc}"
        with self.sub_event:
            if not self.sub_event.wait_for(lambda: mid in self.subacks, TIMEOUT):
                raise AssertionError(f"no SUBACK for {topic}")
            codes = self.subacks[mid]
        for code in codes:
            assert not code.is_failure, f"subscription to {topic} refused: {code}"

    def publish(self, topic, payload, qos, retain=False):
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published(), f"publish to {topic} at QoS {qos} not completed"

    def expect(self, topic, payload):
        try:
            msg = self.messages.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"no message on {topic} within {TIMEOUT}s")
        assert msg.topic == topic, f"topic {msg.topic!r} != {topic!r}"
        assert msg.payload == payload, f"payload {msg.payload!r} != {payload!r}"
        return msg

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def main():
    host, port, version = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if len(sys.argv) > 4 and sys.argv[4] == "--will-child":
        topic, payload, cid = sys.argv[5], sys.argv[6], sys.argv[7]
        Client(host, port, version, cid, will=(topic, payload.encode()))
        print("connected", flush=True)
        # Die without DISCONNECT: the OS closes the socket.
        os._exit(0)

    tag = f"p{version}{os.getpid() % 10000}"
    sub = Client(host, port, version, f"{tag}s")
    pub = Client(host, port, version, f"{tag}p")

    # QoS 0, 1, 2 round trips.
    for qos in (0, 1, 2):
        topic = f"paho/{tag}/q{qos}"
        sub.subscribe(topic, 2)
        payload = f"qos{qos}".encode()
        pub.publish(topic, payload, qos)
        msg = sub.expect(topic, payload)
        assert msg.qos == qos, f"received QoS {msg.qos}, expected {qos}"

    # Retained: published first, a new subscription gets it with retain set.
    rtopic = f"paho/{tag}/retained"
    pub.publish(rtopic, b"kept", 1, retain=True)
    late = Client(host, port, version, f"{tag}l")
    late.subscribe(rtopic, 1)
    msg = late.expect(rtopic, b"kept")
    assert msg.retain, "retained message must arrive with the retain flag"
    late.close()

    # Will: a child process connects with a will and dies without DISCONNECT.
    wtopic = f"paho/{tag}/will"
    sub.subscribe(wtopic, 1)
    child = subprocess.run(
        [sys.executable, __file__, host, str(port), version, "--will-child", wtopic, "last-words", f"{tag}w"],
        capture_output=True, text=True, timeout=TIMEOUT * 2,
    )
    assert child.returncode == 0 and "connected" in child.stdout, f"will child failed: {child.stdout} {child.stderr}"
    sub.expect(wtopic, b"last-words")

    sub.close()
    pub.close()
    print("OK", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # report and fail
        print(f"FAIL: {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
