"""The gateway's clock set back (an NTP correction after it ran ahead): the group window and retries planned by the
old clock must not hold the next alarms' messages until the clock catches up (real SQLite, real webhook)."""

from __future__ import annotations

import logging

import pytest

from tests.receivers import Reply
from tests.unit.test_escalation import FIRST, MON_10, SiteFactory, http, make_site, smtp

__all__ = ["http", "make_site", "smtp"]  # the fixtures of test_escalation, used here
DAY = 86400 * 10**9  # ns


async def test_a_group_window_stamped_by_a_clock_that_ran_ahead_holds_nothing(make_site: SiteFactory) -> None:
    """Delivery.grouping compared now with the group's last delivery, stamped a day ahead: every later message to
    the same channel and people waited, unsent and unlogged, until the clock caught up (next_due said a day)."""
    s = await make_site(FIRST, now=MON_10 + DAY, group_window_s=60)
    s.raise_("GD-01")
    await s.step()
    s.clock.now = MON_10  # NTP puts it right
    s.raise_("GD-02", value=60.0)
    await s.step()
    assert [h["data"]["device"] for h in s.hooks()] == ["GD-01", "GD-02"]
    # the window works again from the delivery stamped by the right clock: the next one waits for it, as a digest
    s.raise_("GD-03", value=40.0)
    await s.step()
    assert len(s.hooks()) == 2
    assert s.esc.delivery.next_due(s.clock.now) == MON_10 + 60 * 10**9
    s.clock.advance(60)
    await s.step()
    assert len(s.hooks()) == 3


async def test_a_retry_planned_by_a_clock_that_ran_ahead_waits_no_longer_than_the_longest_backoff(
    make_site: SiteFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A retry's next_try_ns set by the clock a day ahead made it wait a day after the correction."""
    s = await make_site(FIRST, now=MON_10 + DAY, retry_base_s=5, retry_max_s=300)
    s.http.script(s.path, [Reply(status=503)])
    s.raise_("GD-01")
    await s.step()
    [d] = s.rows("esc_deliveries")
    assert (d["status"], d["next_try_ns"]) == ("retry", MON_10 + DAY + 5 * 10**9)
    s.clock.now = MON_10
    with caplog.at_level(logging.WARNING, logger="sitegw.escalation"):
        await s.step()
    assert any("the clock was set back: 1 retry(ies)" in r.getMessage() for r in caplog.records)
    [d] = s.rows("esc_deliveries")
    assert d["next_try_ns"] == MON_10 + 300 * 10**9
    s.clock.advance(300)
    await s.step()
    assert [r["status"] for r in s.rows("esc_deliveries")] == ["sent"] and len(s.hooks()) == 2
