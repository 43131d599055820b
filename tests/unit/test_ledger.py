"""Ledger (附件2) and block A statistics (附件1) from hazards built through the API, read back cell by cell."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook

from alerting.db import connect
from alerting.hazards import HazardConfig, Hazards
from alerting.ledger import (
    LEDGER_COLUMNS,
    STATS_ITEMS,
    ledger_csv,
    ledger_rows,
    ledger_xlsx,
    monthly_stats,
    stats_csv,
    stats_xlsx,
)
from alerting.roles import Role
from alerting.rules import HazardBasis, Level

S = 1_000_000_000
TZ = ZoneInfo("Asia/Shanghai")
M, A = Role.MANAGER, Role.ADMIN


def ns(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=TZ).timestamp()) * S


JUNE_START, JULY_START = ns(2025, 6, 1), ns(2025, 7, 1)
CRANE = HazardBasis(version="2024", article="8(四)", text_zh="起重机械安全装置不齐全、失效或者被违规拆除、破坏")
PIT = HazardBasis(version="2024", article="5(四)1", text_zh="基坑变形超过设计控制值且未及时处理")
SCAFFOLD = HazardBasis(version="2024", article="7(二)", text_zh="连墙件缺失")


class FakeClock:
    def __init__(self, t: int) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


class Site:
    """Drives hazards through the API in time order, as the people on site would."""

    def __init__(self, hz: Hazards, clock: FakeClock) -> None:
        self.hz, self.clock = hz, clock

    def at(self, t: int) -> Site:
        self.clock.t = t
        return self

    def new(self, source: str, description: str, found_ns: int | None = None) -> int:
        return self.hz.report(
            actor="li",
            role=Role.OFFICER,
            unit_name="昌吉某住宅项目",
            description=description,
            source=source,  # type: ignore[arg-type]
            found_ns=found_ns,
        )

    def major(self, hid: int, basis: HazardBasis) -> None:
        self.hz.confirm(hid, actor="wang", role=M, klass="major", basis=basis)

    def assign(self, hid: int, deadline: date, measures: str = "整改") -> None:
        self.hz.assign(
            hid,
            actor="wang",
            role=M,
            responsible="zhao",
            measures=measures,
            deadline=deadline,
            funds=5000,
            emergency_plan="停工撤人",
        )

    def close(self, hid: int) -> None:
        self.hz.submit(hid, actor="zhao", role=Role.OFFICER, evidence="整改照片")
        self.hz.accept(hid, actor="qian", role=M)


@pytest.fixture
def hz(tmp_path: Path) -> Hazards:
    """Hazards of June and July 2025 (comments: what each one is for); the clock ends on 2025-07-03."""
    clock = FakeClock(ns(2025, 6, 2, 9))
    cfg = HazardConfig(
        region_prefecture="昌吉州",
        region_county="昌吉市",
        reporting_unit="昌吉某建设集团",
        contact="曹工",
        contact_phone="0994-1234567",
    )
    hz = Hazards(connect(tmp_path / "state.db"), clock, cfg)
    s = Site(hz, clock)
    # A: self-check (own monitoring), county-listed, closed in June
    a = hz.propose_from_alarm(
        actor="system",
        role=Role.OFFICER,
        unit_name="昌吉某住宅项目",
        alarm_id=7,
        device="TC1",
        point="moment_ratio",
        title_zh="力矩",
        level=Level.DANGER,
        value=112.0,
        threshold=110.0,
        value_unit="%",
        provenance="GB 5144-2006 [S+]",
        hazard_basis=CRANE,
    )
    s.major(a, CRANE)
    s.assign(a, date(2025, 6, 20), "更换力矩限制器")
    s.at(ns(2025, 6, 3, 10)).hz.list_supervision(a, actor="boss", role=A, level="county")
    # E: found in May, entered in June: outside the June range
    e = s.new("self_check", "五月发现的隐患", found_ns=ns(2025, 5, 28, 15))
    s.major(e, SCAFFOLD)
    # B: department inspection, city-listed, still open
    b = s.at(ns(2025, 6, 5, 10)).new("inspection", "基坑水平位移超设计控制值未处理")
    s.major(b, PIT)
    s.assign(b, date(2025, 7, 15), "加设支撑")
    s.at(ns(2025, 6, 6, 10)).hz.list_supervision(b, actor="boss", role=A, level="city")
    # C: department inspection, closed only in July
    c = s.at(ns(2025, 6, 8, 10)).new("inspection", "连墙件整层缺失")
    s.major(c, SCAFFOLD)
    s.assign(c, date(2025, 7, 10))
    # D: a general hazard: in the full ledger, never in the major statistics
    d = s.at(ns(2025, 6, 9, 10)).new("self_check", "临边防护缺失")
    hz.confirm(d, actor="wang", role=M, klass="general")
    s.assign(d, date(2025, 6, 15), "补设防护栏杆")
    s.at(ns(2025, 6, 10, 16)).close(a)
    # H: self-check, closed on 6-20 and reopened on 6-25: not rectified at the end of June
    h = s.at(ns(2025, 6, 12, 10)).new("self_check", "卸料平台超载")
    s.major(h, SCAFFOLD)
    s.assign(h, date(2025, 6, 18))
    s.at(ns(2025, 6, 18, 10)).hz.submit(h, actor="zhao", role=Role.OFFICER, evidence="照片")
    s.at(ns(2025, 6, 20, 10)).hz.accept(h, actor="qian", role=M)
    s.at(ns(2025, 6, 25, 10)).hz.reopen(h, actor="wang", role=M, reason="复发")
    # G: reported, never classified: neither in the ledger nor in the statistics
    s.at(ns(2025, 6, 15, 10)).new("self_check", "待核实")
    # F: found late on 30 June (local time), confirmed major on 1 July
    f = s.at(ns(2025, 6, 30, 23, 30)).new("self_check", "高支模立杆轴力超设计值")
    s.at(ns(2025, 7, 1, 10)).major(f, PIT)
    # I: found in July
    i = s.at(ns(2025, 7, 2, 10)).new("inspection", "七月检查发现")
    s.major(i, CRANE)
    s.at(ns(2025, 7, 3, 10)).close(c)
    return hz


def ids_by_description(hz: Hazards) -> dict[str, int]:
    return {h["description"]: h["id"] for h in hz.query()}


def test_ledger_rows_select_classified_hazards_found_in_range(hz: Hazards) -> None:
    rows = ledger_rows(hz, JUNE_START, JULY_START, major_only=True)
    assert [r["隐患内容"] for r in rows] == [
        "TC1 力矩：moment_ratio 读数 112%，危险阈值 110%（GB 5144-2006）",
        "基坑水平位移超设计控制值未处理",
        "连墙件整层缺失",
        "卸料平台超载",
        "高支模立杆轴力超设计值",
    ]
    assert [r["序号"] for r in rows] == [1, 2, 3, 4, 5]
    everything = ledger_rows(hz, JUNE_START, JULY_START, major_only=False)
    assert [r["隐患等级"] for r in everything] == ["重大", "重大", "重大", "一般", "重大", "重大"]
    assert everything[3]["重大隐患判定依据"] is None  # a general hazard has no major-hazard basis


def test_ledger_xlsx_cell_by_cell(hz: Hazards) -> None:
    wb = load_workbook(io.BytesIO(ledger_xlsx(hz, JUNE_START, JULY_START, major_only=True)))
    ws = wb.active
    assert ws["A1"].value == "重大事故隐患统计表（2025-06-01 至 2025-06-30）"
    assert [ws["A2"].value, ws["B2"].value, ws["D2"].value, ws["E2"].value] == [
        "报送单位（盖章）：",
        "昌吉某建设集团",
        "时间：",
        datetime(2025, 7, 3),
    ]
    assert [ws["A3"].value, ws["B3"].value, ws["D3"].value, ws["E3"].value] == [
        "联系人：",
        "曹工",
        "联系方式：",
        "0994-1234567",
    ]
    header = [c.value for c in ws[5]]
    assert header == list(LEDGER_COLUMNS)
    assert header[:10] == [
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
    ]
    assert all(c.font.bold for c in ws[5])
    assert ws.column_dimensions["F"].width >= 30  # the description column is wide enough to read

    ids = ids_by_description(hz)
    a = [c.value for c in ws[6]]
    assert a == [
        1,
        "昌吉州",
        "昌吉市",
        "房屋市政工程施工",
        "昌吉某住宅项目",
        "TC1 力矩：moment_ratio 读数 112%，危险阈值 110%（GB 5144-2006）",
        "建质规〔2024〕5号 第八条第（四）项",
        datetime(2025, 6, 20),
        "企业自查",
        "更换力矩限制器",
        ids["TC1 力矩：moment_ratio 读数 112%，危险阈值 110%（GB 5144-2006）"],
        "重大",
        "TC1/moment_ratio",
        "112%",
        "110% GB 5144-2006",  # the confidence tag is for the details, not the ledger
        datetime(2025, 6, 2, 9, 0),
        "zhao",
        "已销号",
        datetime(2025, 6, 10),
        "qian",
        datetime(2025, 6, 10),
        None,  # 验收说明: accepted with no source alarm standing
        "县级",
        datetime(2025, 6, 10),
    ]
    assert ws.cell(6, 8).is_date and ws.cell(6, 8).number_format == "yyyy-mm-dd"
    assert ws.cell(6, 16).number_format == "yyyy-mm-dd hh:mm"
    b = [c.value for c in ws[7]]
    assert b[6:10] == ["建质规〔2024〕5号 第五条第（四）项第1目", datetime(2025, 7, 15), "抽查检查", "加设支撑"]
    assert b[12:24] == [
        *(None, None, None, datetime(2025, 6, 5, 10), "zhao", "整改中"),
        *(None, None, None, None, "市级", None),
    ]
    h = [c.value for c in ws[9]]
    assert (h[5], h[17], h[18], h[20], h[21], h[23]) == ("卸料平台超载", "已重新打开", None, None, None, None)
    f = [c.value for c in ws[10]]
    assert (f[5], f[15], f[7]) == ("高支模立杆轴力超设计值", datetime(2025, 6, 30, 23, 30), None)
    assert ws.max_row == 10


def test_ledger_csv_parses_back(hz: Hazards) -> None:
    data = ledger_csv(hz, JUNE_START, JULY_START, major_only=False)
    assert data.startswith(b"\xef\xbb\xbf")  # BOM: Excel opens the Chinese text as UTF-8
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows[0] == list(LEDGER_COLUMNS)
    assert len(rows) == 7
    assert [r[0] for r in rows[1:]] == ["1", "2", "3", "4", "5", "6"]
    d = dict(zip(rows[0], rows[4], strict=True))
    assert (d["隐患内容"], d["隐患等级"], d["重大隐患判定依据"], d["计划完成整改时间"]) == (
        "临边防护缺失",
        "一般",
        "",
        "2025-06-15",
    )
    assert (d["隐患来源（企业自查/抽查检查）"], d["整改措施"], d["发现时间"], d["状态"]) == (
        "企业自查",
        "补设防护栏杆",
        "2025-06-09 10:00",
        "整改中",
    )
    c = dict(zip(rows[0], rows[3], strict=True))
    assert (c["隐患内容"], c["状态"], c["实际完成整改日期"], c["验收人"], c["销号日期"]) == (
        "连墙件整层缺失",
        "已销号",
        "2025-07-03",
        "qian",
        "2025-07-03",
    )
    assert c["重大隐患判定依据"] == "建质规〔2024〕5号 第七条第（二）项"


# hand counts from the fixture's comments: June = A, B, C, H (E found in May, F confirmed in July, I found in July,
# D general, G unclassified); rectified by 1 July = A only (C closed 3 July, H reopened 25 June)
@pytest.mark.parametrize(
    ("since", "until", "expected"),
    [
        (JUNE_START, JULY_START, [2, 1, 2, 0, 2, 1]),
        (JUNE_START, ns(2025, 6, 21), [2, 2, 2, 0, 2, 1]),  # H still closed on 20 June
        (JUNE_START, ns(2025, 7, 6), [3, 1, 3, 1, 2, 1]),  # + F, I, and C closed
        (ns(2025, 5, 1), ns(2025, 7, 6), [4, 1, 3, 1, 2, 1]),  # + E (May)
        (ns(2025, 6, 6), ns(2025, 6, 13), [1, 0, 1, 0, 0, 0]),  # C and H only
        (ns(2025, 8, 1), ns(2025, 9, 1), [0, 0, 0, 0, 0, 0]),
    ],
)
def test_monthly_stats_hand_counted(hz: Hazards, since: int, until: int, expected: list[int]) -> None:
    stats = monthly_stats(hz, since, until)
    assert list(stats) == [k for k, _ in STATS_ITEMS]
    assert list(stats.values()) == expected


def test_stats_exports(hz: Hazards) -> None:
    rows = list(csv.reader(io.StringIO(stats_csv(hz, JUNE_START, JULY_START).decode("utf-8-sig"))))
    assert rows[0] == ["序号", "项目", "数量（个）", "统计区间"]
    assert rows[1] == ["1", "企业自查发现的重大事故隐患（个）", "2", "2025-06-01 至 2025-06-30"]
    assert [r[2] for r in rows[1:]] == ["2", "1", "2", "0", "2", "1"]
    assert rows[6][1] == "挂牌督办重大事故隐患中已完成整改的（个）"

    ws = load_workbook(io.BytesIO(stats_xlsx(hz, JUNE_START, JULY_START))).active
    assert ws["A1"].value == "重大事故隐患排查整治工作进展情况调度表（2025-06-01 至 2025-06-30）"
    assert (ws["A2"].value, ws["B2"].value, ws["E2"].value) == (
        "报送单位（盖章）：",
        "昌吉某建设集团",
        datetime(2025, 7, 3),
    )
    assert [c.value for c in ws[5]][:4] == [None, "序号", "项目", "数量（个）"]
    table: list[list[Any]] = [[c.value for c in row][:4] for row in ws.iter_rows(min_row=6, max_row=11)]
    assert table[0] == ["总体情况", 1, "企业自查发现的重大事故隐患（个）", 2]
    assert [r[1] for r in table] == [1, 2, 3, 4, 5, 6]
    assert [r[3] for r in table] == [2, 1, 2, 0, 2, 1]
    assert [r[2] for r in table] == [label for _, label in STATS_ITEMS]


@pytest.mark.parametrize(
    "typed",
    ['=HYPERLINK("http://evil.example","整改照片")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)", "\t=1+1", "\r=1"],
)
def test_exports_are_data_not_code(tmp_path: Path, typed: str) -> None:
    """OWASP CSV injection: what a user typed downloads as text in CSV and XLSX, never as a formula."""
    from alerting.ledger import ledger_csv, ledger_xlsx

    clock = FakeClock(ns(2025, 6, 2, 9))
    hz = Hazards(connect(tmp_path / "state.db"), clock, HazardConfig(reporting_unit="=1+1 项目部"))
    hid = Site(hz, clock).new("self_check", typed)
    hz.confirm(hid, actor="wang", role=M, klass="general")
    lo, hi = ns(2025, 6, 1), ns(2025, 7, 1)
    rows = list(csv.reader(io.StringIO(ledger_csv(hz, lo, hi, False).decode("utf-8-sig"))))
    cell = next(c for c in rows[1] if typed.strip("\t\r") in c)
    assert cell.startswith("'")  # the quote turns a formula into text for Excel, WPS and LibreOffice
    wb = load_workbook(io.BytesIO(ledger_xlsx(hz, lo, hi, False)))
    ws = wb.active
    assert ws is not None
    cells = [c for row in ws.iter_rows() for c in row if c.value is not None]
    assert all(c.data_type != "f" for c in cells)  # no formula anywhere, the form's header block included
    stored = hz.get(hid)["description"]  # as the record holds it (leading blanks trimmed)
    assert any(c.value in (stored, stored.replace("\r", "\n")) for c in cells)  # the text itself, as text


def test_control_characters_never_break_a_download(tmp_path: Path) -> None:
    from alerting.ledger import ledger_csv, ledger_xlsx

    clock = FakeClock(ns(2025, 6, 2, 9))
    hz = Hazards(connect(tmp_path / "state.db"), clock, HazardConfig())
    hid = Site(hz, clock).new("self_check", "脚手架\x0b连墙件\x00缺失\n第二行")
    hz.confirm(hid, actor="wang", role=M, klass="general")
    lo, hi = ns(2025, 6, 1), ns(2025, 7, 1)
    assert "脚手架连墙件缺失\n第二行" in ledger_csv(hz, lo, hi, False).decode("utf-8-sig")
    ws = load_workbook(io.BytesIO(ledger_xlsx(hz, lo, hi, False))).active
    assert ws is not None
    assert any(c.value == "脚手架连墙件缺失\n第二行" for row in ws.iter_rows() for c in row)


def test_characters_xml_cannot_hold_never_break_a_download(tmp_path: Path) -> None:
    """U+FFFE and U+FFFF are outside XML 1.0's Char (§2.2), as C0 controls are: one in a hazard's text, the site's
    name or a region's name made a workbook no reader opens (openpyxl wrote it, then could not load it)."""
    from hub.reports import stats_by_region_xlsx

    clock = FakeClock(ns(2025, 6, 2, 9))
    hz = Hazards(connect(tmp_path / "state.db"), clock, HazardConfig(reporting_unit="一标段\uffff项目部"))
    hid = Site(hz, clock).new("self_check", "基坑边堆载\uffff超限\ufffe，第二处\x01")
    hz.confirm(hid, actor="wang", role=M, klass="general")
    lo, hi = ns(2025, 6, 1), ns(2025, 7, 1)
    assert "基坑边堆载超限，第二处" in ledger_csv(hz, lo, hi, False).decode("utf-8-sig")
    books = [ledger_xlsx(hz, lo, hi, False), stats_xlsx(hz, lo, hi)]
    region = {"name": "昌吉\uffff市", **dict.fromkeys(dict(STATS_ITEMS), 0)}
    books.append(stats_by_region_xlsx([region], "调度表\ufffe"))
    texts = []
    for data in books:
        ws = load_workbook(io.BytesIO(data)).active  # what a user's Excel does first
        assert ws is not None
        texts += [c.value for row in ws.iter_rows() for c in row if isinstance(c.value, str)]
    assert {"基坑边堆载超限，第二处", "一标段项目部", "昌吉市", "调度表"} <= set(texts)
    assert not any(ch in t for t in texts for ch in "\ufffe\uffff")
