"""A crane monitor that publishes its platform heartbeat (云筑 `upload.towerCraneHeartbeat`: `deviceId` and
`deviceTime` only, the time sometimes left out) between its live data, on a real Mosquitto into a real InfluxDB:
the heartbeats keep it online, are counted, stored as nothing and not dead-lettered; when they stop it goes offline
and one heartbeat brings it back. A message with a key the profile does not map is no heartbeat: dead-lettered.
Before, every heartbeat was a dead letter, the crane was listed in /health's decode errors and went offline
between its data messages."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho

from gateway.app import Gateway
from gateway.selfmon import health_report
from services.local import Service, rows, wait_for
from tests.sites import db_of, write_site

TZ = ZoneInfo("Asia/Shanghai")


def now_local() -> str:
    return datetime.now(TZ).strftime("%Y-%m-%d %H:%M:%S")


async def test_heartbeats_keep_a_crane_online_and_are_not_dead_letters(
    tmp_path: Path, mosquitto: Service, influxdb: Service
) -> None:
    cfg = write_site(
        tmp_path / "site.yaml",
        influx_port=influxdb.port,
        mqtt_port=mosquitto.port,
        devices=[
            {
                "id": "TC-1",
                "profile": "yunzhu_tower_crane_json_v1",
                "broker": "b",
                "topic": "yz/crane",
                "match": "TC-0001",
                "expected_interval_s": 0.5,  # offline after 1.5 s without a message
            }
        ],
    )
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()

    def send(doc: dict[str, object]) -> None:
        pub.publish("yz/crane", json.dumps(doc), qos=1).wait_for_publish(5)

    try:
        async with Gateway(cfg) as gw:
            await asyncio.wait_for(gw.sessions[0].connected.wait(), 10)
            live = {"deviceId": "TC-0001", "deviceTime": now_local(), "liftingCapacity": 2.15, "amplitude": 24.8}
            send(live)
            await asyncio.to_thread(wait_for, lambda: gw.metrics.up.get("TC-1") == 1, 10, what="online")
            for i in range(20):  # 4 s of heartbeats, every other one without its time
                send({"deviceId": "TC-0001", "deviceTime": now_local()} if i % 2 else {"deviceId": "TC-0001"})
                await asyncio.sleep(0.2)
                assert gw.metrics.up["TC-1"] == 1, f"offline after heartbeat {i}"
            await asyncio.to_thread(wait_for, lambda: gw.sessions[0].heartbeats == 20, 10, what="20 heartbeats")
            assert sum(gw.metrics.dead_letters.values()) == 0
            assert 'sitegw_mqtt_heartbeats_total{broker="b"} 20' in gw.metrics_text()
            _, health = health_report(gw)
            assert "decode_errors" not in [r["code"] for r in health["reasons"]]

            await asyncio.to_thread(wait_for, lambda: gw.metrics.up["TC-1"] == 0, 10, what="offline when they stop")
            send({"deviceId": "TC-0001", "deviceTime": now_local()})
            await asyncio.to_thread(wait_for, lambda: gw.metrics.up["TC-1"] == 1, 10, what="a heartbeat brings it back")

            send({"deviceId": "TC-0001", "deviceTime": now_local(), "liftingCapcity": 2.2})  # (a misspelt field)
            await asyncio.to_thread(wait_for, lambda: sum(gw.metrics.dead_letters.values()) == 1, 10, what="letter")
            assert gw.sessions[0].heartbeats == 21
            assert await gw.flush(20)
    finally:
        pub.loop_stop()
        pub.disconnect()
    ups = rows(influxdb.port, db_of(cfg), "SELECT up FROM tower_crane WHERE device = 'TC-1' ORDER BY time")
    assert [r["up"] for r in ups] == [1.0, 0.0, 1.0]
    loads = rows(influxdb.port, db_of(cfg), "SELECT count(load) FROM tower_crane WHERE device = 'TC-1'")
    assert loads[0]["count"] == 1  # the heartbeats stored nothing
