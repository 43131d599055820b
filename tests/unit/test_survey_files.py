"""Surveyors' files as monitoring firms write them, checked whole: every problem names its row and column."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from alerting.baselines import Baselines
from alerting.db import connect
from drivers.survey import parse_survey
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
