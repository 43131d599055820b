"""An alarm storm in process: gas detectors crossing 25 %LEL together, in one pipeline batch.

`python -m bench.alarm_storm [--alarms 1,50] [--repeat 3]` builds the alarm engine of a site with that many
four-gas detectors (one escalation tier at once, a recording channel: no network), hands it one batch with every
detector at 30 %LEL, then runs the escalation loop's step. It prints how long the batch held the pipeline (the
engine's evaluation, its SQLite commits included: each one an fsync), how many commits that was, and when the
channel was handed the first message. No services; the state file is on /var/tmp (a real disk, not tmpfs), so the
fsyncs are real. Run it in two trees for a before/after figure.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alerting.engine import AlarmEngine
from alerting.notifiers.base import SENT, Message, Person, SendResult
from telemetry.reading import Reading


class Recording:
    """A channel that records when it was handed each message."""

    id = "hook"

    def __init__(self) -> None:
        self.at: list[float] = []

    async def send(self, msg: Message, to: Sequence[Person]) -> SendResult:
        self.at.append(time.perf_counter())
        return SENT

    async def aclose(self) -> None:
        pass


def site(workdir: Path, detectors: int) -> Any:
    from tests.sites import write_site  # the site the test suite writes (as bench/common.py does)

    return write_site(
        workdir / "site.yaml",
        influx_port=18086,
        mqtt_port=1883,
        devices=[
            {"id": f"G{i}", "profile": "gas_4in1_mqtt_v1", "broker": "b", "topic": f"g{i}/+"} for i in range(detectors)
        ],
        escalation={
            "people": [{"id": "wang", "name": "王工"}],
            "duty": [{"role": "safety_officer", "people": ["wang"]}],
            "channels": [{"id": "hook", "type": "webhook", "url": "http://127.0.0.1:9/n"}],
            "policies": [{"id": "all", "tiers": [{"after_s": 0, "roles": ["safety_officer"], "channels": ["hook"]}]}],
            "group_window_s": 60,
        },
    )


async def storm(detectors: int) -> tuple[float, int, float]:
    """(ms the batch held the pipeline, commits in it, ms until the first message was handed to the channel)."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        t0 = time.time_ns()
        eng = AlarmEngine(site(Path(tmp), detectors).alarm_setup(), lambda: t0)
        try:
            commits: list[str] = []
            eng.conn.set_trace_callback(lambda sql: commits.append(sql) if sql.strip() == "COMMIT" else None)
            channel = Recording()
            eng.escalation.notifiers["hook"] = channel  # type: ignore[index]
            batch = [Reading(f"G{i}", "lel", 30.0, t0) for i in range(detectors)]
            start = time.perf_counter()
            eng.on_readings(batch)
            held = time.perf_counter() - start
            in_batch = len(commits)
            await eng.escalation.step(eng.lifecycle.get)
            if len(eng.lifecycle.open_alarms()) != detectors or not channel.at:
                raise SystemExit(f"{detectors} detectors: the alarms or their message are missing")
            return held * 1000, in_batch, (channel.at[0] - start) * 1000
        finally:
            await eng.aclose()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.alarm_storm", description=__doc__.splitlines()[0])
    ap.add_argument("--alarms", default="1,50", help="detectors alarming together, comma-separated")
    ap.add_argument("--repeat", type=int, default=3)
    opts = ap.parse_args(argv)
    print(f"{'alarms':>6} {'held ms':>10} {'commits':>8} {'first message ms':>17}   (medians of {opts.repeat})")
    for n in (int(x) for x in opts.alarms.split(",")):
        runs = [asyncio.run(storm(n)) for _ in range(opts.repeat)]
        held, commits, first = (statistics.median(r[k] for r in runs) for k in range(3))
        print(f"{n:>6} {held:>10.1f} {commits:>8.0f} {first:>17.1f}")


if __name__ == "__main__":
    main()
