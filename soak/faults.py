"""The fault script's record: what was done to the site and when, so every alarm can be matched to its cause."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Event:
    kind: str  # gas | flap | malformed | broker_restart | influx_outage | gateway_kill9 | shutdown
    device: str | None
    start_ns: int
    end_ns: int = 0
    detail: dict[str, object] = field(default_factory=dict)


class Script:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def begin(self, kind: str, device: str | None = None) -> Event:
        ev = Event(kind, device, time.time_ns())
        self.events.append(ev)
        return ev

    @staticmethod
    def end(ev: Event) -> None:
        ev.end_ns = time.time_ns()

    def of(self, kind: str, device: str | None = None) -> list[Event]:
        return [e for e in self.events if e.kind == kind and (device is None or e.device == device)]

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for e in self.events:
            key = f"{e.kind} {e.device}" if e.device else e.kind
            counts[key] = counts.get(key, 0) + 1
        return ", ".join(f"{k} ×{n}" for k, n in counts.items())
