"""Requests that used to answer 500: the OpenAPI schema, dates and numbers beyond int64 (nanoseconds, SQLite)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from gateway.api import build_api
from gateway.api.deps import install_refusals
from gateway.app import Gateway
from tests.sites import write_site

PASSWORD = "Anquan-Yuan-4412"


async def test_openapi_schema_and_far_dates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_PW_ZHANG", PASSWORD)
    cfg = write_site(
        tmp_path / "site.yaml",
        influx_port=1,
        http_port=1,
        devices=[{"id": "P1", "profile": "excavation_survey_v1", "expected_interval_s": 86400}],
        auth={"users": [{"name": "zhang", "role": "officer", "password_env": "T_PW_ZHANG"}]},
    )
    gw = Gateway(cfg, fsync=False)  # not started: the API alone, no background tasks
    try:
        transport = httpx.ASGITransport(app=build_api(gw), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as api:
            schema = await api.get("/openapi.json")
            assert schema.status_code == 200
            paths = schema.json()["paths"]
            assert {"/health", "/api/alarms", "/api/surveys", "/api/inspections"} <= set(paths)
            assert (await api.post("/api/login", json={"username": "zhang", "password": PASSWORD})).status_code == 200
            for q in ({"until": "9999-12-31"}, {"since": "0001-01-01"}, {"since": "1600-01-01", "until": "3000-01-01"}):
                r = await api.get("/api/alarms", params=q)
                assert r.status_code == 200, (q, r.text)
                assert r.json() == []
            assert (await api.get("/api/hazards", params={"until": "9999-12-31"})).status_code == 200
    finally:
        await gw.alarms.aclose()
        await gw.writer.aclose()


async def test_hazard_numbers_and_dates_beyond_int64_are_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hazard bodies are read by hand (not in the OpenAPI schema): a time, an alarm id or a deadline day beyond what
    SQLite and int64 ns hold was an OverflowError and a bare 500; now a 422 naming the field, in both languages."""
    users = [
        {"name": n, "role": r, "password_env": f"T_PW_{n.upper()}"}
        for n, r in (("zhang", "officer"), ("li", "manager"))
    ]
    for n in ("ZHANG", "LI"):
        monkeypatch.setenv(f"T_PW_{n}", PASSWORD)
    cfg = write_site(
        tmp_path / "site.yaml",
        influx_port=1,
        http_port=1,
        devices=[{"id": "P1", "profile": "excavation_survey_v1", "expected_interval_s": 86400}],
        auth={"users": users},
    )
    gw = Gateway(cfg, fsync=False)
    try:
        transport = httpx.ASGITransport(app=build_api(gw), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as api:
            tok = {}
            for n in ("zhang", "li"):
                r = await api.post("/api/login", json={"username": n, "password": PASSWORD})
                tok[n] = {"Authorization": f"Bearer {r.json()['token']}"}
            api.cookies.clear()
            report = {"unit_name": "一标段", "description": "临边防护缺失", "source": "self_check"}
            for hid in (1, 2):
                r = await api.post("/api/hazards", json=report, headers=tok["zhang"])
                assert r.json()["id"] == hid
                r = await api.post(f"/api/hazards/{hid}/confirm", json={"klass": "general"}, headers=tok["li"])
                assert r.status_code == 200, r.text
            assign = {"responsible": "王工", "measures": "补设防护栏杆"}
            refused = [
                ("/api/hazards", "zhang", {**report, "found_ns": -(2**63) - 1}, "found_ns", "发现时间"),
                ("/api/hazards", "zhang", {**report, "found_ns": 2**63}, "found_ns", "发现时间"),
                ("/api/hazards", "zhang", {**report, "found_ns": -1}, "found_ns", "发现时间"),
                ("/api/hazards", "zhang", {**report, "alarm_id": 2**63}, "alarm_id", "报警编号"),
                ("/api/hazards/1/assign", "li", {**assign, "deadline": "9999-12-31"}, "deadline", "整改期限"),
                ("/api/hazards/1/assign", "li", {**assign, "deadline": "2300-01-01"}, "deadline", "整改期限"),
                ("/api/hazards/1/assign", "li", {**assign, "deadline": "2262-01-01"}, "deadline", "整改期限"),
                (
                    "/api/hazards/1/mark_reported",
                    "li",
                    {"to": "住建局", "reported_ns": 2**63},
                    "reported_ns",
                    "上报时间",
                ),
                ("/api/hazards/1/accept", "li", {"completed_on": "9999-12-31"}, "completed_on", "完成日期"),
                # JSON's NaN and Infinity, which Python reads: NaN funds passed "required for a major hazard" and
                # "not negative", and was stored as NULL; an infinite value was reported as measured
                (
                    "/api/hazards/1/assign",
                    "li",
                    {**assign, "deadline": "2026-12-31", "funds": float("nan")},
                    "funds",
                    "整改资金",
                ),
                ("/api/hazards", "zhang", {**report, "value": float("inf")}, "value", "数值"),
                ("/api/hazards", "zhang", {**report, "threshold": float("-inf")}, "threshold", ""),
            ]
            for url, who, body, field, zh in refused:
                sent = json.dumps(body)  # (as a client writes NaN and Infinity: httpx's json= refuses them)
                r = await api.post(url, content=sent, headers={**tok[who], "Content-Type": "application/json"})
                assert r.status_code == 422, (body, r.text)
                assert field in r.json()["detail"] and zh in r.json()["detail_zh"], (body, r.text)
            # the last day whose end int64 ns still holds is a deadline like any other
            r = await api.post("/api/hazards/2/assign", json={**assign, "deadline": "2261-12-31"}, headers=tok["li"])
            assert r.status_code == 200, r.text
            assert r.json()["deadline"] == "2261-12-31"
            r = await api.post(f"/api/notices/{2**63}/ack", json={"note": "已整改"}, headers=tok["li"])
            assert r.status_code == 422, r.text
    finally:
        await gw.alarms.aclose()
        await gw.writer.aclose()


@pytest.mark.parametrize(
    "overflow",
    [
        lambda: sqlite3.connect(":memory:").execute("SELECT ?", (2**63,)),  # Python int too large for SQLite
        lambda: date(9999, 12, 31) + timedelta(days=1),  # date value out of range
    ],
    ids=["sqlite", "date"],
)
async def test_an_overflow_no_bound_caught_is_a_bad_request(overflow: Callable[[], object]) -> None:
    """The safety net behind the bounds: an OverflowError from a request's value is a 422 in both languages."""
    app = FastAPI()
    install_refusals(app)

    @app.get("/x")
    async def x() -> None:
        overflow()

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as api:
        r = await api.get("/x")
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("a number or date is out of range (")
    assert r.json()["detail_zh"] == "数值或日期超出范围"
