"""Surveyors' result files (CSV or XLSX, the layout of a monitoring firm's daily report) read into rows."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

MAX_ROWS = 20_000
MAX_ERRORS = 200
_HEADER_ROWS = 10  # a report often has a title and a project line above the table's header
_ROWS_READ = MAX_ROWS + _HEADER_ROWS + 1  # rows kept of a sheet (those beyond, when not blank, refuse the file)
_CLOCK = re.compile(r"\d{1,2}:\d{2}(:\d{2})?")

# column -> the headers it is known by (Chinese reports first), compared without spaces and case
ALIASES: dict[str, tuple[str, ...]] = {
    "point": ("测点编号", "测点", "点号", "点位", "测点号", "point", "pointid", "point_id"),
    "time": ("观测时间", "监测时间", "测量时间", "时间", "surveytime", "survey_time", "time"),
    # a date of its own: the survey's day, with its time of day in the time column when the report has both
    "date": ("观测日期", "监测日期", "测量日期", "日期", "date"),
    "cumulative": ("累计变化量", "累计变化", "累计值", "累计位移", "累计沉降", "cumulative"),
    "value": ("本次测值", "测值", "观测值", "value"),
    "rate": ("变化速率", "速率", "rate"),
    "item": ("监测项目", "项目", "item", "quantity"),
    "unit": ("单位", "unit"),
}
# what a report writes in its rate column where it has no rate (the first survey after 初始值, a gap), and the
# errors Excel's formulas leave there: the column is kept for comparison only, so these are "no rate"
_NO_RATE = frozenset(
    {"/", "-", "--", "—", "——", "－", "无", "n/a", "na", "#div/0!", "#n/a", "#value!", "#ref!", "#num!", "#name?"}
)
_UNIT_IN_HEADER = re.compile(r"^(?P<name>[^(（]+)[(（](?P<unit>[^)）]+)[)）]$")
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y%m%d%H%M%S")
_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y%m%d")


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong with the file, at a row (1-based, as a spreadsheet shows it) and column (its header), on a
    worksheet named when the workbook holds more than one table."""

    row: int
    column: str
    message: str
    sheet: str = ""

    def __str__(self) -> str:
        where = f"sheet {self.sheet!r}, " if self.sheet else ""
        return f"{where}row {self.row}, column {self.column}: {self.message}" if self.row else where + self.message


@dataclass(slots=True)
class SurveyRow:
    row: int
    point: str
    ts_ns: int
    value: float
    cumulative: bool  # the value is a cumulative change (relative to the surveyor's 初始值), not a raw reading
    rate: float | None
    item: str | None
    unit: str | None
    columns: dict[str, str] = field(default_factory=dict)  # logical column -> the header it came from
    sheet: str = ""  # its worksheet (a workbook's), whose name may say its item (gateway/surveys.py `_quantity`)


@dataclass(slots=True)
class SurveyFile:
    rows: list[SurveyRow]
    problems: list[Problem]
    header_row: int  # the first table's
    sheets: list[str] = field(default_factory=list)  # the worksheets read (a workbook's)
    skipped: dict[str, str] = field(default_factory=dict)  # worksheet -> why it was not read (no table, hidden)


def _norm(h: Any) -> str:
    return re.sub(r"\s+", "", str(h or "")).lower()


def unsheeted(problems: list[Problem]) -> list[Problem]:
    """The problems without their worksheet's name (a file of one table: the name would say nothing)."""
    return [replace(p, sheet="") for p in problems]


def _blank(row: Sequence[Any]) -> bool:
    return all(c is None or (isinstance(c, str) and not c.strip()) for c in row)


def _bounded(rows: Iterable[Sequence[Any]], sheet: str) -> list[list[Any]]:
    """The rows up to the last that holds something. Blank rows below the table (a template formatted far down)
    are not rows; more than the limit with something in them is an error, never a file cut short."""
    out: list[list[Any]] = []
    last = 0
    for r in rows:
        if len(out) < _ROWS_READ:
            out.append(list(r))
            if not _blank(r):
                last = len(out)
        elif not _blank(r):
            if sheet:
                raise ValueError(f"sheet {sheet!r}: more than {MAX_ROWS} rows: split the file")
            raise ValueError(f"more than {MAX_ROWS} rows: split the file")
    return out[:last]


def read_sheets(data: bytes, filename: str) -> list[tuple[str, list[list[Any]] | None]]:
    """(worksheet name, rows) for each sheet of an XLSX workbook, rows None for a sheet hidden in it (not read), or
    ("", rows) of a CSV (UTF-8 with or without BOM, or GB18030 as Chinese Excel saves it)."""
    if filename.lower().endswith((".xlsx", ".xlsm")) or data[:2] == b"PK":
        from openpyxl import load_workbook

        try:
            wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        except Exception as err:  # openpyxl raises many kinds (zipfile, KeyError, XML errors) on a bad file
            raise ValueError(f"{filename}: not a readable XLSX file ({type(err).__name__}: {err})") from None
        try:
            out = []
            for ws in wb.worksheets:
                # a hidden or "very hidden" sheet (ECMA-376 §18.2.19) is not read. Read-only mode trusts the size the
                # file declares for a sheet (its <dimension>): other tools declare it short or not at all, and rows
                # beyond it were not read (openpyxl's "Worksheet dimensions"); reset, it is read to its last row.
                named = ws.title if len(wb.worksheets) > 1 else ""
                if visible := ws.sheet_state == "visible":
                    ws.reset_dimensions()
                out.append((ws.title, _bounded(ws.iter_rows(values_only=True), named) if visible else None))
        finally:
            wb.close()
        return out
    for enc in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(enc)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise ValueError(f"{filename}: not UTF-8 or GB18030 text")
    try:
        return [("", _bounded(csv.reader(io.StringIO(text)), ""))]
    except csv.Error as err:  # a field over the csv module's limit (131 072 characters): was a 500
        raise ValueError(f"{filename}: not a readable CSV file ({err})") from None


def _header(rows: list[list[Any]]) -> tuple[int, dict[str, tuple[int, str, str | None]]]:
    """(index of the header row, logical column -> (index, header text, unit written in the header))."""
    for i, row in enumerate(rows[:_HEADER_ROWS]):
        found: dict[str, tuple[int, str, str | None]] = {}
        for j, cell in enumerate(row):
            text = str(cell or "").strip()
            unit = None
            m = _UNIT_IN_HEADER.match(text)
            if m:
                text, unit = m["name"].strip(), m["unit"].strip()
            key = _norm(text)
            for col, names in ALIASES.items():
                if col not in found and key in {_norm(n) for n in names}:
                    found[col] = (j, str(cell).strip(), unit)
        if "point" in found and ("time" in found or "date" in found):
            return i, found
    raise ValueError(
        "no header row with a point column (测点编号 / point) and a time column (观测时间 / 观测日期 / time) in the "
        f"first {_HEADER_ROWS} rows"
    )


def _number(v: Any) -> float | None:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not a number")
    if isinstance(v, (int, float)):
        x = float(v)
    else:
        try:
            x = float(str(v).strip().replace("−", "-").replace(",", ""))
        except ValueError:
            raise ValueError(f"{str(v)[:30]!r} is not a number") from None
    if not math.isfinite(x):
        raise ValueError(f"{v!r} is not a finite number")
    return x


def _time_of_day(v: Any) -> time | None:
    """A time column's cell that holds a time of day only (an XLSX time, "09:00", "9:00:30"), else None."""
    if isinstance(v, time):
        return v
    if isinstance(v, timedelta) and timedelta(0) <= v < timedelta(days=1):  # an [h]:mm cell, as openpyxl reads it
        return (datetime.min + v).time()
    if isinstance(v, str) and _CLOCK.fullmatch(v.strip()):
        h, m, *sec = (int(x) for x in v.strip().split(":"))
        if h < 24 and m < 60 and (not sec or sec[0] < 60):
            return time(h, m, sec[0] if sec else 0)
    return None


def _when(date_cell: Any, time_cell: Any, tz: tzinfo) -> int:
    """A survey's time from its date and time columns, either of which may be absent (None: no such column)."""
    clock = None if time_cell is None else _time_of_day(time_cell)
    if isinstance(time_cell, datetime) and date_cell is not None:
        # a time column holding whole datetimes (a template's cells reused from day to day) beside the date column:
        # its time of day, and its date only where it says the same day (it overrode the date column unsaid)
        on = datetime.fromtimestamp(_time(date_cell, tz) // 1_000_000_000, tz).date()
        if time_cell.date() != on:
            raise ValueError(f"the time column's date ({time_cell.date()}) is not the date column's ({on})")
        clock = time_cell.time()
    if clock is None:
        if time_cell is not None and not (isinstance(time_cell, str) and not time_cell.strip()):
            return _time(time_cell, tz)  # the time column holds the date too
        return _time(date_cell, tz)
    if date_cell is None:
        raise ValueError(f"{clock:%H:%M} is a time of day without a date (no date column, 观测日期)")
    day = _time(date_cell, tz)
    d = datetime.fromtimestamp(day // 1_000_000_000, tz)
    if (d.hour, d.minute, d.second) not in ((0, 0, 0), (clock.hour, clock.minute, clock.second)):
        raise ValueError(f"the date column holds a time of day too ({d:%H:%M}) beside the time column's")
    dt = datetime.combine(d.date(), clock, tzinfo=tz)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def _time(v: Any, tz: tzinfo) -> int:
    if isinstance(v, datetime):
        dt = v if v.tzinfo else v.replace(tzinfo=tz)
    elif isinstance(v, date):
        dt = datetime(v.year, v.month, v.day, tzinfo=tz)
    else:
        text = str(v or "").strip()
        if not text:
            raise ValueError("empty")
        for fmt in _TIME_FORMATS + _DATE_FORMATS:
            try:
                dt = datetime.strptime(text, fmt).replace(tzinfo=tz)
                break
            except ValueError:
                continue
        else:
            raise ValueError(f"{text[:30]!r} is not a time (2026-03-16 09:00, 2026/03/16 09:00:00 or 2026-03-16)")
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


# a template's lookup tables and old periods sit in hidden sheets: what the surveyor does not see is not reported
HIDDEN = "hidden in the workbook, not read (unhide it in Excel to import it)"


def parse_survey(data: bytes, filename: str, tz: tzinfo) -> SurveyFile:
    """Rows of a surveyor's file, each with its problems: a row is named as a spreadsheet numbers it (1-based) and
    a column by its header. Zone-less times are site time (`tz`). Nothing is checked against the site here.
    Every visible worksheet of a workbook that holds a table is read; a sheet with something in it but no table (a
    cover, notes) and a hidden sheet are named in `skipped`; a workbook with no table read is an error."""
    sheets = read_sheets(data, filename)
    tables: list[tuple[str, list[list[Any]], int, dict[str, tuple[int, str, str | None]]]] = []
    skipped: dict[str, str] = {}
    refusal = ""
    for name, table in sheets:
        if table is None:  # (a hidden sheet is what such a refusal names first: most likely the table is there)
            skipped[name] = HIDDEN
            refusal = refusal if HIDDEN in refusal else f"worksheet {name!r} is {HIDDEN}"
            continue
        try:
            hi, cols = _header(table)
        except ValueError as err:
            if table:  # (an empty sheet is not worth a word)
                skipped[name] = str(err)
            refusal = refusal or str(err)
            continue
        tables.append((name, table, hi, cols))
    if not tables:
        if len(sheets) > 1:
            refusal = f"no worksheet holds a table: {refusal}"
        raise ValueError(refusal or "the file is empty")
    many = len(tables) > 1
    rows: list[SurveyRow] = []
    problems: list[Problem] = []
    if sum(len(t) - hi - 1 for _n, t, hi, _c in tables) > MAX_ROWS:
        raise ValueError(f"more than {MAX_ROWS} rows: split the file")
    for name, table, hi, cols in tables:
        if "cumulative" not in cols and "value" not in cols:
            problems.append(
                Problem(0, "", "no value column: give 累计变化量 (cumulative change) or 本次测值 (value)", name)
            )
            continue
        rows += _rows(table, hi, cols, tz, name, problems)
    if not many:  # problems name their sheet only where the workbook has several tables
        problems = unsheeted(problems)
    if not rows and not problems:
        problems.append(Problem(0, "", "the file has a header but no rows"))
    return SurveyFile(rows, problems, tables[0][2] + 1, [n for n, *_ in tables], skipped)


def _rows(
    table: list[list[Any]],
    hi: int,
    cols: dict[str, tuple[int, str, str | None]],
    tz: tzinfo,
    sheet: str,
    problems: list[Problem],
) -> list[SurveyRow]:
    rows: list[SurveyRow] = []
    vcol = "cumulative" if "cumulative" in cols else "value"
    tcol = "time" if "time" in cols else "date"  # the column a bad survey time is named by
    headers = {c: h for c, (_j, h, _u) in cols.items()}
    if "time" not in headers:  # (problems with the survey time name the date column then)
        headers["time"] = headers["date"]
    for k, raw in enumerate(table[hi + 1 :]):
        n = hi + 2 + k  # the spreadsheet's own row number
        if _blank(raw):
            continue

        def cell(col: str, raw: list[Any] = raw) -> Any:
            if col not in cols:
                return None
            j = cols[col][0]
            return raw[j] if j < len(raw) else None

        def bad(col: str, msg: str, n: int = n) -> None:
            if len(problems) < MAX_ERRORS:
                problems.append(Problem(n, cols[col][1], msg, sheet))

        point = str(cell("point") or "").strip()
        if not point:
            bad("point", "no point id")
        try:
            ts = _when(cell("date") if "date" in cols else None, cell("time") if "time" in cols else None, tz)
        except ValueError as err:
            bad(tcol, str(err))
            ts = 0
        try:
            value = _number(cell(vcol))
        except ValueError as err:
            bad(vcol, str(err))
            value = None
        else:
            if value is None:
                bad(vcol, "no value")
        rate = None
        if "rate" in cols:
            given = cell("rate")
            if not (isinstance(given, str) and given.strip().lower() in _NO_RATE):
                try:
                    rate = _number(given)
                except ValueError as err:
                    bad("rate", str(err))
        item = str(cell("item")).strip() if cell("item") is not None else None
        unit = str(cell("unit")).strip() if cell("unit") is not None else cols[vcol][2]
        if point and ts and value is not None:
            rows.append(SurveyRow(n, point, ts, value, vcol == "cumulative", rate, item, unit, headers, sheet))
    return rows


# the words reports use for a quantity beside its catalog title: GB 50497-2019 names settlement monitoring 竖向位移,
# where daily reports write 沉降 (坡顶沉降, 周边地表沉降), and the groundwater level 水位 (坑外水位)
ITEM_WORDS: dict[str, tuple[str, ...]] = {"vertical_displacement": ("沉降",), "groundwater_level": ("水位",)}
# the direction words of the displacements: an item naming one the quantity found is not is two items in one
DIRECTIONS: dict[str, frozenset[str]] = {
    "水平": frozenset({"horizontal_displacement", "deep_displacement"}),
    "竖向": frozenset({"vertical_displacement"}),
    "沉降": frozenset({"vertical_displacement"}),
}
_DIRECTED = frozenset().union(*DIRECTIONS.values())


def item_quantity(text: str, allowed: list[str]) -> str:
    """The quantity a report's item names: a catalog name or title (水平位移), or the one title (or word for it,
    ITEM_WORDS) a longer item holds: 冠梁水平位移 names 水平位移, 桩体深层水平位移 深层水平位移 (the longest title
    found, when it holds the others found), 坡顶沉降 竖向位移. ValueError lists what the point reports."""
    from telemetry import quantities

    for q in allowed:
        qq = quantities.lookup(q)
        if text in (q, qq.title_zh, qq.title_en):
            return q
    found = {
        q: max(words, key=len)
        for q in allowed
        if (words := [w for w in (quantities.lookup(q).title_zh, *ITEM_WORDS.get(q, ())) if w in text])
    }
    if found:
        q, word = max(found.items(), key=lambda kv: len(kv[1]))
        # "坡顶水平及竖向位移" holds 竖向位移 whole and 水平 apart: two items in one, not the one found whole
        other = any(w in text and q not in qs for w, qs in DIRECTIONS.items()) and q in _DIRECTED
        if all(w in word for w in found.values()) and not other:
            return q
    names = ", ".join(f"{q} ({quantities.lookup(q).title_zh})" for q in allowed)
    raise ValueError(f"{text!r} is not a quantity this point reports ({names})")


def in_catalog_unit(value: float, unit: str | None, quantity: str) -> float:
    """The value in its quantity's catalog unit; ValueError when the report's unit does not convert."""
    from telemetry import quantities

    target = quantities.lookup(quantity).unit
    if not unit or unit == target:
        return value
    try:
        conv = quantities.converter(unit, target)
    except ValueError:
        raise ValueError(f"unit {unit!r} does not convert to {quantity}'s unit {target!r}") from None
    return conv(value) if conv else value
