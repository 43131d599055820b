"""`kill -9` of the gateway between two escalation tiers: after the restart the same alarm is still active, the tier
already sent is not sent again, the pending tier fires once on time, and an acknowledgement still stops the rest."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from services import local
from services.local import Service, wait_for
from tests.gas import Detector
from tests.receivers import HttpReceiver, http_receiver
from tests.sites import start_gateway as start
from tests.sites import write_site

ROOT = Path(__file__).resolve().parents[2]


def tier_posts(hook: HttpReceiver, tier: str) -> list[Any]:
    return [r for r in hook.requests if r.path == f"/{tier}" and r.json["data"].get("event") != "acked"]


def test_kill9_between_tiers(tmp_path: Path, mosquitto: Service, influxdb: Service) -> None:
    http = local.free_port()
    with http_receiver() as hook:
        site = tmp_path / "site.yaml"
        write_site(
            site,
            influx_port=influxdb.port,
            mqtt_port=mosquitto.port,
            http_port=http,
            devices=[
                {
                    "id": "GAS-R1",
                    "profile": "gas_4in1_mqtt_v1",
                    "broker": "b",
                    "topic": "site/r/gas/+",
                    "expected_interval_s": 1.0,
                }
            ],
            escalation={
                "people": [{"id": "wang", "name": "王工"}],
                "duty": [{"role": "safety_officer", "people": ["wang"]}],
                "channels": [
                    {"id": "t1", "type": "webhook", "url": f"{hook.url}/t1"},
                    {"id": "t2", "type": "webhook", "url": f"{hook.url}/t2"},
                    {"id": "t3", "type": "webhook", "url": f"{hook.url}/t3"},
                ],
                "policies": [
                    {
                        "id": "gas",
                        "match": {"rules": ["gas.lel"]},
                        "tiers": [
                            {"after_s": 0, "roles": ["safety_officer"], "channels": ["t1"]},
                            {"after_s": 8, "roles": ["safety_officer"], "channels": ["t2"]},
                            {"after_s": 300, "roles": ["safety_officer"], "channels": ["t3"]},
                        ],
                    }
                ],
                "group_window_s": 0,
            },
            auth={"users": [{"name": "wang", "role": "officer", "password_env": "T_PW_WANG"}]},
        )
        env = {"T_PW_WANG": "pw-wang-1"}
        log = tmp_path / "gateway.log"
        det = Detector(mosquitto.port, lel=30.0)  # 报警: >= 25 %LEL (GB/T 50493-2019)
        gw = start(site, log, env)
        try:
            det.start()
            wait_for(lambda: tier_posts(hook, "t1"), 30, 0.1, "tier 1 webhook")
            alarm_id = tier_posts(hook, "t1")[0].json["data"]["alarm_id"]
            raised_at = time.monotonic()
            gw.send_signal(signal.SIGKILL)
            gw.wait(10)
            assert not tier_posts(hook, "t2")  # killed before tier 2 was due
            gw = start(site, log, env)
            wait_for(lambda: tier_posts(hook, "t2"), 30, 0.1, "tier 2 webhook after the restart")
            assert time.monotonic() - raised_at >= 7.5  # on its schedule from the raise, not from the restart
            time.sleep(1.5)  # the detector still reads 30 %LEL: a restart must not raise or notify again
            assert len(tier_posts(hook, "t1")) == 1 and len(tier_posts(hook, "t2")) == 1
            assert tier_posts(hook, "t2")[0].json["data"]["alarm_id"] == alarm_id
            with httpx.Client(base_url=f"http://127.0.0.1:{http}") as api:
                wait_for(lambda: _up(api), 20, 0.2, "API back")
                tok = api.post("/api/login", json={"username": "wang", "password": "pw-wang-1"}).json()["token"]
                h = {"Authorization": f"Bearer {tok}"}
                alarms = api.get("/api/alarms", params={"open_only": True}, headers=h).json()
                assert [(a["id"], a["rule"], a["state"]) for a in alarms] == [(alarm_id, "gas.lel", "active_unacked")]
                r = api.post(f"/api/alarms/{alarm_id}/ack", json={"comment": "通风处理中"}, headers=h)
                assert r.status_code == 200, r.text
                steps = api.get(f"/api/alarms/{alarm_id}", headers=h).json()["escalation"]
            assert [(s["tier"], s["status"]) for s in steps] == [(0, "fired"), (1, "fired"), (2, "cancelled")]
            assert not tier_posts(hook, "t3")
        finally:
            det.close()
            gw.send_signal(signal.SIGTERM)
            try:
                gw.wait(15)
            except subprocess.TimeoutExpired:
                gw.kill()


def _up(api: httpx.Client) -> bool:
    try:
        return api.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False
