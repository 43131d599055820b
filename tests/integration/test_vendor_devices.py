"""Devices we did not write, configured from their documentation alone, end to end into InfluxDB and the alarms.

The two "manuals" below are written the way Chinese vendors document a crane monitor and a four-gas detector; the
profiles in this test were written from them with nothing but README / docs/configuration.md at hand.

Crane monitor (Modbus TCP, unit 1), holding registers numbered from 1:
  1-2  wind speed, float32, low word first (CDAB), m/s
  3    hoist load, uint16, 0.01 t
  4    moment ratio, uint16, 0.1 %
  5    status word: bit 0 load limit, bit 1 moment limit, bit 2 height limit (other bits: vendor use)
  6-7  reserved
  8-9  uptime, uint32, high word first (ABCD), s
  10   slew angle, int16, 0.1 °

Four-gas detector (MQTT JSON, one message a second): `{"sn": .., "time": "yyyy-MM-dd HH:mm:ss" (site time, no
zone), "ch": [{"g": "EX", "v": 3.0, "u": "%LEL", "st": 0}, ...]}`; per-channel `st`: 0 normal, 1 alarm, 2 sensor
fault, 3 warming up; a channel that is warming up sends "--" as its value.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from alerting.alarms import AlarmState
from gateway.app import Gateway
from gateway.selfmon import health_report
from services import local
from services.local import Service, rows, wait_for
from tests.integration.test_mqtt_pipeline import Collector
from tests.sites import db_of, write_site

CRANE_PROFILE = """
id: vendor_crane_v1
kind: tower_crane
title: vendor crane monitor
transport: modbus
address_base: one_based
order: CDAB
auxiliary:
  - {name: status_word, unit: raw, low: 0, high: 65535}
  - {name: uptime, unit: s, counter_wrap: 4294967296}
points:
  - {quantity: wind_speed, table: holding, address: 1, type: float32, unit: m/s}
  - {quantity: load, table: holding, address: 3, type: uint16, scale: 0.01, unit: t}
  - {quantity: load_moment_ratio, table: holding, address: 4, type: uint16, scale: 0.1, unit: "%"}
  - {quantity: status_word, table: holding, address: 5, type: uint16}
  - {quantity: limit_load, table: holding, address: 5, type: bit, bit: 0}
  - {quantity: limit_moment, table: holding, address: 5, type: bit, bit: 1}
  - {quantity: limit_height, table: holding, address: 5, type: bit, bit: 2}
  - {quantity: uptime, table: holding, address: 8, type: uint32, order: ABCD}
  - {quantity: slew_angle, table: holding, address: 10, type: int16, scale: 0.1, unit: "°"}
"""

GAS_PROFILE = """
id: vendor_gas_v1
kind: gas
title: vendor four-gas detector
transport: mqtt
quality_maps:
  channel: {codes: {0: good, 1: good, 2: bad, 3: not_ready}}
payload:
  device_key: {source: payload, path: sn}
  timestamp: {path: time, format: pattern, pattern: "yyyy-MM-dd HH:mm:ss", zone: site}
  sentinels: {"--": not_ready}
  points:
    path: ch
    name_key: g
    value_key: v
    unit_key: u
    status_key: st
    quality: channel
    names: {EX: lel, O2: o2, H2S: h2s, CO: co}
"""

# wire words of the crane: wind 12.5 m/s (0x41480000, CDAB), 3.25 t, 87.5 %, status bits 0 and 9, 4e9 s, -12.5 °
WORDS = [0x0000, 0x4148, 325, 875, 0x0201, 0xDEAD, 0xBEEF, 0xEE6B, 0x2800, (-125) & 0xFFFF]
TZ = ZoneInfo("Asia/Shanghai")
NS = 1_000_000_000


def _local(ts: int) -> str:
    return datetime.fromtimestamp(ts, TZ).strftime("%Y-%m-%d %H:%M:%S")


def _msg(ts: int, ex: Any, st_ex: int = 0, h2s: Any = 0.0, st_h2s: int = 0) -> bytes:
    ch = [
        {"g": "EX", "v": ex, "u": "%LEL", "st": st_ex},
        {"g": "O2", "v": 20.9, "u": "%VOL", "st": 0},
        {"g": "H2S", "v": h2s, "u": "ppm", "st": st_h2s},
    ]
    return json.dumps({"sn": "GAS-77", "time": _local(ts), "ch": ch}).encode()


async def test_vendor_devices_from_their_docs(tmp_path: Path, mosquitto: Service, influxdb: Service) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "vendor_crane_v1.yaml").write_text(CRANE_PROFILE, encoding="utf-8")
    (tmp_path / "profiles" / "vendor_gas_v1.yaml").write_text(GAS_PROFILE, encoding="utf-8")
    port = local.free_port()
    site = write_site(
        tmp_path / "site.yaml",
        influx_port=influxdb.port,
        mqtt_port=mosquitto.port,
        profile_dirs=["profiles"],
        lines=[{"id": "crane", "type": "modbus_tcp", "host": "127.0.0.1", "port": port}],
        devices=[
            {
                "id": "TC-V",
                "profile": "vendor_crane_v1",
                "line": "crane",
                "unit_id": 1,
                "poll_interval_s": 0.5,
                "timeout_s": 0.3,
            },
            {
                "id": "GAS-V",
                "profile": "vendor_gas_v1",
                "broker": "b",
                "topic": "vendor/gas/+",
                "match": "GAS-77",
                "expected_interval_s": 1.0,
                "stale_factor": 100,
            },
            {  # the same model behind a DTU that mangles every message: decode errors, not "offline"
                "id": "GAS-W",
                "profile": "vendor_gas_v1",
                "broker": "b",
                "topic": "vendor/gas-dtu/+",
                "match": "GAS-88",
                "expected_interval_s": 0.2,
                "stale_factor": 3,
            },
        ],
    )
    holding = [SimData(0, count=len(WORDS), values=WORDS, datatype=DataType.REGISTERS)]
    bits = [SimData(0, count=1, values=False, datatype=DataType.BITS)]
    regs0 = [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)]
    server = ModbusTcpServer([SimDevice(id=1, simdata=(bits, bits, holding, regs0))], address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    dlq = Collector(mosquitto.port, "t/deadletter")
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    db = db_of(site)
    base = int(time.time()) - 30  # whole seconds in the past, within the default clock limits
    try:
        async with Gateway(site) as gw:
            await asyncio.wait_for(gw.sessions[0].connected.wait(), 10)

            def send(payload: bytes) -> None:
                pub.publish("vendor/gas/GAS-77", payload, qos=1).wait_for_publish(5)

            send(_msg(base, 3.0))
            send(_msg(base + 1, 30.0, st_ex=1))  # 30 %LEL: gas.lel 报警 (25 %LEL)
            # the device stamps in whole seconds: a second message in the same second must not merge with it
            send(_msg(base + 1, 31.0, st_ex=1))
            send(_msg(base + 2, 0.0, st_ex=2))  # the EX sensor faults and reads 0: must not clear the alarm
            send(_msg(base + 3, 0.0, st_ex=2, h2s="--", st_h2s=3))  # H2S warming up
            send(b'{"sn": "GAS-77", "time": "' + _local(base + 4).encode() + b'", "ch": [{"g": "EX", "v": 2')
            partial = json.loads(_msg(base + 5, 4.0, st_ex=2))  # EX still faulted
            partial["ch"][1]["v"] = "abc"  # one channel garbled: the others are stored
            send(json.dumps(partial).encode())
            up_while_failing: list[int | None] = []  # GAS-W's up while it is reported as decode errors
            for _ in range(15):  # the mangling DTU, for longer than its device's stale limit
                pub.publish("vendor/gas-dtu/GAS-88", b"\x00\x17garbled", qos=1).wait_for_publish(5)
                await asyncio.sleep(0.1)
                if "GAS-W" in gw.metrics.decode_failing:
                    up_while_failing.append(gw.metrics.up.get("GAS-W"))
            await asyncio.to_thread(wait_for, lambda: gw.metrics.mqtt_messages >= 22, 10, what="22 messages")
            await asyncio.to_thread(
                wait_for, lambda: "GAS-W" in gw.metrics.decode_failing, 10, what="GAS-W reported as decode errors"
            )
            await asyncio.to_thread(wait_for, lambda: gw.metrics.polls["TC-V"] >= 2, 10, what="two polls of the crane")
            assert await gw.flush(20)

            gas = rows(influxdb.port, db, "SELECT lel, lel_q, o2, h2s, h2s_q FROM gas WHERE device = 'GAS-V'")
            by_t = {r["time"]: r for r in gas}
            t = [(base + i) * NS for i in range(6)]
            # every message has its own point, at the device's time converted from site time to UTC
            assert sorted(by_t) == [t[0], t[1], t[1] + 1, t[2], t[3], t[5]]
            assert (by_t[t[5]]["lel"], by_t[t[5]]["o2"], by_t[t[5]]["h2s"]) == (4.0, None, 0.0)
            assert [by_t[x]["lel"] for x in (t[0], t[1], t[1] + 1, t[2], t[3])] == [3.0, 30.0, 31.0, 0.0, 0.0]
            assert by_t[t[1]]["lel_q"] is None and by_t[t[2]]["lel_q"] == 2 and by_t[t[3]]["lel_q"] == 2
            assert by_t[t[3]]["h2s"] is None and by_t[t[3]]["h2s_q"] == 3  # warming up: no value, not ready
            assert by_t[t[0]]["o2"] == 20.9
            # only lel differs in the second message of that second (o2 and h2s repeat the same value: nothing to lose)
            assert gw.metrics.series_collisions["GAS-V"] == 1
            # the truncated frame and the garbled channel, charged to their device; the DTU's 15 to the other one
            assert gw.metrics.dead_letters_by_device["GAS-V"] == 2
            assert gw.metrics.dead_letters_by_device["GAS-W"] == 15
            # not "offline" while its messages arrive (checked then: 0.6 s after its last one it is, rightly, and
            # the flush above may take longer than that)
            assert up_while_failing and 0 not in up_while_failing
            await asyncio.to_thread(wait_for, lambda: len(dlq.msgs) >= 17, 10, what="17 dead letters")
            letter = next(m for m in dlq.msgs if m.get("refused"))
            assert letter["device"] == "GAS-V" and letter["stored"] == ["h2s", "lel"]
            assert letter["refused"] == ["ch[1].v (o2): expected a number, got str 'abc'"]

            alarms = {(a.rule, a.quantity): a for a in gw.alarms.lifecycle.open_alarms()}
            lel = alarms[("gas.lel", "lel")]
            assert lel.state is AlarmState.ACTIVE_UNACKED  # the faulted channel's 0 %LEL did not clear it
            assert lel.value == 30.0  # the reading that raised it; the faulted 0.0 changed nothing
            assert ("health.point_fault", "lel") in alarms  # the fault is an alarm of its own
            assert ("health.point_fault", "h2s") not in alarms  # warming up is not a fault
            dtu = {a.rule for a in gw.alarms.lifecycle.open_alarms() if a.device == "GAS-W"}
            assert "health.decode_errors" in dtu and "health.stale" not in dtu
            _code, health = health_report(gw)
            assert {"code": "decode_errors"}.items() <= next(
                r for r in health["reasons"] if r["code"] == "decode_errors"
            ).items()

            crane = rows(
                influxdb.port,
                db,
                "SELECT wind_speed, load, load_moment_ratio, status_word, limit_load, limit_moment, limit_height, "
                "uptime, slew_angle FROM tower_crane WHERE device = 'TC-V' LIMIT 1",
            )[0]
            assert crane["wind_speed"] == 12.5
            assert crane["load"] == 3.25
            assert crane["load_moment_ratio"] == 87.5
            assert crane["status_word"] == 0x0201  # bit 9 is not documented: kept in the whole word
            assert (crane["limit_load"], crane["limit_moment"], crane["limit_height"]) == (1.0, 0.0, 0.0)
            assert crane["uptime"] == 4_000_000_000
            assert crane["slew_angle"] == -12.5
    finally:
        dlq.close()
        pub.loop_stop()
        pub.disconnect()
        await server.shutdown()
