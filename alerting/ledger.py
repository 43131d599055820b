"""Hazard ledger (Changji 附件2 统计表 + gateway columns) and block A of the 附件1 调度表, as CSV and XLSX."""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Protocol

from alerting.glossary import CLASS_ZH, LISTING_ZH, SOURCE_ZH, STATUS_ZH, cite_zh
from alerting.hazards import basis_citation

if TYPE_CHECKING:
    from openpyxl import Workbook
    from openpyxl.styles import Border
    from openpyxl.worksheet.worksheet import Worksheet
# openpyxl itself is imported by the first workbook export: a gateway that never exports does not carry its ~5 MB

Cell = str | int | float | date | datetime | None


class FormUnit(Protocol):
    """Who files the form (its header block): the site's hazard config, or a region at the hub."""

    @property
    def reporting_unit(self) -> str | None: ...
    @property
    def contact(self) -> str | None: ...
    @property
    def contact_phone(self) -> str | None: ...


class HazardSource(Protocol):
    """What the forms read: one site's hazard store (alerting.hazards.Hazards), or a region's records at the hub
    (hub/reports.py), so the hub's 附件1 and 附件2 are counted by the same code as each site's."""

    @property
    def cfg(self) -> FormUnit: ...
    def clock(self) -> int: ...
    def query(
        self, status: Any = None, klass: Any = None, since_ns: int | None = None, until_ns: int | None = None
    ) -> list[dict[str, Any]]: ...
    def history(self, hazard_id: Any) -> list[dict[str, Any]]: ...
    def local_date(self, ns: int) -> date: ...
    def local_datetime(self, ns: int) -> datetime: ...


# the ten columns of 附件2, in the form's order, then the columns domain.md §6.4 says the form lacks
FORM_COLUMNS: tuple[str, ...] = (
    "序号",
    "地（州、市）",
    "县（市、区）",
    "行业领域",
    "隐患单位名称",
    "隐患内容",
    "重大隐患判定依据",
    "计划完成整改时间",
    "隐患来源（企业自查/抽查检查）",
    "整改措施",
)
EXTRA_COLUMNS: tuple[str, ...] = (
    "隐患编号",
    "隐患等级",
    "监测设备/测点",
    "触发读数",
    "阈值及来源",
    "发现时间",
    "整改责任人",
    "状态",
    "实际完成整改日期",
    "验收人",
    "验收日期",
    "验收说明",
    "挂牌督办",
    "销号日期",
)
LEDGER_COLUMNS = FORM_COLUMNS + EXTRA_COLUMNS
_WIDTHS = (6, 12, 12, 16, 24, 40, 30, 14, 16, 40, 10, 8, 20, 14, 36, 17, 12, 10, 14, 10, 12, 30, 10, 12)

# block A (总体情况) of 附件1, in the form's order and wording
STATS_ITEMS: tuple[tuple[str, str], ...] = (
    ("self_check_found", "企业自查发现的重大事故隐患（个）"),
    ("self_check_rectified", "企业自查发现重大事故隐患中已完成整改的（个）"),
    ("inspection_found", "部门检查发现的重大事故隐患（个）"),
    ("inspection_rectified", "部门检查发现重大事故隐患中已完成整改的（个）"),
    ("listed", "政府挂牌督办的重大事故隐患（个）"),
    ("listed_rectified", "挂牌督办重大事故隐患中已完成整改的（个）"),
)


def _date(iso: str | None) -> date | None:
    return date.fromisoformat(iso) if iso else None


def ledger_rows(hazards: HazardSource, since_ns: int, until_ns: int, major_only: bool) -> list[dict[str, Cell]]:
    """One row per classified hazard found in [since_ns, until_ns), keyed by LEDGER_COLUMNS, oldest first.

    Unconfirmed (found) and dismissed records are left out: a hazard enters the ledger once verified and classified
    (domain.md §6.1 step 3). The basis reads "建质规〔2024〕5号 第八条第（四）项" (document number, then article,
    item, sub-item); general hazards have none. Acceptance closes the hazard (验收销号 is one step here), so the
    acceptance date and the 销号 date are the same day. Dates and times are local to the configured zone."""
    out: list[dict[str, Cell]] = []
    for h in hazards.query(since_ns=since_ns, until_ns=until_ns, klass="major" if major_only else None):
        if h["klass"] is None:
            continue
        basis = basis_citation(h["basis_version"], h["basis_article"]) if h["basis_article"] else None
        point = "/".join(x for x in (h["device"], h["point"]) if x) or None
        unit = h["value_unit"] or ""
        reading = None if h["value"] is None else f"{h['value']:g}{unit}"
        limit = None
        if h["threshold"] is not None or h["provenance"]:
            shown = f"{h['threshold']:g}{unit}" if h["threshold"] is not None else None
            # cited as a supervisor reads it: the confidence tag stays in the alarm's details
            limit = " ".join(x for x in (shown, cite_zh(h["provenance"] or "")) if x)
        accepted = hazards.local_date(h["accepted_at_ns"]) if h["accepted_at_ns"] else None
        values: tuple[Cell, ...] = (
            len(out) + 1,
            h["prefecture"],
            h["county"],
            h["sector"],
            h["unit_name"],
            h["description"],
            basis,
            _date(h["deadline"]),
            SOURCE_ZH[h["source"]],
            h["measures"],
            h["id"],
            CLASS_ZH[h["klass"]],
            point,
            reading,
            limit,
            hazards.local_datetime(h["found_at_ns"]),
            h["responsible"],
            STATUS_ZH[h["status"]],
            _date(h["completed_on"]),
            h["accepted_by"],
            accepted,
            h["accept_note"],
            LISTING_ZH[h["listing"]] or None,
            accepted if h["status"] == "closed" else None,
        )
        out.append(dict(zip(LEDGER_COLUMNS, values, strict=True)))
    return out


# Exports are data, never code (OWASP "CSV injection"): text that a spreadsheet would read as a formula is
# neutralised. A workbook's cells are XML, and XML 1.0 §2.2 (the Char production) allows only #x9 | #xA | #xD |
# [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]: one character outside it (a C0 control, a lone surrogate,
# U+FFFE, U+FFFF) makes a workbook no reader opens, and openpyxl checks the C0 controls only. Everything outside
# Char is removed, and DEL too (allowed by XML, but a control character no one means to put in a form).
_NOT_XML_CHAR = re.compile(r"[^\t\n\r\x20-\x7e\x80-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def clean_text(s: str) -> str:
    """User text without the characters a workbook cannot hold (XML 1.0 §2.2); newlines and tabs stay."""
    return _NOT_XML_CHAR.sub("", s)


def _text(v: Cell) -> str:
    if v is None:
        return ""
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M")
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, str):
        s = clean_text(v)
        # a leading quote makes Excel, WPS and LibreOffice show the text instead of evaluating it
        return "'" + s if s.startswith(_FORMULA_START) else s
    return str(v)


def _put(ws: Worksheet, row: int, col: int, v: Any) -> Any:
    """A cell whose text is always text: openpyxl turns a string starting with '=' into a formula otherwise."""
    cell = ws.cell(row, col)
    if isinstance(v, str):
        cell.value = clean_text(v)
        cell.data_type = "s"
    else:
        cell.value = v
    return cell


def _csv(header: tuple[str, ...], rows: list[tuple[Cell, ...]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header)
    w.writerows([_text(v) for v in r] for r in rows)
    return buf.getvalue().encode("utf-8-sig")  # the BOM makes Excel read UTF-8 rather than the ANSI code page


def ledger_csv(hazards: HazardSource, since_ns: int, until_ns: int, major_only: bool) -> bytes:
    """The ledger as CSV for machines and Excel: one header row, then data (no title block); ISO dates."""
    rows = ledger_rows(hazards, since_ns, until_ns, major_only)
    return _csv(LEDGER_COLUMNS, [tuple(r.values()) for r in rows])


def _box() -> Border:
    from openpyxl.styles import Border, Side

    thin = Side(style="thin")
    return Border(left=thin, right=thin, top=thin, bottom=thin)


def _form_head(ws: Worksheet, hazards: HazardSource, title: str, width: int) -> int:
    """Title and the 报送单位 / 时间 / 联系人 / 联系方式 block like the paper form; returns the next free row."""
    from openpyxl.styles import Alignment, Font

    cfg = hazards.cfg
    ws.cell(1, 1, title).font = Font(bold=True, size=14)
    ws.cell(1, 1).alignment = Alignment(horizontal="center")
    ws.merge_cells(start_row=1, start_column=1, end_row=1, end_column=width)
    today = hazards.local_date(hazards.clock())
    ws.cell(2, 1, "报送单位（盖章）：")
    _put(ws, 2, 2, cfg.reporting_unit or "")
    ws.cell(2, 4, "时间：")
    ws.cell(2, 5, today).number_format = "yyyy-mm-dd"
    ws.cell(3, 1, "联系人：")
    _put(ws, 3, 2, cfg.contact or "")
    ws.cell(3, 4, "联系方式：")
    _put(ws, 3, 5, cfg.contact_phone or "")
    return 5


OPEN_END_NS = 2**62  # what the API passes for "no until": far beyond any record


def _range_text(hazards: HazardSource, since_ns: int, until_ns: int) -> str:
    """The period a download covers, as the form's 时间 says it; an open end is said in words (a download without
    dates used to be titled 1970-01-01 至 2116-02-21)."""
    today = hazards.local_date(hazards.clock()).isoformat()
    if since_ns <= 0 and until_ns >= OPEN_END_NS:
        return f"全部（截至 {today}）"
    if since_ns <= 0:
        return f"截至 {hazards.local_date(until_ns - 1).isoformat()}"
    if until_ns >= OPEN_END_NS:
        return f"{hazards.local_date(since_ns).isoformat()} 至今（{today}）"
    # until is exclusive: the last day covered is the one before it (until at a local midnight is the usual case)
    last = hazards.local_date(until_ns - 1)
    return f"{hazards.local_date(since_ns).isoformat()} 至 {last.isoformat()}"


def _save(wb: Workbook) -> bytes:
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def ledger_xlsx(hazards: HazardSource, since_ns: int, until_ns: int, major_only: bool) -> bytes:
    """The ledger as a workbook shaped like 附件2: title, header block, bold bordered header, real dates."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font
    from openpyxl.utils import get_column_letter

    box = _box()
    rows = ledger_rows(hazards, since_ns, until_ns, major_only)
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "重大事故隐患统计表" if major_only else "隐患台账"
    kind = "重大事故隐患统计表" if major_only else "隐患排查治理台账"
    first = _form_head(ws, hazards, f"{kind}（{_range_text(hazards, since_ns, until_ns)}）", len(LEDGER_COLUMNS))
    for c, name in enumerate(LEDGER_COLUMNS, start=1):
        cell = ws.cell(first, c, name)
        cell.font = Font(bold=True)
        cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
        cell.border = box
        ws.column_dimensions[get_column_letter(c)].width = _WIDTHS[c - 1]
    for r, row in enumerate(rows, start=first + 1):
        for c, v in enumerate(row.values(), start=1):
            cell = _put(ws, r, c, v)
            cell.border = box
            cell.alignment = Alignment(vertical="top", wrap_text=True)
            if isinstance(v, datetime):
                cell.number_format = "yyyy-mm-dd hh:mm"
            elif isinstance(v, date):
                cell.number_format = "yyyy-mm-dd"
    ws.freeze_panes = ws.cell(first + 1, 1)
    return _save(wb)


def _status_at(history: list[dict[str, Any]], at_ns: int) -> str | None:
    status = None
    for h in history:
        if h["at_ns"] >= at_ns:
            break
        status = h["to_status"]
    return status


def monthly_stats(hazards: HazardSource, since_ns: int, until_ns: int) -> dict[str, int]:
    """Block A (总体情况) of the 附件1 调度表 for the range [since_ns, until_ns).

    Counted: hazards *found* in the range (found_at in [since_ns, until_ns)) and *confirmed major* before
    until_ns. Source splits them: self_check = 企业自查 (the site's own monitoring included), inspection = 部门检查.
    Rectified (已完成整改) = closed (销号) as of until_ns: the last transition before until_ns left it closed, so a
    hazard closed later, or closed and reopened within the range, is not rectified. Listed (挂牌督办) = listed at
    county or city level before until_ns. The form asks for cumulative figures (每月1日前报送截至上月末的累计情况):
    pass the campaign start as since_ns and the first instant of this month as until_ns."""
    counts = dict.fromkeys((k for k, _ in STATS_ITEMS), 0)
    for h in hazards.query(klass="major", since_ns=since_ns, until_ns=until_ns):
        hist = hazards.history(h["id"])
        if h["confirmed_at_ns"] is None or h["confirmed_at_ns"] >= until_ns:
            continue
        rectified = _status_at(hist, until_ns) == "closed"
        counts[f"{h['source']}_found"] += 1
        counts[f"{h['source']}_rectified"] += rectified
        if any(e["action"] == "list" and e["at_ns"] < until_ns for e in hist):
            counts["listed"] += 1
            counts["listed_rectified"] += rectified
    return counts


def stats_csv(hazards: HazardSource, since_ns: int, until_ns: int) -> bytes:
    """Block A as CSV: 序号, 项目, 数量（个）, 统计区间 — one row per item of the form."""
    stats = monthly_stats(hazards, since_ns, until_ns)
    span = _range_text(hazards, since_ns, until_ns)
    rows: list[tuple[Cell, ...]] = [(i, label, stats[k], span) for i, (k, label) in enumerate(STATS_ITEMS, start=1)]
    return _csv(("序号", "项目", "数量（个）", "统计区间"), rows)


def stats_xlsx(hazards: HazardSource, since_ns: int, until_ns: int) -> bytes:
    """Block A as a workbook shaped like 附件1: title, header block, 总体情况 | 序号 | 项目 | 数量."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font
    from openpyxl.utils import get_column_letter

    box = _box()
    stats = monthly_stats(hazards, since_ns, until_ns)
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "调度表"
    title = f"重大事故隐患排查整治工作进展情况调度表（{_range_text(hazards, since_ns, until_ns)}）"
    first = _form_head(ws, hazards, title, 5)
    for c, (name, width) in enumerate((("", 10), ("序号", 6), ("项目", 46), ("数量（个）", 12)), start=1):
        cell = ws.cell(first, c, name)
        cell.font = Font(bold=True)
        cell.border = box
        ws.column_dimensions[get_column_letter(c)].width = width
    ws.column_dimensions["E"].width = 14
    for i, (key, label) in enumerate(STATS_ITEMS, start=1):
        r = first + i
        for c, v in enumerate(("总体情况" if i == 1 else None, i, label, stats[key]), start=1):
            ws.cell(r, c, v).border = box
    ws.merge_cells(start_row=first + 1, start_column=1, end_row=first + len(STATS_ITEMS), end_column=1)
    ws.cell(first + 1, 1).alignment = Alignment(vertical="center", horizontal="center")
    return _save(wb)
