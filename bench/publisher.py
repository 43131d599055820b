"""Simulated MQTT devices in a process of their own: 10-field crane JSON on `<prefix>/<device>/data`, paced or flat out.

`python -m bench.publisher --port P --devices 200 --rate 0 --duration 20 --stats FILE` publishes round-robin over the
devices (rate 0: as fast as paho can with QoS 1) and, when it stops (after --duration or on SIGTERM), writes
{"published", "elapsed_s", "start_ns", "end_ns"} to FILE: the wall-clock times of its first and last publish.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

PROFILE_ID = "crane_mqtt_bench_v1"
# The profile the gateway decodes these messages with (written into each benchmark's profile folder): ten fields,
# the figures of a tower-crane black box that reports over MQTT instead of Modbus.
PROFILE: dict[str, Any] = {
    "id": PROFILE_ID,
    "kind": "tower_crane",
    "title": "bench crane (MQTT JSON, 10 fields)",
    "transport": "mqtt",
    "payload": {
        "format": "json",
        "device_key": {"source": "topic", "segment": 2},
        "timestamp": {"path": "ts", "format": "epoch_ms"},
        "fields": [
            {"path": "d.load", "quantity": "load", "unit": "t"},
            {"path": "d.rated", "quantity": "rated_load", "unit": "t"},
            {"path": "d.moment", "quantity": "load_moment_ratio", "unit": "%"},
            {"path": "d.radius", "quantity": "radius", "unit": "m"},
            {"path": "d.height", "quantity": "hook_height", "unit": "m"},
            {"path": "d.slew", "quantity": "slew_angle", "unit": "°"},
            {"path": "d.wind", "quantity": "wind_speed", "unit": "m/s"},
            {"path": "d.tx", "quantity": "tilt_x"},
            {"path": "d.ty", "quantity": "tilt_y"},
            {"path": "d.up", "quantity": "hoisting_up"},
        ],
    },
}
FIELDS_PER_MESSAGE = len(PROFILE["payload"]["fields"])


def device_id(i: int) -> str:
    return f"C{i:04d}"


def payload(ts_ms: int, seq: int) -> bytes:
    # ordinary working values, well inside every crane rule: the load is ignored by no gate, and nothing alarms
    s = seq % 360
    doc = {
        "ts": ts_ms,
        "d": {
            "load": 2.0 + (seq % 7) * 0.1,
            "rated": 6.0,
            "moment": 40.0 + (seq % 11),
            "radius": 15.0 + math.sin(s) * 2,
            "height": 30.5,
            "slew": float(s),
            "wind": 3.2,
            "tx": 0.5,
            "ty": 0.3,
            "up": seq % 2,
        },
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--first", type=int, default=0, help="index of the first device")
    ap.add_argument("--rate", type=float, default=0.0, help="messages/s over all devices; 0 = as fast as possible")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--prefix", default="bench/crane")
    ap.add_argument("--stats", type=Path, required=True)
    a = ap.parse_args()

    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{a.prefix}-{a.first}")
    # a bounded queue inside paho: when it is full, publish() says so and we wait (back-pressure, bounded memory)
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(1000)
    c.connect("127.0.0.1", a.port)
    c.loop_start()
    topics = [f"{a.prefix}/{device_id(a.first + i)}/data" for i in range(a.devices)]
    last_ts = [0] * a.devices  # one timestamp per device and message: two equal ones would be one point
    t0 = time.monotonic()
    wall0 = time.time_ns()
    n = 0
    while not stop:
        now = time.monotonic()
        if now - t0 >= a.duration:
            break
        if a.rate > 0:
            ahead = t0 + n / a.rate - now
            if ahead > 0:
                time.sleep(min(ahead, 0.05))
                continue
        i = n % a.devices
        ts = max(time.time_ns() // 1_000_000, last_ts[i] + 1)
        last_ts[i] = ts
        body = payload(ts, n)
        while not stop:
            info = c.publish(topics[i], body, qos=1)
            if info.rc == paho.MQTT_ERR_SUCCESS:
                break
            time.sleep(0.001)  # paho's queue is full: the broker has not acknowledged enough yet
        n += 1
    elapsed = time.monotonic() - t0
    wall1 = time.time_ns()
    deadline = time.monotonic() + 5
    while c.want_write() and time.monotonic() < deadline:  # let the queued tail go out
        time.sleep(0.01)
    c.loop_stop()
    c.disconnect()
    a.stats.write_text(json.dumps({"published": n, "elapsed_s": elapsed, "start_ns": wall0, "end_ns": wall1}))


if __name__ == "__main__":
    main()
