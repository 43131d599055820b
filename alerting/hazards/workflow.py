"""The hazard workflow (隐患闭环): report → confirm → rectify → submit → accept (销号), with its clocks and roles."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Literal, get_args

from alerting import glossary
from alerting.db import tx
from alerting.hazards.citation import CRITERIA_2024_ISSUED, normalize_article
from alerting.hazards.clocks import HazardClocks
from alerting.hazards.model import (
    NS,
    HazardBadRequest,
    HazardClass,
    HazardError,
    HazardSource,
    Origin,
    need,
)
from alerting.roles import Role, require
from alerting.rules import HazardBasis, Level


class Hazards(HazardClocks):
    """The hazard ledger in the shared state database. Every change: role check, one tx, audit row, history row."""

    # ---- reporting ------------------------------------------------------------------------------------------

    def report(
        self,
        *,
        actor: str,
        role: Role,
        unit_name: str,
        description: str,
        source: HazardSource,
        origin: Origin = "manual",
        found_ns: int | None = None,
        prefecture: str | None = None,
        county: str | None = None,
        sector: str | None = None,
        device: str | None = None,
        point: str | None = None,
        alarm_id: int | None = None,
        alarm_level: Level | None = None,
        value: float | None = None,
        threshold: float | None = None,
        value_unit: str | None = None,
        provenance: str | None = None,
        proposed_class: HazardClass | None = None,
        proposed_basis: HazardBasis | None = None,
    ) -> int:
        """Record a found hazard (→ found). `found_ns` lets an inspection be entered after the day it was found."""
        require(role, Role.OFFICER, "hazard report")
        unit_name = need(unit_name, "unit_name (隐患单位名称)")
        description = need(description, "description (隐患内容)")
        if source not in get_args(HazardSource):
            raise HazardBadRequest(f"source must be one of {get_args(HazardSource)}, not {source!r}")
        if origin == "alarm" and alarm_id is None:
            raise HazardBadRequest("alarm_id is required for a hazard from an alarm")
        if alarm_id is not None and self.alarm_state is not None and self.alarm_state(alarm_id) is None:
            raise HazardBadRequest(f"alarm_id {alarm_id}: there is no such alarm on this site")
        now = self.clock()
        found = now if found_ns is None else found_ns
        if found > now:
            raise HazardBadRequest("found_ns lies in the future")
        article = normalize_article(proposed_basis.article) if proposed_basis else None
        with tx(self.conn):
            cur = self.conn.execute(
                "INSERT INTO hazard_record(status, origin, source, unit_name, prefecture, county, sector, description,"
                " device, point, alarm_id, alarm_level, value, threshold, value_unit, provenance, proposed_class,"
                " proposed_version, proposed_article, proposed_text, found_at_ns, found_by, updated_at_ns)"
                " VALUES ('found', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    origin,
                    source,
                    unit_name,
                    prefecture or self.cfg.region_prefecture,
                    county or self.cfg.region_county,
                    sector or self.cfg.sector,
                    description,
                    device,
                    point,
                    alarm_id,
                    None if alarm_level is None else int(alarm_level),
                    value,
                    threshold,
                    value_unit,
                    provenance,
                    proposed_class,
                    proposed_basis.version if proposed_basis else None,
                    article,
                    proposed_basis.text_zh if proposed_basis else None,
                    found,
                    actor,
                    now,
                ),
            )
            hid = cur.lastrowid
            assert hid is not None
            detail = {"source": source, "origin": origin, "proposed_class": proposed_class, "alarm_id": alarm_id}
            self._log(hid, now, actor, "report", None, "found", f"reported: {description}", detail)
        return hid

    def propose_from_alarm(
        self,
        *,
        actor: str,
        role: Role,
        unit_name: str,
        alarm_id: int,
        device: str,
        point: str,
        title_zh: str,
        level: Level,
        value: float,
        threshold: float | None,
        value_unit: str,
        provenance: str | None,
        hazard_basis: HazardBasis | None,
        alarm_at_ns: int | None = None,
        measured_ns: int | None = None,
        point_zh: str | None = None,
    ) -> int:
        """A found record built from an alarm snapshot, described in Chinese (`point_zh` names the measured point,
        the source is cited as a supervisor reads it; the record keeps the raw point and source). The rule's
        hazard_basis is only proposed: with one the proposed class is major, and a MANAGER still confirms (an alarm
        is not yet a 重大事故隐患, domain.md §0)."""
        limit = "" if threshold is None else f"，{level.zh}阈值 {threshold:g}{value_unit}"
        cited = f"（{glossary.cite_zh(provenance)}）" if provenance else ""
        description = f"{device} {title_zh}：{point_zh or point} 读数 {value:g}{value_unit}{limit}{cited}"
        if measured_ns is not None and alarm_at_ns is not None and abs(measured_ns - alarm_at_ns) >= 60 * NS:
            # a back-dated survey: the ledger shows when it was measured as well as when the alarm was raised
            fmt = "%Y-%m-%d %H:%M"
            measured = datetime.fromtimestamp(measured_ns // NS, self.tz).strftime(fmt)
            raised = datetime.fromtimestamp(alarm_at_ns // NS, self.tz).strftime(fmt)
            description += f"（测量时间 {measured}，报警时间 {raised}）"
        return self.report(
            actor=actor,
            role=role,
            unit_name=unit_name,
            description=description,
            source="self_check",  # the site's own monitoring is the enterprise checking itself
            origin="alarm",
            found_ns=alarm_at_ns,
            device=device,
            point=point,
            alarm_id=alarm_id,
            alarm_level=level,
            value=value,
            threshold=threshold,
            value_unit=value_unit,
            provenance=provenance,
            proposed_class="major" if hazard_basis else "general",
            proposed_basis=hazard_basis,
        )

    # ---- transitions ----------------------------------------------------------------------------------------

    def confirm(
        self,
        hazard_id: int,
        *,
        actor: str,
        role: Role,
        klass: HazardClass,
        basis: HazardBasis | None = None,
        why: str | None = None,
    ) -> None:
        """found → confirmed with a class; a major class needs a 判定依据 and starts the same-day report clock.

        The same day is the local day of confirmation: the hazard is known to be major from then on (seed 002 [P]:
        发现重大隐患当日要立即向属地住房和城乡建设主管部门报告)."""
        require(role, Role.MANAGER, "hazard confirm")
        if klass not in get_args(HazardClass):
            raise HazardBadRequest(f"klass must be one of {get_args(HazardClass)}, not {klass!r}")
        now = self.clock()
        with tx(self.conn):
            row = self._expect(hazard_id, "confirm", ("found",))
            article = None
            if basis is not None:
                article = normalize_article(basis.article)
                if basis.version == "2022" and self.local_date(row["found_at_ns"]) >= CRITERIA_2024_ISSUED:
                    raise HazardError(
                        "a 2022 basis (建质规〔2022〕2号, repealed) is accepted only for hazards found before "
                        f"{CRITERIA_2024_ISSUED}; cite 建质规〔2024〕5号"
                    )
            elif klass == "major":
                hint = ""
                if row["proposed_article"]:
                    hint = f" (proposed: {row['proposed_version']} {row['proposed_article']})"
                raise HazardBadRequest(f"basis (criteria version and article) is required for a major hazard{hint}")
            updates: dict[str, Any] = {
                "klass": klass,
                "basis_version": basis.version if basis else None,
                "basis_article": article,
                "basis_text": basis.text_zh if basis else None,
                "confirmed_at_ns": now,
                "confirmed_by": actor,
            }
            if klass == "major":
                updates["report_due_ns"] = self.end_of_day_ns(self.local_date(now))
                self._start_clock(hazard_id, "report_same_day", updates["report_due_ns"])
            self._move(row, now, actor, "confirm", "confirmed", why or f"classified {klass}", updates)

    def dismiss(self, hazard_id: int, *, actor: str, role: Role, reason: str) -> None:
        """found → dismissed (e.g. a communication outage, not a failed safety device)."""
        require(role, Role.MANAGER, "hazard dismiss")
        reason = need(reason, "reason")
        now = self.clock()
        with tx(self.conn):
            row = self._expect(hazard_id, "dismiss", ("found",))
            self._move(row, now, actor, "dismiss", "dismissed", reason, {"dismiss_reason": reason})

    def assign(
        self,
        hazard_id: int,
        *,
        actor: str,
        role: Role,
        responsible: str,
        measures: str,
        deadline: date,
        funds: float | None = None,
        emergency_plan: str | None = None,
    ) -> None:
        """confirmed | reopened → rectifying. A major hazard also needs funds and an emergency plan (seed 002 [P]:
        责任人、措施、资金、期限和应急预案). Starts the rectification deadline clock (end of the deadline day)."""
        require(role, Role.MANAGER, "hazard assign")
        now = self.clock()
        with tx(self.conn):
            row = self._expect(hazard_id, "assign", ("confirmed", "reopened"))
            updates: dict[str, Any] = {
                "responsible": need(responsible, "responsible (责任人)"),
                "measures": need(measures, "measures (整改措施)"),
                "deadline": deadline.isoformat(),
                "funds": funds,
                "emergency_plan": emergency_plan.strip() if emergency_plan else None,
            }
            if deadline < self.local_date(now):
                raise HazardBadRequest(f"deadline {deadline} is already past")
            if row["klass"] == "major":
                if funds is None:
                    raise HazardBadRequest("funds (资金) is required for a major hazard")
                need(emergency_plan, "emergency_plan (应急预案)")
            if funds is not None and funds < 0:
                raise HazardBadRequest("funds must not be negative")
            self._start_clock(hazard_id, "rectify_deadline", self.end_of_day_ns(deadline))
            self._move(row, now, actor, "assign", "rectifying", f"rectify by {deadline}", updates)

    def list_supervision(
        self, hazard_id: int, *, actor: str, role: Role, level: Literal["county", "city"], why: str | None = None
    ) -> None:
        """Put a major hazard under 挂牌督办 (county 30 / city 60 days to close the loop, seed 004 [P]).

        Named `list_supervision`, not `list`: a method called `list` would shadow the builtin in annotations.
        A county listing may be raised to city (a new clock from then); lowering or repeating a level is refused.
        The period starts the day after listing (民法典 art. 201 counts periods in days from the next day [R]),
        so the clock is due at the end of listing day + N."""
        require(role, Role.ADMIN, "hazard listing")
        if level not in ("county", "city"):
            raise HazardBadRequest(f"listing level must be county or city, not {level!r}")
        now = self.clock()
        with tx(self.conn):
            row = self._expect(hazard_id, "list", ("confirmed", "rectifying", "submitted", "reopened"))
            if row["klass"] != "major":
                raise HazardError("only a major hazard can be put under listed supervision (挂牌督办)")
            if row["listing"] == level or (row["listing"] == "city" and level == "county"):
                raise HazardError(f"hazard {hazard_id} is already listed at {row['listing']} level")
            days = self.cfg.county_listing_days if level == "county" else self.cfg.city_listing_days
            due = self.end_of_day_ns(self.local_date(now) + timedelta(days=days))
            self._start_clock(hazard_id, "listing_deadline", due)
            updates = {"listing": level, "listed_at_ns": now, "listed_by": actor, "listing_due_ns": due}
            self._move(row, now, actor, "list", row["status"], why or f"listed at {level} level ({days} days)", updates)

    def mark_reported(
        self,
        hazard_id: int,
        *,
        actor: str,
        role: Role,
        to: str,
        reference: str | None = None,
        reported_ns: int | None = None,
    ) -> None:
        """Record the same-day report of a confirmed major hazard to the 住建 department; stops its clock."""
        require(role, Role.MANAGER, "hazard mark_reported")
        to = need(to, "to (receiving department)")
        now = self.clock()
        at = now if reported_ns is None else reported_ns
        if at > now:
            raise HazardBadRequest("reported_ns lies in the future")
        with tx(self.conn):
            # (closed too: a major hazard fixed at once is still reported the same day, seed 002, domain.md §6.2)
            row = self._expect(
                hazard_id, "mark_reported", ("confirmed", "rectifying", "submitted", "reopened", "closed")
            )
            if row["report_due_ns"] is None:
                raise HazardError(f"hazard {hazard_id} is not a confirmed major hazard: no report is due")
            if row["reported_at_ns"] is not None:
                raise HazardError(f"hazard {hazard_id} was already reported")
            self._stop_clock(hazard_id, "report_same_day", now)
            updates = {"reported_at_ns": at, "reported_by": actor, "report_to": to, "report_ref": reference}
            late = " (late)" if at >= row["report_due_ns"] else ""
            self._move(row, now, actor, "mark_reported", row["status"], f"reported to {to}{late}", updates)

    def submit(self, hazard_id: int, *, actor: str, role: Role, evidence: str) -> None:
        """rectifying → submitted (rectification done, awaiting re-inspection); stops the deadline clock."""
        require(role, Role.OFFICER, "hazard submit")
        evidence = need(evidence, "evidence (整改证据)")
        now = self.clock()
        with tx(self.conn):
            row = self._expect(hazard_id, "submit", ("rectifying",))
            self._stop_clock(hazard_id, "rectify_deadline", now)
            updates = {"submitted_at_ns": now, "submitted_by": actor, "evidence": evidence}
            self._move(row, now, actor, "submit", "submitted", "rectification submitted", updates)

    def accept(
        self,
        hazard_id: int,
        *,
        actor: str,
        role: Role,
        completed_on: date | None = None,
        why: str | None = None,
        active_alarm_reason: str | None = None,
    ) -> None:
        """submitted → closed (验收销号) by someone other than the responsible person and the submitter; stops its
        clocks but the same-day report's, which runs until the report is recorded: fixing a major hazard at once does
        not lift the duty to report it the day it is found (seed 002; a review found the report neither due nor
        possible then).

        `completed_on` (actual completion date) defaults to the local day the rectification was submitted. A hazard
        whose source alarm is still active is not closed unless `active_alarm_reason` says why (e.g. the sensor
        itself is being replaced); the reason is kept and shown in the ledger."""
        require(role, Role.MANAGER, "hazard accept")
        now = self.clock()
        with tx(self.conn):
            row = self._expect(hazard_id, "accept", ("submitted",))
            if actor.strip().casefold() == (row["responsible"] or "").strip().casefold():
                raise HazardError(f"the responsible person {actor!r} cannot accept their own rectification")
            if actor.strip().casefold() == (row["submitted_by"] or "").strip().casefold():  # 复查: another person
                raise HazardError(f"{actor!r} submitted this rectification and cannot also accept it")
            note = None
            state = self.alarm_state(row["alarm_id"]) if row["alarm_id"] is not None and self.alarm_state else None
            if state in ("active_unacked", "active_acked"):
                reason = (active_alarm_reason or "").strip()
                if not reason:
                    raise HazardError(
                        f"hazard {hazard_id}: its source alarm #{row['alarm_id']} is still {state}; rectification "
                        "is not shown to work while the alarm stands. Accept only with active_alarm_reason saying "
                        "why (it is recorded and shown in the ledger)"
                    )
                note = f"源报警 #{row['alarm_id']} 仍在报警（{state}）时验收：{reason}"
            done = completed_on or self.local_date(row["submitted_at_ns"])
            if done > self.local_date(now) or done < self.local_date(row["found_at_ns"]):
                raise HazardBadRequest(f"completed_on {done} must lie between the day found and today")
            self.conn.execute(
                "UPDATE hazard_clock SET stopped_ns = ? WHERE hazard_id = ? AND stopped_ns IS NULL"
                " AND kind != 'report_same_day'",
                (now, hazard_id),
            )
            updates = {"accepted_at_ns": now, "accepted_by": actor, "completed_on": done.isoformat()}
            updates["accept_note"] = note
            self._move(row, now, actor, "accept", "closed", why or note or "accepted and closed (销号)", updates)

    def reject(self, hazard_id: int, *, actor: str, role: Role, reason: str) -> None:
        """submitted → rectifying: the re-inspection failed. The original deadline clock runs again."""
        require(role, Role.MANAGER, "hazard reject")
        reason = need(reason, "reason")
        now = self.clock()
        with tx(self.conn):
            row = self._expect(hazard_id, "reject", ("submitted",))
            self._resume_clock(hazard_id, "rectify_deadline")
            updates = {"reject_count": row["reject_count"] + 1, "submitted_at_ns": None, "submitted_by": None}
            self._move(row, now, actor, "reject", "rectifying", reason, updates)

    def reopen(self, hazard_id: int, *, actor: str, role: Role, reason: str) -> None:
        """closed → reopened (then assign again). Listing and unmade-report clocks resume; a clock that already
        fired does not fire again. Acceptance fields are cleared; the history keeps them."""
        require(role, Role.MANAGER, "hazard reopen")
        reason = need(reason, "reason")
        now = self.clock()
        with tx(self.conn):
            row = self._expect(hazard_id, "reopen", ("closed",))
            if row["listing"] != "none":
                self._resume_clock(hazard_id, "listing_deadline")
            if row["report_due_ns"] is not None and row["reported_at_ns"] is None:
                self._resume_clock(hazard_id, "report_same_day")
            updates = {
                "reopen_count": row["reopen_count"] + 1,
                "accepted_at_ns": None,
                "accepted_by": None,
                "completed_on": None,
                "accept_note": None,
            }
            self._move(row, now, actor, "reopen", "reopened", reason, updates)
