"""Surveyors' files as monitoring firms write them, checked whole: every problem names its row and column."""

from __future__ import annotations

import asyncio
import io
import re
import zipfile
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from openpyxl import Workbook
from openpyxl.styles import Font

from alerting.baselines import Baselines
from alerting.db import connect
from drivers.survey import item_quantity, parse_survey
from gateway.config import SiteConfig
from gateway.surveys import SurveyImporter, SurveyRefused
from telemetry.reading import Reading

TZ = ZoneInfo("Asia/Shanghai")
NS = 1_000_000_000
NOW = 1_795_000_000 * NS  # 2026-11-18


def site() -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "site": {"id": "s", "name": "s"},
            "devices": [
                {"id": "ZQT-3", "profile": "excavation_survey_v1", "expected_interval_s": 86400},
                {"id": "P-ZQC-3", "match": "ZQC-3", "profile": "excavation_survey_v1", "expected_interval_s": 86400},
            ],
            "sink": {"type": "influxdb_v1", "url": "http://127.0.0.1:8086", "database": "x"},
        }
    )


def importer(tmp_path: Path) -> tuple[SurveyImporter, list[Reading]]:
    got: list[Reading] = []

    async def submit(rs: list[Reading]) -> None:
        got.extend(rs)

    conn = connect(tmp_path / "state.db")
    return SurveyImporter(site(), conn, Baselines(conn, lambda: NOW), submit, lambda: NOW), got


def test_gb18030_csv_with_a_title_line_units_in_headers_and_dates_only() -> None:
    text = (
        "某某基坑 监测日报\n测点编号,观测日期,累计变化量(cm),变化速率(mm/d)\n"
        "ZQT-3,2026-11-16,1.2,0.5\n\nZQT-3,2026-11-17,1.5,\n"
    )
    f = parse_survey(text.encode("gb18030"), "日报.csv", TZ)
    assert f.problems == [] and f.header_row == 2
    assert [(r.row, r.point, r.value, r.unit, r.rate) for r in f.rows] == [
        (3, "ZQT-3", 1.2, "cm", 0.5),
        (5, "ZQT-3", 1.5, "cm", None),
    ]
    assert f.rows[0].ts_ns == int(datetime(2026, 11, 16, tzinfo=TZ).timestamp()) * NS  # 00:00 site time


def test_no_header_is_refused_with_what_is_missing() -> None:
    with pytest.raises(ValueError, match="no header row with a point column"):
        parse_survey(b"a,b\n1,2\n", "x.csv", TZ)


def test_the_whole_file_is_refused_with_every_row_and_column(tmp_path: Path) -> None:
    imp, got = importer(tmp_path)
    text = (
        "测点编号,监测项目,观测时间,累计变化量(mm)\n"
        "ZQT-3,冠梁水平位移,2026-11-15 09:00,10.0\n"  # row 2: fine
        "ZQT-9,冠梁水平位移,2026-11-15 09:00,10.0\n"  # row 3: unknown point
        "ZQT-3,冠梁水平位移,2026-11-14 09:00,9.0\n"  # row 4: backwards
        "ZQC-3,风速,2026-11-15 09:00,1.0\n"  # row 5: not an item of the point
        "ZQT-3,冠梁水平位移,2027-01-01 09:00,11.0\n"  # row 6: in the future
    )
    with pytest.raises(SurveyRefused) as err:
        asyncio.run(imp.import_file(text.encode(), "bad.csv", "wang"))
    assert [str(p) for p in err.value.problems] == [
        "row 3, column 测点编号: unknown point 'ZQT-9' (survey points: ZQC-3, ZQT-3)",
        "row 4, column 观测时间: earlier than row 2 for ZQT-3 (horizontal_displacement)",
        "row 5, column 监测项目: '风速' is not a quantity this point reports (horizontal_displacement (水平位移), "
        "vertical_displacement (竖向位移), deep_displacement (深层水平位移), groundwater_level (地下水位), "
        "strut_force (支撑轴力))",
        "row 6, column 观测时间: the survey time is in the future",
    ]
    assert got == [] and imp.imports() == []


def test_units_convert_and_a_point_is_found_by_the_id_the_report_uses(tmp_path: Path) -> None:
    imp, got = importer(tmp_path)
    text = "测点编号,观测时间,累计变化量,单位\nZQC-3,2026-11-15 09:00,-1.25,cm\n"
    res = asyncio.run(imp.import_file(text.encode(), "zqc.csv", "wang", quantity="vertical_displacement"))
    assert (res.rows, res.points, res.baselines_set) == (1, ["ZQC-3"], ["P-ZQC-3/vertical_displacement"])
    at = int(datetime(2026, 11, 15, 9, 0, tzinfo=TZ).timestamp()) * NS
    assert got == [Reading("P-ZQC-3", "vertical_displacement", -12.5, at)]  # cm -> mm
    with pytest.raises(SurveyRefused, match="at this time was already imported"):
        asyncio.run(imp.import_file(text.encode(), "zqc.csv", "wang", quantity="vertical_displacement"))


def _book(sheets: Sequence[tuple[str, Sequence[Sequence[object]]]]) -> bytes:
    wb = Workbook()
    for i, (title, rows) in enumerate(sheets):
        ws = wb.active if i == 0 else wb.create_sheet()
        assert ws is not None
        ws.title = title
        for r in rows:
            ws.append(r)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


HEAD: list[object] = ["测点编号", "观测时间", "累计变化量(mm)"]


def test_a_workbook_with_a_sheet_per_item_is_read_whole(tmp_path: Path) -> None:
    """A daily report with one sheet per item (水平位移, 竖向位移) and a cover: only the first sheet was read, and
    the others were lost with the import said done. Every sheet with a table is read now, its name saying its item;
    the cover is named as not read; a sheet whose name says another item than the import's is refused by name."""
    at = datetime(2026, 11, 15, 9, 0)
    data = _book(
        [
            ("封面", [["某某基坑监测日报"], ["第 12 期"]]),
            ("水平位移", [HEAD, ["ZQT-3", at, 1.2]]),
            ("竖向位移", [HEAD, ["ZQT-3", at, -25.0], ["ZQC-3", at, -3.0]]),
        ]
    )
    imp, got = importer(tmp_path)
    res = asyncio.run(imp.import_file(data, "日报.xlsx", "wang"))
    assert (res.rows, res.sheets, list(res.sheets_skipped)) == (3, ["水平位移", "竖向位移"], ["封面"])
    ts = int(datetime(2026, 11, 15, 9, 0, tzinfo=TZ).timestamp()) * NS
    assert sorted(got, key=lambda r: (r.device, r.quantity)) == [
        Reading("P-ZQC-3", "vertical_displacement", -3.0, ts),
        Reading("ZQT-3", "horizontal_displacement", 1.2, ts),
        Reading("ZQT-3", "vertical_displacement", -25.0, ts),
    ]
    imp, got = importer(tmp_path / "again")
    (tmp_path / "again").mkdir(exist_ok=True)
    with pytest.raises(SurveyRefused) as err:
        asyncio.run(imp.import_file(data, "日报.xlsx", "wang", quantity="horizontal_displacement"))
    assert [str(p) for p in err.value.problems] == [
        "sheet '竖向位移', row 2, column 测点编号: the worksheet is named for vertical_displacement, and the "
        "import's quantity is horizontal_displacement",
        "sheet '竖向位移', row 3, column 测点编号: the worksheet is named for vertical_displacement, and the "
        "import's quantity is horizontal_displacement",
    ]
    assert got == []


def _redimensioned(data: bytes, ref: str) -> bytes:
    """The workbook with the size its sheet declares (<dimension>) set to `ref`, as other tools write it."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name in src.namelist():
            x = src.read(name)
            if name == "xl/worksheets/sheet1.xml":
                x = re.sub(rb'<dimension ref="[^"]*" ?/>', f'<dimension ref="{ref}"/>'.encode(), x)
            z.writestr(name, x)
    return out.getvalue()


def test_a_sheet_is_read_to_its_last_row_whatever_size_it_declares(tmp_path: Path) -> None:
    """openpyxl's read-only mode trusts the size a sheet declares: declared short, rows beyond were dropped and
    the import said done; a template formatted far below the table was refused as too long to split."""
    rows: list[list[object]] = [HEAD] + [["ZQT-3", datetime(2026, 11, 10 + i, 9, 0), 1.0 + i] for i in range(5)]
    data = _book([("Sheet1", rows)])
    for ref in ("A1:C3", "A1"):
        assert [r.value for r in parse_survey(_redimensioned(data, ref), "r.xlsx", TZ).rows] == [1, 2, 3, 4, 5]
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    for r in rows:
        ws.append(r)
    ws.cell(row=25_000, column=1).font = Font(bold=True)  # formatted, empty
    out = io.BytesIO()
    wb.save(out)
    assert len(parse_survey(out.getvalue(), "r.xlsx", TZ).rows) == 5
    ws.cell(row=25_000, column=1).value = "ZQT-3"  # not empty: the file is too long, not cut short
    out = io.BytesIO()
    wb.save(out)
    with pytest.raises(ValueError, match="more than 20000 rows"):
        parse_survey(out.getvalue(), "r.xlsx", TZ)


def test_a_date_column_and_a_time_column_make_the_survey_time() -> None:
    """观测日期 and 观测时间 side by side: the first in the row was taken, so a survey at 09:00 was stored at 00:00
    and two surveys of a day were refused as the same time."""
    data = _book(
        [
            (
                "Sheet1",
                [
                    ["测点编号", "观测日期", "观测时间", "累计变化量(mm)"],
                    ["ZQT-3", date(2026, 11, 15), time(9, 0), 1.2],
                ],
            )
        ]
    )
    (row,) = parse_survey(data, "r.xlsx", TZ).rows
    assert row.ts_ns == int(datetime(2026, 11, 15, 9, 0, tzinfo=TZ).timestamp()) * NS
    text = "测点编号,观测日期,观测时间,累计变化量(mm)\nZQT-3,2026-11-15,08:00,1.0\nZQT-3,2026-11-15,17:00,1.5\n"
    f = parse_survey(text.encode(), "r.csv", TZ)
    assert f.problems == [] and [datetime.fromtimestamp(r.ts_ns / NS, TZ).hour for r in f.rows] == [8, 17]
    text = "测点编号,观测时间,累计变化量(mm)\nZQT-3,08:00,1.0\n"  # a time of day and no date: said, not guessed
    assert [str(p) for p in parse_survey(text.encode(), "r.csv", TZ).problems] == [
        "row 2, column 观测时间: 08:00 is a time of day without a date (no date column, 观测日期)"
    ]


def test_a_rate_column_with_no_rate_in_it_is_no_rate() -> None:
    """The reported rate is kept for comparison only; the first survey after 初始值 has none, written "/" or "—",
    or Excel's #DIV/0!: each refused the whole file. A rate that is text of another kind still is a problem."""
    for mark in ("/", "—", "#DIV/0!", "-"):
        text = (
            "测点编号,观测时间,累计变化量(mm),变化速率(mm/d)\n"
            f"ZQT-3,2026-11-14 09:00,0.0,{mark}\nZQT-3,2026-11-15 09:00,1.2,1.2\n"
        )
        f = parse_survey(text.encode(), "r.csv", TZ)
        assert f.problems == [] and [r.rate for r in f.rows] == [None, 1.2], mark
    text = "测点编号,观测时间,累计变化量(mm),变化速率(mm/d)\nZQT-3,2026-11-14 09:00,0.0,fast\n"
    assert [p.message for p in parse_survey(text.encode(), "r.csv", TZ).problems] == ["'fast' is not a number"]


def test_items_as_reports_write_them() -> None:
    """桩体深层水平位移 holds both 深层水平位移 and 水平位移 (refused as ambiguous); 坡顶沉降, 周边地表沉降 and
    坑外水位 name GB 50497's 竖向位移 and 地下水位 in the words reports use (refused as unknown)."""
    allowed = ["horizontal_displacement", "vertical_displacement", "deep_displacement", "groundwater_level"]
    assert [
        item_quantity(t, allowed) for t in ("桩体深层水平位移", "冠梁水平位移", "坡顶沉降", "周边地表沉降", "坑外水位")
    ] == [
        "deep_displacement",
        "horizontal_displacement",
        "vertical_displacement",
        "vertical_displacement",
        "groundwater_level",
    ]
    with pytest.raises(ValueError, match="is not a quantity this point reports"):
        item_quantity("水平位移及沉降", allowed)  # two items in one: not guessed


def test_a_csv_the_csv_module_cannot_read_is_refused_not_a_500() -> None:
    # a field over the csv module's limit raised csv.Error through the importer: the API answered 500
    text = "测点编号,观测时间,累计变化量(mm)\nZQT-3,2026-11-15 09:00," + "1" * 200_000 + "\n"
    with pytest.raises(ValueError, match=r"r.csv: not a readable CSV file \(field larger than field limit"):
        parse_survey(text.encode(), "r.csv", TZ)


def test_a_workbooks_one_table_sheet_and_its_cover(tmp_path: Path) -> None:
    """A cover and one sheet named 竖向位移: the sheet's name was heard only with two tables or more, so settlement
    imported with --quantity horizontal_displacement was stored as horizontal displacement."""
    data = _book(
        [("封面", [["某某基坑监测日报"]]), ("竖向位移", [HEAD, ["ZQT-3", datetime(2026, 11, 15, 9, 0), -25.0]])]
    )
    imp, got = importer(tmp_path)
    with pytest.raises(SurveyRefused, match="the worksheet is named for vertical_displacement"):
        asyncio.run(imp.import_file(data, "r.xlsx", "wang", quantity="horizontal_displacement"))
    res = asyncio.run(imp.import_file(data, "r.xlsx", "wang"))
    assert res.sheets_skipped and [(r.quantity, r.value) for r in got] == [("vertical_displacement", -25.0)]


def test_a_hidden_sheet_is_named_and_not_read(tmp_path: Path) -> None:
    """A template's hidden sheet (last period's values, a lookup table) was read like the others: its rows were
    imported unseen by the surveyor. Hidden and "very hidden" sheets are named as not read now; a workbook whose
    tables are all hidden is refused, saying so."""
    at = datetime(2026, 11, 15, 9, 0)
    wb = Workbook()
    shown = wb.active
    assert shown is not None
    shown.title = "竖向位移"
    for r in [HEAD, ["ZQT-3", at, -25.0]]:
        shown.append(r)
    for title, state in (("上期", "hidden"), ("参数", "veryHidden")):
        ws = wb.create_sheet(title)
        for r in [HEAD, ["ZQC-3", at, -99.0]]:
            ws.append(r)
        ws.sheet_state = state
    out = io.BytesIO()
    wb.save(out)
    imp, got = importer(tmp_path)
    res = asyncio.run(imp.import_file(out.getvalue(), "日报.xlsx", "wang"))
    assert (res.rows, res.sheets, sorted(res.sheets_skipped)) == (1, ["竖向位移"], ["上期", "参数"])
    assert "hidden" in res.sheets_skipped["上期"] and [(r.device, r.value) for r in got] == [("ZQT-3", -25.0)]
    wb.remove(shown)
    cover = wb.create_sheet("封面", 0)  # (Excel keeps one sheet visible), first as a cover or Sheet1 sits
    for cells in ([["某某基坑监测日报"]], []):  # a cover with a title; a blank Sheet1 (a second review)
        for r in cells:
            cover.append(r)
        out = io.BytesIO()
        wb.save(out)
        with pytest.raises(ValueError, match="worksheet '上期' is hidden in the workbook, not read"):
            parse_survey(out.getvalue(), "r.xlsx", TZ)
        cover.delete_rows(1, cover.max_row)


def test_an_item_of_two_directions_is_not_taken_for_one() -> None:
    # 竖向位移 whole and 水平 apart: read as vertical only, the horizontal values would be stored as settlement
    allowed = ["horizontal_displacement", "vertical_displacement", "deep_displacement"]
    for text in ("坡顶水平及竖向位移", "围护墙顶水平、竖向位移", "桩顶水平和竖向位移", "水平位移及沉降"):
        with pytest.raises(ValueError, match="is not a quantity this point reports"):
            item_quantity(text, allowed)
    assert item_quantity("立柱竖向位移", allowed) == "vertical_displacement"


def test_time_cells_as_excel_writes_them() -> None:
    """A 观测时间 cell holding a whole datetime beside 观测日期 (a template reused) overrode the date unsaid; an
    [h]:mm cell (a timedelta to openpyxl) was refused as not a time."""
    head: list[object] = ["测点编号", "观测日期", "观测时间", "累计变化量(mm)"]
    rows: list[list[object]] = [
        head,
        ["ZQT-3", date(2026, 11, 15), timedelta(hours=9), 1.0],
        ["ZQT-3", date(2026, 11, 16), datetime(2026, 11, 16, 10, 30), 1.1],
        ["ZQT-3", date(2026, 11, 17), datetime(2026, 11, 14, 9, 0), 1.2],
    ]
    f = parse_survey(_book([("Sheet1", rows)]), "r.xlsx", TZ)
    assert [datetime.fromtimestamp(r.ts_ns / NS, TZ).strftime("%m-%d %H:%M") for r in f.rows] == [
        "11-15 09:00",
        "11-16 10:30",
    ]
    assert [str(p) for p in f.problems] == [
        "row 4, column 观测时间: the time column's date (2026-11-14) is not the date column's (2026-11-17)"
    ]
