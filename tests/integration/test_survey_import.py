"""A surveyor's daily report (XLSX, as a third-party monitoring firm sends it) through the API and `sitegw import`:
refused whole with the row and column named; the corrected file imports and raises each level on its survey."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from openpyxl import Workbook

from alerting.db import audit_rows
from alerting.rules import Level
from gateway.app import Gateway
from services import local
from services.local import Service, wait_for
from tests.sites import write_site
from tests.surveys import NS, PLAN, SURVEYS, assert_levels_on_their_surveys, survey_days

TOKEN = "t0ken-of-the-monitoring-firm-0123456789abcdef"


def report(days: list[datetime], values: list[Any]) -> bytes:
    """The firm's daily report: a title line, the header, one row per survey of point ZQT-3."""
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["滨江综合体 基坑监测 冠梁水平位移 成果表"])
    ws.append(["测点编号", "监测项目", "观测时间", "累计变化量(mm)", "变化速率(mm/d)"])
    for d, v in zip(days, values, strict=True):
        ws.append(["ZQT-3", "冠梁水平位移", d.replace(tzinfo=None), v, None])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


async def test_a_surveyors_report_refused_whole_then_imported(
    tmp_path: Path, influxdb: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SURVEY_TOKEN", TOKEN)
    port = local.free_port()
    site = write_site(
        tmp_path / "site.yaml",
        influx_port=influxdb.port,
        http_port=port,
        devices=[
            {
                "id": "ZQT-3",
                "profile": "excavation_survey_v1",
                "expected_interval_s": 86400,
                "warning_values": {"horizontal_displacement": {"cumulative": 30, "rate_per_day": 3, "source": PLAN}},
            }
        ],
        auth={"tokens": [{"name": "monitoring-firm", "role": "officer", "token_env": "SURVEY_TOKEN"}]},
    )
    days = survey_days()
    bad = list(SURVEYS)
    bad[7] = "15,5 mm"  # a typo on the 8th survey, spreadsheet row 10
    seen: list[tuple[str, str, Level, int | None]] = []
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with Gateway(site) as gw, httpx.AsyncClient(base_url=url, headers=auth, timeout=20) as api:
        gw.alarms.lifecycle.hooks.append(
            lambda conn, ev: seen.append((ev.alarm.rule, ev.kind, ev.alarm.level, ev.alarm.source_ns))
        )
        await asyncio.to_thread(wait_for, lambda: not local.port_free(port), 10, what="the HTTP endpoint")

        def body(data: bytes) -> dict[str, str]:
            return {"filename": "ZQT-3 成果表.xlsx", "content_b64": base64.b64encode(data).decode()}

        r = await api.post("/api/surveys", json=body(report(days, bad)))
        assert r.status_code == 422
        assert r.json()["errors"] == [
            {
                "sheet": "",  # a workbook's worksheet, when it holds several tables
                "row": 10,
                "column": "累计变化量(mm)",
                "message": "'15,5 mm' is not a number",
                "message_zh": "'15,5 mm' 不是数字",  # the console shows this one to zh-CN users
            }
        ]
        assert (await api.get("/api/surveys")).json() == []  # nothing of it was kept
        assert gw.metrics.readings_by_driver["survey"] == 0

        r = await api.post("/api/surveys", json=body(report(days, SURVEYS)))
        assert r.status_code == 200, r.text
        res = r.json()
        assert (res["rows"], res["points"], res["baselines_set"]) == (15, ["ZQT-3"], ["ZQT-3/horizontal_displacement"])
        assert res["first_ns"] == int(days[0].timestamp()) * NS
        await asyncio.to_thread(
            wait_for, lambda: any(r == "exc.horizontal_displacement" and lv == 2 for r, _, lv, _ in seen), 10
        )
        # importing the same report again: every row is a survey already imported
        again = await api.post("/api/surveys", json=body(report(days[-2:], SURVEYS[-2:])))
        assert again.status_code == 422
        assert [e["row"] for e in again.json()["errors"]] == [3, 4]
        assert "already imported (import #1)" in again.json()["errors"][0]["message"]
        # the next day's result through the command line
        csv = tmp_path / "day15.csv"
        nxt = days[-1] + timedelta(days=1)
        csv.write_text(f"测点编号,观测时间,累计变化量(mm)\nZQT-3,{nxt:%Y-%m-%d %H:%M},30.4\n", encoding="utf-8")
        cmd = [sys.executable, "-m", "gateway.cli", "import", str(csv), "--url", url, "--token-env", "SURVEY_TOKEN"]
        cmd += ["--quantity", "horizontal_displacement"]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ}
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert "imported 1 row(s) for ZQT-3 (import #2)" in out.decode()
        # and a stale copy of it again: refused, the row named
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        assert proc.returncode == 1
        assert (
            "row 2, column 观测时间: ZQT-3 (horizontal_displacement) at this time was already imported" in err.decode()
        )
        imports = audit_rows(gw.alarms.conn)
        # who imported what, refusals included (newest first)
        assert [r["action"] for r in imports if r["action"].startswith("survey.")] == [
            "survey.refused",  # the stale CSV
            "survey.import",  # the CSV, import #2
            "survey.refused",  # the same report again
            "survey.import",  # the corrected report, import #1
            "survey.refused",  # the report with the typo
        ]
        assert {r["actor"] for r in imports if r["action"].startswith("survey.")} == {"monitoring-firm"}

        # 危险 from a person: the inspector finds piping at the pit bottom next to the point
        r = await api.post("/api/inspections", json={"device": "ZQT-3", "finding": "坑底东侧出现管涌"})
        assert r.status_code == 200, r.text
        alarm = gw.alarms.lifecycle.get(r.json()["alarm_id"])
        assert (alarm.rule, alarm.level, alarm.source) == (
            "exc.inspection_danger",
            Level.DANGER,
            "GB 50497-2019 8.0.9 [R]",
        )
        assert any("巡视检查: 坑底东侧出现管涌" in (h["text"] or "") for h in gw.alarms.lifecycle.history(alarm.id))
        gw.alarms.lifecycle.suppress("ZQT-3", "offline")  # the point's surveys stop: the danger stays visible
        assert gw.alarms.lifecycle.get(alarm.id).suppressed_by is None
        r = await api.post("/api/inspections", json={"device": "ZQT-3", "finding": "管涌已封堵", "danger": False})
        assert r.json()["alarm_id"] == alarm.id  # back to normal, not yet acknowledged: the all-clear is noted on it
        assert gw.alarms.lifecycle.get(alarm.id).state.value == "rtn_unacked"
        assert any("巡视检查: 管涌已封堵" in (h["text"] or "") for h in gw.alarms.lifecycle.history(alarm.id))
        assert (await api.post("/api/inspections", json={"device": "NOPE", "finding": "x"})).status_code == 422

    assert_levels_on_their_surveys(seen, days)
    # 危险 only from the inspector's finding, never from a survey value
    assert {r for r, _, lv, _ in seen if lv >= Level.DANGER} == {"exc.inspection_danger"}
