"""The task supervisor: failures logged once per episode, counted, shown, reported; restarts with capped backoff."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.metrics import Metrics
from gateway.tasks import TaskSupervisor


async def test_a_failing_task_is_restarted_with_growing_pauses_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    m = Metrics()
    sup = TaskSupervisor(m, base_backoff_s=0.01, max_backoff_s=0.04, healthy_after_s=0.2)
    events: list[tuple[str, str | None]] = []
    sup.on_fault.append(lambda name, why: events.append((name, why)))
    runs = 0
    ok = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 4:
            raise OSError(28, "No space left on device")
        ok.set()
        await asyncio.sleep(3600)

    with caplog.at_level(logging.DEBUG, logger="sitegw.tasks"):
        async with asyncio.TaskGroup() as tg:
            task = sup.spawn(tg, "escalation", flaky)
            await asyncio.wait_for(ok.wait(), 5)
            (h,) = sup.failing()
            assert (h.name, h.restarts, h.failures) == ("escalation", 4, 4)
            assert h.error == "OSError: [Errno 28] No space left on device"
            assert m.task_failures["escalation"] == 4 and m.task_restarts["escalation"] == 4
            assert 'sitegw_task_failures_total{task="escalation"} 4' in m.render(0, 0, 0)
            await asyncio.sleep(0.4)  # running for longer than healthy_after_s: the episode ends
            assert sup.failing() == []
            task.cancel()
    tracebacks = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(tracebacks) == 1 and tracebacks[0].exc_info is not None  # once per episode, with the traceback
    assert events == [("escalation", "OSError: [Errno 28] No space left on device"), ("escalation", None)]
    assert any("runs again" in r.getMessage() for r in caplog.records)


async def test_backoff_is_capped_and_a_task_that_returns_is_a_failure() -> None:
    m = Metrics()
    sup = TaskSupervisor(m, base_backoff_s=0.01, max_backoff_s=0.04, healthy_after_s=10)
    pauses: list[float] = []  # the pause the keeper took before each restart
    enough = asyncio.Event()

    async def returns() -> None:
        h = sup.tasks["selfmon"]
        if h.restarts:
            pauses.append(h.retry_in_s)
        if len(pauses) == 5:
            enough.set()

    async with asyncio.TaskGroup() as tg:
        task = sup.spawn(tg, "selfmon", returns)
        await asyncio.wait_for(enough.wait(), 5)
        (h,) = sup.failing()
        assert h.error is not None and "ended" in h.error
        task.cancel()
    assert pauses == [0.01, 0.02, 0.04, 0.04, 0.04]


async def test_a_start_up_job_may_finish_and_is_retried_only_when_it_fails() -> None:
    sup = TaskSupervisor(Metrics(), base_backoff_s=0.01)
    runs = 0

    async def warm() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise ConnectionError("broker not up yet")

    async with asyncio.TaskGroup() as tg:
        sup.spawn(tg, "siren-connect", warm, once=True)
    assert runs == 2 and sup.failing() == []


async def test_cancelling_stops_the_keeper_and_names_are_unique() -> None:
    sup = TaskSupervisor(Metrics())
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    async with asyncio.TaskGroup() as tg:
        t = sup.spawn(tg, "pipeline", forever)
        with pytest.raises(ValueError, match="already supervised"):
            sup.spawn(tg, "pipeline", forever)
        await started.wait()
        t.cancel()
    assert t.cancelled() and sup.failing() == []
