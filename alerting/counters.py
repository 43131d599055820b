"""The alarm engine's own counters; the gateway's metrics extend them, so /metrics and /health show them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class AlarmCounters:
    state_store_failures: int = 0  # writes the alarm database refused
    state_store_error: str | None = None  # the alarm database refused the last write (disk full, locked); None when ok
    alarm_transitions: int = 0
    alarm_errors: int = 0  # exceptions in alarm evaluation (readings are stored regardless)
    deliveries: Counter[tuple[str, str]] = field(default_factory=Counter)  # by (channel, outcome)
