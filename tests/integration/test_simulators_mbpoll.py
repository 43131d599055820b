"""mbpoll, a third-party Modbus master, reads the simulators: TCP crane, RTU pty bus, pinned values and faults."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.modbus import codec
from drivers.profile import ModbusProfile
from gateway.config import SiteConfig, load_config
from services.local import free_port
from simulators.runner import SiteSimulator
from telemetry import quantities

SITE = """
site: {{id: t, name: test}}
lines:
  - {{id: crane, type: modbus_tcp, host: 127.0.0.1, port: {port}}}
  - {{id: pit, type: modbus_rtu, port: ttyPIT, baudrate: 19200}}
devices:
  - id: TC-01
    profile: tower_crane_tcp_v1
    line: crane
    unit_id: 1
    load_chart:
      - {{radius_m: 2.5, rated_load_t: 6.0}}
      - {{radius_m: 12, rated_load_t: 6.0}}
      - {{radius_m: 50, rated_load_t: 1.2}}
  - {{id: PIT-D01, profile: excavation_displacement_rtu_v1, line: pit, unit_id: 1, poll_interval_s: 2, timeout_s: 0.3}}
  - {{id: PIT-D02, profile: excavation_displacement_rtu_v1, line: pit, unit_id: 2, poll_interval_s: 2, timeout_s: 0.3}}
  - {{id: PIT-CX1, profile: excavation_inclinometer_rtu_v1, line: pit, unit_id: 3, poll_interval_s: 2, timeout_s: 0.3}}
  - {{id: PIT-ZL1, profile: excavation_strut_water_rtu_v1, line: pit, unit_id: 4, poll_interval_s: 2, timeout_s: 0.3}}
sink: {{type: influxdb_v1, url: "http://127.0.0.1:9", database: x}}
"""

CRANE_PINS = {
    "load": 2.5,
    "rated_load": 3.6,
    "load_moment_ratio": 69.4,
    "radius": 20.25,
    "hook_height": -1.5,
    "slew_angle": -123.45,
    "wind_speed": 8.76,
    "tilt_x": 0.5,
    "tilt_y": -0.75,
    "limit_load": 0,
    "limit_moment": 1,
    "limit_slew": 1,
    "hoisting_up": 1,
    "limiter_bypass": 1,
}


@pytest.fixture
def site(tmp_path: Path) -> SiteConfig:
    path = tmp_path / "site.yaml"
    path.write_text(SITE.format(port=free_port()), encoding="utf-8")
    return load_config(path)


@pytest.fixture
async def sim(site: SiteConfig) -> AsyncIterator[SiteSimulator]:
    async with SiteSimulator(site, scenario="static", seed=1) as s:
        yield s


async def mbpoll(*args: str) -> tuple[int, str, str]:
    """Run mbpoll once (asynchronously: the simulator shares this event loop) with a short timeout."""
    proc = await asyncio.create_subprocess_exec(
        "mbpoll", "-0", "-1", "-o", "0.5", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


def tcp(site: SiteConfig, *args: str) -> list[str]:
    line = site.lines[0]
    return ["-m", "tcp", "-p", str(line.port), *args, "127.0.0.1"]  # type: ignore[union-attr]


def rtu(site: SiteConfig, unit: str, *args: str) -> list[str]:
    return ["-m", "rtu", "-b", "19200", "-P", "none", "-a", unit, *args, site.lines[1].port]  # type: ignore[union-attr]


def parse(out: str) -> dict[int, str]:
    """mbpoll's '[ref]: value' lines of one slave."""
    return {int(ref): val for ref, val in re.findall(r"^\[(\d+)\]:\s+(\S+)", out, re.M)}


def hex_regs(out: str) -> dict[int, int]:
    return {ref: int(val, 16) for ref, val in parse(out).items()}


def gateway_decode(profile: ModbusProfile, quantity: str, regs: dict[int, int]) -> float:
    """Decode like the gateway does, independently of simulators.registers: codec, scale/offset, unit."""
    for p, _table, addr, order in profile.resolved():
        if p.quantity != quantity:
            continue
        words = [regs[addr + i] for i in range(codec.WIDTH[p.type])]
        raw = codec.decode(codec.registers_to_bytes(words), p.type, order, p.bit or 0)
        if p.type is codec.DataType.BIT:
            return float(raw)
        conv = quantities.converter(p.unit, quantities.lookup(quantity).unit) if p.unit else None
        value = raw * p.scale + p.offset
        return conv(value) if conv else value
    raise KeyError(quantity)


async def test_crane_registers_read_by_mbpoll_decode_to_pinned_values(site: SiteConfig, sim: SiteSimulator) -> None:
    sim.set_values("TC-01", CRANE_PINS)
    rc, out, err = await mbpoll(*tcp(site, "-a", "1", "-r", "0", "-c", "15", "-t", "4:hex"))
    assert rc == 0, err
    regs = hex_regs(out)
    assert sorted(regs) == list(range(15))
    assert regs[14] == 0b10010  # limit_moment (bit 1) and limit_slew (bit 4) in the status word
    assert regs[12] == regs[13] == 0  # the unused gap reads as zeros
    profile = sim.devices["TC-01"].profile
    assert isinstance(profile, ModbusProfile)
    served = sim.current("TC-01")
    # half a raw step, in catalog units: exact for floats, scale/2 for integers, 0.001 deg ~ 0.01745 permille
    tolerance = {"rated_load": 2e-7, "tilt_x": 0.0088, "tilt_y": 0.0088}
    for p in profile.points:
        if p.type is codec.DataType.BOOL:
            continue
        decoded = gateway_decode(profile, p.quantity, regs)
        assert decoded == served[p.quantity], p.quantity
        pinned = CRANE_PINS.get(p.quantity, 0.0)
        assert decoded == pytest.approx(pinned, abs=tolerance.get(p.quantity, 1e-9)), p.quantity
    assert gateway_decode(profile, "tilt_x", regs) == pytest.approx(0.50615, abs=1e-5)  # 29 x 0.001 deg, as tan

    rc, out, err = await mbpoll(*tcp(site, "-a", "1", "-r", "0", "-c", "2", "-t", "4:float", "-B"))
    assert rc == 0, err
    floats = {ref: float(v) for ref, v in parse(out).items()}
    assert floats == {0: 2.5, 2: pytest.approx(3.6, rel=1e-6)}

    rc, out, err = await mbpoll(*tcp(site, "-a", "1", "-r", "0", "-c", "1", "-t", "0"))
    assert (rc, parse(out)) == (0, {0: "1"}), err  # limiter_bypass coil
    rc, out, err = await mbpoll(*tcp(site, "-a", "1", "-r", "0", "-c", "1", "-t", "1"))
    assert (rc, parse(out)) == (0, {0: "1"}), err  # hoisting_up discrete input

    sim.release("TC-01")
    rc, out, err = await mbpoll(*tcp(site, "-a", "1", "-r", "0", "-c", "2", "-t", "4:float", "-B"))
    static = sim.devices["TC-01"].model.static()
    # back to the scenario's value, as mbpoll prints it: 6 significant digits (69.47 t·m / 20 m = 3.473684 t reads
    # 3.47368), so within half its last digit
    assert float(parse(out)[2]) == pytest.approx(static["rated_load"], abs=5e-6)


async def test_rtu_bus_serves_several_unit_ids_over_the_pty(site: SiteConfig, sim: SiteSimulator) -> None:
    sim.set_values("PIT-D01", {"horizontal_displacement": 12.34, "vertical_displacement": -5.67})
    sim.set_values("PIT-D02", {"horizontal_displacement": 0.5, "vertical_displacement": -20.125})
    # one mbpoll run polling two units; mbpoll's default 32-bit word order is CDAB, the gauges' order
    rc, out, err = await mbpoll(*rtu(site, "1,2", "-r", "0", "-c", "2", "-t", "3:float"))
    assert rc == 0, err
    unit1, unit2 = out.split("-- Polling slave 2...")
    assert {k: float(v) for k, v in parse(unit1).items()} == {0: pytest.approx(12.34), 2: pytest.approx(-5.67)}
    assert {k: float(v) for k, v in parse(unit2).items()} == {0: 0.5, 2: -20.125}

    sim.set_values("PIT-CX1", {"deep_displacement_d2m": 8.25, "deep_displacement_d10m": -0.37})
    rc, out, err = await mbpoll(*rtu(site, "3", "-r", "100", "-c", "10", "-t", "4:hex"))
    assert rc == 0, err
    incl = sim.devices["PIT-CX1"].profile
    assert isinstance(incl, ModbusProfile)
    regs = hex_regs(out)
    assert (regs[100], regs[101]) == (0x0000, 0x3903)  # 825 counts of 0.01 mm, int32 BADC
    assert gateway_decode(incl, "deep_displacement_d2m", regs) == pytest.approx(8.25)
    assert gateway_decode(incl, "deep_displacement_d10m", regs) == pytest.approx(-0.37)
    assert gateway_decode(incl, "deep_displacement_d6m", regs) == sim.current("PIT-CX1")["deep_displacement_d6m"]

    sim.set_values("PIT-ZL1", {"strut_force": 1234.5, "groundwater_level": -3.25})
    rc, out, err = await mbpoll(*rtu(site, "4", "-r", "200", "-c", "6", "-t", "4:hex"))
    assert rc == 0, err
    water = sim.devices["PIT-ZL1"].profile
    assert isinstance(water, ModbusProfile)
    regs = hex_regs(out)
    assert (regs[204], regs[205]) == (0xFFFF, 0xF34E)  # int32 ABCD: -3250 mm relative to the datum
    assert gateway_decode(water, "strut_force", regs) == pytest.approx(1234.5, rel=1e-12)  # float64 DCBA in MN
    assert gateway_decode(water, "groundwater_level", regs) == pytest.approx(-3.25)


async def test_offline_rtu_unit_times_out_while_its_neighbour_answers(site: SiteConfig, sim: SiteSimulator) -> None:
    sim.set_values("PIT-D02", {"horizontal_displacement": 4.5})
    await sim.set_fault("PIT-D01", "offline")
    rc, out, err = await mbpoll(*rtu(site, "1", "-r", "0", "-c", "2", "-t", "3:float"))
    assert rc != 0 and "timed out" in err and parse(out) == {}
    rc, out, err = await mbpoll(*rtu(site, "2", "-r", "0", "-c", "2", "-t", "3:float"))
    assert rc == 0, err
    assert float(parse(out)[0]) == 4.5
    await sim.set_fault("PIT-D01", "none")
    rc, out, err = await mbpoll(*rtu(site, "1", "-r", "0", "-c", "2", "-t", "3:float"))
    assert rc == 0, err
    assert float(parse(out)[0]) == pytest.approx(sim.current("PIT-D01")["horizontal_displacement"])


async def test_unknown_unit_id_on_the_bus_is_silent(site: SiteConfig, sim: SiteSimulator) -> None:
    rc, _out, err = await mbpoll(*rtu(site, "9", "-r", "0", "-c", "1", "-t", "3"))
    assert rc != 0 and "timed out" in err


async def test_exception_mode_answers_server_device_failure(site: SiteConfig, sim: SiteSimulator) -> None:
    await sim.set_fault("PIT-CX1", "exception")
    rc, _out, err = await mbpoll(*rtu(site, "3", "-r", "100", "-c", "2", "-t", "4"))
    assert rc != 0 and "Slave device or server failure" in err  # libmodbus' text for exception code 4
    await sim.set_fault("TC-01", "exception")
    rc, _out, err = await mbpoll(*tcp(site, "-a", "1", "-r", "0", "-c", "1", "-t", "0"))
    assert rc != 0 and "Slave device or server failure" in err
    await sim.set_fault("TC-01", "none")
    rc, out, err = await mbpoll(*tcp(site, "-a", "1", "-r", "0", "-c", "1", "-t", "4:hex"))
    assert rc == 0 and len(parse(out)) == 1, err


async def test_offline_tcp_device_alone_on_its_line_refuses_connections(site: SiteConfig, sim: SiteSimulator) -> None:
    await sim.set_fault("TC-01", "offline")
    rc, _out, err = await mbpoll(*tcp(site, "-a", "1", "-r", "0", "-c", "1", "-t", "4"))
    assert rc != 0 and "Connection refused" in err
    await sim.set_fault("TC-01", "none")
    sim.set_values("TC-01", {"radius": 33.33})
    rc, out, err = await mbpoll(*tcp(site, "-a", "1", "-r", "5", "-c", "1", "-t", "4"))
    assert (rc, parse(out)) == (0, {5: "3333"}), err


async def test_frozen_device_keeps_serving_the_same_registers(site: SiteConfig) -> None:
    clock = [0.0]
    async with SiteSimulator(site, scenario="normal", seed=5, clock=lambda: clock[0]) as sim:
        await sim.set_fault("PIT-ZL1", "frozen")
        before, neighbour = sim.current("PIT-ZL1"), sim.current("PIT-D01")
        clock[0] = 3600.0  # fast-forward an hour of trend, noise and daily cycle
        sim.tick()
        assert sim.current("PIT-ZL1") == before
        assert sim.current("PIT-D01")["vertical_displacement"] != neighbour["vertical_displacement"]
        rc, out, err = await mbpoll(*rtu(site, "4", "-r", "200", "-c", "6", "-t", "4:hex"))
        assert rc == 0, err
        profile = sim.devices["PIT-ZL1"].profile
        assert isinstance(profile, ModbusProfile)
        assert {q: gateway_decode(profile, q, hex_regs(out)) for q in before} == before
        await sim.set_fault("PIT-ZL1", "none")
        sim.tick()
        assert sim.current("PIT-ZL1")["strut_force"] != before["strut_force"]
