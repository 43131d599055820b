"""`kill -9` of `sitegw run` between a surveyor's results: the days' values and the survey rate's previous result
were saved by the evaluator's memory task, so the third day in a row above 70 % of the rate 预警值 still raises
报警 after the restart, on that survey (GB 50497-2009's table note). Without them, the restarted gateway would
start the days again."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import paho.mqtt.client as paho

from alerting.baselines import Baselines
from alerting.db import connect
from alerting.memory import memory_path
from services import local
from services.local import Service, wait_for
from tests.sites import start_gateway, write_site
from tests.surveys import NS, SURVEYS, survey_days, survey_point

RATE = "exc.horizontal_displacement_rate"


def saved_days(path: Path) -> dict[tuple[str, str], int]:
    """How many days' values the evaluator's memory file holds, by point (empty while nothing is saved)."""
    if not path.exists():
        return {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT data FROM memory").fetchone() if _has_memory(conn) else None
    return {(d, q): len(days) for d, q, days in json.loads(row[0])["daily"]} if row else {}


def _has_memory(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'memory'").fetchone() is not None


def subscribed(http: int) -> bool:
    """The gateway's session is connected (and so subscribed: it subscribes before it says so)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{http}/metrics", timeout=2).text
    except httpx.TransportError:
        return False
    return 'sitegw_mqtt_connected{broker="b"} 1' in text


def open_rate_alarm(state: Path) -> tuple[int, int | None] | None:
    """(level, source_ns) of the open rate alarm in the alarm database, or None."""
    with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as conn:
        row = conn.execute(
            "SELECT level, source_ns FROM alarm_alarms WHERE rule = ? AND state != 'normal'", (RATE,)
        ).fetchone()
    return (int(row[0]), row[1]) if row else None


def test_counts_in_a_row_survive_a_kill_9(tmp_path: Path, mosquitto: Service, influxdb: Service) -> None:
    state = tmp_path / "state" / "sitegw.db"
    site = tmp_path / "site.yaml"
    write_site(
        site,
        influx_port=influxdb.port,
        mqtt_port=mosquitto.port,
        devices=[survey_point()],
        alarms={"state_file": str(state), "memory_s": 0.2},
        http_port=(http := local.free_port()),
    )
    Baselines(connect(state), time.time_ns).set("ZQT-3", "horizontal_displacement", 0.0, "surveyor", why="初始值 0")
    days = survey_days()
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()

    def publish(day: int) -> None:
        doc = {"point": "ZQT-3", "time": days[day].strftime("%Y-%m-%d %H:%M:%S"), "cumulative": SURVEYS[day]}
        pub.publish("monitoring/points", json.dumps(doc), qos=1).wait_for_publish(5)

    log = tmp_path / "gateway.log"
    gw = start_gateway(site, log)
    try:
        wait_for(lambda: subscribed(http), 30, 0.1, "MQTT connected")
        for day in range(5):  # days 3 and 4: 77 % of 3 mm/d, two in a row (预警 from day 3)
            publish(day)
        memory = memory_path(state)
        point = ("ZQT-3", "horizontal_displacement")
        wait_for(lambda: saved_days(memory).get(point) == 5, 30, 0.1, "five days saved")
        assert open_rate_alarm(state) == (1, int(days[3].timestamp()) * NS)
        gw.send_signal(signal.SIGKILL)
        gw.wait(10)

        gw = start_gateway(site, log)
        wait_for(lambda: subscribed(http), 30, 0.1, "MQTT connected again")
        publish(4)  # day 4 again (a QoS 1 message may come twice): not a third day
        publish(5)  # 80 %: the third day in a row
        wait_for(lambda: (open_rate_alarm(state) or (0,))[0] == 2, 30, 0.1, "the rate's 报警 on day 5")
        assert open_rate_alarm(state) == (2, int(days[5].timestamp()) * NS)
        gw.send_signal(signal.SIGTERM)
        assert gw.wait(30) == 0
    finally:
        pub.loop_stop()
        pub.disconnect()
        if gw.poll() is None:
            gw.kill()
            gw.wait(10)
    text = log.read_text(encoding="utf-8", errors="replace")
    assert "1 daily series" in text, text[-3000:]
