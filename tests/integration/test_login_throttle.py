"""Logins an attacker cannot turn against the owner: failures are counted per source address (and per user from
that address), so five wrong passwords from one address do not lock the officer out at another; the throttled ones
are in the audit log, their count too when the gateway stops within their window."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from alerting.db import audit_rows
from gateway.app import Gateway
from services import local
from services.local import Service, wait_for
from tests.sites import officer_site

PASSWORD = "Anquan-Yuan-4412"


def client(base: str, address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, transport=httpx.AsyncHTTPTransport(local_address=address), timeout=30)


async def test_five_failures_from_one_address_do_not_lock_out_another(
    tmp_path: Path, influxdb: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, http = officer_site(tmp_path, influxdb.port, monkeypatch, PASSWORD)
    base = f"http://127.0.0.1:{http}"
    async with (
        Gateway(cfg, fsync=False) as gw,
        client(base, "127.0.0.2") as attacker,
        client(base, "127.0.0.3") as office,
    ):
        await asyncio.to_thread(wait_for, lambda: not local.port_free(http), 10, what="the HTTP endpoint")
        for _ in range(5):
            r = await attacker.post("/api/login", json={"username": "zhang", "password": "wrong"})
            assert r.status_code == 401 and "wrong user name or password" in r.json()["detail"]
        r = await attacker.post("/api/login", json={"username": "zhang", "password": PASSWORD})
        assert r.status_code == 401 and "from this address" in r.json()["detail"]  # even the right one, from there
        r = await office.post("/api/login", json={"username": "zhang", "password": PASSWORD})
        assert r.status_code == 200  # the officer at the site office is not locked out
        # a user name with control characters reaches the audit log printable
        weird = "zhang\n\x1b[31mroot"
        r = await office.post("/api/login", json={"username": weird, "password": "x"})
        assert r.status_code == 401
        rows = audit_rows(gw.alarms.conn)
        failed = [r for r in rows if r["action"] == "auth.login_failed"]
        assert failed[0]["actor"] == "zhang??[31mroot" and failed[0]["detail"] == {"source": "127.0.0.3"}
        assert {r["detail"]["source"] for r in failed[1:]} == {"127.0.0.2"}
        assert any(r["action"] == "auth.login_throttled" and r["target"] == "source:127.0.0.2" for r in rows)
        for _ in range(3):  # counted, to be audited as one row when the window ends: here, when the gateway stops
            r = await attacker.post("/api/login", json={"username": "zhang", "password": "x"})
            assert r.status_code == 401 and "from this address" in r.json()["detail"]
    with sqlite3.connect(cfg.alarms.state_file) as db:
        got = db.execute("SELECT actor, detail FROM audit WHERE action = 'auth.login_throttled' ORDER BY id").fetchall()
    assert [(actor, json.loads(detail)["refused"]) for actor, detail in got] == [("zhang", 1), ("zhang", 3)]
