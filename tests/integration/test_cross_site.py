"""No cross-site writes: a logged-in officer's browser cannot be made to change anything from another site."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from gateway.app import Gateway
from services import local
from services.local import Service, wait_for
from tests.sites import officer_site

PASSWORD = "Anquan-Yuan-4412"
HAZARD = {"unit_name": "测试项目", "description": "东侧临边防护缺失", "source": "self_check"}


async def test_text_plain_and_foreign_origin_writes_change_nothing(
    tmp_path: Path, influxdb: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, http = officer_site(tmp_path, influxdb.port, monkeypatch, PASSWORD)
    base = f"http://127.0.0.1:{http}"
    async with Gateway(cfg, fsync=False) as gw, httpx.AsyncClient(base_url=base) as browser:
        await asyncio.to_thread(wait_for, lambda: not local.port_free(http), 10, what="the HTTP endpoint")
        assert (await browser.post("/api/login", json={"username": "zhang", "password": PASSWORD})).status_code == 200
        assert browser.cookies  # the session cookie, as a browser holds it
        # what a form or a no-cors fetch on another site can send with the victim's cookie
        forged = await browser.post(
            "/api/hazards", content=str(HAZARD).encode(), headers={"Content-Type": "text/plain;charset=UTF-8"}
        )
        assert forged.status_code == 403 and "application/json" in forged.json()["detail"]
        foreign = await browser.post("/api/hazards", json=HAZARD, headers={"Origin": "http://evil.example"})
        assert foreign.status_code == 403 and "cross-site" in foreign.json()["detail"]
        opaque = await browser.post("/api/hazards", json=HAZARD, headers={"Origin": "null"})
        assert opaque.status_code == 403
        assert (await browser.get("/api/hazards")).json() == []  # nothing changed
        assert gw.metrics.http_refused["403-cross-site"] == 3
        # the console's own requests: JSON from its own origin
        own = await browser.post("/api/hazards", json=HAZARD, headers={"Origin": base})
        assert own.status_code == 200, own.text
        assert len((await browser.get("/api/hazards")).json()) == 1
