"""A restarted escalation loop never resends a message still in flight beside one whose outcome was not written."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence

import pytest

from alerting.notifiers import Message, Notifier, Person, SendResult
from tests.unit.test_escalation import SiteFactory, http, make_site, smtp
from tests.unit.test_escalation_stuck_sending import LockedAfterSend

__all__ = ["http", "make_site", "smtp"]


class SlowFirst:
    """The real SMTP notifier; its first message takes a while (a slow mail server: timeout_s is 20 s)."""

    def __init__(self, inner: Notifier) -> None:
        self.id, self.inner = inner.id, inner
        self.go = asyncio.Event()
        self.calls = 0

    async def send(self, msg: Message, to: Sequence[Person]) -> SendResult:
        self.calls += 1
        if self.calls == 1:
            await self.go.wait()
        return await self.inner.send(msg, to)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_message_in_flight_beside_a_failed_one_is_not_sent_again(make_site: SiteFactory) -> None:
    s = await make_site([{"after_s": 0, "roles": ["safety_officer"], "channels": ["hook", "mail"]}])
    locked = LockedAfterSend(s.notifiers["hook"], str(s.db))
    slow = SlowFirst(s.notifiers["mail"])
    s.notifiers["hook"], s.notifiers["mail"] = locked, slow
    s.raise_("GD-01")
    loop = asyncio.get_running_loop()
    loop.call_later(0.5, locked.release)  # the other writer (a backup, a CLI) lets go half a second later
    loop.call_later(3.0, slow.go.set)  # the slow mail server answers the first attempt after 3 s
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        await s.step()  # the hook's outcome cannot be written: the loop fails, once the mail's send has ended
    await asyncio.sleep(1.0)  # the supervisor's restart delay (gateway/tasks.py base_backoff_s 1 s)
    task = asyncio.create_task(s.esc.run(s.lc.get, max_sleep_s=0.02))
    try:
        for _ in range(200):  # 4 s: both attempts, if there are two, are over
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    [mail] = [d for d in s.rows("esc_deliveries") if d["channel"] == "mail"]
    assert len(s.smtp.messages) == 1, (
        f"the mail went out {len(s.smtp.messages)} times (attempts {mail['attempts']}), although the first "
        "attempt's outcome could be written"
    )
