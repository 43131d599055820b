"""A mail server that takes an alarm for some supervisors and refuses others (RCPT TO 550 / 452) on a real SMTP
server: the delivery is partial, said and counted, and a transient refusal is retried to that supervisor only."""

from __future__ import annotations

import logging

import pytest

from tests.receivers import smtp_server
from tests.unit.test_escalation import SiteFactory, http, make_site, smtp

__all__ = ["http", "make_site", "smtp"]  # the fixtures of test_escalation, used here

BOTH = [{"after_s": 0, "roles": ["safety_officer", "project_manager"], "channels": ["mail"]}]  # zhang and li


async def test_a_supervisor_refused_for_good_makes_the_delivery_partial_counted_and_logged(
    make_site: SiteFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A 550 for one supervisor while the other was accepted was reported as a plain success: no error in the
    delivery log, the refusal at DEBUG only, nothing for the metric or /health."""
    with smtp_server(rcpt_replies={"li@site.test": ["550 5.1.1 user unknown"]}) as rx:
        s = await make_site(BOTH, smtp_rx=rx)
        aid = s.raise_("GD-01")
        with caplog.at_level(logging.WARNING):
            await s.step()
        s.clock.advance(3600)
        await s.step()
    assert [env[1] for env in rx.envelopes] == [["zhang@site.test"]]
    [d] = s.rows("esc_deliveries")
    assert (d["status"], d["attempts"], d["next_try_ns"]) == ("partial", 1, None)
    assert d["sent_ns"] is not None
    assert "li@site.test refused: 550 5.1.1 user unknown" in d["last_error"]
    assert "not retried (refused for good)" in d["last_error"]
    assert s.outcomes == [("mail", "partial")]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("reached only some of its recipients" in w and "li@site.test" in w for w in warned)
    assert [x["status"] for x in s.esc.deliveries(aid)] == ["partial"]


async def test_a_supervisor_refused_for_now_gets_the_message_again_alone_with_backoff(
    make_site: SiteFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A 452 (mailbox full: RFC 5321 §4.2.1, try again later) for one supervisor was never retried: they were never
    told. Now the message goes again to them only, under the delivery's backoff, listed with the alarm."""
    with smtp_server(rcpt_replies={"li@site.test": ["452 4.2.2 mailbox full"]}) as rx:
        s = await make_site(BOTH, smtp_rx=rx, retry_base_s=5)
        aid = s.raise_("GD-01")
        await s.step()
        first, again = s.rows("esc_deliveries")
        assert (first["status"], again["status"], again["recipients"]) == ("partial", "retry", '["li"]')
        assert "retrying to li as delivery" in first["last_error"]
        assert (again["resend_of"], again["key"], again["attempts"]) == (first["id"], first["key"] + ".1", 1)
        assert again["next_try_ns"] == s.clock.now + 5 * 10**9
        s.clock.advance(4)
        await s.step()
        assert len(rx.envelopes) == 1  # not before its backoff
        s.clock.advance(1)
        await s.step()
    assert [env[1] for env in rx.envelopes] == [["zhang@site.test"], ["li@site.test"]]
    assert [str(m["X-SiteGW-Key"]) for m in rx.messages] == [first["key"], again["key"]]
    assert str(rx.messages[0]["Subject"]) == str(rx.messages[1]["Subject"])
    [_, again] = s.rows("esc_deliveries")
    assert (again["status"], again["attempts"], again["last_error"]) == ("sent", 2, None)
    assert s.outcomes == [("mail", "partial"), ("mail", "sent")]
    assert [(x["id"], x["status"]) for x in s.esc.deliveries(aid)] == [(again["id"], "sent"), (first["id"], "partial")]
