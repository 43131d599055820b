"""SiteSimulator's stop ends a task that dropped its cancellation (Python 3.11's asyncio.wait_for can, in aiomqtt)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.config import load_config
from simulators.runner import SiteSimulator

DEMO = Path(__file__).parents[2] / "simulators" / "sites" / "demo.yaml"


async def test_stop_cancels_again_a_task_that_dropped_its_cancellation() -> None:
    sim = SiteSimulator(load_config(DEMO))
    sim.lines = []  # never started: nothing to stop on a bus
    cancels = 0

    async def publisher() -> None:  # as aiomqtt's publish did when its PUBACK came with the cancellation
        nonlocal cancels
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancels += 1
                if cancels > 1:
                    raise

    sim._tasks.append(asyncio.create_task(publisher()))
    await asyncio.sleep(0)
    await asyncio.wait_for(sim.stop(), 10)  # (the test's own bound: before, stop() waited for good)
    assert cancels == 2 and not sim._tasks
