"""End to end on real services: simulators (Modbus TCP, an RTU pty bus, MQTT) -> gateway -> InfluxDB 1.6.7.

For every device kind, the values the simulated devices serve are read back exactly with InfluxQL.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.config import SiteConfig
from services import local
from services.local import Service, rows, wait_for
from simulators.runner import SiteSimulator
from tests.sites import db_of, write_site

CHART = [
    {"radius_m": 2.5, "rated_load_t": 6.0},
    {"radius_m": 12.0, "rated_load_t": 6.0},
    {"radius_m": 20.0, "rated_load_t": 3.6},
    {"radius_m": 50.0, "rated_load_t": 1.2},
]

PINNED: dict[str, dict[str, float]] = {
    "TC-01": {
        "load": 2.5,
        "rated_load": 3.6,
        "load_moment_ratio": 69.4,
        "radius": 20.0,
        "hook_height": 35.25,
        "slew_angle": -123.45,
        "wind_speed": 7.5,
        "tilt_x": 1.5,
        "tilt_y": -0.8,
        "limit_load": 0,
        "limit_moment": 1,
        "limit_height": 0,
        "limit_radius": 1,
        "limit_slew": 0,
        "hoisting_up": 1,
        "limiter_bypass": 0,
    },
    "PIT-D01": {"horizontal_displacement": 12.5, "vertical_displacement": -8.25},
    "PIT-CX1": {
        "deep_displacement_d2m": 9.87,
        "deep_displacement_d4m": 7.5,
        "deep_displacement_d6m": 4.25,
        "deep_displacement_d8m": 1.5,
        "deep_displacement_d10m": -0.25,
    },
    "PIT-ZL1": {"strut_force": 1850.5, "groundwater_level": -3.25},
    "FW-A01": {"settlement": 2.5, "pole_tilt": 1.2, "axial_force": 18.5, "horizontal_displacement": 0.75},
    "GAS-01": {"lel": 12.0, "o2": 20.9, "h2s": 2.0, "co": 15.0, "sensor_fault": 0, "calibrating": 0},
}
MEASUREMENT = {
    "TC-01": "tower_crane",
    "PIT-D01": "excavation",
    "PIT-CX1": "excavation",
    "PIT-ZL1": "excavation",
    "FW-A01": "formwork",
    "GAS-01": "gas",
}


def site(tmp_path: Path, influx: int, mqtt: int) -> SiteConfig:
    tcp = local.free_port()
    rtu = {"line": "pit", "poll_interval_s": 0.5, "timeout_s": 0.2}
    return write_site(
        tmp_path / "site.yaml",
        influx_port=influx,
        mqtt_port=mqtt,
        lines=[
            {"id": "crane", "type": "modbus_tcp", "host": "127.0.0.1", "port": tcp},
            {"id": "pit", "type": "modbus_rtu", "port": "ttyPIT", "baudrate": 115200},
        ],
        devices=[
            {
                "id": "TC-01",
                "name": "1号塔吊",
                "zone": "北区",
                "profile": "tower_crane_tcp_v1",
                "line": "crane",
                "unit_id": 1,
                "poll_interval_s": 0.5,
                "timeout_s": 0.3,
                "load_chart": CHART,
            },
            {"id": "PIT-D01", "profile": "excavation_displacement_rtu_v1", "unit_id": 1, **rtu},
            {"id": "PIT-CX1", "profile": "excavation_inclinometer_rtu_v1", "unit_id": 3, **rtu},
            {"id": "PIT-ZL1", "profile": "excavation_strut_water_rtu_v1", "unit_id": 4, **rtu},
            {
                "id": "FW-A01",
                "profile": "formwork_mqtt_v1",
                "broker": "b",
                "topic": "site/t/formwork/+/data",
                "expected_interval_s": 0.5,
            },
            {
                "id": "GAS-01",
                "profile": "gas_4in1_mqtt_v1",
                "broker": "b",
                "topic": "site/t/gas/+",
                "match": "SN77",
                "expected_interval_s": 0.5,
            },
        ],
    )


def last_values(port: int, db: str, device: str, quantities: list[str]) -> dict[str, Any]:
    sel = ", ".join(f'last("{q}") AS "{q}"' for q in quantities)
    got = rows(port, db, f"SELECT {sel} FROM {MEASUREMENT.get(device, 'excavation')} WHERE device = '{device}'")
    return got[0] if got else {}


async def test_every_device_kind_end_to_end(tmp_path: Path, mosquitto: Service, influxdb: Service) -> None:
    cfg = site(tmp_path, influxdb.port, mosquitto.port)
    db = db_of(cfg)
    async with SiteSimulator(cfg, scenario="static") as sim:
        for dev, values in PINNED.items():
            sim.set_values(dev, values)
        served = {dev: sim.current(dev) for dev in PINNED}
        # the simulators quantise to the register types; what they serve is within half a step of the pin
        for dev, values in PINNED.items():
            for q, v in values.items():
                assert served[dev][q] == pytest.approx(v, abs=0.006), (dev, q)
        async with Gateway(cfg) as gw:

            def arrived() -> bool:
                for dev, values in served.items():
                    got = last_values(influxdb.port, db, dev, list(values))
                    if not got or any(
                        got.get(q) is None or not math.isclose(float(got[q]), v, rel_tol=1e-12, abs_tol=1e-12)
                        for q, v in values.items()
                    ):
                        return False
                return True

            await asyncio.to_thread(wait_for, arrived, 30, 0.3, "every pinned value in InfluxDB")
            up = rows(influxdb.port, db, "SELECT last(up) FROM tower_crane, excavation, formwork, gas GROUP BY device")
            assert {r["device"]: r["last"] for r in up} == dict.fromkeys(PINNED, 1.0)
            assert sum(gw.metrics.poll_failures.values()) == 0 and not gw.metrics.dead_letters
    # exact readback, quantity by quantity, in the catalog's canonical units
    for dev, values in served.items():
        got = last_values(influxdb.port, db, dev, list(values))
        for q, v in values.items():
            assert float(got[q]) == pytest.approx(v, rel=1e-12, abs=1e-12), (dev, q)
    tags = rows(influxdb.port, db, "SELECT last(load) FROM tower_crane GROUP BY site, zone, device")
    assert (tags[0]["site"], tags[0]["zone"], tags[0]["device"]) == ("t", "北区", "TC-01")


async def test_dead_unit_on_rtu_bus_does_not_stall_its_neighbours(
    tmp_path: Path, mosquitto: Service, influxdb: Service
) -> None:
    """Three units on one RS-485 bus, one of them dead: the live ones keep their poll rate."""
    # one 0.25 s attempt per dead-unit probe (and its wait for a late answer): the breaker, not the timeout
    # budget, is what the test shows
    rtu = {"line": "bus", "poll_interval_s": 0.5, "timeout_s": 0.25, "retries": 0}
    cfg = write_site(
        tmp_path / "site.yaml",
        influx_port=influxdb.port,
        lines=[{"id": "bus", "type": "modbus_rtu", "port": "ttyBUS", "baudrate": 115200}],
        devices=[
            {"id": "U1", "profile": "excavation_displacement_rtu_v1", "unit_id": 1, **rtu},
            {"id": "U2", "profile": "excavation_displacement_rtu_v1", "unit_id": 2, **rtu},
            {"id": "U3", "profile": "excavation_inclinometer_rtu_v1", "unit_id": 3, **rtu},
        ],
        modbus={"breaker_failures": 2, "breaker_max_backoff_s": 4.0},
    )
    db = db_of(cfg)
    async with SiteSimulator(cfg, scenario="static") as sim:
        await sim.set_fault("U2", "offline")
        async with Gateway(cfg) as gw:
            await asyncio.to_thread(wait_for, lambda: gw.metrics.up.get("U2") == 0, 20, what="U2 marked offline")
            start = dict(gw.metrics.polls)
            fails_before = gw.metrics.poll_failures["U2"]
            window_s = 6.0
            await asyncio.sleep(window_s)
            polls = {d: gw.metrics.polls[d] - start.get(d, 0) for d in ("U1", "U3")}
            dead_attempts = gw.metrics.poll_failures["U2"] - fails_before
            expected = window_s / 0.5
            # neighbours keep (nearly) their nominal rate: a dead-unit probe costs 0.5 s at most every 4 s (its
            # 0.25 s timeout, then as long again for a late answer before the bus's next request)
            assert all(n >= 0.8 * expected for n in polls.values()), (polls, expected)
            assert dead_attempts <= 4  # the breaker holds the dead unit to a probe every few seconds
            await sim.set_fault("U2", "none")
            await asyncio.to_thread(wait_for, lambda: gw.metrics.up.get("U2") == 1, 20, what="U2 back online")
            assert await gw.flush(20)
    ups = rows(influxdb.port, db, "SELECT up FROM excavation WHERE device = 'U2' ORDER BY time")
    assert [r["up"] for r in ups] == [0.0, 1.0]
    counts = rows(influxdb.port, db, "SELECT count(horizontal_displacement) FROM excavation GROUP BY device")
    assert {r["device"] for r in counts} == {"U1", "U2"}  # U2's readings resume after recovery


async def test_rtu_over_tcp_and_exception_responses(
    tmp_path: Path, influxdb: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """A serial device server (RTU frames over TCP) and a device answering every read with exception 4: the error
    is typed, counted and named (line, unit, function code, address), the device goes down, then comes back."""
    cfg = write_site(
        tmp_path / "site.yaml",
        influx_port=influxdb.port,
        lines=[{"id": "dtu", "type": "modbus_rtu_over_tcp", "host": "127.0.0.1", "port": local.free_port()}],
        devices=[
            {
                "id": "ZL-9",
                "profile": "excavation_strut_water_rtu_v1",
                "line": "dtu",
                "unit_id": 7,
                "poll_interval_s": 0.3,
                "timeout_s": 0.2,
            },
            {
                "id": "CX-9",
                "profile": "excavation_inclinometer_rtu_v1",
                "line": "dtu",
                "unit_id": 8,
                "poll_interval_s": 0.3,
                "timeout_s": 0.2,
            },
        ],
        modbus={"breaker_failures": 2, "breaker_max_backoff_s": 1.0},
    )
    db = db_of(cfg)
    async with SiteSimulator(cfg, scenario="static") as sim:
        sim.set_values("ZL-9", {"strut_force": 2222.25, "groundwater_level": -4.5})
        await sim.set_fault("CX-9", "exception")
        async with Gateway(cfg) as gw:
            await asyncio.to_thread(
                wait_for,
                lambda: gw.metrics.up.get("CX-9") == 0 and gw.metrics.up.get("ZL-9") == 1,
                20,
                what="CX-9 down, ZL-9 up",
            )
            assert gw.metrics.protocol_errors["CX-9"] >= 2
            assert "line dtu (127.0.0.1:" in caplog.text
            assert "unit 8 FC3 holding 100+10: exception 4 (server device failure)" in caplog.text
            await sim.set_fault("CX-9", "none")
            await asyncio.to_thread(wait_for, lambda: gw.metrics.up.get("CX-9") == 1, 20, what="CX-9 back")
            assert await gw.flush(20)
    got = last_values(influxdb.port, db, "ZL-9", ["strut_force", "groundwater_level"])
    assert (got["strut_force"], got["groundwater_level"]) == (2222.25, -4.5)
    ups = rows(influxdb.port, db, "SELECT up FROM excavation WHERE device = 'CX-9' ORDER BY time")
    assert [r["up"] for r in ups] == [0.0, 1.0]
    cx = rows(influxdb.port, db, "SELECT count(deep_displacement_d2m) FROM excavation WHERE device = 'CX-9'")
    assert cx and cx[0]["count"] >= 1  # readings resume after the fault clears
