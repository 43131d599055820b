"""Task supervision: every long-running task named, restarted with capped backoff, its failures logged and shown."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.metrics import Metrics

log = logging.getLogger("sitegw.tasks")

Factory = Callable[[], Coroutine[Any, Any, None]]
# (task name, reason) when a task fails for the first time in an episode; (task name, None) when it has recovered
FaultHook = Callable[[str, str | None], None]


@dataclass
class TaskHealth:
    """One supervised task: how often it failed, why, and since when it has been failing (an episode)."""

    name: str
    restarts: int = 0
    failures: int = 0  # all failures since start
    failing_since: float | None = None  # time.monotonic() of the episode's first failure; None while healthy
    error: str | None = None  # the last failure, as "ExceptionType: message"
    started: float = 0.0  # time.monotonic() of the current run
    retry_in_s: float = 0.0  # the backoff before the next restart (while waiting for it)
    waiting: bool = False  # True between a failure and the restart

    def report(self, now: float) -> dict[str, Any]:
        return {
            "task": self.name,
            "error": self.error,
            "failing_for_s": round(now - self.failing_since, 1) if self.failing_since is not None else 0.0,
            "restarts": self.restarts,
            "retry_in_s": round(self.retry_in_s, 1) if self.waiting else 0.0,
        }


class TaskSupervisor:
    """Runs each task in a keeper that catches what the task did not, and restarts it after a growing pause.

    A task that raises is logged with its traceback once per episode (then at DEBUG), counted in /metrics
    (`sitegw_task_failures_total`), listed in /health until it has run `healthy_after_s` without failing, and
    reported to `on_fault`, which must not depend on the failed component (the gateway sends it to the log, the
    console's health strip and the MQTT sirens directly, bypassing the alarm database). A task that returns is a
    failure too: these tasks are meant to run until the gateway stops.
    """

    def __init__(
        self,
        metrics: Metrics,
        base_backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        healthy_after_s: float = 10.0,
        on_fault: Sequence[FaultHook] = (),
    ) -> None:
        self.metrics = metrics
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.healthy_after_s = healthy_after_s
        self.tasks: dict[str, TaskHealth] = {}
        self.on_fault: list[FaultHook] = list(on_fault)

    def spawn(self, tg: asyncio.TaskGroup, name: str, factory: Factory, once: bool = False) -> asyncio.Task[None]:
        """Run `factory()` under supervision. `once`: a start-up job that may finish (retried only if it fails)."""
        if name in self.tasks:
            raise ValueError(f"task {name!r} is already supervised")
        h = self.tasks[name] = TaskHealth(name)
        return tg.create_task(self._keep(h, factory, once), name=name)

    def failing(self) -> list[TaskHealth]:
        return [h for h in self.tasks.values() if h.failing_since is not None]

    async def _keep(self, h: TaskHealth, factory: Factory, once: bool) -> None:
        backoff = self.base_backoff_s
        loop = asyncio.get_running_loop()
        while True:
            h.started = time.monotonic()
            h.waiting = False
            if h.failing_since is not None:
                loop.call_later(self.healthy_after_s, self._recovered, h, h.started)
            try:
                await factory()
                if once:
                    if h.failing_since is not None:
                        self._recovered(h, h.started)
                    return
                err: BaseException = RuntimeError("the task ended, although it should run until the gateway stops")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                err = e
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # a cancel met the failure: the gateway is stopping
                raise asyncio.CancelledError
            if h.failing_since is None:
                backoff = self.base_backoff_s
            self._failed(h, err, backoff)
            h.waiting = True
            h.retry_in_s = backoff
            await asyncio.sleep(backoff * (0.9 + 0.2 * random.random()))
            h.restarts += 1
            self.metrics.task_restarts[h.name] += 1
            backoff = min(backoff * 2, self.max_backoff_s)

    def _failed(self, h: TaskHealth, err: BaseException, backoff: float) -> None:
        h.failures += 1
        h.error = f"{type(err).__name__}: {err}"[:300]
        self.metrics.task_failures[h.name] += 1
        if h.failing_since is None:
            h.failing_since = time.monotonic()
            log.error("task %s failed; restarting it in %.0f s (and with growing pauses while it keeps failing)",
                      h.name, backoff, exc_info=err)  # fmt: skip
            self._notify(h.name, h.error)
        else:  # a crash loop: counted and in /health every time, the traceback only once per episode
            log.debug("task %s failed again (%d restarts): %s", h.name, h.restarts, h.error)

    def _recovered(self, h: TaskHealth, started: float) -> None:
        if h.started != started or h.waiting or h.failing_since is None:
            return  # it failed again since (a later run schedules its own check)
        took = time.monotonic() - h.failing_since
        log.warning("task %s runs again (after %d restart(s), %.0f s of failures; last: %s)",
                    h.name, h.restarts, took, h.error)  # fmt: skip
        h.failing_since = None
        self._notify(h.name, None)

    def _notify(self, name: str, reason: str | None) -> None:
        for hook in self.on_fault:
            try:
                hook(name, reason)
            except Exception:  # a reporting path must never take the keeper down with it
                log.exception("reporting the state of task %s failed", name)


class Recancel:
    """Cancels the tasks of something stopping (the gateway, the site simulator) and, while it waits for them, again
    every `every_s` those still running, and says so. On Python 3.11 `asyncio.wait_for` (nats-py's requests, the
    uplink's publish among them; aiomqtt's publish) drops a cancellation that comes as the future it waits on
    completes; the task then goes on and the stop waits for good (a clean-clone CI run hung so in the site
    simulator's stop, 2026-12-07). A task that ends within `every_s` of its cancellation (its clean-up included)
    never sees this."""

    def __init__(self, tasks: Sequence[asyncio.Task[Any]], every_s: float = 5.0) -> None:
        self.tasks = tasks
        self.every_s = every_s
        self.again = 0  # cancellations repeated (tests)
        self._rounds = 0
        for t in tasks:
            t.cancel()
        self._handle = asyncio.get_running_loop().call_later(every_s, self._check)

    def _check(self) -> None:
        left = [t for t in self.tasks if not t.done()]
        if not left:
            return
        self.again += len(left)
        self._rounds += 1
        log.warning("task(s) %s still running %.0f s after being cancelled (Python 3.11's asyncio.wait_for can drop a "
                    "cancellation): cancelled again", ", ".join(t.get_name() for t in left),
                    self._rounds * self.every_s)  # fmt: skip
        for t in left:
            t.cancel()
        self._handle = asyncio.get_running_loop().call_later(self.every_s, self._check)

    def close(self) -> None:
        self._handle.cancel()

    def __enter__(self) -> Recancel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
