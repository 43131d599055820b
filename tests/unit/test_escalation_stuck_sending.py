"""A delivery whose outcome could not be written (the state file locked past its busy timeout) is sent again by the
escalation loop its supervisor restarts, not only at the next start of the gateway (real SQLite, real webhook)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence

import pytest

from alerting.notifiers import Message, Notifier, Person, SendResult
from tests.unit.test_escalation import FIRST, SiteFactory, http, make_site, smtp

__all__ = ["http", "make_site", "smtp"]  # the fixtures of test_escalation, used here


class LockedAfterSend:
    """The real webhook notifier; once its POST is answered another writer holds the state file (a backup, a CLI)
    for longer than the busy timeout, so the delivery's outcome cannot be written."""

    def __init__(self, inner: Notifier, db: str) -> None:
        self.id, self.inner, self.db = inner.id, inner, db
        self.other: sqlite3.Connection | None = None

    async def send(self, msg: Message, to: Sequence[Person]) -> SendResult:
        res = await self.inner.send(msg, to)
        if self.other is None:
            self.other = sqlite3.connect(self.db, isolation_level=None)
            self.other.execute("BEGIN IMMEDIATE")
        return res

    def release(self) -> None:
        assert self.other is not None
        self.other.execute("ROLLBACK")
        self.other.close()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_the_restarted_loop_sends_again_a_delivery_whose_outcome_was_not_written(
    make_site: SiteFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The row stayed `sending` for ever: due_retries() reads only `retry`, and recover() ran only when the gateway
    started, so the restarted loop never tried the alarm's message again."""
    s = await make_site(FIRST)
    locked = LockedAfterSend(s.notifiers["hook"], str(s.db))
    s.notifiers["hook"] = locked  # the delivery stage reads the same mapping
    s.raise_("GD-01")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        await s.step()  # the loop fails; its supervisor logs it and starts `run` again
    locked.release()
    [d] = s.rows("esc_deliveries")
    assert d["status"] == "sending"
    with caplog.at_level(logging.WARNING, logger="sitegw.escalation"):
        loop = asyncio.create_task(s.esc.run(s.lc.get, max_sleep_s=0.02))
        try:
            for _ in range(250):
                await asyncio.sleep(0.02)
                if s.rows("esc_deliveries")[0]["status"] == "sent":
                    break
        finally:
            loop.cancel()
            with pytest.raises(asyncio.CancelledError):
                await loop
    [d] = s.rows("esc_deliveries")
    assert (d["status"], d["attempts"]) == ("sent", 2)
    first, again = s.hooks()
    assert first["header_key"] == again["header_key"] == d["key"]
    assert any("outcome was never written" in r.getMessage() for r in caplog.records)
