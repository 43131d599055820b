"""The clock every component is given: ns since the epoch (UTC), injected so tests can run days in milliseconds."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]


def wall_clock() -> int:
    return time.time_ns()
