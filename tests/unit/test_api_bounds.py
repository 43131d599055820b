"""Requests that used to answer 500: the OpenAPI schema, dates beyond int64 nanoseconds."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gateway.api import build_api
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
