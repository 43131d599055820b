"""Surveyors' result files (CSV or XLSX, the layout of a monitoring firm's daily report) read into rows."""

from __future__ import annotations

import csv
import io
import itertools
import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from typing import Any

MAX_ROWS = 20_000
MAX_ERRORS = 200
_HEADER_ROWS = 10  # a report often has a title and a project line above the table's header

# column -> the headers it is known by (Chinese reports first), compared without spaces and case
ALIASES: dict[str, tuple[str, ...]] = {
    "point": ("测点编号", "测点", "点号", "点位", "测点号", "point", "pointid", "point_id"),
    "time": (
        "观测时间",
        "监测时间",
        "测量时间",
        "观测日期",
        "监测日期",
        "时间",
        "日期",
        "surveytime",
        "survey_time",
        "time",
    ),
    "cumulative": ("累计变化量", "累计变化", "累计值", "累计位移", "累计沉降", "cumulative"),
    "value": ("本次测值", "测值", "观测值", "value"),
    "rate": ("变化速率", "速率", "rate"),
    "item": ("监测项目", "项目", "item", "quantity"),
    "unit": ("单位", "unit"),
}
_UNIT_IN_HEADER = re.compile(r"^(?P<name>[^(（]+)[(（](?P<unit>[^)）]+)[)）]$")
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y%m%d%H%M%S")
_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y%m%d")


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong with the file, at a row (1-based, as a spreadsheet shows it) and column (its header)."""

    row: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}, column {self.column}: {self.message}" if self.row else self.message


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


@dataclass(slots=True)
class SurveyFile:
    rows: list[SurveyRow]
    problems: list[Problem]
    header_row: int


def _norm(h: Any) -> str:
    return re.sub(r"\s+", "", str(h or "")).lower()


def read_table(data: bytes, filename: str) -> list[list[Any]]:
    """The first sheet of an XLSX file, or a CSV (UTF-8 with or without BOM, or GB18030 as Chinese Excel saves it)."""
    if filename.lower().endswith((".xlsx", ".xlsm")) or data[:2] == b"PK":
        from openpyxl import load_workbook

        try:
            wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        except Exception as err:  # openpyxl raises many kinds (zipfile, KeyError, XML errors) on a bad file
            raise ValueError(f"{filename}: not a readable XLSX file ({type(err).__name__}: {err})") from None
        try:
            ws = wb.worksheets[0]
            rows = [list(r) for r in itertools.islice(ws.iter_rows(values_only=True), MAX_ROWS + _HEADER_ROWS + 1)]
        finally:
            wb.close()
        return rows
    for enc in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(enc)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise ValueError(f"{filename}: not UTF-8 or GB18030 text")
    return list(itertools.islice(csv.reader(io.StringIO(text)), MAX_ROWS + _HEADER_ROWS + 1))


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
        if "point" in found and "time" in found:
            return i, found
    raise ValueError(
        "no header row with a point column (测点编号 / point) and a time column (观测时间 / time) in the first "
        f"{_HEADER_ROWS} rows"
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


def parse_survey(data: bytes, filename: str, tz: tzinfo) -> SurveyFile:
    """Rows of a surveyor's file, each with its problems: a row is named as a spreadsheet numbers it (1-based) and
    a column by its header. Zone-less times are site time (`tz`). Nothing is checked against the site here."""
    table = read_table(data, filename)
    hi, cols = _header(table)
    if "cumulative" not in cols and "value" not in cols:
        raise ValueError("no value column: give 累计变化量 (cumulative change) or 本次测值 (value)")
    rows: list[SurveyRow] = []
    problems: list[Problem] = []
    body = table[hi + 1 :]
    if len(body) > MAX_ROWS:
        raise ValueError(f"more than {MAX_ROWS} rows: split the file")
    vcol = "cumulative" if "cumulative" in cols else "value"
    for k, raw in enumerate(body):
        n = hi + 2 + k  # the spreadsheet's own row number
        if all(c is None or (isinstance(c, str) and not c.strip()) for c in raw):
            continue

        def cell(col: str, raw: list[Any] = raw) -> Any:
            j = cols[col][0]
            return raw[j] if j < len(raw) else None

        def bad(col: str, msg: str, n: int = n) -> None:
            if len(problems) < MAX_ERRORS:
                problems.append(Problem(n, cols[col][1], msg))

        point = str(cell("point") or "").strip()
        if not point:
            bad("point", "no point id")
        try:
            ts = _time(cell("time"), tz)
        except ValueError as err:
            bad("time", str(err))
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
            try:
                rate = _number(cell("rate"))
            except ValueError as err:
                bad("rate", str(err))
        item = str(cell("item")).strip() if "item" in cols and cell("item") is not None else None
        unit = str(cell("unit")).strip() if "unit" in cols and cell("unit") is not None else cols[vcol][2]
        if point and ts and value is not None:
            headers = {c: h for c, (_j, h, _u) in cols.items()}
            rows.append(SurveyRow(n, point, ts, value, vcol == "cumulative", rate, item, unit, headers))
    if not rows and not problems:
        problems.append(Problem(0, "", "the file has a header but no rows"))
    return SurveyFile(rows, problems, hi + 1)


def item_quantity(text: str, allowed: list[str]) -> str:
    """The quantity a report's item names: a catalog name or title (水平位移), or the one title a longer item holds
    (冠梁水平位移 names 水平位移). ValueError lists what the point reports."""
    from telemetry import quantities

    for q in allowed:
        qq = quantities.lookup(q)
        if text in (q, qq.title_zh, qq.title_en):
            return q
    near = [q for q in allowed if quantities.lookup(q).title_zh in text]
    if len(near) == 1:
        return near[0]
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
