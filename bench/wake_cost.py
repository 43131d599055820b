"""What one wake-up of an idle asyncio event loop costs in CPU: a task that only sleeps, at several periods.

`python -m bench.wake_cost [--seconds 10]` runs one task that does nothing but `asyncio.sleep(period)` for each
period in turn and prints the process's CPU per wake-up and per second. Nothing else runs in the process, so what
it prints is the floor every timer or socket wake-up of a gateway pays before doing any work of its own: the
reason periodic tasks and polls share one grid (telemetry/clock.py `to_next_tick`) and a request timer is not left
to fire while its line idles (drivers/modbus/mbap.py `idle`). No services; about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import time

PERIODS_S = (0.1, 0.05, 0.01, 0.001)


async def per_wake(period_s: float, seconds: float) -> tuple[float, float]:
    """CPU-µs per wake-up and CPU-ms per second of a loop woken every `period_s`."""
    wakes = 0

    async def sleeper() -> None:
        nonlocal wakes
        while True:
            await asyncio.sleep(period_s)
            wakes += 1

    task = asyncio.create_task(sleeper())
    await asyncio.sleep(0.5)  # settled
    w0, c0, t0 = wakes, time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    w1, c1, t1 = wakes, time.process_time(), time.monotonic()
    task.cancel()
    return 1e6 * (c1 - c0) / max(1, w1 - w0), 1e3 * (c1 - c0) / (t1 - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.wake_cost", description=__doc__)
    ap.add_argument("--seconds", type=float, default=10.0, help="measuring window per period")
    a = ap.parse_args(argv)
    for p in PERIODS_S:
        us, ms = asyncio.run(per_wake(p, a.seconds))
        print(f"woken every {p * 1e3:6.1f} ms: {us:6.1f} CPU-µs per wake-up, {ms:6.2f} CPU-ms per second", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
