"""RSS and open file descriptors of the gateway, sampled from /proc, one series per gateway process (life)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Life:
    pid: int
    started: float  # time.monotonic()
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (age s, RSS kB, open fds)


def sample(pid: int) -> tuple[int, int] | None:
    """(VmRSS in kB, number of open fds) of `pid`, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None


class ProcMonitor:
    """A thread sampling the current gateway pid every `period_s`; `track()` switches to a new life."""

    def __init__(self, period_s: float = 2.0) -> None:
        self.period_s = period_s
        self.lives: list[Life] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-procmon", daemon=True)

    def track(self, pid: int) -> None:
        with self._lock:
            self.lives.append(Life(pid, time.monotonic()))
        if not self._thread.is_alive():
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            with self._lock:
                life = self.lives[-1]
            got = sample(life.pid)
            if got is not None:
                with self._lock:
                    life.samples.append((time.monotonic() - life.started, *got))
