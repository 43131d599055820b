"""A stopping gateway cancels again a task that dropped its cancellation (Python 3.11's asyncio.wait_for can, in
nats-py's requests) and says so; a task that ends when cancelled is cancelled once (gateway/tasks.py `Recancel`)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.tasks import Recancel


async def test_a_task_that_dropped_its_cancellation_is_cancelled_again_and_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cancels = {"uplink": 0, "pipeline": 0}

    async def runs(name: str, drops: int) -> None:  # as the uplink did when its publish's answer came with the cancel
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancels[name] += 1
                if cancels[name] > drops:
                    raise

    caplog.set_level(logging.WARNING, "sitegw.tasks")
    async with asyncio.timeout(10):  # (the test's own bound: without Recancel the group waits for good)
        tg = asyncio.TaskGroup()
        await tg.__aenter__()
        tasks = [tg.create_task(runs("uplink", 1), name="uplink"), tg.create_task(runs("pipeline", 0), name="pipeline")]
        await asyncio.sleep(0)
        with Recancel(tasks, every_s=0.05) as again:
            await tg.__aexit__(None, None, None)
    assert cancels == {"uplink": 2, "pipeline": 1}  # the well-behaved one was not cancelled twice
    assert again.again == 1 and all(t.cancelled() for t in tasks)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith("task(s) uplink still running")
