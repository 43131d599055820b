"""A simulated crane overload through the whole gateway: the alarm at the right level, escalation tiers in order into a
real SMTP server, a real HTTP receiver (generic webhook and a DingTalk robot that checks the signature) and the MQTT
broker (site siren), then an acknowledgement through the API that stops the remaining tiers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest

from gateway.app import Gateway
from gateway.config import SiteConfig
from services import local
from services.local import Service, rows, wait_for
from simulators.runner import SiteSimulator
from tests.receivers import HttpReceiver, SmtpReceiver, http_receiver, smtp_server
from tests.sites import write_site

CHART = [
    {"radius_m": 2.5, "rated_load_t": 6.0},
    {"radius_m": 12.0, "rated_load_t": 6.0},
    {"radius_m": 20.0, "rated_load_t": 3.6},
    {"radius_m": 50.0, "rated_load_t": 1.2},
]
DING_SECRET = "SECtest-0123456789abcdef"


def crane_site(tmp_path: Path, mqtt: int, influx: int, http: int, smtp: SmtpReceiver, hook: HttpReceiver) -> SiteConfig:
    tcp = local.free_port()
    return write_site(
        tmp_path / "site.yaml",
        influx_port=influx,
        mqtt_port=mqtt,
        http_port=http,
        lines=[{"id": "crane", "type": "modbus_tcp", "host": "127.0.0.1", "port": tcp}],
        devices=[
            {
                "id": "TC-01",
                "name": "1号塔吊",
                "zone": "北区",
                "profile": "tower_crane_tcp_v1",
                "line": "crane",
                "unit_id": 1,
                "poll_interval_s": 0.25,
                "timeout_s": 0.2,
                "load_chart": CHART,
            }
        ],
        alarms={"console_url": "http://console.site.test"},
        escalation={
            "people": [
                {
                    "id": "zhang",
                    "name": "张安全",
                    "title": "安全员",
                    "mobile": "13800000001",
                    "email": "zhang@site.test",
                },
                {"id": "li", "name": "李经理", "title": "项目经理", "mobile": "13800000002", "email": "li@site.test"},
            ],
            "duty": [
                {"role": "safety_officer", "people": ["zhang"]},
                {"role": "project_manager", "people": ["li"]},
            ],
            "channels": [
                {"id": "siren", "type": "mqtt", "broker": "b", "topic": "t/siren"},
                {"id": "hook", "type": "webhook", "url": f"{hook.url}/alarm"},
                {"id": "ding", "type": "dingtalk", "url_env": "T_DING_URL", "secret_env": "T_DING_SECRET"},
                {
                    "id": "mail",
                    "type": "email",
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "security": "none",
                    "sender": "工地告警 <gw@site.test>",
                },
            ],
            "policies": [
                {
                    "id": "crane-overload",
                    "match": {"rules": ["tc.moment_ratio"]},
                    "tiers": [
                        {"after_s": 0, "roles": ["safety_officer"], "channels": ["siren", "hook", "ding"]},
                        {"after_s": 2, "min_level": 2, "roles": ["project_manager"], "channels": ["mail"]},
                        {"after_s": 600, "roles": ["project_manager"], "channels": ["hook"]},
                    ],
                }
            ],
            "group_window_s": 0,
        },
        auth={"users": [{"name": "zhang", "role": "officer", "password_env": "T_PW_ZHANG"}]},
    )


def subscribe(port: int, topic: str, into: list[dict[str, Any]]) -> paho.Client:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="siren-listener")
    c.on_message = lambda _c, _u, m: into.append(json.loads(m.payload))
    c.connect("127.0.0.1", port)
    c.subscribe(topic, qos=1)
    c.loop_start()
    return c


async def test_crane_overload_escalates_in_order_until_acknowledged(
    tmp_path: Path, mosquitto: Service, influxdb: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    http = local.free_port()
    siren: list[dict[str, Any]] = []
    listener = subscribe(mosquitto.port, "t/siren", siren)
    try:
        with smtp_server() as smtp, http_receiver(dingtalk_secret=DING_SECRET) as hook:
            monkeypatch.setenv("T_DING_URL", f"{hook.url}/dingtalk/robot/send?access_token=tok")
            monkeypatch.setenv("T_DING_SECRET", DING_SECRET)
            monkeypatch.setenv("T_PW_ZHANG", "officer-pw-1")
            cfg = crane_site(tmp_path, mosquitto.port, influxdb.port, http, smtp, hook)
            async with SiteSimulator(cfg, scenario="crane_overload") as _sim, Gateway(cfg) as gw:
                lc = gw.alarms.lifecycle

                def overload() -> Any:
                    got = [a for a in lc.open_alarms() if a.rule == "tc.moment_ratio" and a.level >= 2]
                    return got[0] if got else None

                alarm = await asyncio.to_thread(wait_for, overload, 30, 0.2, "moment alarm at 报警")
                assert alarm.device == "TC-01" and 100 <= alarm.value < 120
                assert "GB 5144-2006" in alarm.source

                def posts(path: str) -> list[Any]:
                    return [r for r in hook.requests if r.path.startswith(path)]

                # tier 1 (safety officer): webhook, DingTalk robot (signature verified by the receiver), siren
                await asyncio.to_thread(wait_for, lambda: posts("/alarm") and posts("/dingtalk") and siren, 15)
                first = posts("/alarm")[0].json
                assert first["data"]["rule"] == "tc.moment_ratio" and first["data"]["device"] == "TC-01"
                assert [p["id"] for p in first["to"]] == ["zhang"]
                assert posts("/alarm")[0].headers["x-sitegw-key"]
                ding = posts("/dingtalk")[0].json
                assert "13800000001" in ding["at"]["atMobiles"] and "塔吊" in ding["markdown"]["text"]
                assert siren[0]["data"]["alarm_id"] == alarm.id

                # tier 2 (project manager, from 报警): email, not before its 2 s delay
                await asyncio.to_thread(wait_for, lambda: smtp.messages, 20, 0.2, "tier 2 email")
                mail = smtp.messages[0]
                assert smtp.envelopes[0][1] == ["li@site.test"]
                assert "起重力矩超限" in str(mail["subject"]) and "【报警】" in str(mail["subject"])
                body = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
                assert "GB 5144-2006" in body and f"/alarms/{alarm.id}" in body
                steps = gw.alarms.escalation.steps(alarm.id)
                t2 = next(s for s in steps if s["tier"] == 1 and s["status"] == "fired")
                t1 = next(s for s in steps if s["tier"] == 0 and s["episode"] == t2["episode"])
                assert t1["status"] == "fired" and t2["due_ns"] - t1["due_ns"] == 2 * 10**9
                assert t2["fired_ns"] >= t2["due_ns"]  # never early

                # the safety officer acknowledges through the API: tier 3 never fires
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http}") as api:
                    assert (await api.get(f"/api/alarms/{alarm.id}")).status_code == 401
                    r = await api.post("/api/login", json={"username": "zhang", "password": "officer-pw-1"})
                    assert r.status_code == 200, r.text
                    h = {"Authorization": f"Bearer {r.json()['token']}"}
                    r = await api.post(f"/api/alarms/{alarm.id}/ack", json={"comment": "已停止吊装"}, headers=h)
                    assert r.status_code == 200, r.text
                    assert r.json()["alarm"]["state"] == "active_acked"
                    r = await api.post(f"/api/alarms/{alarm.id}/ack", json={}, headers=h)
                    assert r.status_code == 409  # already acknowledged
                    detail = (await api.get(f"/api/alarms/{alarm.id}", headers=h)).json()
                tiers = {(s["tier"], s["seq"]): s["status"] for s in detail["escalation"]}
                assert tiers[(2, 0)] == "cancelled"
                sent = {d["channel"]: d["status"] for d in detail["deliveries"]}
                # the DingTalk receiver checks the 加签 signature: a wrong one would be answered 310000 -> failed
                assert sent == {"siren": "sent", "hook": "sent", "ding": "sent", "mail": "sent"}, sent
                # those already told hear that it was acknowledged, and by whom
                await asyncio.to_thread(
                    wait_for, lambda: any(r.json["data"].get("event") == "acked" for r in posts("/alarm")), 10
                )
                n_alarm_posts = len(posts("/alarm"))
                await asyncio.sleep(2.0)
                assert len(posts("/alarm")) == n_alarm_posts  # nothing more after the ack
                # the alarm's events are in InfluxDB too (Grafana annotations), raised then acknowledged by zhang
                db = cfg.sink.database  # type: ignore[union-attr]
                q = f"SELECT event, level, actor FROM alarm_events WHERE alarm_id = {alarm.id} AND device = 'TC-01'"

                def stored() -> list[dict[str, Any]] | None:
                    got = rows(influxdb.port, db, q)
                    return got if any(r["event"] == "acked" for r in got) else None

                events = await asyncio.to_thread(wait_for, stored, 20, 0.3, "alarm events in InfluxDB")
                assert events[0]["event"] == "raised" and ("acked", "zhang") in [
                    (r["event"], r["actor"]) for r in events
                ]
                audit = gw.alarms.conn.execute(
                    "SELECT actor, action FROM audit WHERE target = ?", (f"alarm:{alarm.id}",)
                )
                assert ("zhang", "alarm.ack") in [tuple(x) for x in audit.fetchall()]
    finally:
        listener.loop_stop()
        listener.disconnect()
