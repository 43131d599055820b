"""A bare paho subscriber in a process of its own (QoS 1, counts only): the RSS baseline of the memory benchmark.

`python -m bench.bare_sub --port P --topic T` runs until SIGTERM and prints the number of messages it received;
with `--count-file F` it also writes that number to F on SIGUSR1, and F holds 0 once its subscription is acknowledged.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count-file", type=Path)
    a = ap.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    n = 0

    def on_message(_c: object, _u: object, _m: paho.MQTTMessage) -> None:
        nonlocal n
        n += 1

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare-sub")
    c.on_message = on_message
    if a.count_file is not None:
        f: Path = a.count_file

        def report(text: str) -> None:  # whole or not at all: the reader waits for the file to exist
            tmp = f.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(f)

        c.on_subscribe = lambda *_: report("0")
        signal.signal(signal.SIGUSR1, lambda *_: report(str(n)))
    c.connect("127.0.0.1", a.port)
    c.subscribe(a.topic, qos=1)
    c.loop_start()
    stop.wait()
    c.loop_stop()
    c.disconnect()
    print(n, flush=True)


if __name__ == "__main__":
    main()
