"""A monitoring firm's daily results for one point, over MQTT with their survey times, against the designer's
预警值: each level on the survey where the plan says it is reached, evaluated on the survey's time."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from alerting.rules import Level
from gateway.app import Gateway
from services.local import Service, wait_for
from tests.sites import write_site
from tests.surveys import NS, SURVEYS, assert_levels_on_their_surveys, survey_days, survey_point


async def test_daily_results_over_mqtt_raise_each_level_on_its_survey(
    tmp_path: Path, mosquitto: Service, influxdb: Service
) -> None:
    site = write_site(
        tmp_path / "site.yaml",
        influx_port=influxdb.port,
        mqtt_port=mosquitto.port,
        devices=[survey_point()],
    )
    days = survey_days()
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

    assert_levels_on_their_surveys(seen, days)
    assert all(lv < Level.DANGER for _, _, lv, _ in seen)
    assert started > int(days[-1].timestamp()) * NS  # raised days after the surveys: the times differ
