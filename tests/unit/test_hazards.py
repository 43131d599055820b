"""The hazard (隐患) closed loop on a real SQLite file: transitions, refusals, audit, history and clocks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from alerting.db import audit_rows, connect
from alerting.hazards import (
    DueClock,
    HazardConfig,
    HazardError,
    Hazards,
    basis_citation,
    normalize_article,
)
from alerting.roles import Forbidden, Role
from alerting.rules import HazardBasis, Level

S = 1_000_000_000
TZ = ZoneInfo("Asia/Shanghai")
B2024 = HazardBasis(version="2024", article="8(四)", text_zh="起重机械安全装置不齐全、失效或者被违规拆除、破坏")
B2022 = HazardBasis(version="2022", article="8（五）", text_zh="安全装置不齐全或失效（2022版）")


def ns(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, s, tzinfo=TZ).timestamp()) * S


class FakeClock:
    def __init__(self, t: int) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(ns(2025, 3, 10, 7, 30))  # 07:30 in Shanghai is still 2025-03-09 in UTC


@pytest.fixture
def hz(tmp_path: Path, clock: FakeClock) -> Iterator[Hazards]:
    conn = connect(tmp_path / "state.db")
    yield Hazards(conn, clock, HazardConfig(region_prefecture="昌吉州", region_county="昌吉市"))
    conn.close()


def manual(hz: Hazards, **kw: object) -> int:
    args: dict[str, object] = {
        "actor": "li",
        "role": Role.OFFICER,
        "unit_name": "某某项目",
        "description": "塔吊力矩限制器失效",
        "source": "inspection",
    }
    args.update(kw)
    return hz.report(**args)  # type: ignore[arg-type]


def major_rectifying(hz: Hazards, deadline: date = date(2025, 3, 20)) -> int:
    hid = manual(hz)
    hz.confirm(hid, actor="wang", role=Role.MANAGER, klass="major", basis=B2024)
    hz.assign(
        hid,
        actor="wang",
        role=Role.MANAGER,
        responsible="zhao",
        measures="更换力矩限制器",
        deadline=deadline,
        funds=12000,
        emergency_plan="停用塔吊，设警戒区",
    )
    return hid


def test_alarm_to_closed_loop_with_audit_and_history(hz: Hazards, clock: FakeClock) -> None:
    hid = hz.propose_from_alarm(
        actor="system",
        role=Role.OFFICER,
        unit_name="昌吉某住宅项目",
        alarm_id=17,
        device="TC1",
        point="moment_ratio",
        title_zh="力矩",
        level=Level.DANGER,
        value=112.0,
        threshold=110.0,
        value_unit="%",
        provenance="GB 5144-2006 [S+]",
        hazard_basis=B2024,
        alarm_at_ns=clock.t - 60 * S,
    )
    h = hz.get(hid)
    assert (h["status"], h["origin"], h["source"], h["alarm_id"], h["alarm_level"]) == (
        "found",
        "alarm",
        "self_check",
        17,
        3,
    )
    assert (h["proposed_class"], h["proposed_version"], h["proposed_article"]) == ("major", "2024", "8(四)")
    assert h["description"] == "TC1 力矩：moment_ratio 读数 112%，危险阈值 110%（GB 5144-2006）"
    assert (h["prefecture"], h["county"], h["sector"]) == ("昌吉州", "昌吉市", "房屋市政工程施工")
    assert h["found_at_ns"] == clock.t - 60 * S
    assert h["klass"] is None  # proposed only: a person classifies

    clock.t += 600 * S
    hz.confirm(hid, actor="wang", role=Role.MANAGER, klass="major", basis=B2024)
    hz.mark_reported(hid, actor="wang", role=Role.MANAGER, to="昌吉市住建局", reference="电话报告 0994-1")
    hz.assign(
        hid,
        actor="wang",
        role=Role.MANAGER,
        responsible="zhao",
        measures="更换力矩限制器并标定",
        deadline=date(2025, 3, 15),
        funds=8000.0,
        emergency_plan="停止吊装，设警戒区",
    )
    hz.list_supervision(hid, actor="boss", role=Role.ADMIN, level="county")
    clock.t += 86400 * S
    hz.submit(hid, actor="zhao", role=Role.OFFICER, evidence="新限制器合格证、标定记录")
    clock.t += 3600 * S
    hz.accept(hid, actor="wang", role=Role.MANAGER)

    h = hz.get(hid)
    assert h["status"] == "closed"
    assert (h["klass"], h["basis_version"], h["basis_article"]) == ("major", "2024", "8(四)")
    assert (h["responsible"], h["funds"], h["deadline"], h["listing"]) == ("zhao", 8000.0, "2025-03-15", "county")
    assert (h["reported_by"], h["report_to"], h["report_ref"]) == ("wang", "昌吉市住建局", "电话报告 0994-1")
    assert (h["accepted_by"], h["accepted_at_ns"], h["completed_on"]) == ("wang", clock.t, "2025-03-11")
    assert hz.due_clocks(clock.t + 365 * 86400 * S) == []  # closing stops every clock

    hist = hz.history(hid)
    assert [(e["action"], e["from_status"], e["to_status"], e["actor"]) for e in hist] == [
        ("report", None, "found", "system"),
        ("confirm", "found", "confirmed", "wang"),
        ("mark_reported", "confirmed", "confirmed", "wang"),
        ("assign", "confirmed", "rectifying", "wang"),
        ("list", "rectifying", "rectifying", "boss"),
        ("submit", "rectifying", "submitted", "zhao"),
        ("accept", "submitted", "closed", "wang"),
    ]
    assert hist[-1]["at_ns"] == clock.t
    assert hist[3]["detail"]["measures"] == "更换力矩限制器并标定"

    rows = audit_rows(hz.conn, target=f"hazard:{hid}")[::-1]
    assert [r["action"] for r in rows] == [f"hazard.{e['action']}" for e in hist]
    assert [(r["actor"], r["at_ns"]) for r in rows] == [(e["actor"], e["at_ns"]) for e in hist]
    assert rows[3]["why"] == "rectify by 2025-03-15"
    assert rows[2]["why"] == "reported to 昌吉市住建局"
    assert rows[-1]["detail"]["to"] == "closed"


def test_dismiss_needs_a_reason_and_ends_the_record(hz: Hazards) -> None:
    hid = manual(hz, source="self_check")
    with pytest.raises(HazardError, match="reason is required"):
        hz.dismiss(hid, actor="wang", role=Role.MANAGER, reason="  ")
    hz.dismiss(hid, actor="wang", role=Role.MANAGER, reason="通信中断，非安全装置失效")
    h = hz.get(hid)
    assert (h["status"], h["dismiss_reason"]) == ("dismissed", "通信中断，非安全装置失效")
    assert audit_rows(hz.conn, target=f"hazard:{hid}")[0]["why"] == "通信中断，非安全装置失效"
    with pytest.raises(HazardError, match="it is dismissed; confirm is allowed from found"):
        hz.confirm(hid, actor="wang", role=Role.MANAGER, klass="general")


def test_reject_counts_and_reopen_then_assign_again(hz: Hazards, clock: FakeClock) -> None:
    hid = major_rectifying(hz)
    hz.submit(hid, actor="zhao", role=Role.OFFICER, evidence="照片")
    hz.reject(hid, actor="wang", role=Role.MANAGER, reason="复查不合格：未标定")
    h = hz.get(hid)
    assert (h["status"], h["reject_count"], h["submitted_at_ns"]) == ("rectifying", 1, None)
    hz.submit(hid, actor="zhao", role=Role.OFFICER, evidence="标定记录")
    hz.accept(hid, actor="qian", role=Role.MANAGER, completed_on=date(2025, 3, 10))
    hz.reopen(hid, actor="wang", role=Role.MANAGER, reason="同类问题复发")
    h = hz.get(hid)
    assert (h["status"], h["reopen_count"], h["accepted_by"], h["completed_on"]) == ("reopened", 1, None, None)
    clock.t = ns(2025, 3, 12, 9)
    hz.assign(
        hid,
        actor="wang",
        role=Role.MANAGER,
        responsible="sun",
        measures="更换整套安全装置",
        deadline=date(2025, 3, 25),
        funds=30000,
        emergency_plan="停用",
    )
    assert hz.get(hid)["status"] == "rectifying"
    actions = [e["action"] for e in hz.history(hid)]
    assert actions == ["report", "confirm", "assign", "submit", "reject", "submit", "accept", "reopen", "assign"]


@pytest.mark.parametrize(
    ("setup", "call", "message"),
    [
        ("found", lambda hz, h: hz.submit(h, actor="a", role=Role.OFFICER, evidence="x"), "it is found; submit"),
        ("found", lambda hz, h: hz.list_supervision(h, actor="a", role=Role.ADMIN, level="city"), "it is found"),
        (
            "found",
            lambda hz, h: hz.assign(
                h, actor="a", role=Role.MANAGER, responsible="r", measures="m", deadline=date(2025, 4, 1)
            ),
            "it is found; assign is allowed from confirmed / reopened",
        ),
        ("rectifying", lambda hz, h: hz.accept(h, actor="q", role=Role.MANAGER), "accept is allowed from submitted"),
        ("rectifying", lambda hz, h: hz.reject(h, actor="q", role=Role.MANAGER, reason="r"), "it is rectifying"),
        ("rectifying", lambda hz, h: hz.reopen(h, actor="q", role=Role.MANAGER, reason="r"), "allowed from closed"),
        ("rectifying", lambda hz, h: hz.dismiss(h, actor="q", role=Role.MANAGER, reason="r"), "allowed from found"),
        (
            "rectifying",
            lambda hz, h: hz.confirm(h, actor="q", role=Role.MANAGER, klass="major", basis=B2024),
            "cannot confirm hazard 1: it is rectifying",
        ),
    ],
)
def test_illegal_transitions_name_state_and_allowed(hz: Hazards, setup: str, call: object, message: str) -> None:
    hid = manual(hz) if setup == "found" else major_rectifying(hz)
    before = len(audit_rows(hz.conn))
    with pytest.raises(HazardError, match=message):
        call(hz, hid)  # type: ignore[operator]
    assert hz.get(hid)["status"] == setup
    assert len(audit_rows(hz.conn)) == before  # a refusal writes nothing


@pytest.mark.parametrize(
    ("call", "needed"),
    [
        (lambda hz, h: manual(hz, role=Role.VIEWER), "hazard report needs role officer"),
        (lambda hz, h: hz.confirm(h, actor="a", role=Role.OFFICER, klass="general"), "needs role manager"),
        (lambda hz, h: hz.dismiss(h, actor="a", role=Role.OFFICER, reason="x"), "needs role manager"),
        (lambda hz, h: hz.list_supervision(h, actor="a", role=Role.MANAGER, level="county"), "needs role admin"),
        (lambda hz, h: hz.submit(h, actor="a", role=Role.VIEWER, evidence="x"), "needs role officer"),
        (lambda hz, h: hz.accept(h, actor="a", role=Role.OFFICER), "hazard accept needs role manager"),
        (lambda hz, h: hz.reject(h, actor="a", role=Role.OFFICER, reason="x"), "needs role manager"),
        (lambda hz, h: hz.reopen(h, actor="a", role=Role.OFFICER, reason="x"), "needs role manager"),
        (lambda hz, h: hz.mark_reported(h, actor="a", role=Role.OFFICER, to="x"), "needs role manager"),
        (
            lambda hz, h: hz.assign(
                h, actor="a", role=Role.OFFICER, responsible="r", measures="m", deadline=date(2025, 4, 1)
            ),
            "hazard assign needs role manager",
        ),
    ],
)
def test_wrong_role_is_forbidden_and_changes_nothing(hz: Hazards, call: object, needed: str) -> None:
    hid = manual(hz)
    before = (hz.get(hid), len(audit_rows(hz.conn)), len(hz.query()))
    with pytest.raises(Forbidden, match=needed):
        call(hz, hid)  # type: ignore[operator]
    assert (hz.get(hid), len(audit_rows(hz.conn)), len(hz.query())) == before


def test_missing_fields_are_named(hz: Hazards) -> None:
    with pytest.raises(HazardError, match=r"description \(隐患内容\) is required"):
        manual(hz, description=" ")
    with pytest.raises(HazardError, match=r"unit_name \(隐患单位名称\) is required"):
        manual(hz, unit_name="")
    with pytest.raises(HazardError, match="source must be one of"):
        manual(hz, source="hearsay")
    with pytest.raises(HazardError, match="alarm_id is required"):
        manual(hz, origin="alarm")

    hid = manual(hz, proposed_class="major", proposed_basis=B2024)
    with pytest.raises(HazardError, match=r"basis .* is required for a major hazard \(proposed: 2024 8\(四\)\)"):
        hz.confirm(hid, actor="wang", role=Role.MANAGER, klass="major")
    with pytest.raises(HazardError, match="must read like"):
        hz.confirm(
            hid, actor="wang", role=Role.MANAGER, klass="major", basis=B2024.model_copy(update={"article": "八(四)"})
        )
    hz.confirm(hid, actor="wang", role=Role.MANAGER, klass="major", basis=B2024)

    def assign(**kw: object) -> None:
        args: dict[str, object] = {
            "responsible": "zhao",
            "measures": "更换",
            "deadline": date(2025, 3, 20),
            "funds": 1000.0,
            "emergency_plan": "停用",
        }
        args.update(kw)
        hz.assign(hid, actor="wang", role=Role.MANAGER, **args)  # type: ignore[arg-type]

    with pytest.raises(HazardError, match=r"responsible \(责任人\) is required"):
        assign(responsible="")
    with pytest.raises(HazardError, match=r"measures \(整改措施\) is required"):
        assign(measures=" ")
    with pytest.raises(HazardError, match=r"funds \(资金\) is required for a major hazard"):
        assign(funds=None)
    with pytest.raises(HazardError, match=r"emergency_plan \(应急预案\) is required"):
        assign(emergency_plan=None)
    with pytest.raises(HazardError, match="deadline 2025-03-09 is already past"):
        assign(deadline=date(2025, 3, 9))
    assert hz.get(hid)["status"] == "confirmed"
    assign()
    with pytest.raises(HazardError, match=r"evidence \(整改证据\) is required"):
        hz.submit(hid, actor="zhao", role=Role.OFFICER, evidence="")
    hz.submit(hid, actor="zhao", role=Role.OFFICER, evidence="照片")
    with pytest.raises(HazardError, match="reason is required"):
        hz.reject(hid, actor="wang", role=Role.MANAGER, reason="")


def test_general_hazard_needs_no_funds_plan_or_basis(hz: Hazards) -> None:
    hid = manual(hz, description="临边防护缺失")
    hz.confirm(hid, actor="wang", role=Role.MANAGER, klass="general")
    hz.assign(hid, actor="wang", role=Role.MANAGER, responsible="zhao", measures="补设", deadline=date(2025, 3, 10))
    h = hz.get(hid)
    assert (h["status"], h["klass"], h["funds"], h["report_due_ns"]) == ("rectifying", "general", None, None)
    with pytest.raises(HazardError, match="not a confirmed major hazard"):
        hz.mark_reported(hid, actor="wang", role=Role.MANAGER, to="住建局")
    with pytest.raises(HazardError, match="only a major hazard"):
        hz.list_supervision(hid, actor="boss", role=Role.ADMIN, level="county")


def test_acceptor_must_not_be_the_responsible_person(hz: Hazards) -> None:
    hid = major_rectifying(hz)
    hz.submit(hid, actor="li", role=Role.OFFICER, evidence="照片")
    with pytest.raises(HazardError, match="responsible person 'Zhao ' cannot accept"):
        hz.accept(hid, actor="Zhao ", role=Role.MANAGER)
    assert hz.get(hid)["status"] == "submitted"
    hz.accept(hid, actor="wang", role=Role.MANAGER)
    assert hz.get(hid)["accepted_by"] == "wang"


def test_the_submitter_does_not_accept_their_own_submission(hz: Hazards) -> None:
    """复查 is another person's: a manager who submitted the rectification (a manager may) could then accept it and
    close the hazard alone; the responsible person (free text) was the only one refused."""
    hid = major_rectifying(hz)
    hz.submit(hid, actor="wang", role=Role.MANAGER, evidence="照片")
    with pytest.raises(HazardError, match="'Wang' submitted this rectification and cannot also accept it"):
        hz.accept(hid, actor="Wang", role=Role.MANAGER)
    assert hz.get(hid)["status"] == "submitted"
    hz.accept(hid, actor="qian", role=Role.MANAGER)
    assert hz.get(hid)["accepted_by"] == "qian"


def test_a_hazard_from_an_alarm_needs_the_alarm_and_closes_only_when_it_stands_no_more(hz: Hazards) -> None:
    states: dict[int, str] = {7: "active_acked"}
    hz.alarm_state = states.get  # the engine wires the lifecycle here; a dict plays this site's alarm table
    with pytest.raises(HazardError, match="alarm_id 8: there is no such alarm on this site"):
        manual(hz, origin="alarm", alarm_id=8)
    hid = manual(hz, origin="alarm", alarm_id=7)
    hz.confirm(hid, actor="wang", role=Role.MANAGER, klass="general")
    hz.assign(hid, actor="wang", role=Role.MANAGER, responsible="zhao", measures="通风", deadline=date(2025, 3, 20))
    hz.submit(hid, actor="li", role=Role.OFFICER, evidence="照片")
    for reason in (None, "  "):
        with pytest.raises(HazardError, match="source alarm #7 is still active_acked"):
            hz.accept(hid, actor="wang", role=Role.MANAGER, active_alarm_reason=reason)
    assert hz.get(hid)["status"] == "submitted"
    hz.accept(hid, actor="wang", role=Role.MANAGER, active_alarm_reason="传感器待更换")
    h = hz.get(hid)
    assert (h["status"], h["accept_note"]) == ("closed", "源报警 #7 仍在报警（active_acked）时验收：传感器待更换")
    assert hz.history(hid)[-1]["why"] == h["accept_note"]
    hz.reopen(hid, actor="wang", role=Role.MANAGER, reason="复查不合格")
    assert hz.get(hid)["accept_note"] is None
    # once the alarm is back to normal, acceptance needs no reason and records none
    hid2 = manual(hz, origin="alarm", alarm_id=7)
    hz.confirm(hid2, actor="wang", role=Role.MANAGER, klass="general")
    hz.assign(hid2, actor="wang", role=Role.MANAGER, responsible="zhao", measures="通风", deadline=date(2025, 3, 20))
    hz.submit(hid2, actor="li", role=Role.OFFICER, evidence="照片")
    states[7] = "normal"
    hz.accept(hid2, actor="wang", role=Role.MANAGER)
    assert (hz.get(hid2)["status"], hz.get(hid2)["accept_note"]) == ("closed", None)


def test_2022_basis_only_for_hazards_found_before_2024_12_13(hz: Hazards, clock: FakeClock) -> None:
    before = manual(hz, found_ns=ns(2024, 12, 12, 23, 59))
    after = manual(hz, found_ns=ns(2024, 12, 13, 0, 1))
    with pytest.raises(HazardError, match=r"2022 basis .* accepted only for hazards found before 2024-12-13"):
        hz.confirm(after, actor="wang", role=Role.MANAGER, klass="major", basis=B2022)
    assert hz.get(after)["status"] == "found"
    hz.confirm(before, actor="wang", role=Role.MANAGER, klass="major", basis=B2022)
    h = hz.get(before)
    assert (h["basis_version"], h["basis_article"]) == ("2022", "8(五)")  # fullwidth brackets normalised
    hz.confirm(after, actor="wang", role=Role.MANAGER, klass="major", basis=B2024)
    with pytest.raises(HazardError, match="future"):
        manual(hz, found_ns=clock.t + S)


def test_same_day_report_due_at_local_midnight(hz: Hazards, clock: FakeClock) -> None:
    hid = manual(hz)
    # 07:30 local is 23:30 UTC of the day before: the deadline must follow the local day, not the UTC one
    hz.confirm(hid, actor="wang", role=Role.MANAGER, klass="major", basis=B2024)
    due = ns(2025, 3, 11)
    assert hz.get(hid)["report_due_ns"] == due
    assert hz.due_clocks(due - S) == [DueClock(hid, "report_same_day", due, False)]
    assert hz.due_clocks(due) == [DueClock(hid, "report_same_day", due, True)]
    assert hz.fire_overdue(due - S) == []
    clock.t = ns(2025, 3, 10, 10)
    hz.mark_reported(hid, actor="wang", role=Role.MANAGER, to="住建局", reported_ns=ns(2025, 3, 10, 9))
    assert hz.get(hid)["reported_at_ns"] == ns(2025, 3, 10, 9)
    assert hz.due_clocks(due + S) == []  # the report stops the clock
    assert hz.fire_overdue(due + S) == []
    with pytest.raises(HazardError, match="already reported"):
        hz.mark_reported(hid, actor="wang", role=Role.MANAGER, to="住建局")


def test_a_major_hazard_closed_the_day_it_is_found_is_still_to_be_reported(hz: Hazards, clock: FakeClock) -> None:
    # Found by a review: 销号 stopped every clock, the same-day report's too, and a closed hazard could not be marked
    # reported: fixed at once, a major hazard went unreported with nothing due (seed 002: report the same day)
    hid = major_rectifying(hz, deadline=date(2025, 3, 10))
    clock.t = ns(2025, 3, 10, 11)
    hz.submit(hid, actor="zhao", role=Role.OFFICER, evidence="已更换")
    clock.t = ns(2025, 3, 10, 12)
    hz.accept(hid, actor="wang", role=Role.MANAGER)
    assert hz.get(hid)["status"] == "closed"
    due = ns(2025, 3, 11)
    assert hz.due_clocks(due) == [DueClock(hid, "report_same_day", due, True)]  # the report is still due
    assert [c.kind for c in hz.fire_overdue(due)] == ["report_same_day"]  # and its overdue notice goes out
    clock.t = ns(2025, 3, 11, 9)
    hz.mark_reported(hid, actor="wang", role=Role.MANAGER, to="住建局", reported_ns=ns(2025, 3, 10, 15))
    assert hz.get(hid)["reported_at_ns"] == ns(2025, 3, 10, 15) and hz.due_clocks(due + S) == []


@pytest.mark.parametrize(
    ("cfg", "level", "due"),
    [
        (HazardConfig(), "county", ns(2025, 4, 10)),  # listed 2025-03-10: 30 days end with 2025-04-09
        (HazardConfig(), "city", ns(2025, 5, 10)),  # 60 days end with 2025-05-09
        (HazardConfig(county_listing_days=15), "county", ns(2025, 3, 26)),  # a jurisdiction's own period
    ],
)
def test_listing_deadline(tmp_path: Path, clock: FakeClock, cfg: HazardConfig, level: str, due: int) -> None:
    hz = Hazards(connect(tmp_path / "s.db"), clock, cfg)
    hid = major_rectifying(hz, deadline=date(2026, 1, 1))
    hz.list_supervision(hid, actor="boss", role=Role.ADMIN, level=level)  # type: ignore[arg-type]
    h = hz.get(hid)
    assert (h["listing"], h["listed_by"], h["listed_at_ns"], h["listing_due_ns"]) == (level, "boss", clock.t, due)
    assert DueClock(hid, "listing_deadline", due, False) in hz.due_clocks(due - 1)
    assert DueClock(hid, "listing_deadline", due, True) in hz.due_clocks(due)


def test_listing_may_be_raised_to_city_but_not_repeated_or_lowered(hz: Hazards, clock: FakeClock) -> None:
    hid = major_rectifying(hz)
    hz.list_supervision(hid, actor="boss", role=Role.ADMIN, level="county")
    with pytest.raises(HazardError, match="already listed at county level"):
        hz.list_supervision(hid, actor="boss", role=Role.ADMIN, level="county")
    clock.t = ns(2025, 3, 12, 10)
    hz.list_supervision(hid, actor="boss", role=Role.ADMIN, level="city")
    assert hz.get(hid)["listing_due_ns"] == ns(2025, 5, 12)
    with pytest.raises(HazardError, match="already listed at city level"):
        hz.list_supervision(hid, actor="boss", role=Role.ADMIN, level="county")


def test_clocks_fire_once_across_restarts(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "state.db"
    hz = Hazards(connect(path), clock, HazardConfig())
    hid = major_rectifying(hz, deadline=date(2025, 3, 12))
    hz.list_supervision(hid, actor="boss", role=Role.ADMIN, level="county")
    rectify_due, report_due, listing_due = ns(2025, 3, 13), ns(2025, 3, 11), ns(2025, 4, 10)
    assert [(c.kind, c.due_ns) for c in hz.due_clocks(clock.t)] == [
        ("report_same_day", report_due),
        ("rectify_deadline", rectify_due),
        ("listing_deadline", listing_due),
    ]
    fired = hz.fire_overdue(ns(2025, 3, 13, 8))
    assert [(c.hazard_id, c.kind, c.overdue) for c in fired] == [
        (hid, "report_same_day", True),
        (hid, "rectify_deadline", True),
    ]
    assert hz.fire_overdue(ns(2025, 3, 13, 9)) == []
    hz.conn.close()

    hz = Hazards(connect(path), clock, HazardConfig())  # a restart: fired flags are in the file
    assert hz.fire_overdue(ns(2025, 3, 14)) == []
    assert [c.overdue for c in hz.due_clocks(ns(2025, 3, 14))] == [True, True, False]
    overdue = [e for e in hz.history(hid) if e["action"].startswith("overdue:")]
    assert [(e["action"], e["actor"], e["at_ns"]) for e in overdue] == [
        ("overdue:report_same_day", "system", ns(2025, 3, 13, 8)),
        ("overdue:rectify_deadline", "system", ns(2025, 3, 13, 8)),
    ]
    assert audit_rows(hz.conn, target=f"hazard:{hid}")[0]["action"] == "hazard.overdue:rectify_deadline"

    clock.t = ns(2025, 3, 14, 9)
    hz.submit(hid, actor="zhao", role=Role.OFFICER, evidence="照片")
    assert {c.kind for c in hz.due_clocks(clock.t)} == {"report_same_day", "listing_deadline"}
    hz.accept(hid, actor="wang", role=Role.MANAGER)
    # closed: the listing deadline never fires; the report, never made, is still due (its notice went out once)
    assert [c.kind for c in hz.due_clocks(ns(2026, 1, 1))] == ["report_same_day"]
    assert hz.fire_overdue(ns(2026, 1, 1)) == []

    # reopened: the listing clock runs again; a new rectification deadline is a new clock that fires once more
    hz.reopen(hid, actor="wang", role=Role.MANAGER, reason="复发")
    hz.assign(
        hid,
        actor="wang",
        role=Role.MANAGER,
        responsible="sun",
        measures="再整改",
        deadline=date(2025, 3, 16),
        funds=1.0,
        emergency_plan="停用",
    )
    fired = hz.fire_overdue(ns(2025, 4, 10))
    assert [(c.kind, c.due_ns) for c in fired] == [
        ("rectify_deadline", ns(2025, 3, 17)),
        ("listing_deadline", listing_due),
    ]  # report_same_day fired before the restart and does not fire again
    assert hz.fire_overdue(ns(2025, 5, 1)) == []


def test_submit_stops_and_reject_resumes_the_deadline_clock(hz: Hazards) -> None:
    hid = major_rectifying(hz, deadline=date(2025, 3, 11))
    hz.mark_reported(hid, actor="wang", role=Role.MANAGER, to="住建局")
    hz.submit(hid, actor="zhao", role=Role.OFFICER, evidence="照片")
    assert hz.fire_overdue(ns(2025, 3, 13)) == []
    hz.reject(hid, actor="wang", role=Role.MANAGER, reason="不合格")
    assert [(c.kind, c.due_ns) for c in hz.fire_overdue(ns(2025, 3, 13))] == [("rectify_deadline", ns(2025, 3, 12))]


def test_query_filters(hz: Hazards, clock: FakeClock) -> None:
    a = manual(hz, found_ns=ns(2025, 3, 1))
    b = manual(hz, found_ns=ns(2025, 3, 5))
    c = major_rectifying(hz)
    hz.confirm(a, actor="wang", role=Role.MANAGER, klass="general")
    assert [h["id"] for h in hz.query()] == [a, b, c]
    assert [h["id"] for h in hz.query(status="found")] == [b]
    assert [h["id"] for h in hz.query(klass="major")] == [c]
    assert [h["id"] for h in hz.query(since_ns=ns(2025, 3, 5), until_ns=clock.t)] == [b]
    with pytest.raises(HazardError, match="no hazard 99"):
        hz.get(99)


def test_config_is_strict() -> None:
    with pytest.raises(ValidationError, match="extra"):
        HazardConfig(county_days=10)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="unknown IANA time zone"):
        HazardConfig(timezone="Mars/Olympus")
    cfg = HazardConfig()
    assert (cfg.county_listing_days, cfg.city_listing_days, cfg.sector) == (30, 60, "房屋市政工程施工")
    with pytest.raises(ValidationError):
        cfg.timezone = "UTC"


def test_basis_citation_text() -> None:
    assert basis_citation("2024", "8(四)") == "建质规〔2024〕5号 第八条第（四）项"
    assert basis_citation("2024", "5(四)1") == "建质规〔2024〕5号 第五条第（四）项第1目"
    assert basis_citation("2024", "17") == "建质规〔2024〕5号 第十七条"
    assert basis_citation("2022", "11(二)") == "建质规〔2022〕2号 第十一条第（二）项"
    assert normalize_article(" 14（三） ") == "14(三)"
    with pytest.raises(HazardError):
        normalize_article("第八条")


def test_each_hazard_change_is_in_the_uplink_outbox_with_it_and_a_refused_one_is_not(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The uplink outbox is written in the change's own transaction: every change of the closed loop has its
    event, in order; a refused change (wrong state, wrong role) leaves neither a change nor an event."""
    from alerting.uplink import UplinkOutbox

    conn = connect(tmp_path / "state.db")
    box = UplinkOutbox("site-7")
    box.bind(conn)
    hz = Hazards(conn, clock, HazardConfig(region_prefecture="昌吉州", region_county="昌吉市"), hooks=[box.on_hazard])
    hid = manual(hz)
    with pytest.raises(HazardError):
        hz.accept(hid, actor="zhao", role=Role.MANAGER)  # not submitted yet: refused
    with pytest.raises(Forbidden):
        hz.dismiss(hid, actor="li", role=Role.OFFICER, reason="误报")  # an officer may not dismiss
    hz.dismiss(hid, actor="zhao", role=Role.MANAGER, reason="误报")
    events = box.pending(100)
    history = [r["action"] for r in hz.history(hid)]
    assert [e.kind for e in events] == [f"hazard.{a}" for a in history] and len(events) >= 2
    assert [e.event_id for e in events] == [f"site-7:{box.epoch}:{e.seq}" for e in events]
    assert all(json.loads(e.body)["data"]["hazard_id"] == hid for e in events)
    box.delete_through(events[-1].seq)
    assert box.backlog() == (0, None)
    conn.close()


def test_a_hazard_change_sends_its_text_once_with_the_record(tmp_path: Path, clock: FakeClock) -> None:
    """An assignment's 整改措施 went in the uplink event twice (the change's fields and the record after it): 500 kB
    of measures made a 1 MB event, over the regional cluster's max_payload. Now once, in the record; the fields the
    hub reads of a change (hazard_id, action, to, record) are all there."""
    from alerting.uplink import UplinkOutbox

    conn = connect(tmp_path / "state.db")
    box = UplinkOutbox("site-7")
    box.bind(conn)
    hz = Hazards(conn, clock, HazardConfig(), hooks=[box.on_hazard])
    hid = manual(hz)
    hz.confirm(hid, actor="wang", role=Role.MANAGER, klass="general", basis=None)
    measures = "更换力矩限制器并" * 1000
    hz.assign(hid, actor="wang", role=Role.MANAGER, responsible="zhao", measures=measures, deadline=date(2025, 3, 20))
    ev = box.pending(100)[-1]
    data = json.loads(ev.body)["data"]
    assert ev.body.count(measures) == 1
    assert (data["hazard_id"], data["action"], data["from"], data["to"]) == (hid, "assign", "confirmed", "rectifying")
    assert data["record"]["measures"] == measures and data["record"]["responsible"] == "zhao"
    conn.close()
