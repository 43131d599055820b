"""The clock every component is given (ns since the epoch, UTC, injected in tests), and the grid tasks wake on."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]


def wall_clock() -> int:
    return time.time_ns()


def to_next_tick(now_s: float, period_s: float) -> float:
    """Seconds from `now_s` to the next multiple of `period_s` on the same clock (the event loop's). Periodic tasks
    that sleep this long wake together, and with polls on the same grid (gateway/supervisor.py LineOwner): one
    wake-up of the process for all of them instead of one each. A wake-up from idle cost 80-240 µs of CPU on the
    benchmark machine (bench/wake_cost.py), as much as the rest of a Modbus poll (README, Performance)."""
    return period_s - now_s % period_s
