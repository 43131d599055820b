"""Survey imports: a surveyor's file checked whole against the site, stored, audited and fed to the pipeline."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from alerting.baselines import Baselines
from alerting.db import audit, tx
from drivers.profile import SurveyProfile
from drivers.survey import (
    MAX_ERRORS,
    Problem,
    SurveyFile,
    SurveyRow,
    in_catalog_unit,
    item_quantity,
    parse_survey,
    unsheeted,
)
from drivers.timefmt import parse_zone
from gateway.config import SiteConfig
from telemetry.clock import Clock
from telemetry.reading import Reading

Submit = Callable[[list[Reading]], Awaitable[None]]
NS = 1_000_000_000


class SurveyRefused(ValueError):
    """The file was not imported (nothing of it): every problem names its row and column."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        shown = "; ".join(str(p) for p in problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        super().__init__(f"survey file refused, nothing imported: {shown}")


@dataclass(frozen=True)
class Imported:
    import_id: int
    rows: int
    points: list[str]
    first_ns: int
    last_ns: int
    baselines_set: list[str]  # points whose cumulative values got a baseline of 0 with this import
    sheets: list[str] = field(default_factory=list)  # a workbook's worksheets read
    sheets_skipped: dict[str, str] = field(default_factory=dict)  # worksheet -> why not read (no table in it)

    def as_dict(self) -> dict[str, Any]:
        return {
            "import_id": self.import_id,
            "rows": self.rows,
            "points": self.points,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "baselines_set": self.baselines_set,
            "sheets": self.sheets,
            "sheets_skipped": self.sheets_skipped,
        }


class SurveyImporter:
    """Checks a whole file before anything is kept (no partial import), then stores its rows, audits who imported
    what, and hands the readings to the pipeline in time order, so alarms are evaluated on the surveys' times."""

    def __init__(
        self,
        cfg: SiteConfig,
        conn: sqlite3.Connection,
        baselines: Baselines,
        submit: Submit,
        clock: Clock,
    ) -> None:
        self.cfg = cfg
        self.conn = conn
        self.baselines = baselines
        self.submit = submit  # the gateway marks the points seen (liveness) and hands the readings to the pipeline
        self.clock = clock
        self.tz = parse_zone("site", cfg.site.timezone)
        self.points: dict[str, tuple[str, list[str]]] = {}  # point id -> (device id, quantities it may report)
        for d in cfg.devices:
            prof = cfg.profile_of(d)
            if isinstance(prof, SurveyProfile):
                self.points[d.key] = (d.id, list(prof.quantities))
        self.warning_keys = {d.id: list(d.warning_values) for d in cfg.devices if d.warning_values}
        self.max_ahead_ns = {d: int(a * NS) for d, (a, _age) in cfg.clock_limits().items()}

    # ---- checking ----------------------------------------------------------------------------------------------

    def _quantity(self, row: SurveyRow, device: str, allowed: list[str], given: str | None) -> str:
        """The row's quantity: its item column; else its worksheet's name where that names one (a workbook with a
        sheet per item), refused when the import's quantity says another; else the import's; else the point's
        only one."""
        if row.item:
            return item_quantity(row.item, allowed)
        named = None
        if row.sheet:
            try:
                named = item_quantity(row.sheet, allowed)
            except ValueError:
                named = None  # a sheet named for its points, or "Sheet2"
        if given:
            q = item_quantity(given, allowed)
            if named is not None and named != q:
                raise ValueError(f"the worksheet is named for {named}, and the import's quantity is {q}")
            return q
        if named is not None:
            return named
        own = [q for q in self.warning_keys.get(device, []) if q in allowed]
        if len(allowed) == 1 or len(own) == 1:
            return allowed[0] if len(allowed) == 1 else own[0]
        raise ValueError("no item column (监测项目) and no quantity given for the import")

    def check(
        self, data: bytes, filename: str, quantity: str | None = None
    ) -> tuple[list[tuple[SurveyRow, str, str, float]], SurveyFile]:
        """(row, device, quantity, value in the catalog unit) for every row, and the file as read (its sheets);
        SurveyRefused with every problem."""
        try:
            parsed = parse_survey(data, filename, self.tz)
        except ValueError as err:
            raise SurveyRefused([Problem(0, "", str(err))]) from None
        problems = list(parsed.problems)
        many = len(parsed.sheets) > 1
        out: list[tuple[SurveyRow, str, str, float]] = []
        last_in_file: dict[tuple[str, str], tuple[int, int, str]] = {}  # (device, quantity) -> (ts, row, sheet)
        now = self.clock()
        for r in parsed.rows:
            col = r.columns
            point = self.points.get(r.point)
            if point is None:
                known = ", ".join(sorted(self.points)) or "none configured"
                problems.append(
                    Problem(r.row, col["point"], f"unknown point {r.point!r} (survey points: {known})", r.sheet)
                )
                continue
            device, allowed = point
            try:
                q = self._quantity(r, device, allowed, quantity)
            except ValueError as err:
                problems.append(Problem(r.row, col.get("item", col["point"]), str(err), r.sheet))
                continue
            try:
                value = in_catalog_unit(r.value, r.unit, q)
            except ValueError as err:
                where = col.get("unit", col.get("cumulative", col.get("value", "")))
                problems.append(Problem(r.row, where, str(err), r.sheet))
                continue
            if r.ts_ns > now + self.max_ahead_ns.get(device, 300 * NS):
                problems.append(Problem(r.row, col["time"], "the survey time is in the future", r.sheet))
                continue
            key = (device, q)
            prev = last_in_file.get(key)
            if prev is not None and r.ts_ns <= prev[0]:
                what = "the same survey time as" if r.ts_ns == prev[0] else "earlier than"
                if prev[2] != r.sheet and many:
                    what += f" sheet {prev[2]!r},"
                problems.append(Problem(r.row, col["time"], f"{what} row {prev[1]} for {r.point} ({q})", r.sheet))
                continue
            last_in_file[key] = (r.ts_ns, r.row, r.sheet)
            out.append((r, device, q, value))
        problems += self._against_stored(out)
        if not many:  # problems name their sheet only where the workbook has several tables
            problems = unsheeted(problems)
        if problems:
            order = {name: i for i, name in enumerate(parsed.sheets)}  # the workbook's order, then the rows'
            raise SurveyRefused(sorted(problems, key=lambda p: (order.get(p.sheet, 0), p.row, p.column))[:MAX_ERRORS])
        return out, parsed

    def _against_stored(self, rows: list[tuple[SurveyRow, str, str, float]]) -> list[Problem]:
        """A survey already imported, or one older than the point's last imported survey (time going backwards)."""
        out: list[Problem] = []
        last: dict[tuple[str, str], int | None] = {}
        for r, device, q, _v in rows:
            if (device, q) not in last:
                row = self.conn.execute(
                    "SELECT MAX(ts_ns) FROM survey_results WHERE device = ? AND quantity = ?", (device, q)
                ).fetchone()
                last[(device, q)] = row[0]
            newest = last[(device, q)]
            if newest is None or r.ts_ns > newest:
                continue
            dup = self.conn.execute(
                "SELECT import_id FROM survey_results WHERE device = ? AND quantity = ? AND ts_ns = ?",
                (device, q, r.ts_ns),
            ).fetchone()
            col = r.columns["time"]
            if dup is not None:
                out.append(
                    Problem(
                        r.row, col, f"{r.point} ({q}) at this time was already imported (import #{dup[0]})", r.sheet
                    )
                )
            else:
                out.append(Problem(r.row, col, f"older than the last imported survey of {r.point} ({q})", r.sheet))
        return out

    # ---- importing ---------------------------------------------------------------------------------------------

    async def import_file(self, data: bytes, filename: str, actor: str, quantity: str | None = None) -> Imported:
        now = self.clock()
        digest = hashlib.sha256(data).hexdigest()
        try:
            rows, parsed = self.check(data, filename, quantity)
        except SurveyRefused as err:
            with tx(self.conn):
                audit(self.conn, now, actor, "survey.refused", f"survey_file:{filename}", str(err)[:500],
                      {"sha256": digest, "problems": len(err.problems)})  # fmt: skip
            raise
        rows.sort(key=lambda x: x[0].ts_ns)
        first, last = rows[0][0].ts_ns, rows[-1][0].ts_ns
        baselines_set: list[str] = []
        with tx(self.conn):
            cur = self.conn.execute(
                "INSERT INTO survey_imports(at_ns, actor, filename, sha256, rows, first_ns, last_ns)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (now, actor, filename, digest, len(rows), first, last),
            )
            import_id = int(cur.lastrowid or 0)
            self.conn.executemany(
                "INSERT INTO survey_results(device, quantity, ts_ns, value, reported_rate, import_id)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(d, q, r.ts_ns, v, r.rate, import_id) for r, d, q, v in rows],
            )
            for r, d, q, _v in rows:
                # cumulative changes are relative to the surveyor's 初始值: the point's baseline is 0
                if r.cumulative and self.baselines.get(d, q) is None:
                    self.baselines.set(d, q, 0.0, actor, f"survey import #{import_id}: cumulative values", r.ts_ns)
                    baselines_set.append(f"{d}/{q}")
            points = sorted({r.point for r, _d, _q, _v in rows})
            audit(
                self.conn, now, actor, "survey.import", f"survey_import:{import_id}", None,
                {"filename": filename, "sha256": digest, "rows": len(rows), "points": points,
                 "first_ns": first, "last_ns": last, "sheets": parsed.sheets, "sheets_skipped": parsed.skipped},
            )  # fmt: skip
        await self.submit([Reading(d, q, v, r.ts_ns) for r, d, q, v in rows])
        return Imported(import_id, len(rows), points, first, last, baselines_set, parsed.sheets, parsed.skipped)

    def imports(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM survey_imports ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [dict(r) for r in rows]
