"""Gateway-fault notices to the sirens: failing tasks and a refusing alarm database, by a path with no database."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.metrics import Metrics

log = logging.getLogger("sitegw.faults")

Send = Callable[[str, str, dict[str, Any]], Awaitable[None]]

STORE = "alarm-database"  # the name a refusing state database is reported under


class FaultNotices:
    """Collects fault and recovery events (from the task supervisor and the alarm database's state) and sends each
    once to `send` (the MQTT sirens, directly). Events are queued in memory: the component that failed may be the
    database, so nothing here may depend on it."""

    def __init__(self, metrics: Metrics, send: Send, site: str, poll_s: float = 1.0) -> None:
        self.metrics = metrics
        self.send = send
        self.site = site
        self.poll_s = poll_s
        self.queue: asyncio.Queue[tuple[str, str | None]] = asyncio.Queue(maxsize=1000)
        self.sent = 0
        self._store_error: str | None = None

    def task_changed(self, name: str, reason: str | None) -> None:
        """The supervisor's hook: (task, reason) on the first failure of an episode, (task, None) on recovery."""
        try:
            self.queue.put_nowait((name, reason))
        except asyncio.QueueFull:  # a thousand unsent notices: the sirens are down too; the log and /health remain
            log.error("gateway-fault notice for %s not queued (queue full): %s", name, reason)

    def _watch_store(self) -> None:
        err = self.metrics.state_store_error
        if (err is None) != (self._store_error is None):
            self.task_changed(STORE, err)
        self._store_error = err

    async def run(self) -> None:
        while True:
            self._watch_store()
            try:
                async with asyncio.timeout(self.poll_s):
                    name, reason = await self.queue.get()
            except TimeoutError:
                continue
            await self.send(*message(self.site, name, reason))
            self.sent += 1


def message(site: str, name: str, reason: str | None) -> tuple[str, str, dict[str, Any]]:
    what = "报警数据库无法写入" if name == STORE else f"网关任务 {name} 故障"
    if reason is None:
        subject = f"【网关恢复】{site}: {what}已恢复"
        text = f"{site}: {what}已恢复 (recovered: {name})"
    else:
        subject = f"【网关故障】{site}: {what}"
        text = f"{site}: {what}，报警可能无法记录或通知，请立即检查网关 (gateway fault: {name}: {reason})"
    return subject, text, {"type": "gateway_fault", "task": name, "reason": reason, "recovered": reason is None}
