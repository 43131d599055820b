"""A merged read a device refuses for its unmapped gap (exception 02) is read as its gap-free parts from then on."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus.config import ModbusTcpLine
from drivers.modbus.driver import ModbusDevice
from drivers.modbus.link import ModbusLink
from drivers.modbus.plan import plan_device
from drivers.profile import ModbusProfile, load_profile_file
from gateway.liveness import Liveness
from gateway.metrics import Metrics
from gateway.supervisor import LineOwner
from services.local import free_port
from telemetry.reading import Reading

PROFILE = """\
id: sparse_probe
kind: tower_crane
title: probe
transport: modbus
address_base: pdu
points:
  - {quantity: load, table: holding, address: 0, type: float32, unit: t}
  - {quantity: wind_speed, table: holding, address: 6, type: uint16, scale: 0.01, unit: m/s}
  - {quantity: hook_height, table: holding, address: 40, type: uint16, scale: 0.1, unit: m}
  - {quantity: hoisting_up, table: discrete, address: 0, type: bool}
"""


async def test_points_of_a_merged_block_the_device_refuses_are_read_in_its_parts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """max_gap merged registers 0-1 and 6 into one read 0..6; a device that maps only the registers its manual lists
    (pymodbus's server maps 0-1 and 6 here) answers it with exception 02, and its points were lost on every poll
    while the device stayed up. Now the block is replaced for that device by its gap-free parts (0..1 and 6), said
    once at WARNING and counted; a refused block without gaps (register 40, not mapped) stays an error."""
    port = free_port()
    dev_sim = SimDevice(
        id=1,
        simdata=(
            [SimData(0, count=8, values=False, datatype=DataType.BITS)],
            [SimData(0, count=8, values=True, datatype=DataType.BITS)],
            [
                SimData(0, count=2, values=[0x4050, 0], datatype=DataType.REGISTERS),  # load 3.25 t
                SimData(6, count=1, values=[876], datatype=DataType.REGISTERS),  # wind speed 8.76 m/s
            ],
            [SimData(0, count=1, values=[0], datatype=DataType.REGISTERS)],
        ),
    )
    server = ModbusTcpServer([dev_sim], address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    f = tmp_path / "sparse_probe.yaml"
    f.write_text(PROFILE, encoding="utf-8")
    prof = load_profile_file(f)
    assert isinstance(prof, ModbusProfile)
    plan = plan_device(prof)  # the defaults: max_gap 8
    merged = [b.describe() for b in plan.blocks]
    assert "FC3 holding 0..6 (7) -> load, wind_speed" in merged
    device = ModbusDevice("C1", 1, plan, 0.5, 0)
    twin = ModbusDevice("C2", 2, plan, 0.5, 0)  # same plan: its requests are its own
    metrics = Metrics()
    polls: list[dict[str, float]] = []

    async def submit(rs: list[Reading]) -> None:
        polls.append({r.quantity: r.value for r in rs if r.quantity != "up"})

    line = ModbusTcpLine(id="l", type="modbus_tcp", host="127.0.0.1", port=port)
    owner = LineOwner(ModbusLink(line), [(device, 0.1)], submit, Liveness(metrics, {}), metrics, 3, 30.0)
    caplog.set_level(logging.WARNING, logger="sitegw.supervisor")
    task = asyncio.create_task(owner.run())
    try:
        await asyncio.sleep(0.6)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.shutdown()  # type: ignore[no-untyped-call]
    assert len(polls) >= 3, polls
    for got in polls:  # the first poll too: the parts are read in the poll that found the gap
        assert got == pytest.approx({"load": 3.25, "wind_speed": 8.76, "hoisting_up": 1.0}), polls
    assert [b.describe() for b in device.requests()] == [  # in the merged block's place
        "FC2 discrete 0..0 (1) -> hoisting_up",
        "FC3 holding 0..1 (2) -> load",
        "FC3 holding 6..6 (1) -> wind_speed",
        "FC3 holding 40..40 (1) -> hook_height",
    ]
    assert [b.describe() for b in twin.requests()] == merged == [b.describe() for b in plan.blocks]
    assert metrics.blocks_split["C1"] == 1
    assert metrics.protocol_errors["C1"] == len(polls)  # register 40: once per poll, as before
    warned = [r.getMessage() for r in caplog.records if "gap-free parts" in r.getMessage()]
    assert len(warned) == 1, warned
    assert warned[0].startswith(f"device C1: line l (127.0.0.1:{port}) unit 1 FC3 holding 0+7: exception 2 (illegal")
    assert warned[0].endswith("FC3 holding 0..1 (2) -> load, FC3 holding 6..6 (1) -> wind_speed")
