"""A monitoring firm's daily results for one point, over MQTT with their survey times, against the designer's
预警值: each level on the survey where the plan says it is reached, evaluated on the survey's time."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho

from alerting.rules import Level
from gateway.app import Gateway
from services.local import Service, wait_for
from tests.sites import write_site

TZ = ZoneInfo("Asia/Shanghai")
NS = 1_000_000_000
SURVEYS = [0.0, 1.0, 2.5, 4.8, 7.1, 9.5, 12.0, 15.5, 17.0, 19.0, 21.0, 23.5, 26.0, 28.2, 30.0]
PLAN = {"standard": "XX基坑监测方案", "clause": "表3 冠梁水平位移", "confidence": "P"}


async def test_daily_results_over_mqtt_raise_each_level_on_its_survey(
    tmp_path: Path, mosquitto: Service, influxdb: Service
) -> None:
    site = write_site(
        tmp_path / "site.yaml",
        influx_port=influxdb.port,
        mqtt_port=mosquitto.port,
        devices=[
            {
                "id": "ZQT-3",
                "profile": "excavation_point_mqtt_v1",
                "broker": "b",
                "topic": "monitoring/points",
                "expected_interval_s": 86400,
                "device_clock": {"max_age_s": 30 * 86400},  # the results arrive up to weeks late
                "warning_values": {"horizontal_displacement": {"cumulative": 30, "rate_per_day": 3, "source": PLAN}},
            }
        ],
    )
    first = datetime.now(TZ).replace(hour=9, minute=0, second=0, microsecond=0) - timedelta(days=20)
    days = [first + timedelta(days=d) for d in range(len(SURVEYS))]
    seen: list[tuple[str, str, Level, int | None]] = []
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        async with Gateway(site) as gw:
            gw.alarms.lifecycle.hooks.append(
                lambda conn, ev: seen.append((ev.alarm.rule, ev.kind, ev.alarm.level, ev.alarm.source_ns))
            )
            gw.alarms.baselines.set("ZQT-3", "horizontal_displacement", 0.0, "surveyor", why="累计变化量: 初始值 0")
            await asyncio.wait_for(gw.sessions[0].connected.wait(), 10)
            started = time.time_ns()
            for day, value in zip(days, SURVEYS, strict=True):
                doc: dict[str, Any] = {"point": "ZQT-3", "time": day.strftime("%Y-%m-%d %H:%M:%S"), "cumulative": value}
                pub.publish("monitoring/points", json.dumps(doc), qos=1).wait_for_publish(5)
            await asyncio.to_thread(wait_for, lambda: gw.metrics.mqtt_messages >= 15, 10, what="15 results")
            assert await gw.flush(20)
            await asyncio.to_thread(
                wait_for, lambda: any(r == "exc.horizontal_displacement" and lv == 2 for r, _, lv, _ in seen), 10
            )
    finally:
        pub.loop_stop()
        pub.disconnect()

    def on(ns: int | None) -> int:
        assert ns is not None
        return next(i for i, d in enumerate(days) if int(d.timestamp()) * NS == ns)

    rate = [(kind, int(lv), on(src)) for r, kind, lv, src in seen if r == "exc.horizontal_displacement_rate"]
    cumulative = [(kind, int(lv), on(src)) for r, kind, lv, src in seen if r == "exc.horizontal_displacement"]
    # each level carries the survey it was reached on, not the time the gateway heard of it
    assert [(k, lv, d) for k, lv, d in rate if k in ("raised", "level_up")] == [
        ("raised", 1, 5),
        ("level_up", 2, 7),
        ("raised", 1, 13),
    ]
    assert [d for k, _, d in rate if k == "cleared"] == [8, 14]
    assert cumulative[:2] == [("raised", 1, 10), ("level_up", 2, 14)]  # 报警 at 100 %, never 危险
    assert all(lv < Level.DANGER for _, _, lv, _ in seen)
    assert started > int(days[-1].timestamp()) * NS  # raised days after the surveys: the times differ
