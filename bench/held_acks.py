"""Held PUBACKs and the broker's Nagle: delivery latency when a subscriber acknowledges in groups, with and without
TCP_QUICKACK, on a real Mosquitto (its default set_tcp_nodelay false, and with it true).

`python -m bench.held_acks [--rate 1000] [--seconds 3] [--groups 1,2,3,5,10]` prints publish -> receive latency
per group size. The gateway holds acknowledgements back to share an fsync (spool.ack_linger_messages); this shows
what that costs the broker's next deliveries and what drivers/mqtt/sockopts.py `quick_ack` gives back.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench import common
from services import local


def latencies(port: int, group: int, quick: bool, rate: float, seconds: float) -> list[float]:
    """Publish -> receive (ms) of the messages after the first half second; PUBACKs sent `group` at a time."""
    got: list[float] = []
    held: list[tuple[int, int]] = []

    def on_message(c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
        got.append((time.time() - float(m.payload.split(b" ")[0])) * 1e3)
        held.append((m.mid, m.qos))
        if quick:  # as the gateway's reader does at each wake
            c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        if len(held) >= group:
            for mid, qos in held:
                c.ack(mid, qos)
            held.clear()

    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"held-{group}-{quick}", clean_session=True)
    sub.manual_ack_set(True)
    sub.on_message = on_message
    subscribed = threading.Event()
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    sub.subscribe("held/#", 1)
    subscribed.wait(5)
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"held-pub-{group}-{quick}")
    pub.max_inflight_messages_set(100)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    try:
        n = int(rate * seconds)
        t0 = time.time()
        for i in range(n):
            while time.time() < t0 + i / rate:
                time.sleep(0.0002)
            pub.publish("held/x", b"%.6f " % time.time() + b"x" * 300, qos=1)
        time.sleep(0.5)
    finally:
        pub.loop_stop()
        pub.disconnect()
        sub.loop_stop()
        sub.disconnect()
    return got[int(rate * 0.5) :]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--groups", default="1,2,3,5,10")
    a = ap.parse_args(argv)
    groups = [int(g) for g in a.groups.split(",")]
    wd = common.fresh_dir(common.RUN_DIR / "held_acks")
    print(f"{'broker':<22} {'PUBACKs':>7} {'quickack':>8} {'p50 ms':>7} {'p90 ms':>7}")
    for nodelay in (False, True):
        mq = local.mosquitto(Path(wd / f"mq-{nodelay}"), extra="set_tcp_nodelay true\n" if nodelay else "")
        mq.start()
        try:
            for group in groups:
                for quick in (False, True):
                    xs = sorted(latencies(mq.port, group, quick, a.rate, a.seconds))
                    name = "set_tcp_nodelay true" if nodelay else "Mosquitto's default"
                    p50, p90 = statistics.median(xs), xs[int(0.9 * len(xs))]
                    print(f"{name:<22} {group:>7} {'yes' if quick else 'no':>8} {p50:>7.2f} {p90:>7.2f}")
        finally:
            mq.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
