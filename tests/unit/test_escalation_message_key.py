"""A message's key (X-SiteGW-Key, the email's Message-ID) is unique across gateways and recreated state files, and
the same for a delivery across its retries and a restart (real SQLite, real SMTP server)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from alerting.alarms import Lifecycle
from alerting.db import connect
from alerting.escalation import Escalation
from alerting.notifiers import Notifier, build_notifier
from alerting.rules import Level
from alerting.transition import Transition
from tests.receivers import SmtpReceiver, smtp_server
from tests.unit.test_escalation import MON_10, RULES, SITE, FakeClock, escalation_config

MAIL = [{"after_s": 0, "roles": ["project_manager"], "channels": ["mail"]}]


async def alarm_by_mail(db: Path, rx: SmtpReceiver, site_id: str, clock: FakeClock, device: str = "GD-01") -> str:
    """One gateway's alarm on its state file, mailed; the key of its delivery."""
    cfg = escalation_config(MAIL, "http://127.0.0.1:9/", rx.port, retry_base_s=5)
    conn = connect(db)
    notifiers: dict[str, Notifier] = {c.id: build_notifier(c, {}, None, clock=clock) for c in cfg.channels}
    esc = Escalation(conn, cfg, notifiers, clock, dataclasses.replace(SITE, site_id=site_id))
    lc = Lifecycle(conn, RULES, clock, chatter_count=3, chatter_window_s=60)
    lc.hooks.append(esc.on_event)
    try:
        if device:
            lc.apply(Transition("gas.lel", device, "lel", Level.NORMAL, Level.ALARM, 30.0, None, clock.now))
        await esc.step(lc.get)
        return str(conn.execute("SELECT key FROM esc_deliveries ORDER BY id DESC").fetchone()[0])
    finally:
        conn.close()


async def test_two_gateways_and_a_recreated_state_file_never_reuse_a_message_id(tmp_path: Path) -> None:
    """The key was `sitegw:delivery:<outbox row id>`: two sites of one company (one sender domain), or one site
    whose state file was recreated, sent different alarms under the same Message-ID and X-SiteGW-Key, and a
    receiver that drops duplicates dropped a real alarm (RFC 5322 §3.6.4: the generator MUST make it unique)."""
    with smtp_server() as rx:
        a = await alarm_by_mail(tmp_path / "a.db", rx, "site-a", FakeClock(MON_10))
        b = await alarm_by_mail(tmp_path / "b.db", rx, "site-b", FakeClock(MON_10))
        (tmp_path / "a.db").unlink()  # the same site, its state file recreated
        again = await alarm_by_mail(tmp_path / "a.db", rx, "site-a", FakeClock(MON_10))
    assert a.startswith("sitegw:site-a:") and b.startswith("sitegw:site-b:") and a.endswith(":1")
    assert len({a, b, again}) == 3
    ids = [str(m["Message-ID"]) for m in rx.messages]
    assert len(set(ids)) == 3 and ids[0] == f"<{a.replace(':', '.')}@site.test>"
    assert [str(m["X-SiteGW-Key"]) for m in rx.messages] == [a, b, again]


async def test_a_delivery_keeps_its_key_across_retries_and_a_restart(tmp_path: Path) -> None:
    """Receivers de-duplicate on the key: the retry after a restart must carry the first attempt's."""
    clock = FakeClock(MON_10)
    with smtp_server(fail_first=1) as rx:
        key = await alarm_by_mail(tmp_path / "s.db", rx, "site-a", clock)  # 451: retried in 5 s
        assert rx.messages == []
        clock.advance(5)
        assert await alarm_by_mail(tmp_path / "s.db", rx, "site-a", clock, device="") == key  # a new process
    [m] = rx.messages
    assert str(m["X-SiteGW-Key"]) == key and str(m["Message-ID"]) == f"<{key.replace(':', '.')}@site.test>"
