"""Escalation engine on a real SQLite file, real lifecycle and rules, real webhook and SMTP receivers, a fake clock."""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from alerting.alarms import AlarmEvent, AlarmState, Lifecycle
from alerting.config import EscalationConfig
from alerting.db import audit_rows, connect
from alerting.escalation import Escalation, Roster
from alerting.messages import SiteInfo, local_time
from alerting.notifiers import Notifier, build_notifier
from alerting.rules import Level, default_rules
from alerting.transition import Transition
from tests.receivers import HttpReceiver, Reply, SmtpReceiver, http_receiver, smtp_server

S = 1_000_000_000
TZ = ZoneInfo("Asia/Shanghai")
RULES = default_rules()  # gas.lel: 报警 25, 危险 50 %LEL; tc.moment_ratio: 预警 90, 报警 100, 危险 110 %


def at(y: int, mo: int, d: int, h: int, mi: int = 0) -> int:
    """ns of a local time on site (Asia/Shanghai, UTC+8)."""
    return int(datetime(y, mo, d, h, mi, tzinfo=TZ).timestamp()) * S


MON_10 = at(2024, 6, 3, 10)  # Monday 2024-06-03 10:00 on site

PEOPLE = [
    {"id": "zhang", "name": "张安全", "title": "安全员", "mobile": "13800000001", "email": "zhang@site.test"},
    {"id": "li", "name": "李经理", "title": "项目经理", "mobile": "13800000002", "email": "li@site.test"},
    {"id": "wang", "name": "王值班", "title": "值班经理", "email": "wang@site.test"},
    {"id": "zhao", "name": "赵总", "title": "企业安全负责人", "email": "zhao@site.test"},
]
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]
DUTY = [
    {"role": "safety_officer", "people": ["zhang"]},  # every day, all day
    {"role": "project_manager", "people": ["li"], "days": WEEKDAYS, "start": "08:00", "end": "20:00"},
    # Friday's night shift runs into Saturday morning: Saturday 03:00 belongs to Friday's rule
    {"role": "project_manager", "people": ["wang"], "days": ["fri"], "start": "20:00", "end": "08:00"},
    {"role": "enterprise_head", "people": ["zhao"]},
]
SITE = SiteInfo(
    site_name="测试工地",
    tz="Asia/Shanghai",
    console_url="http://console.site.test",
    device_names={f"GD-{i:02d}": f"{i}号气体探测器 (地下室)" for i in range(1, 31)} | {"TC-01": "1号塔吊 (北区)"},
    device_kinds={},
    units={rid: r.measured_unit for rid, r in RULES.items()},
)
FIRST = [{"after_s": 0, "roles": ["safety_officer"], "channels": ["hook"]}]


class FakeClock:
    def __init__(self, now: int = MON_10) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * S)


def mail_channel(port: int) -> dict[str, Any]:
    """The email channel of these tests: the local SMTP server, no TLS."""
    return {
        "id": "mail",
        "type": "email",
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "sender": "工地告警 <gw@site.test>",
        "timeout_s": 5,
    }


def escalation_config(tiers: list[dict[str, Any]], hook_url: str, smtp_port: int, **extra: Any) -> EscalationConfig:
    return EscalationConfig.model_validate(
        {
            "people": PEOPLE,
            "duty": DUTY,
            "channels": [
                {"id": "hook", "type": "webhook", "url": hook_url},
                mail_channel(smtp_port),
            ],
            "policies": [{"id": "all", "tiers": tiers}],
            **extra,
        }
    )


class Site:
    """One gateway's alarm side: lifecycle + escalation on a database file, notifiers to the real receivers."""

    def __init__(
        self, db: Path, cfg: EscalationConfig, clock: FakeClock, http: HttpReceiver, path: str, smtp: SmtpReceiver
    ) -> None:
        self.db, self.cfg, self.clock, self.http, self.path, self.smtp = db, cfg, clock, http, path, smtp
        self.conn = connect(db)
        self.lc = Lifecycle(self.conn, RULES, clock, chatter_count=3, chatter_window_s=60)
        self.notifiers: dict[str, Notifier] = {c.id: build_notifier(c, {}, None, clock=clock) for c in cfg.channels}
        self.outcomes: list[tuple[str, str]] = []  # (channel, outcome) as the metric counts them
        self.esc = Escalation(
            self.conn, cfg, self.notifiers, clock, SITE, lambda ch, oc: self.outcomes.append((ch, oc))
        )
        self.lc.hooks.append(self.esc.on_event)
        self.later: list[Site] = []  # reopened on the same file, closed with this one

    def change(self, device: str, new: Level, value: float, rule: str = "gas.lel") -> list[AlarmEvent]:
        r = RULES[rule]
        return self.lc.apply(Transition(rule, device, r.quantity, Level.NORMAL, new, value, None, self.clock.now))

    def raise_(self, device: str, new: Level = Level.ALARM, value: float = 30.0, rule: str = "gas.lel") -> int:
        events = self.change(device, new, value, rule)
        assert events and events[0].kind == "raised", events
        return events[0].alarm.id

    async def step(self) -> None:
        await self.esc.step(self.lc.get)

    def rows(self, table: str, where: str = "1", *args: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute(f"SELECT * FROM {table} WHERE {where} ORDER BY id", args)]

    def steps(self, alarm_id: int) -> dict[tuple[str, int, int], dict[str, Any]]:
        return {(r["episode"], r["tier"], r["seq"]): r for r in self.rows("esc_steps", "alarm_id = ?", alarm_id)}

    def hooks(self) -> list[dict[str, Any]]:
        """What the webhook receiver got for this site: the JSON document plus the idempotency header."""
        return [{**r.json, "header_key": r.headers["x-sitegw-key"]} for r in self.http.requests if r.path == self.path]

    def mails(self) -> list[tuple[str, str, str]]:
        """(subject, To, body) of every email the SMTP server accepted."""
        return [(str(m["Subject"]), str(m["To"]), str(m.get_content())) for m in self.smtp.messages]

    def reopen(self) -> Site:
        """A new process on the same database file (the old objects are simply never used again)."""
        again = Site(self.db, self.cfg, self.clock, self.http, self.path, self.smtp)
        self.later.append(again)
        return again

    async def aclose(self) -> None:
        for s in self.later:
            await s.aclose()
        for n in self.notifiers.values():
            await n.aclose()
        self.conn.close()


SiteFactory = Callable[..., Awaitable[Site]]


@pytest.fixture(scope="module")
def http() -> Iterator[HttpReceiver]:
    with http_receiver() as rx:  # one server for the module (start/stop costs 0.2 s); tests use their own path
        yield rx


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    with smtp_server() as rx:
        yield rx


@pytest.fixture
async def make_site(tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver) -> AsyncIterator[SiteFactory]:
    sites: list[Site] = []

    async def make(
        tiers: list[dict[str, Any]], *, now: int = MON_10, smtp_rx: SmtpReceiver = smtp, **extra: Any
    ) -> Site:
        path = f"/alarm/{uuid.uuid4().hex}"
        cfg = escalation_config(tiers, http.url + path, smtp_rx.port, **extra)
        site = Site(tmp_path / "state.db", cfg, FakeClock(now), http, path, smtp_rx)
        sites.append(site)
        return site

    yield make
    for s in sites:
        await s.aclose()


def ids(doc: dict[str, Any]) -> list[str]:
    return [p["id"] for p in doc["to"]]


# ---- tiers, delays, repeats, roster ------------------------------------------------------------------------------


async def test_tiers_fire_in_order_at_their_delays_and_repeat_while_unacknowledged(make_site: SiteFactory) -> None:
    s = await make_site(
        [
            {"after_s": 0, "roles": ["safety_officer"], "channels": ["hook"], "repeat_every_s": 600, "repeats": 2},
            {"after_s": 1800, "min_level": 2, "roles": ["project_manager"], "channels": ["mail"]},
        ]
    )
    aid = s.raise_("GD-01", value=31.0)
    steps = s.steps(aid)
    assert {k: (v["due_ns"] - MON_10) // S for k, v in steps.items()} == {
        ("1", 0, 0): 0,
        ("1", 0, 1): 600,
        ("1", 0, 2): 1200,
        ("1", 1, 0): 1800,
    }
    assert {v["status"] for v in steps.values()} == {"pending"}  # scheduled in the raise's transaction, not sent

    await s.step()
    [first] = s.hooks()
    assert ids(first) == ["zhang"]
    assert first["subject"] == "【报警】有限空间气体 1号气体探测器 (地下室) 可燃气体浓度超限 31 %LEL"
    assert first["data"]["event"] == "raised" and first["data"]["tier"] == 0 and first["data"]["repeat"] == 0
    assert f"{SITE.console_url}/alarms/{aid}" in first["text"]

    s.clock.advance(599)
    await s.step()
    assert len(s.hooks()) == 1  # the repeat is not due yet
    s.clock.advance(1)
    await s.step()
    assert [d["data"]["repeat"] for d in s.hooks()] == [0, 1]
    assert "重复提醒" in s.hooks()[1]["text"]
    s.clock.advance(600)
    await s.step()
    assert [d["data"]["repeat"] for d in s.hooks()] == [0, 1, 2]

    s.clock.advance(599)  # T0 + 1799 s: tier 2 not yet
    await s.step()
    assert s.mails() == []
    s.clock.advance(1)
    await s.step()
    [(subject, to, body)] = s.mails()
    assert subject.startswith("【报警】") and "li@site.test" in to and "zhang" not in to
    assert f"报警编号: {aid}" in body

    s.clock.advance(3 * 3600)  # repeats were used up: nothing more, ever
    await s.step()
    assert len(s.hooks()) == 3 and len(s.mails()) == 1
    assert all(v["status"] == "fired" and v["fired_ns"] == v["due_ns"] for v in s.steps(aid).values())
    deliveries = s.rows("esc_deliveries")
    assert [(d["channel"], d["status"], d["attempts"], d["items"]) for d in deliveries] == [
        ("hook", "sent", 1, 1),
        ("hook", "sent", 1, 1),
        ("hook", "sent", 1, 1),
        ("mail", "sent", 1, 1),
    ]


def test_roster_by_weekday_and_time_in_site_time_zone_with_overnight_shift() -> None:
    cfg = EscalationConfig.model_validate({"people": PEOPLE, "duty": DUTY})
    roster = Roster(cfg, "Asia/Shanghai")

    def pm(ns: int) -> list[str]:
        return [p.id for p in roster.on_duty("project_manager", ns)]

    assert pm(at(2024, 6, 3, 10)) == ["li"]  # Monday day shift
    assert pm(at(2024, 6, 3, 7, 59)) == []  # before the day shift, and Sunday has no night shift
    assert pm(at(2024, 6, 3, 20)) == []  # the day shift ends at 20:00 (end excluded)
    assert pm(at(2024, 6, 7, 19, 59)) == ["li"]  # Friday evening
    assert pm(at(2024, 6, 7, 20)) == ["wang"]  # Friday night shift starts
    assert pm(at(2024, 6, 8, 3)) == ["wang"]  # Saturday 03:00: Friday's overnight rule (previous day)
    assert pm(at(2024, 6, 8, 8)) == []  # ... until 08:00 Saturday
    assert pm(at(2024, 6, 7, 3)) == []  # Friday 03:00 would be Thursday's night: Thursday has none
    assert pm(at(2024, 6, 9, 3)) == []  # Sunday 03:00 would be Saturday's night: none
    assert [p.id for p in roster.on_duty("safety_officer", at(2024, 6, 9, 3))] == ["zhang"]
    assert roster.on_duty("nobody_role", MON_10) == []


async def test_a_tier_goes_to_whoever_is_on_duty_when_it_fires(make_site: SiteFactory) -> None:
    # Saturday 02:00 in Shanghai is Friday 18:00 UTC: only the site's time zone finds Friday's night shift
    s = await make_site(
        [
            {"after_s": 0, "roles": ["project_manager"], "channels": ["hook"]},
            {"after_s": 6 * 3600, "roles": ["project_manager"], "channels": ["hook"]},
        ],
        now=at(2024, 6, 8, 2),
    )
    s.raise_("GD-01")
    await s.step()
    assert [ids(d) for d in s.hooks()] == [["wang"]]
    s.clock.advance(6 * 3600)  # Saturday 08:00: the night shift is over and li does not work weekends
    await s.step()
    assert [ids(d) for d in s.hooks()] == [["wang"], []]  # the webhook names nobody (it addresses no person)


# ---- levels ------------------------------------------------------------------------------------------------------


async def test_prewarning_skips_alarm_tiers_level_up_restarts_and_level_down_is_silent(make_site: SiteFactory) -> None:
    s = await make_site(
        [
            {"after_s": 0, "roles": ["safety_officer"], "channels": ["hook"]},  # 预警 and up: the safety officer
            {"after_s": 0, "min_level": 2, "roles": ["project_manager"], "channels": ["mail"]},  # 报警 at once
            {"after_s": 1800, "roles": ["project_manager"], "channels": ["mail"]},  # 30 min unacknowledged
        ]
    )
    aid = s.raise_("TC-01", Level.PREWARNING, 92.0, rule="tc.moment_ratio")
    assert sorted(s.steps(aid)) == [("1", 0, 0), ("1", 2, 0)]  # no 报警 tier for a 预警 alarm
    await s.step()
    assert [d["subject"][:4] for d in s.hooks()] == ["【预警】"] and s.mails() == []

    s.clock.advance(600)
    [ev] = s.change("TC-01", Level.ALARM, 101.0, rule="tc.moment_ratio")
    assert ev.kind == "level_up"
    steps = s.steps(aid)
    old = steps[("1", 2, 0)]
    assert (old["status"], old["cancel_reason"]) == ("cancelled", "superseded by a higher level")
    new = {k: (v["due_ns"] - s.clock.now) // S for k, v in steps.items() if v["status"] == "pending"}
    assert sorted(new.values()) == [0, 0, 1800] and {k[1] for k in new} == {0, 1, 2}  # again from the first tier
    await s.step()
    assert [d["data"]["event"] for d in s.hooks()] == ["raised", "level_up"]
    assert s.hooks()[1]["subject"].startswith("【报警】")
    # the level-up's message gives its own time, then the first raise's (not the 预警's time alone)
    up_at, first_at = (local_time(t, "Asia/Shanghai") for t in (s.clock.now, s.clock.now - 600 * S))
    assert f"时间: {up_at}\n首次报警时间: {first_at}" in s.hooks()[1]["text"], s.hooks()[1]["text"]
    [(subject, to, _)] = s.mails()
    assert subject.startswith("【报警】") and "li@site.test" in to

    s.clock.advance(60)
    outbox_before = len(s.rows("esc_outbox"))
    [ev] = s.change("TC-01", Level.PREWARNING, 95.0, rule="tc.moment_ratio")
    assert ev.kind == "level_down"
    assert len(s.rows("esc_outbox")) == outbox_before
    await s.step()
    assert len(s.hooks()) == 2 and len(s.mails()) == 1

    s.clock.now = MON_10 + 1800 * S  # the cancelled step's time: nothing
    await s.step()
    assert len(s.mails()) == 1
    s.clock.now = MON_10 + 2400 * S  # the re-escalation's own 30 min
    await s.step()
    assert len(s.mails()) == 2


async def test_a_second_level_up_to_the_same_level_escalates_again(make_site: SiteFactory) -> None:
    s = await make_site(FIRST, group_window_s=0)
    aid = s.raise_("GD-01", Level.ALARM, 30.0)
    await s.step()
    s.lc.ack(aid, "zhang")
    await s.step()
    s.clock.advance(120)
    s.change("GD-01", Level.DANGER, 55.0)
    await s.step()
    s.lc.ack(aid, "zhang")
    await s.step()
    s.clock.advance(120)
    [down] = s.change("GD-01", Level.ALARM, 40.0)
    s.clock.advance(120)
    [up] = s.change("GD-01", Level.DANGER, 60.0)  # 危险 again: unacknowledged again, so someone must hear of it
    assert (down.kind, up.kind, up.alarm.state) == ("level_down", "level_up", AlarmState.ACTIVE_UNACKED)
    assert [v["status"] for v in s.steps(aid).values()] == ["fired", "fired", "pending"]
    await s.step()
    assert [(d["data"]["event"], d["data"]["value"]) for d in s.hooks()] == [
        ("raised", 30.0),
        ("acked", 30.0),
        ("level_up", 55.0),
        ("acked", 55.0),
        ("level_up", 60.0),
    ]
    assert s.hooks()[-1]["subject"].startswith("【危险】")


# ---- acknowledgement -----------------------------------------------------------------------------------------------


async def test_ack_cancels_pending_steps_and_tells_those_already_notified_who_acked(make_site: SiteFactory) -> None:
    s = await make_site(
        [
            {"after_s": 0, "roles": ["safety_officer"], "channels": ["hook"], "repeat_every_s": 600, "repeats": 3},
            {"after_s": 1800, "roles": ["project_manager"], "channels": ["mail"]},
        ]
    )
    aid = s.raise_("GD-01")
    await s.step()
    s.clock.advance(300)
    ack_ns = s.clock.now
    s.lc.ack(aid, "zhang_officer", "通风后复测")
    steps = s.steps(aid)
    assert steps[("1", 0, 0)]["status"] == "fired"
    cancelled = [v for v in steps.values() if v["status"] == "cancelled"]
    assert len(cancelled) == 4
    assert {(v["cancelled_ns"], v["cancel_reason"]) for v in cancelled} == {(ack_ns, "acknowledged")}

    await s.step()
    first, follow = s.hooks()
    assert ids(follow) == ids(first) == ["zhang"]
    assert follow["subject"].startswith("【已确认】") and follow["data"]["event"] == "acked"
    assert "确认人: zhang_officer" in follow["text"]
    assert follow["header_key"] != first["header_key"]

    s.clock.advance(4 * 3600)
    await s.step()
    assert len(s.hooks()) == 2 and s.mails() == []  # li was never told, so gets no follow-up either


async def test_ack_and_cancellation_commit_or_roll_back_together(make_site: SiteFactory) -> None:
    s = await make_site(
        [{"after_s": 0, "roles": ["safety_officer"], "channels": ["hook"]},
         {"after_s": 600, "roles": ["safety_officer"], "channels": ["hook"]}]
    )  # fmt: skip
    aid = s.raise_("GD-01")
    await s.step()

    def boom(conn: sqlite3.Connection, ev: AlarmEvent) -> None:
        if ev.kind == "acked":
            raise RuntimeError("a later hook failed")

    s.lc.hooks.append(boom)  # runs after the escalation's hook, in the same transaction
    with pytest.raises(RuntimeError):
        s.lc.ack(aid, "zhang")
    assert s.lc.get(aid).state is AlarmState.ACTIVE_UNACKED
    assert s.steps(aid)[("1", 1, 0)]["status"] == "pending"  # the cancellation was rolled back with the ack
    assert s.rows("esc_outbox", "json_extract(data, '$.event') = 'acked'") == []  # and so was the follow-up
    assert [r for r in audit_rows(s.conn) if r["action"] == "alarm.ack"] == []

    s.lc.hooks.remove(boom)
    s.clock.advance(600)
    await s.step()
    assert [d["data"]["tier"] for d in s.hooks()] == [0, 1]  # the alarm is still unacknowledged: tier 2 fires


# ---- shelving, suppression -----------------------------------------------------------------------------------------


async def test_shelving_cancels_and_unshelving_an_unacked_alarm_escalates_again(make_site: SiteFactory) -> None:
    s = await make_site(
        [{"after_s": 0, "roles": ["safety_officer"], "channels": ["hook"]},
         {"after_s": 600, "roles": ["project_manager"], "channels": ["mail"]}]
    )  # fmt: skip
    aid = s.raise_("GD-01")
    await s.step()
    s.clock.advance(60)
    s.lc.shelve(aid, "zhang", "探测器标定中", 3600)
    assert s.steps(aid)[("1", 1, 0)]["cancel_reason"] == "shelved"
    s.clock.advance(1200)
    await s.step()
    assert len(s.hooks()) == 1 and s.mails() == []

    s.lc.unshelve(aid, "zhang")
    unshelved_ns = s.clock.now
    pending = [v for v in s.steps(aid).values() if v["status"] == "pending"]
    assert sorted((v["tier"], (v["due_ns"] - unshelved_ns) // S) for v in pending) == [(0, 0), (1, 600)]
    await s.step()
    assert len(s.hooks()) == 2 and s.hooks()[1]["data"]["event"] == "raised"
    s.clock.advance(600)
    await s.step()
    assert len(s.mails()) == 1

    # shelve expiry (tick) of an alarm that was acknowledged meanwhile: nothing to chase
    s.lc.shelve(aid, "zhang", "维修", 600)
    s.lc.ack(aid, "zhang")
    s.clock.advance(601)
    [ev] = s.lc.tick()
    assert ev.kind == "unshelved"
    assert [v for v in s.steps(aid).values() if v["status"] == "pending"] == []


async def test_suppression_cancels_and_unsuppression_escalates_again(make_site: SiteFactory) -> None:
    s = await make_site(
        [{"after_s": 0, "roles": ["safety_officer"], "channels": ["hook"]},
         {"after_s": 600, "roles": ["project_manager"], "channels": ["mail"]}]
    )  # fmt: skip
    aid = s.raise_("GD-01")
    await s.step()
    s.lc.suppress("GD-01", "offline")
    s.lc.suppress("GD-01", "out_of_service")
    assert s.steps(aid)[("1", 1, 0)]["cancel_reason"] == "suppressed by design"
    s.clock.advance(900)
    await s.step()
    assert s.mails() == []
    s.lc.unsuppress("GD-01", "offline")  # still out of service: nothing starts
    assert [v for v in s.steps(aid).values() if v["status"] == "pending"] == []
    s.lc.unsuppress("GD-01", "out_of_service")
    assert len([v for v in s.steps(aid).values() if v["status"] == "pending"]) == 2
    await s.step()
    assert len(s.hooks()) == 2
    s.clock.advance(600)
    await s.step()
    assert len(s.mails()) == 1


# ---- grouping (the rate limit) -------------------------------------------------------------------------------------


async def test_a_flood_gives_one_message_at_once_and_one_digest_when_the_window_ends(make_site: SiteFactory) -> None:
    s = await make_site(FIRST, group_window_s=60)
    first = s.raise_("GD-01", value=26.0)
    await s.step()
    assert len(s.hooks()) == 1
    rest = []
    for i in range(2, 21):  # 19 more detectors over the next 19 s, the loop woken by each
        s.clock.advance(1)
        rest.append(s.raise_(f"GD-{i:02d}", value=26.0 + i))
        await s.step()
    assert len(s.hooks()) == 1
    s.clock.now = MON_10 + 59 * S
    await s.step()
    assert len(s.hooks()) == 1
    s.clock.now = MON_10 + 60 * S  # the window ends
    await s.step()
    one, dig = s.hooks()
    assert one["data"]["alarm_id"] == first
    assert dig["subject"] == "【报警汇总】19 条报警通知"
    assert [item["alarm_id"] for item in dig["data"]["items"]] == rest
    assert all(f"{i}号气体探测器" in dig["text"] for i in range(2, 21))
    assert [(d["items"], d["created_ns"]) for d in s.rows("esc_deliveries")] == [(1, MON_10), (19, MON_10 + 60 * S)]
    assert {r["status"] for r in s.rows("esc_outbox")} == {"sent"}

    # the limit holds after the digest too: at most one message per window to the same channel and people
    s.clock.advance(1)
    s.raise_("GD-21")
    await s.step()
    assert len(s.hooks()) == 2
    s.clock.now = MON_10 + 120 * S
    await s.step()
    assert len(s.hooks()) == 3 and s.hooks()[2]["data"]["type"] == "alarm"


async def test_alarms_queued_together_go_out_at_once_as_one_digest(make_site: SiteFactory) -> None:
    s = await make_site(FIRST, group_window_s=60)
    for i in range(1, 21):  # one batch of readings: all raised before the loop runs
        s.raise_(f"GD-{i:02d}")
    await s.step()
    [dig] = s.hooks()
    assert len(dig["data"]["items"]) == 20  # nothing waits for a window when there was no message before
    s.clock.advance(3600)
    await s.step()
    assert len(s.hooks()) == 1


async def test_different_recipients_are_not_grouped(make_site: SiteFactory) -> None:
    s = await make_site(
        [{"after_s": 0, "roles": ["safety_officer"], "channels": ["hook"]},
         {"after_s": 10, "roles": ["project_manager"], "channels": ["hook"]}],
        group_window_s=60,
    )  # fmt: skip
    s.raise_("GD-01")
    await s.step()
    s.clock.advance(10)
    await s.step()
    assert [ids(d) for d in s.hooks()] == [["zhang"], ["li"]]


# ---- delivery retries ----------------------------------------------------------------------------------------------


async def test_webhook_500_twice_then_200_is_delivered_on_the_third_attempt_with_backoff(
    make_site: SiteFactory,
) -> None:
    s = await make_site(FIRST, retry_base_s=5, retry_max_s=300, max_attempts=8)
    s.http.script(s.path, [Reply(status=500), Reply(status=500)])
    s.raise_("GD-01")
    await s.step()
    [d] = s.rows("esc_deliveries")
    assert (d["status"], d["attempts"], d["next_try_ns"]) == ("retry", 1, MON_10 + 5 * S)
    assert d["last_error"].startswith("HTTP 500")

    s.clock.now = MON_10 + 5 * S - 1
    await s.step()
    assert len(s.hooks()) == 1
    s.clock.now = MON_10 + 5 * S
    await s.step()
    [d] = s.rows("esc_deliveries")
    assert (d["status"], d["attempts"], d["next_try_ns"]) == ("retry", 2, MON_10 + 15 * S)  # 5 * 2^1 later

    s.clock.now = MON_10 + 15 * S - 1
    await s.step()
    assert len(s.hooks()) == 2
    s.clock.now = MON_10 + 15 * S
    await s.step()
    [d] = s.rows("esc_deliveries")
    assert (d["status"], d["attempts"], d["sent_ns"], d["last_error"]) == ("sent", 3, MON_10 + 15 * S, None)
    keys = [h["header_key"] for h in s.hooks()]
    assert len(keys) == 3 and len(set(keys)) == 1 and keys[0] == d["key"]  # one idempotency key for every attempt


async def test_backoff_is_capped_and_max_attempts_fails_and_logs(
    make_site: SiteFactory, caplog: pytest.LogCaptureFixture
) -> None:
    s = await make_site(FIRST, retry_base_s=2, retry_max_s=3, max_attempts=4)
    s.http.script(s.path, [Reply(status=503)] * 4)
    s.raise_("GD-01")
    waits = []
    with caplog.at_level(logging.WARNING, logger="sitegw.escalation"):
        await s.step()
        for _ in range(3):
            [d] = s.rows("esc_deliveries")
            waits.append((d["next_try_ns"] - s.clock.now) / S)
            s.clock.now = d["next_try_ns"]
            await s.step()
    assert waits == [2.0, 3.0, 3.0]  # 2 * 2^0, then 2 * 2^1 = 4 and 2 * 2^2 = 8 capped at 3
    [d] = s.rows("esc_deliveries")
    assert (d["status"], d["attempts"], d["next_try_ns"]) == ("failed", 4, None)
    assert any(r.levelno == logging.ERROR and "failed after 4 attempt(s)" in r.getMessage() for r in caplog.records)
    s.clock.advance(3600)
    await s.step()
    assert len(s.hooks()) == 4


async def test_webhook_404_fails_at_once_without_retry(
    make_site: SiteFactory, caplog: pytest.LogCaptureFixture
) -> None:
    s = await make_site(FIRST)
    s.http.script(s.path, [Reply(status=404, body=b"no such hook")])
    s.raise_("GD-01")
    with caplog.at_level(logging.ERROR, logger="sitegw.escalation"):
        await s.step()
    [d] = s.rows("esc_deliveries")
    assert (d["status"], d["attempts"], d["next_try_ns"]) == ("failed", 1, None)
    assert d["last_error"] == "HTTP 404: no such hook"
    assert any("failed after 1 attempt(s)" in r.getMessage() for r in caplog.records)
    s.clock.advance(3600)
    await s.step()
    assert len(s.hooks()) == 1


async def test_smtp_451_then_ok_is_delivered_on_retry(make_site: SiteFactory) -> None:
    with smtp_server(fail_first=1) as flaky:
        s = await make_site(
            [{"after_s": 0, "roles": ["project_manager"], "channels": ["mail"]}], smtp_rx=flaky, retry_base_s=5
        )
        s.raise_("GD-01")
        await s.step()
        [d] = s.rows("esc_deliveries")
        assert (d["status"], d["attempts"]) == ("retry", 1) and "451" in d["last_error"]
        assert flaky.messages == []
        s.clock.advance(5)
        await s.step()
        [d] = s.rows("esc_deliveries")
        assert (d["status"], d["attempts"]) == ("sent", 2)
        [m] = flaky.messages
        assert m["X-SiteGW-Key"] == d["key"] and "li@site.test" in str(m["To"])


async def test_nobody_on_duty_fails_the_mail_naming_role_and_tier_and_still_sends_the_webhook(
    make_site: SiteFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Nobody on duty failed every channel of the tier, the webhook's too, and counted nothing for the metric or
    /health: now only the mail (it reaches only the people it names) fails, counted, logged naming role and tier."""
    s = await make_site(
        [{"after_s": 0, "roles": ["project_manager"], "channels": ["mail", "hook"]}],
        now=at(2024, 6, 9, 10),  # Sunday: no project manager on the roster
    )
    aid = s.raise_("GD-01")
    with caplog.at_level(logging.ERROR, logger="sitegw.escalation"):
        await s.step()
    rows = s.rows("esc_outbox")
    assert [(r["channel"], r["status"], r["error"]) for r in rows] == [
        ("mail", "failed", "nobody on duty for project_manager"),
        ("hook", "sent", None),
    ]
    assert [ids(d) for d in s.hooks()] == [[]] and s.mails() == []
    assert s.steps(aid)[("1", 0, 0)]["status"] == "fired"
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "nobody on duty for project_manager (policy all tier 1)" in error and "mail" in error
    assert s.outcomes == [("mail", "failed"), ("hook", "sent")]


# ---- restart -------------------------------------------------------------------------------------------------------


async def test_restart_fires_pending_steps_once_and_never_resends_what_was_sent(make_site: SiteFactory) -> None:
    s = await make_site(
        [{"after_s": 0, "roles": ["safety_officer"], "channels": ["hook"]},
         {"after_s": 1800, "roles": ["project_manager"], "channels": ["mail"]}]
    )  # fmt: skip
    aid = s.raise_("GD-01")
    await s.step()
    assert len(s.hooks()) == 1

    s2 = s.reopen()  # a new process: new connection, Lifecycle and Escalation on the same file
    await s2.step()
    assert len(s2.hooks()) == 1  # the sent delivery is not sent again
    s2.clock.advance(1800)
    await s2.step()
    await s2.step()
    assert len(s2.mails()) == 1  # the pending tier fired once
    assert s2.steps(aid)[("1", 1, 0)]["status"] == "fired"


async def test_a_delivery_in_flight_at_a_crash_is_sent_again_with_the_same_key(make_site: SiteFactory) -> None:
    """At-least-once for the one message in flight: the gateway cannot know whether the receiver got it before the
    crash, so it sends it again with the same X-SiteGW-Key and leaves the de-duplication to the receiver."""
    s = await make_site(FIRST)
    s.raise_("GD-01")
    await s.step()
    [d] = s.rows("esc_deliveries")
    # the crash came after the POST and before the result was written
    s.conn.execute("UPDATE esc_deliveries SET status = 'sending', sent_ns = NULL WHERE id = ?", (d["id"],))

    s2 = s.reopen()
    [d2] = s2.rows("esc_deliveries")
    assert d2["status"] == "retry"
    await s2.step()
    first, again = s2.hooks()
    assert first["header_key"] == again["header_key"] == d["key"]
    assert first["subject"] == again["subject"]
    [d2] = s2.rows("esc_deliveries")
    assert (d2["status"], d2["attempts"]) == ("sent", 2)
    await s2.step()
    assert len(s2.hooks()) == 2


async def test_ack_after_restart_cancels_steps_scheduled_before_it(make_site: SiteFactory) -> None:
    s = await make_site(
        [{"after_s": 0, "roles": ["safety_officer"], "channels": ["hook"]},
         {"after_s": 1800, "roles": ["project_manager"], "channels": ["mail"]}]
    )  # fmt: skip
    aid = s.raise_("GD-01")
    await s.step()
    s2 = s.reopen()
    s2.lc.ack(aid, "zhang")
    s2.clock.advance(1800)
    await s2.step()
    assert s2.mails() == []
    assert s2.steps(aid)[("1", 1, 0)]["cancel_reason"] == "acknowledged"


# ---- chattering ----------------------------------------------------------------------------------------------------


async def test_a_chattering_alarm_does_not_start_a_new_escalation_on_each_re_raise(make_site: SiteFactory) -> None:
    s = await make_site(
        [{"after_s": 0, "roles": ["safety_officer"], "channels": ["hook"]},
         {"after_s": 600, "roles": ["project_manager"], "channels": ["mail"]}],
        group_window_s=0,
    )  # fmt: skip
    aid = s.raise_("GD-01")
    await s.step()
    kinds = []
    for _ in range(5):  # flapping around the threshold, 5 s per swing
        s.clock.advance(5)
        [cleared] = s.change("GD-01", Level.NORMAL, 20.0)
        assert cleared.kind == "cleared"
        s.clock.advance(5)
        kinds.append([e.kind for e in s.change("GD-01", Level.ALARM, 30.0)])
        await s.step()
    assert kinds == [["raised"], ["raised", "chattering"], ["raised"], ["raised"], ["raised"]]
    assert s.lc.get(aid).chattering and s.lc.get(aid).raise_count == 6
    # escalations: raise 1, raise 2 and raise 3 (the one that made it chattering); none for raises 4 to 6
    assert sorted({k[0] for k in s.steps(aid)}) == ["1", "2", "3"]
    items = [i for d in s.hooks() for i in d["data"].get("items", [d["data"]])]  # a digest when two meet in a step
    assert [i["event"] for i in items] == ["raised", "cleared", "raised", "cleared", "raised"]  # no 恢复正常 per swing

    # the escalation of the chattering alarm goes on through the swings: tier 2 at raise 3 + 600 s
    raise3 = s.steps(aid)[("3", 0, 0)]["due_ns"]
    assert raise3 == MON_10 + 20 * S
    s.clock.now = raise3 + 600 * S
    await s.step()
    [(_, to, _)] = s.mails()
    assert "li@site.test" in to
    assert [s.steps(aid)[(e, 1, 0)]["cancel_reason"] for e in ("1", "2")] == ["returned to normal"] * 2
    # the acknowledgement stops it and tells those who heard of it
    s.lc.ack(aid, "zhang")
    await s.step()
    assert [ids(d) for d in s.hooks()[-1:]] == [["zhang"]] and s.hooks()[-1]["data"]["event"] == "acked"
    assert s.mails()[-1][0].startswith("【已确认】")


# ---- hazards -------------------------------------------------------------------------------------------------------


async def test_overdue_hazard_clocks_are_queued_in_their_transaction_and_delivered_once(make_site: SiteFactory) -> None:
    s = await make_site(FIRST, hazard_notices={"roles": ["project_manager"], "channels": ["mail"]})
    s.conn.execute("CREATE TABLE t_clock (hazard_id INTEGER, due_ns INTEGER, fired INTEGER DEFAULT 0)")
    s.conn.execute("INSERT INTO t_clock(hazard_id, due_ns) VALUES (7, ?)", (MON_10 + 3600 * S,))

    def overdue(now: int) -> list[tuple[int, str, str, dict[str, Any]]]:
        rows = s.conn.execute("SELECT hazard_id FROM t_clock WHERE fired = 0 AND due_ns <= ?", (now,)).fetchall()
        s.conn.execute("UPDATE t_clock SET fired = 1 WHERE due_ns <= ?", (now,))  # in the escalation's transaction
        return [
            (r[0], f"【隐患逾期】#{r[0]} 整改期限已过", f"隐患 #{r[0]} 整改期限已过", {"hazard_id": r[0]}) for r in rows
        ]

    s.esc.hazard_source = overdue
    await s.step()
    assert s.mails() == []
    s.clock.advance(3600)
    await s.step()
    await s.step()
    s.clock.advance(3600)
    await s.step()
    [(subject, to, body)] = s.mails()
    assert subject == "【隐患逾期】#7 整改期限已过" and "li@site.test" in to and "隐患 #7" in body
    [row] = s.rows("esc_outbox")
    assert (row["hazard_id"], row["alarm_id"], row["status"], row["level"]) == (7, None, "sent", 2)


async def test_propose_hazard_tier_opens_one_hazard_in_the_firing_transaction(
    make_site: SiteFactory, caplog: pytest.LogCaptureFixture
) -> None:
    s = await make_site(
        [{"after_s": 0, "roles": ["safety_officer"], "channels": ["hook"]},
         {"after_s": 3600, "roles": ["enterprise_head"], "channels": ["hook"], "propose_hazard": True}]
    )  # fmt: skip
    s.conn.execute("CREATE TABLE t_hazard (id INTEGER PRIMARY KEY, alarm_id INTEGER)")
    s.conn.execute("INSERT INTO t_hazard(id, alarm_id) VALUES (41, 0)")
    calls: list[int] = []
    fail = [True]

    def propose(a: Any) -> int:
        calls.append(a.id)
        cur = s.conn.execute("INSERT INTO t_hazard(alarm_id) VALUES (?)", (a.id,))
        if fail[0]:
            raise sqlite3.OperationalError("hazard module failed")
        assert cur.lastrowid is not None
        return cur.lastrowid

    s.esc.propose_hazard = propose
    aid = s.raise_("GD-01")
    await s.step()
    assert calls == []  # only the tier that says so

    s.clock.advance(3600)
    with caplog.at_level(logging.ERROR, logger="sitegw.escalation"):
        await s.step()  # the failure is logged, its writes are undone, and the tier goes out anyway
    assert calls == [aid]
    assert s.conn.execute("SELECT COUNT(*) FROM t_hazard").fetchone()[0] == 1
    assert s.steps(aid)[("1", 1, 0)]["status"] == "fired"
    await s.step()
    assert len(s.hooks()) == 2 and "自动登记隐患失败" in s.hooks()[-1]["text"]
    assert "hazard_id" not in s.hooks()[-1]["data"]
    assert any(r.levelno == logging.ERROR for r in caplog.records)

    fail[0] = False  # the next alarm's enterprise tier registers its hazard in the firing transaction
    aid2 = s.raise_("GD-02")
    await s.step()
    s.clock.advance(3600)
    await s.step()
    await s.step()
    assert calls == [aid, aid2]
    assert [tuple(r) for r in s.conn.execute("SELECT id, alarm_id FROM t_hazard WHERE id > 41")] == [(42, aid2)]
    last = s.hooks()[-1]
    assert ids(last) == ["zhao"] and last["data"]["hazard_id"] == 42
    assert "已自动登记隐患 #42" in last["text"]


async def test_a_notifier_raising_something_unexpected_is_retried_and_other_deliveries_go_on(
    make_site: SiteFactory, caplog: pytest.LogCaptureFixture
) -> None:
    s = await make_site(
        [{"after_s": 0, "roles": ["safety_officer"], "channels": ["hook", "mail"]}], retry_base_s=5, max_attempts=3
    )
    real = s.notifiers["mail"]
    calls = []

    class Broken:
        id = "mail"

        async def send(self, msg: Any, to: Any) -> Any:
            calls.append(msg.key)
            if len(calls) == 1:
                raise KeyError("a notifier bug nobody foresaw")
            return await real.send(msg, to)

        async def aclose(self) -> None:
            await real.aclose()

    s.esc.notifiers["mail"] = Broken()  # type: ignore[assignment]
    s.raise_("GD-01")
    with caplog.at_level(logging.ERROR, logger="sitegw.escalation"):
        await s.step()
    assert len(s.hooks()) == 1  # the webhook went out in the same pass
    mail = next(d for d in s.rows("esc_deliveries") if d["channel"] == "mail")
    assert (mail["status"], mail["attempts"], mail["last_error"]) == ("retry", 1, "KeyError")
    assert any("unexpected error" in r.getMessage() and r.exc_info for r in caplog.records)
    s.clock.advance(5)
    await s.step()
    mail = next(d for d in s.rows("esc_deliveries") if d["channel"] == "mail")
    assert mail["status"] == "sent" and len(s.mails()) == 1 and len(set(calls)) == 1  # one key for both attempts


async def test_a_database_error_while_firing_leaves_the_step_pending_and_ends_the_pass(
    make_site: SiteFactory, tmp_path: Path
) -> None:
    """The loop's supervisor restarts the pass; the step fires once when the database takes writes again."""
    s = await make_site(FIRST)
    aid = s.raise_("GD-01")
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await s.step()
        assert s.steps(aid)[("1", 0, 0)]["status"] == "pending" and not s.hooks()
    finally:
        other.execute("ROLLBACK")
        other.close()
    await s.step()
    await s.step()
    assert s.steps(aid)[("1", 0, 0)]["status"] == "fired" and len(s.hooks()) == 1


# ---- what the siren waits for ----------------------------------------------------------------------------------


class Commits:
    """Every COMMIT on a connection, with sends marked in between."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.log: list[str] = []
        conn.set_trace_callback(self._trace)

    def _trace(self, sql: str) -> None:
        if sql.strip().upper() == "COMMIT":
            self.log.append("commit")

    def mark(self, what: str) -> None:
        self.log.append(what)

    def mark_sends(self, notifiers: dict[str, Any], channel: str = "hook") -> None:
        """Each send on `channel` goes into the log where it happens."""
        real = notifiers[channel]
        mark = self.mark

        class Marking:
            id = channel

            async def send(self, msg: Any, to: Any) -> Any:
                mark("send")
                return await real.send(msg, to)

            async def aclose(self) -> None:
                await real.aclose()

        notifiers[channel] = Marking()


async def test_between_an_alarm_and_its_siren_there_is_one_commit_for_the_whole_step(make_site: SiteFactory) -> None:
    """Each commit is an fsync (synchronous=FULL, ~0.4 ms, more on a busy disk): the step's stages (fire the tier,
    open the delivery, mark it being sent) were three, after the alarm's own."""
    s = await make_site(FIRST)
    commits = Commits(s.conn)
    commits.mark_sends(s.esc.notifiers)  # type: ignore[arg-type]
    aid = s.raise_("GD-01")
    await s.step()
    assert commits.log == ["commit", "commit", "send", "commit"]  # the raise, the step, the outcome
    assert len(s.hooks()) == 1 and s.rows("esc_deliveries")[0]["status"] == "sent"
    assert s.steps(aid)[("1", 0, 0)]["status"] == "fired"


async def test_a_pass_with_nothing_due_takes_no_write_lock(make_site: SiteFactory, tmp_path: Path) -> None:
    """Another process holding the database's write lock (an operator's sqlite3 shell, a backup) must not fail a
    pass that has nothing to write: the loop's supervisor would restart it with growing pauses, and /health would
    stay degraded for them after the lock is gone."""
    s = await make_site([{"after_s": 600, "roles": ["safety_officer"], "channels": ["hook"]}])
    s.raise_("GD-01")
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        await s.step()  # the tier is due in 10 minutes: nothing to write now
        s.clock.advance(600)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await s.step()  # now there is
    finally:
        other.execute("ROLLBACK")
        other.close()
    await s.step()
    assert len(s.hooks()) == 1


async def test_back_to_normal_reaches_those_told_whether_acknowledged_before_or_after(make_site: SiteFactory) -> None:
    # Found by a review: the "closed" that follows "cleared" (or "acked") in the same change cancelled every message
    # of the alarm still queued, the follow-up just queued included: nobody heard that the alarm was over
    s = await make_site(FIRST)
    aid = s.raise_("GD-01")
    await s.step()
    s.clock.advance(120)
    s.lc.ack(aid, "zhang_officer")  # acknowledged, then back to normal: the common way
    await s.step()
    s.clock.advance(120)
    assert [e.kind for e in s.change("GD-01", Level.NORMAL, 10.0)] == ["cleared", "closed"]
    await s.step()
    assert [h["data"]["event"] for h in s.hooks()] == ["raised", "acked", "cleared"]

    s.clock.advance(120)  # (past the group window: its raise goes out at once)
    other = s.raise_("GD-02")
    await s.step()
    assert s.hooks()[3]["data"]["event"] == "raised"
    s.clock.advance(10)
    s.change("GD-02", Level.NORMAL, 10.0)  # back to normal unacknowledged, then acknowledged before the next pass
    assert [e.kind for e in s.lc.ack(other, "zhang_officer")] == ["acked", "closed"]
    s.clock.advance(300)
    await s.step()
    told = s.hooks()[4:]
    said = " ".join(h["text"] for h in told)
    assert "恢复" in said and "zhang_officer" in said, told  # both follow-ups went out (one digest or two)
    assert s.rows("esc_outbox", "status = 'cancelled'") == []


async def test_overdue_hazard_clocks_wait_for_someone_on_duty_to_tell(make_site: SiteFactory) -> None:
    # Found by a review: deadlines fall due at local midnight, and the notice of one found nobody on duty for a
    # day-shift role, failed, and its clock was marked fired all the same: nobody ever heard of it
    s = await make_site(FIRST, hazard_notices={"roles": ["project_manager"], "channels": ["mail"]})
    fired: list[int] = []
    s.clock.now = at(2024, 6, 4, 0, 0)  # Tuesday 00:00: li (project manager, weekdays 08:00-20:00) is off duty

    def overdue(now: int) -> list[tuple[int, str, str, dict[str, Any]]]:
        fired.append(now)  # (marks the clocks fired: called only when their notice can be queued)
        return [(7, "【隐患逾期】#7 整改期限已过", "隐患 #7 整改期限已过", {"hazard_id": 7})] if len(fired) == 1 else []

    s.esc.hazard_source = overdue
    await s.step()
    assert fired == [] and s.rows("esc_outbox") == []  # not fired, nothing failed: it waits
    s.clock.now = at(2024, 6, 4, 8, 30)  # li on duty
    await s.step()
    await s.step()
    [(subject, to, _)] = s.mails()
    assert subject == "【隐患逾期】#7 整改期限已过" and "li@site.test" in to
    assert fired and s.rows("esc_outbox", "status = 'failed'") == []
