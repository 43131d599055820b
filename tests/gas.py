"""A gas detector for end-to-end tests: publishes a 4-in-1 detector's JSON (%LEL) over real MQTT until stopped."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import paho.mqtt.client as paho


class Detector(threading.Thread):
    """Publishes `lel` (settable while running) every `period_s` on `<prefix>/<sn>`; counts what it published."""

    def __init__(self, port: int, lel: float, sn: str = "GAS-R1", prefix: str = "site/r/gas", period_s: float = 0.2):
        super().__init__(daemon=True)
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"gas-det-{sn}")
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.lel = lel
        self.sn = sn
        self.topic = f"{prefix}/{sn}"
        self.period_s = period_s
        self.published = 0
        self.stop_ev = threading.Event()

    def run(self) -> None:
        while not self.stop_ev.wait(self.period_s):
            now = datetime.now(UTC).isoformat()
            doc = {"sn": self.sn, "time": now, "readings": [{"gas": "EX", "value": self.lel, "unit": "%LEL"}],
                   "status": {"fault": 0, "cal": 0}}  # fmt: skip
            self.c.publish(self.topic, json.dumps(doc), qos=1)
            self.published += 1

    def close(self) -> None:
        self.stop_ev.set()
        self.join(2)
        self.c.loop_stop()
        self.c.disconnect()
