"""The HTTP API of a real running gateway (Mosquitto, InfluxDB, uvicorn) driven over HTTP: logins and sessions,
roles and the audit trail, alarm queries and operator actions, suppression, baselines, the hazard loop, exports."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
import paho.mqtt.client as paho
import pytest
from openpyxl import load_workbook
from paho.mqtt.enums import CallbackAPIVersion

from alerting.alarms import Alarm
from gateway.api import build_api
from gateway.app import Gateway
from gateway.config import SiteConfig
from services import local
from services.local import Service
from tests.sites import write_site

TZ = ZoneInfo("Asia/Shanghai")
NS = 1_000_000_000
T0 = int(datetime(2025, 3, 10, 10, 0, tzinfo=TZ).timestamp()) * NS  # a Monday morning on site
USERS = {"view": "viewer", "zhang": "officer", "li": "manager", "wang": "admin"}
PASSWORDS = {
    "view": "Wall-Screen-7731",
    "zhang": "Anquan-Yuan-4412",
    "li": "Jingli-Xiangmu-9051",
    "wang": "Admin-Qiye-2268",
}
WRONG = "Not-The-Password-5567"
UNIT = "测试建设有限公司"
PREFECTURE, COUNTY = "昌吉回族自治州", "昌吉市"
GAS_NAME = "1号有限空间气体检测仪"
CONFINED_TEXT = '有限空间作业未执行"先通风、再检测、后作业"要求'  # gas.lel's hazard_basis text in the gas pack

# a tower-crane monitor on MQTT (a site profile): only the limiter bypass key, whose rule latches
CRANE_PROFILE = """\
id: test_crane_bypass_mqtt_v1
kind: tower_crane
title: test crane bypass key over MQTT
transport: mqtt
payload:
  format: json
  device_key: {source: topic, segment: 3}
  timestamp: {path: ts, format: epoch_ms}
  fields:
    - {path: data.bypass, quantity: limiter_bypass}
"""

T = TypeVar("T")


class FakeClock:
    """The gateway's alarm/hazard/auth clock: moves only when the test says so."""

    def __init__(self, ns: int) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> int:
        self.ns += int(seconds * NS)
        return self.ns


def site(tmp_path: Path, mqtt: int, influx: int, http: int) -> SiteConfig:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "test_crane_bypass_mqtt_v1.yaml").write_text(CRANE_PROFILE, encoding="utf-8")
    quiet = {"broker": "b", "expected_interval_s": 3600.0}  # never `offline` (that is a suppression) mid-test
    return write_site(
        tmp_path / "site.yaml",
        influx_port=influx,
        mqtt_port=mqtt,
        http_port=http,
        profile_dirs=[str(profiles)],
        devices=[
            {
                "id": "GAS-01",
                "name": GAS_NAME,
                "profile": "gas_4in1_mqtt_v1",
                "topic": "site/t/gas/+",
                "match": "SN77",
                **quiet,
            },
            {
                "id": "FW-A01",
                "profile": "formwork_mqtt_v1",
                "topic": "site/t/formwork/+/data",
                "design_values": {"settlement": 10.0, "axial_force": 40.0},
                **quiet,
            },
            {"id": "TC-M1", "profile": "test_crane_bypass_mqtt_v1", "topic": "site/t/crane/+/data", **quiet},
        ],
        hazards={
            "region_prefecture": PREFECTURE,
            "region_county": COUNTY,
            "reporting_unit": UNIT,
            "contact": "张安全",
            "contact_phone": "13800000001",
        },
        auth={
            "users": [{"name": n, "role": r, "password_env": f"T_PW_{n.upper()}"} for n, r in USERS.items()],
            "session_ttl_s": 40 * 86400,  # the hazard test moves the clock by days; expiry is not under test here
            "session_idle_s": 40 * 86400,
        },
    )


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, TZ).isoformat()


@dataclass
class Site:
    gw: Gateway
    api: httpx.AsyncClient
    clock: FakeClock
    dev: paho.Client
    headers: dict[str, dict[str, str]] = field(default_factory=dict)

    async def login(self, name: str, password: str | None = None) -> httpx.Response:
        r = await self.api.post("/api/login", json={"username": name, "password": password or PASSWORDS[name]})
        self.api.cookies.clear()  # this client speaks Bearer only: a kept cookie would log in every later request
        return r

    async def as_(self, name: str) -> dict[str, str]:
        if name not in self.headers:
            r = await self.login(name)
            assert r.status_code == 200, r.text
            self.headers[name] = {"Authorization": f"Bearer {r.json()['token']}"}
        return self.headers[name]

    async def call(self, who: str, method: str, url: str, body: Any = None, **params: Any) -> httpx.Response:
        h = await self.as_(who)
        return await self.api.request(method, url, json=body, params=params or None, headers=h)

    async def _pub(self, topic: str, doc: dict[str, Any]) -> None:
        info = self.dev.publish(topic, json.dumps(doc), qos=1)
        await asyncio.to_thread(info.wait_for_publish, 5)

    async def gas(self, lel: float, h2s: float = 0.0) -> None:
        readings = [
            {"gas": "EX", "value": lel, "unit": "%LEL"},
            {"gas": "O2", "value": 20.9, "unit": "%VOL"},
            {"gas": "H2S", "value": h2s, "unit": "ppm"},
            {"gas": "CO", "value": 0.0, "unit": "ppm"},
        ]
        doc = {"sn": "SN77", "time": _iso(self.clock.ns), "readings": readings, "status": {"fault": 0, "cal": 0}}
        await self._pub("site/t/gas/SN77", doc)

    async def crane(self, bypass: int) -> None:
        await self._pub("site/t/crane/TC-M1/data", {"ts": self.clock.ns // 1_000_000, "data": {"bypass": bypass}})

    async def formwork(self, settlement: float) -> int:
        ts_ms = self.clock.ns // 1_000_000
        await self._pub("site/t/formwork/FW-A01/data", {"ts": ts_ms, "data": {"settlement": settlement}})
        return ts_ms * 1_000_000

    def alarm(self, rule: str, device: str, when: Callable[[Alarm], bool] = lambda _: True) -> Alarm | None:
        """The open alarm of a rule on a device, if `when` holds for it, straight from the lifecycle (the database)."""
        lc = self.gw.alarms.lifecycle
        got = [a for a in lc.open_alarms() if a.rule == rule and a.device == device and when(a)]
        return got[0] if got else None

    def audit(self, sql_where: str = "1=1", *args: Any) -> list[tuple[Any, ...]]:
        rows = self.gw.alarms.conn.execute(
            f"SELECT actor, action, target, why, at_ns FROM audit WHERE {sql_where} ORDER BY id", args
        )
        return [tuple(r) for r in rows.fetchall()]


async def until(fn: Callable[[], T | None], what: str, timeout_s: float = 15.0) -> T:
    for _ in range(int(timeout_s / 0.02)):
        got = fn()
        if got:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@asynccontextmanager
async def running(
    tmp_path: Path, mosquitto: Service, influxdb: Service, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Site]:
    for name, pw in PASSWORDS.items():
        monkeypatch.setenv(f"T_PW_{name.upper()}", pw)
    http = local.free_port()
    clock = FakeClock(T0)
    cfg = site(tmp_path, mosquitto.port, influxdb.port, http)
    dev = paho.Client(CallbackAPIVersion.VERSION2)
    dev.connect("127.0.0.1", mosquitto.port)
    dev.loop_start()
    try:
        async with (
            Gateway(cfg, fsync=False, clock=clock) as gw,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{http}") as api,
        ):
            await asyncio.wait_for(gw.sessions[0].connected.wait(), 10)
            for _ in range(500):
                try:
                    if (await api.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.02)
            yield Site(gw, api, clock, dev)
    finally:
        dev.loop_stop()
        dev.disconnect()


def _sample(path: str) -> str:
    samples = {
        "alarm_id": "1",
        "hazard_id": "1",
        "device": "GAS-01",
        "quantity": "lel",
        "action": "confirm",
        "reason": "out_of_service",
        "fmt": "csv",
    }
    return re.sub(r"{(\w+)}", lambda m: samples.get(m[1], "1"), path)


# ---- logins and sessions ------------------------------------------------------------------------------------


async def test_logins_sessions_and_secrets(
    tmp_path: Path,
    mosquitto: Service,
    influxdb: Service,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="sitegw")
    async with running(tmp_path, mosquitto, influxdb, monkeypatch) as s:
        api = s.api
        # health and metrics stay open for the site's monitoring
        hz = await api.get("/healthz")
        assert hz.status_code == 200 and hz.json()["site"] == "t"
        m = await api.get("/metrics")
        assert m.status_code == 200 and "sitegw_" in m.text

        # every /api route but the login refuses a request without a valid session, whatever its body
        checked = []
        # every route the API declares (its OpenAPI paths: the routers' routes, however FastAPI nests them)
        for path, operations in build_api(s.gw).openapi()["paths"].items():
            if not path.startswith("/api/") or path == "/api/login":
                continue
            for method in sorted(m.upper() for m in operations):
                for h in ({}, {"Authorization": "Bearer forged-token"}, {"Cookie": "sitegw_session=forged"}):
                    r = await api.request(method, _sample(path), headers=h, json={})
                    assert r.status_code == 401, (method, path, h, r.text)
                    assert r.json() == {"detail": "login required", "detail_zh": "请先登录"}
                    assert r.headers["www-authenticate"] == "Bearer"
                checked.append((method, path))
        assert len(checked) >= 27 and ("POST", "/api/hazards/{hazard_id}/{action}") in checked
        assert ("GET", "/api/audit") in checked and ("DELETE", "/api/baselines/{device}/{quantity}") in checked

        # a wrong password and an unknown user get the same answer: it never says which part was wrong
        bad_pw = await s.login("zhang", WRONG)
        no_user = await s.login("nobody", PASSWORDS["zhang"])
        assert bad_pw.status_code == no_user.status_code == 401
        assert (
            bad_pw.json()
            == no_user.json()
            == {"detail": "wrong user name or password", "detail_zh": "用户名或密码错误"}
        )
        assert "set-cookie" not in bad_pw.headers

        # five failures per user (from one address) within 15 min: the sixth is refused even with the right password
        for _ in range(4):
            assert (await s.login("zhang", WRONG)).status_code == 401
        locked = await s.login("zhang")
        assert locked.status_code == 401 and "too many failed logins" in locked.json()["detail"]
        assert (await s.login("li")).status_code == 200  # per user: the others still get in
        failed = s.audit("action = 'auth.login_failed'")
        assert [(a, t) for a, _, t, _, _ in failed] == [("zhang", "user:zhang"), ("nobody", "user:nobody")] + [
            ("zhang", "user:zhang")
        ] * 4
        assert s.audit("action = 'auth.login' AND actor = 'zhang'") == []
        # attempts in flight at the same time (each waiting for its scrypt) cannot all slip under the limit
        burst = await asyncio.gather(*(s.login("view", WRONG) for _ in range(8)))
        details = sorted(r.json()["detail"] for r in burst)
        too_many = "too many failed logins from this address; try again in 15 minutes"
        assert details == [too_many] * 3 + ["wrong user name or password"] * 5
        r = await s.login("x" * 65, WRONG)  # bounded: the name goes into the audit table
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "username"]
        s.clock.advance(15 * 60 + 1)  # the window has passed
        ok = await s.login("zhang")
        assert ok.status_code == 200 and ok.json()["role"] == "officer" and ok.json()["user"] == "zhang"
        assert s.audit("action = 'auth.login' AND actor = 'zhang'") == [
            ("zhang", "auth.login", "user:zhang", None, s.clock.ns)
        ]

        # logout ends the session on the server, not just in the client
        bearer = {"Authorization": f"Bearer {ok.json()['token']}"}
        me = await api.get("/api/me", headers=bearer)
        assert me.json() == {"user": "zhang", "role": "officer", "display_name": ""}
        sessions = "SELECT COUNT(*) FROM auth_sessions WHERE user = ?"
        assert s.gw.alarms.conn.execute(sessions, ("zhang",)).fetchone()[0] == 1
        assert (await api.post("/api/logout", headers=bearer)).json() == {"user": "zhang", "status": "logged out"}
        assert (await api.get("/api/me", headers=bearer)).status_code == 401
        assert s.gw.alarms.conn.execute(sessions, ("zhang",)).fetchone()[0] == 0

        # a browser logs in with the cookie alone: HttpOnly (no script reads it), SameSite=Strict (no CSRF)
        async with httpx.AsyncClient(base_url=str(api.base_url)) as browser:
            r = await browser.post("/api/login", json={"username": "wang", "password": PASSWORDS["wang"]})
            assert r.status_code == 200
            cookie = r.headers["set-cookie"]
            attrs = [a.strip().lower() for a in cookie.split(";")]
            assert attrs[0] == f"sitegw_session={r.json()['token']}".lower()
            assert "httponly" in attrs and "samesite=strict" in attrs and f"max-age={40 * 86400}" in attrs
            me = await browser.get("/api/me")
            assert me.status_code == 200 and me.json()["role"] == "admin"
            out = await browser.post("/api/logout")
            assert out.status_code == 200 and 'sitegw_session=""' in out.headers["set-cookie"]
            stale = {"Cookie": f"sitegw_session={r.json()['token']}"}  # a copy of the old cookie is dead too
            assert (await api.get("/api/me", headers=stale)).status_code == 401

        # no password, right or wrong, anywhere in the log or the state database (audit table included)
        dump = []
        conn = s.gw.alarms.conn
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            dump += [repr(tuple(row)) for row in conn.execute(f"SELECT * FROM {table}").fetchall()]
        text = "\n".join(dump)
        assert "auth.login_failed" in text and "auth.login'" in text  # the audit table is in the dump
    assert any(r.name.startswith("sitegw") for r in caplog.records)  # the gateway did log
    for pw in (*PASSWORDS.values(), WRONG):
        assert pw not in caplog.text
        assert pw not in text


# ---- roles and the audit trail ------------------------------------------------------------------------------


async def test_roles_decide_who_may_do_what_and_every_write_is_audited(
    tmp_path: Path, mosquitto: Service, influxdb: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(tmp_path, mosquitto, influxdb, monkeypatch) as s:
        await s.gas(lel=30.0)
        gas = await until(lambda: s.alarm("gas.lel", "GAS-01"), "gas.lel alarm")
        await s.crane(1)
        await until(lambda: s.alarm("tc.bypass_switch", "TC-M1"), "bypass alarm")
        s.clock.advance(1)
        await s.crane(0)
        crane = await until(
            lambda: s.alarm("tc.bypass_switch", "TC-M1", lambda a: a.state == "latched"), "latched bypass alarm"
        )
        await s.formwork(2.5)
        await until(lambda: ("FW-A01", "settlement") in s.gw.pipeline.latest, "formwork reading")

        # viewer: reads, never writes
        assert [a["rule"] for a in (await s.call("view", "GET", "/api/alarms")).json()] == [
            "tc.bypass_switch",
            "gas.lel",
        ]
        r = await s.call("view", "POST", f"/api/alarms/{gas.id}/ack", {})
        assert r.status_code == 403 and r.json()["detail"] == "needs role officer (you are viewer)"
        for url, body in ((f"/api/alarms/{gas.id}/comment", {"text": "看看"}), ("/api/hazards", {})):
            assert (await s.call("view", "POST", url, body)).status_code == 403

        # officer: ack, comment, shelve; not reset, suppress or baselines
        t_ack = s.clock.advance(1)
        r = await s.call("zhang", "POST", f"/api/alarms/{gas.id}/ack", {"comment": "已撤出作业人员"})
        assert r.status_code == 200 and r.json()["alarm"]["acked_by"] == "zhang"
        t_comment = s.clock.advance(1)
        assert (
            await s.call("zhang", "POST", f"/api/alarms/{gas.id}/comment", {"text": "已开启通风"})
        ).status_code == 200
        t_shelve = s.clock.advance(1)
        r = await s.call("zhang", "POST", f"/api/alarms/{gas.id}/shelve", {"reason": "通风中", "duration_s": 600})
        assert r.status_code == 200
        r = await s.call("zhang", "POST", f"/api/alarms/{crane.id}/reset", {"comment": "已检查"})
        assert r.status_code == 403 and r.json()["detail"] == "needs role manager (you are officer)"
        r = await s.call("zhang", "POST", "/api/devices/GAS-01/suppress", {"reason": "out_of_service"})
        assert r.status_code == 403 and r.json()["detail"] == "needs role admin (you are officer)"
        r = await s.call("zhang", "PUT", "/api/baselines/FW-A01/settlement", {"why": "初始值"})
        assert r.status_code == 403 and "needs role manager" in r.json()["detail"]
        assert s.gw.alarms.lifecycle.get(crane.id).state == "latched"
        assert s.gw.alarms.lifecycle.suppressions() == [] and s.gw.alarms.baselines.all() == []

        # manager: resets a latched alarm after the inspection, sets baselines; not suppression
        t_reset = s.clock.advance(1)
        r = await s.call("li", "POST", f"/api/alarms/{crane.id}/reset", {"comment": "旁路钥匙已拔出并封存"})
        assert r.status_code == 200 and r.json()["events"] == ["reset", "closed"]
        assert r.json()["alarm"]["state"] == "normal" and r.json()["alarm"]["acked_by"] == "li"
        t_base = s.clock.advance(1)
        r = await s.call("li", "PUT", "/api/baselines/FW-A01/settlement", {"why": "浇筑前初始值"})
        assert r.status_code == 200 and (r.json()["value"], r.json()["set_by"]) == (2.5, "li")
        r = await s.call("li", "POST", "/api/devices/GAS-01/suppress", {"reason": "out_of_service"})
        assert r.status_code == 403 and r.json()["detail"] == "needs role admin (you are manager)"
        assert (await s.call("li", "GET", "/api/audit")).status_code == 403

        # admin: suppression by design
        t_supp = s.clock.advance(1)
        r = await s.call("wang", "POST", "/api/devices/GAS-01/suppress", {"reason": "out_of_service"})
        assert r.status_code == 200 and r.json()["events"] == ["suppressed"]

        # who, when and why of every write, in order, from the database and from the admin's audit endpoint
        expected = [
            ("zhang", "alarm.ack", f"alarm:{gas.id}", "已撤出作业人员", t_ack),
            ("zhang", "alarm.comment", f"alarm:{gas.id}", "已开启通风", t_comment),
            ("zhang", "alarm.shelve", f"alarm:{gas.id}", "通风中", t_shelve),
            ("li", "alarm.reset", f"alarm:{crane.id}", "旁路钥匙已拔出并封存", t_reset),
            ("li", "baseline.set", "baseline:FW-A01/settlement", "浇筑前初始值", t_base),
            ("wang", "alarm.suppress", "device:GAS-01", "out_of_service", t_supp),
        ]
        assert s.audit("action NOT LIKE 'auth.%'") == expected
        rows = (await s.call("wang", "GET", "/api/audit")).json()
        writes = [
            (x["actor"], x["action"], x["target"], x["why"], x["at_ns"])
            for x in rows
            if not x["action"].startswith("auth.")
        ]
        assert writes == expected[::-1]  # newest first
        assert (await s.call("wang", "GET", "/api/audit", target=f"alarm:{crane.id}")).json()[0][
            "action"
        ] == "alarm.reset"


# ---- alarms: queries and operator actions -------------------------------------------------------------------


async def test_alarm_filters_and_operator_actions(
    tmp_path: Path, mosquitto: Service, influxdb: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(tmp_path, mosquitto, influxdb, monkeypatch) as s:
        await s.gas(lel=30.0, h2s=8.0)
        await until(lambda: s.alarm("gas.lel", "GAS-01") and s.alarm("gas.h2s", "GAS-01"), "lel and h2s alarms")
        s.clock.advance(1)
        await s.gas(lel=55.0, h2s=8.0)  # to 危险
        lel = await until(lambda: s.alarm("gas.lel", "GAS-01", lambda a: a.level == 3), "lel at 危险")
        await s.crane(1)
        crane = await until(lambda: s.alarm("tc.bypass_switch", "TC-M1"), "bypass alarm")

        async def ids(**params: Any) -> list[int]:
            r = await s.call("view", "GET", "/api/alarms", **params)
            assert r.status_code == 200, r.text
            return [a["id"] for a in r.json()]

        h2s = s.alarm("gas.h2s", "GAS-01")
        assert h2s is not None
        assert await ids() == [crane.id, h2s.id, lel.id]  # newest first
        assert await ids(device="GAS-01") == [h2s.id, lel.id]
        assert await ids(rule="gas.lel") == [lel.id]
        assert await ids(min_level=3) == [lel.id]
        assert await ids(state="active_unacked") == [crane.id, h2s.id, lel.id]
        assert await ids(device="TC-M1", rule="gas.lel") == []
        one = (await s.call("view", "GET", "/api/alarms", rule="gas.lel")).json()[0]
        assert (one["level"], one["max_level"], one["level_zh"], one["threshold"], one["value"]) == (
            3,
            3,
            "危险",
            50,
            55,
        )
        assert one["source"] == "GB/T 50493-2019 5.5.2 [S+]" and one["notifiable"] is True
        r = await s.call("view", "GET", "/api/alarms", state="on_fire")
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "state"]

        # ack, then ack again: 409 naming who acknowledged it
        t_ack = s.clock.advance(2)
        r = await s.call("zhang", "POST", f"/api/alarms/{lel.id}/ack", {"comment": "已撤人"})
        assert r.status_code == 200 and r.json()["events"] == ["acked"]
        a = r.json()["alarm"]
        assert (a["state"], a["acked_by"], a["acked_ns"], a["notifiable"]) == ("active_acked", "zhang", t_ack, False)
        r = await s.call("zhang", "POST", f"/api/alarms/{lel.id}/ack", {})
        assert (
            r.status_code == 409
            and r.json()["detail"] == f"alarm {lel.id} cannot be acknowledged: it was already acknowledged by zhang"
        )
        assert await ids(state="active_acked") == [lel.id]

        # an alarm that returned to normal and was acknowledged is closed: open_only leaves it out
        s.clock.advance(1)
        await s.gas(lel=55.0, h2s=0.0)
        await until(lambda: s.alarm("gas.h2s", "GAS-01", lambda a: a.state == "rtn_unacked"), "h2s back to normal")
        r = await s.call("zhang", "POST", f"/api/alarms/{h2s.id}/ack", {})
        assert r.json()["events"] == ["acked", "closed"] and r.json()["alarm"]["state"] == "normal"
        assert await ids(open_only=True) == [crane.id, lel.id]
        assert await ids(open_only=False) == [crane.id, h2s.id, lel.id]
        assert await ids(state="normal") == [h2s.id]

        # shelve: not notifiable until unshelved (then it is again); unshelving twice is a conflict
        assert (await s.call("view", "GET", f"/api/alarms/{crane.id}")).json()["notifiable"] is True
        t_shelve = s.clock.advance(1)
        r = await s.call(
            "zhang", "POST", f"/api/alarms/{crane.id}/shelve", {"reason": "维修班更换钥匙开关", "duration_s": 1800}
        )
        assert r.status_code == 200 and r.json()["events"] == ["shelved"]
        a = r.json()["alarm"]
        assert (a["notifiable"], a["shelved_by"], a["shelve_reason"]) == (False, "zhang", "维修班更换钥匙开关")
        assert a["shelved_until_ns"] == t_shelve + 1800 * NS
        assert s.gw.alarms.lifecycle.get(crane.id).shelved_until_ns == t_shelve + 1800 * NS
        r = await s.call("zhang", "POST", f"/api/alarms/{crane.id}/unshelve")
        assert (
            r.status_code == 200
            and r.json()["alarm"]["notifiable"] is True
            and r.json()["alarm"]["shelved_until_ns"] is None
        )
        r = await s.call("zhang", "POST", f"/api/alarms/{crane.id}/unshelve")
        assert r.status_code == 409 and r.json()["detail"] == f"alarm {crane.id} is not shelved"

        # comment: in the alarm's history with who and what
        r = await s.call("zhang", "POST", f"/api/alarms/{lel.id}/comment", {"text": "风机已开启"})
        assert r.status_code == 200 and r.json()["events"] == ["comment"]
        detail = (await s.call("view", "GET", f"/api/alarms/{lel.id}")).json()
        assert [(h["kind"], h["actor"], h["text"]) for h in detail["history"]] == [
            ("raised", "system", None),
            ("level_up", "system", "报警→危险"),
            ("acked", "zhang", "已撤人"),
            ("comment", "zhang", "风机已开启"),
        ]
        assert detail["escalation"] == [] and detail["deliveries"] == []

        # unknown ids: 404; bad bodies: 422 saying what is wrong
        for method, url in (("GET", "/api/alarms/9999"), ("POST", "/api/alarms/9999/ack")):
            r = await s.call("zhang", method, url, {} if method == "POST" else None)
            assert r.status_code == 404 and r.json()["detail"] == "no alarm 9999"
        r = await s.call("zhang", "POST", f"/api/alarms/{crane.id}/shelve", {"reason": "", "duration_s": 60})
        assert r.status_code == 422
        assert [(e["loc"], e["msg"]) for e in r.json()["detail"]] == [
            (["body", "reason"], "String should have at least 1 character")
        ]
        r = await s.call("zhang", "POST", f"/api/alarms/{crane.id}/shelve", {"reason": "x", "duration_s": 9 * 3600})
        assert (
            r.status_code == 422 and r.json()["detail"] == "shelve duration must be more than 0 s and at most 28800 s"
        )
        r = await s.call("zhang", "POST", f"/api/alarms/{crane.id}/shelve", {"reason": "x"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "duration_s"]
        r = await s.call("zhang", "POST", f"/api/alarms/{crane.id}/ack", {"comment": "ok", "level": 0})
        assert r.status_code == 422 and r.json()["detail"][0]["type"] == "extra_forbidden"
        r = await s.api.post(f"/api/alarms/{crane.id}/comment", content=b"{not json", headers=await s.as_("zhang"))
        assert r.status_code == 422
        r = await s.call("zhang", "POST", "/api/alarms/abc/ack", {})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "alarm_id"]
        assert s.gw.alarms.lifecycle.get(crane.id).shelved_until_ns is None  # none of the refused calls changed it


# ---- suppression by design ----------------------------------------------------------------------------------


async def test_suppression_by_design_through_the_api(
    tmp_path: Path, mosquitto: Service, influxdb: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(tmp_path, mosquitto, influxdb, monkeypatch) as s:
        await s.gas(lel=30.0)
        lel = await until(lambda: s.alarm("gas.lel", "GAS-01"), "gas.lel alarm")
        await s.crane(1)
        crane = await until(lambda: s.alarm("tc.bypass_switch", "TC-M1"), "bypass alarm")

        t = s.clock.advance(1)
        r = await s.call("wang", "POST", "/api/devices/GAS-01/suppress", {"reason": "out_of_service"})
        assert r.status_code == 200 and r.json() == {
            "device": "GAS-01",
            "reason": "out_of_service",
            "events": ["suppressed"],
        }
        a = (await s.call("view", "GET", f"/api/alarms/{lel.id}")).json()
        assert (a["suppressed_by"], a["notifiable"], a["state"]) == ("out_of_service", False, "active_unacked")
        assert (await s.call("view", "GET", "/api/suppressions")).json() == [
            {"device": "GAS-01", "reason": "out_of_service", "since_ns": t, "by": "wang"}
        ]
        # a value alarm raised while the device is out of service is born suppressed
        s.clock.advance(1)
        await s.gas(lel=30.0, h2s=9.0)
        h2s = await until(lambda: s.alarm("gas.h2s", "GAS-01"), "h2s alarm")
        assert h2s.suppressed_by == "out_of_service" and not h2s.notifiable
        # a health alarm (the monitor itself) is never suppressed by design
        r = await s.call("wang", "POST", "/api/devices/TC-M1/suppress", {"reason": "maintenance"})
        assert r.status_code == 200 and r.json()["events"] == []
        assert s.gw.alarms.lifecycle.get(crane.id).suppressed_by is None
        # refused: a free-text reason, an unknown device
        r = await s.call("wang", "POST", "/api/devices/GAS-01/suppress", {"reason": "Out of service!"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "reason"]
        r = await s.call("wang", "POST", "/api/devices/GAS-99/suppress", {"reason": "out_of_service"})
        assert r.status_code == 404 and r.json()["detail"] == "unknown device 'GAS-99'"
        assert (await s.call("wang", "DELETE", "/api/devices/GAS-99/suppress/out_of_service")).status_code == 404

        # lifting it: both gas alarms come back, notifiable again
        t_lift = s.clock.advance(1)
        r = await s.call("wang", "DELETE", "/api/devices/GAS-01/suppress/out_of_service")
        assert r.status_code == 200 and r.json()["events"] == ["unsuppressed", "unsuppressed"]
        for alarm_id in (lel.id, h2s.id):
            a = (await s.call("view", "GET", f"/api/alarms/{alarm_id}")).json()
            assert (a["suppressed_by"], a["notifiable"]) == (None, True)
        assert [x["device"] for x in (await s.call("view", "GET", "/api/suppressions")).json()] == ["TC-M1"]
        assert (await s.call("wang", "DELETE", "/api/devices/GAS-01/suppress/out_of_service")).json()["events"] == []
        assert s.audit("target = 'device:GAS-01'") == [
            ("wang", "alarm.suppress", "device:GAS-01", "out_of_service", t),
            ("wang", "alarm.unsuppress", "device:GAS-01", "out_of_service", t_lift),
        ]


# ---- baselines ----------------------------------------------------------------------------------------------


async def test_baselines_set_shown_reset_with_history(
    tmp_path: Path, mosquitto: Service, influxdb: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(tmp_path, mosquitto, influxdb, monkeypatch) as s:
        url = "/api/baselines/FW-A01/settlement"
        r = await s.call("li", "PUT", url, {"why": "初始值"})
        assert (
            r.status_code == 409
            and r.json()["detail"] == "no reading of FW-A01/settlement yet: give the value explicitly"
        )

        ts = await s.formwork(2.5)
        await until(lambda: ("FW-A01", "settlement") in s.gw.pipeline.latest, "formwork reading")
        t1 = s.clock.advance(60)
        r = await s.call("li", "PUT", url, {"why": "浇筑前初始值"})  # no value: the latest reading
        assert r.status_code == 200
        assert r.json() == {
            "device": "FW-A01",
            "quantity": "settlement",
            "value": 2.5,
            "set_ns": t1,
            "set_by": "li",
            "why": "浇筑前初始值",
            "reading_ts_ns": ts,
        }
        t2 = s.clock.advance(60)
        r = await s.call("li", "PUT", url, {"value": 3, "why": "复测修正"})
        assert r.status_code == 200 and (r.json()["value"], r.json()["reading_ts_ns"]) == (3.0, None)
        assert (await s.call("view", "GET", "/api/baselines")).json() == [
            {
                "device": "FW-A01",
                "quantity": "settlement",
                "value": 3.0,
                "set_ns": t2,
                "set_by": "li",
                "why": "复测修正",
                "reading_ts_ns": None,
            }
        ]
        assert s.gw.alarms.baselines.get("FW-A01", "settlement") is not None

        # refused: no why, a blank why, an unknown quantity, an unknown device, a viewer
        r = await s.call("li", "DELETE", url)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"]
        r = await s.call("li", "DELETE", url, {"why": ""})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "why"]
        r = await s.call("li", "PUT", "/api/baselines/FW-A01/sett1ement", {"value": 1.0, "why": "x"})
        assert r.status_code == 422 and "sett1ement" in r.json()["detail"]
        assert (
            await s.call("li", "PUT", "/api/baselines/FW-X/settlement", {"value": 1, "why": "x"})
        ).status_code == 404
        assert (await s.call("view", "DELETE", url, {"why": "x"})).status_code == 403
        assert s.gw.alarms.baselines.get("FW-A01", "settlement") is not None

        t3 = s.clock.advance(60)
        r = await s.call("li", "DELETE", url, {"why": "支架拆除后重装"})
        assert r.status_code == 200 and r.json()["status"] == "reset"
        assert (await s.call("view", "GET", "/api/baselines")).json() == []
        assert (await s.call("li", "DELETE", url, {"why": "再来"})).status_code == 404

        hist = (await s.call("view", "GET", f"{url}/history")).json()
        assert hist == [
            {
                "action": "set",
                "at_ns": t1,
                "actor": "li",
                "why": "浇筑前初始值",
                "old": None,
                "new": 2.5,
                "reading_ts_ns": ts,
            },
            {
                "action": "set",
                "at_ns": t2,
                "actor": "li",
                "why": "复测修正",
                "old": 2.5,
                "new": 3.0,
                "reading_ts_ns": None,
            },
            {
                "action": "reset",
                "at_ns": t3,
                "actor": "li",
                "why": "支架拆除后重装",
                "old": 3.0,
                "new": None,
                "reading_ts_ns": None,
            },
        ]
        assert [(a, act, why, at) for a, act, _, why, at in s.audit("target = 'baseline:FW-A01/settlement'")] == [
            ("li", "baseline.set", "浇筑前初始值", t1),
            ("li", "baseline.set", "复测修正", t2),
            ("li", "baseline.reset", "支架拆除后重装", t3),
        ]


# ---- hazards end to end, then the ledger and the monthly statistics -----------------------------------------

FORM_COLUMNS = [
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
]  # Changji 附件2, in order
BASIS = {"version": "2024", "article": "11(二)", "text_zh": CONFINED_TEXT}
MEASURES = "停止有限空间作业，强制通风后复测合格方可进入"


async def test_hazard_loop_over_http_and_the_exports(
    tmp_path: Path, mosquitto: Service, influxdb: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(tmp_path, mosquitto, influxdb, monkeypatch) as s:
        await s.gas(lel=30.0)
        alarm = await until(lambda: s.alarm("gas.lel", "GAS-01"), "gas.lel alarm")

        # from the alarm: a found record that proposes the rule's 判定依据
        assert (await s.call("view", "POST", f"/api/alarms/{alarm.id}/hazard")).status_code == 403
        s.clock.advance(60)
        r = await s.call("zhang", "POST", f"/api/alarms/{alarm.id}/hazard")
        assert r.status_code == 200, r.text
        h = r.json()
        hid = h["id"]
        assert (h["status"], h["origin"], h["source"], h["alarm_id"], h["found_by"]) == (
            "found",
            "alarm",
            "self_check",
            alarm.id,
            "zhang",
        )
        assert (h["proposed_class"], h["proposed_version"], h["proposed_article"], h["proposed_text"]) == (
            "major",
            "2024",
            "11(二)",
            CONFINED_TEXT,
        )
        assert (h["value"], h["threshold"], h["value_unit"], h["alarm_level"]) == (30.0, 25.0, "%LEL", 2)
        assert (h["unit_name"], h["prefecture"], h["county"], h["found_at_ns"]) == (
            UNIT,
            PREFECTURE,
            COUNTY,
            alarm.raised_ns,
        )
        description = h["description"]
        assert description.startswith(f"{GAS_NAME} 可燃气体浓度超限：可燃气体 读数 30%LEL，报警阈值 25%LEL")
        assert (await s.call("zhang", "POST", f"/api/alarms/{alarm.id}/hazard")).json()["id"] == hid  # one per alarm

        async def act(who: str, action: str, body: dict[str, Any]) -> httpx.Response:
            return await s.call(who, "POST", f"/api/hazards/{hid}/{action}", body)

        # confirm: a manager's call, a major class needs its basis
        r = await act("zhang", "confirm", {"klass": "major", "basis": BASIS})
        assert r.status_code == 403 and r.json()["detail"] == "hazard confirm needs role manager (you are officer)"
        r = await act("li", "submit", {"evidence": "照片"})
        assert r.status_code == 409
        assert r.json()["detail"] == f"cannot submit hazard {hid}: it is found; submit is allowed from rectifying"
        r = await act("li", "confirm", {"klass": "major"})  # a missing field is a bad request (422), not a state
        assert r.status_code == 422 and "basis" in r.json()["detail"] and "proposed: 2024 11(二)" in r.json()["detail"]
        r = await act("li", "confirm", {"klass": "major", "basis": BASIS, "colour": "red"})
        assert r.status_code == 422 and "colour" in r.json()["detail"]
        r = await act("li", "confirm", {"klass": "major", "basis": {**BASIS, "version": "2019"}})
        assert r.status_code == 422 and "version" in r.json()["detail"]
        assert (await act("li", "nonsense", {})).status_code == 404
        for method, url in (("GET", "/api/hazards/9999"), ("POST", "/api/hazards/9999/confirm")):
            r = await s.call("li", method, url, {"klass": "general"} if method == "POST" else None)
            assert r.status_code == 404 and r.json()["detail"] == "no hazard 9999"
        t_confirm = s.clock.advance(60)
        r = await act("li", "confirm", {"klass": "major", "basis": BASIS, "why": "有限空间内作业人员未撤出"})
        assert r.status_code == 200, r.text
        h = r.json()
        assert (h["status"], h["klass"], h["basis_version"], h["basis_article"], h["basis_text"]) == (
            "confirmed",
            "major",
            "2024",
            "11(二)",
            CONFINED_TEXT,
        )
        assert (h["confirmed_by"], h["confirmed_at_ns"]) == ("li", t_confirm)
        assert h["report_due_ns"] == int(datetime(2025, 3, 11, tzinfo=TZ).timestamp()) * NS  # the same local day

        # assign with everything a major hazard needs
        plan = {
            "responsible": "li",
            "measures": MEASURES,
            "funds": 8000,
            "deadline": "2025-03-20",
            "emergency_plan": "有限空间应急救援预案",
        }
        r = await act("li", "assign", {**plan, "deadline": "2025-03-01"})
        assert r.status_code == 422 and "already past" in r.json()["detail"]
        r = await act("li", "assign", plan)
        assert r.status_code == 200 and (r.json()["status"], r.json()["deadline"], r.json()["funds"]) == (
            "rectifying",
            "2025-03-20",
            8000,
        )

        # 挂牌督办: the admin's call
        r = await act("li", "list_supervision", {"level": "county"})
        assert r.status_code == 403 and r.json()["detail"] == "hazard listing needs role admin (you are manager)"
        t_list = s.clock.advance(60)
        r = await act("wang", "list_supervision", {"level": "county"})
        assert r.status_code == 200
        assert (r.json()["listing"], r.json()["listed_by"], r.json()["listed_at_ns"]) == ("county", "wang", t_list)
        assert (
            r.json()["listing_due_ns"] == int(datetime(2025, 4, 10, tzinfo=TZ).timestamp()) * NS
        )  # 30 days from the 11th
        r = await act("li", "mark_reported", {"to": "昌吉市住房和城乡建设局", "reference": "昌建报〔2025〕7号"})
        assert r.status_code == 200 and r.json()["report_to"] == "昌吉市住房和城乡建设局"

        # five days later the officer submits; the responsible person may not accept their own work
        s.clock.advance(5 * 86400)
        r = await act("zhang", "submit", {"evidence": "强制通风设备已安装，复测 LEL 0%"})
        assert r.status_code == 200 and r.json()["status"] == "submitted"
        r = await act("li", "accept", {})
        assert (
            r.status_code == 409
            and r.json()["detail"] == "the responsible person 'li' cannot accept their own rectification"
        )
        t_accept = s.clock.advance(3600)
        # the source alarm still stands (30 %LEL): closing the record now is refused unless the reason is recorded
        r = await act("wang", "accept", {})
        assert r.status_code == 409 and f"source alarm #{alarm.id} is still active_unacked" in r.json()["detail"]
        assert (await s.call("view", "GET", f"/api/hazards/{hid}")).json()["status"] == "submitted"
        override = "探测器本体故障待更换，现场已复测 LEL 0%"
        r = await act("wang", "accept", {"active_alarm_reason": override})
        assert r.status_code == 200
        h = r.json()
        note = f"源报警 #{alarm.id} 仍在报警（active_unacked）时验收：{override}"
        assert h["accept_note"] == note
        assert (h["status"], h["accepted_by"], h["accepted_at_ns"], h["completed_on"]) == (
            "closed",
            "wang",
            t_accept,
            "2025-03-15",
        )
        r = await act("zhang", "submit", {"evidence": "again"})
        assert r.status_code == 409 and "it is closed" in r.json()["detail"]

        full = (await s.call("view", "GET", f"/api/hazards/{hid}")).json()
        steps = ["report", "confirm", "assign", "list", "mark_reported", "submit", "accept"]
        assert [(x["action"], x["actor"]) for x in full["history"]] == list(
            zip(steps, ["zhang", "li", "li", "wang", "li", "zhang", "wang"], strict=True)
        )
        audited = s.audit("target = ?", f"hazard:{hid}")
        assert [(a, act_) for a, act_, _, _, _ in audited] == [
            (x["actor"], f"hazard.{x['action']}") for x in full["history"]
        ]
        assert audited[1][3:] == ("有限空间内作业人员未撤出", t_confirm) and audited[-1][3:] == (note, t_accept)

        # three manual records: an inspection's major hazard still open, a general one, a dismissed one
        s.clock.advance(60)
        report = {"unit_name": UNIT, "source": "inspection"}
        forged = {**report, "description": "伪造报警来源", "origin": "alarm", "alarm_id": 9999}
        r = await s.call("zhang", "POST", "/api/hazards", forged)
        assert r.status_code == 422 and r.json()["detail"] == "alarm_id 9999: there is no such alarm on this site"
        h2 = (await s.call("zhang", "POST", "/api/hazards", {**report, "description": "基坑东侧超挖2米未支护"})).json()[
            "id"
        ]
        basis2 = {"version": "2024", "article": "5(一)", "text_zh": "基坑超挖"}
        assert (
            await s.call("li", "POST", f"/api/hazards/{h2}/confirm", {"klass": "major", "basis": basis2})
        ).status_code == 200
        h3 = (
            await s.call(
                "zhang", "POST", "/api/hazards", {**report, "source": "self_check", "description": "临边防护缺失"}
            )
        ).json()["id"]
        assert (await s.call("li", "POST", f"/api/hazards/{h3}/confirm", {"klass": "general"})).status_code == 200
        h4 = (await s.call("zhang", "POST", "/api/hazards", {**report, "description": "误报"})).json()["id"]
        assert (
            await s.call("li", "POST", f"/api/hazards/{h4}/dismiss", {"reason": "通信中断，非隐患"})
        ).status_code == 200
        r = await s.call("zhang", "POST", "/api/hazards", {**report, "actor": "li", "description": "x"})
        assert r.status_code == 422 and r.json()["detail"] == "actor and role come from the login, not the body"
        assert [x["id"] for x in (await s.call("view", "GET", "/api/hazards", klass="major")).json()] == [hid, h2]

        # the ledger as XLSX, cell by cell (附件2 order first, then the gateway's columns)
        r = await s.call("view", "GET", "/api/ledger.xlsx")
        assert r.status_code == 200 and r.headers["content-disposition"] == 'attachment; filename="ledger.xlsx"'
        ws = load_workbook(io.BytesIO(r.content)).active
        assert ws is not None
        header = [c.value for c in ws[5]]
        assert header[:10] == FORM_COLUMNS
        col = {name: i + 1 for i, name in enumerate(header)}
        assert [ws.cell(6 + i, col["隐患编号"]).value for i in range(3)] == [
            hid,
            h2,
            h3,
        ]  # found and dismissed left out
        assert ws.cell(9, 1).value is None
        row = [c.value for c in ws[6]][:10]
        assert row == [
            1,
            PREFECTURE,
            COUNTY,
            "房屋市政工程施工",
            UNIT,
            description,
            "建质规〔2024〕5号 第十一条第（二）项",
            datetime(2025, 3, 20),
            "企业自查",
            MEASURES,
        ]
        planned = ws.cell(6, 8)
        assert planned.is_date and planned.number_format == "yyyy-mm-dd"
        extra = {
            k: ws.cell(6, col[k]).value
            for k in (
                "隐患等级",
                "监测设备/测点",
                "触发读数",
                "整改责任人",
                "状态",
                "实际完成整改日期",
                "验收人",
                "验收说明",
                "挂牌督办",
                "销号日期",
            )
        }
        assert extra == {
            "隐患等级": "重大",
            "监测设备/测点": f"{GAS_NAME}/lel",
            "触发读数": "30%LEL",
            "整改责任人": "li",
            "状态": "已销号",
            "实际完成整改日期": datetime(2025, 3, 15),
            "验收人": "wang",
            "验收说明": note,
            "挂牌督办": "县级",
            "销号日期": datetime(2025, 3, 15),
        }
        assert ws.cell(6, col["阈值及来源"]).value == "25%LEL GB/T 50493-2019 5.5.2"  # the tag stays in the details
        assert [ws.cell(7, c).value for c in (7, 9)] == ["建质规〔2024〕5号 第五条第（一）项", "抽查检查"]
        assert ws.cell(8, 7).value is None and ws.cell(8, col["隐患等级"]).value == "一般"
        major = load_workbook(
            io.BytesIO((await s.call("view", "GET", "/api/ledger.xlsx", major_only=True)).content)
        ).active
        assert major is not None and major.title == "重大事故隐患统计表"
        assert [major.cell(r, col["隐患编号"]).value for r in (6, 7, 8)] == [hid, h2, None]

        # the ledger as CSV: the same rows, ISO dates
        r = await s.call("view", "GET", "/api/ledger.csv")
        assert r.status_code == 200 and r.headers["content-type"] == "text/csv; charset=utf-8"
        rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
        assert rows[0][:10] == FORM_COLUMNS and len(rows) == 4
        assert rows[1][:10] == [
            "1",
            PREFECTURE,
            COUNTY,
            "房屋市政工程施工",
            UNIT,
            description,
            "建质规〔2024〕5号 第十一条第（二）项",
            "2025-03-20",
            "企业自查",
            MEASURES,
        ]
        assert [rows[1][header.index(k)] for k in ("状态", "实际完成整改日期", "挂牌督办")] == [
            "已销号",
            "2025-03-15",
            "县级",
        ]

        # 附件1 block A for March: what this test did; April: nothing
        r = await s.call("view", "GET", "/api/stats/monthly", since="2025-03-01", until="2025-03-31")
        march = {
            "self_check_found": 1,
            "self_check_rectified": 1,
            "inspection_found": 1,
            "inspection_rectified": 0,
            "listed": 1,
            "listed_rectified": 1,
        }
        assert r.status_code == 200 and r.json() == march
        r = await s.call("view", "GET", "/api/stats/monthly", since="2025-04-01", until="2025-04-30")
        assert r.json() == dict.fromkeys(march, 0)
        r = await s.call("view", "GET", "/api/stats/monthly", since="2025-03-01", until="2025-03-31", format="xlsx")
        ws = load_workbook(io.BytesIO(r.content)).active
        assert ws is not None
        assert [(ws.cell(r_, 3).value, ws.cell(r_, 4).value) for r_ in range(6, 12)] == [
            ("企业自查发现的重大事故隐患（个）", 1),
            ("企业自查发现重大事故隐患中已完成整改的（个）", 1),
            ("部门检查发现的重大事故隐患（个）", 1),
            ("部门检查发现重大事故隐患中已完成整改的（个）", 0),
            ("政府挂牌督办的重大事故隐患（个）", 1),
            ("挂牌督办重大事故隐患中已完成整改的（个）", 1),
        ]
        r = await s.call("view", "GET", "/api/stats/monthly", since="2025-03-01")
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "until"]
