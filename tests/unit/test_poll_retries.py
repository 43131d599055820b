"""The supervisor's poll of a polled driver: retries of a request nobody answered, partial polls, one timestamp."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest

from drivers.errors import DeviceBusy, DeviceUnreachable, IllegalAddress, ProtocolError
from drivers.modbus.driver import ModbusDevice, PollResult
from drivers.modbus.link import ModbusLink
from drivers.modbus.plan import Block, plan_device
from drivers.profile import ModbusProfile, builtin_profiles, load_profile_file
from gateway.liveness import Liveness
from gateway.metrics import Metrics
from gateway.supervisor import LineOwner, PolledDriver, poll_device


class Flaky:
    """A real Modbus device's plan and decoder; its answers follow a script, one entry per attempt, in order:
    a register list, or an error to raise (the bus's word for what happened to that request)."""

    def __init__(self, dev: ModbusDevice, script: list[object]) -> None:
        self.dev, self.script = dev, list(script)
        self.device_id, self.retries = dev.device_id, dev.retries
        self.attempts: list[int] = []  # block address of every attempt

    def requests(self) -> Sequence[Block]:
        return self.dev.requests()

    async def fetch(self, link: ModbusLink, request: Block) -> list[int] | list[bool]:
        self.attempts.append(request.address)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        assert isinstance(step, list)
        return step[: request.count] + [0] * (request.count - len(step))

    def split(self, request: Block) -> Sequence[Block]:
        return self.dev.split(request)

    def decode(self, got: list[tuple[Block, list[int] | list[bool]]], receive_ns: int, out: PollResult) -> None:
        self.dev.decode(got, receive_ns, out)


def device(retries: int) -> ModbusDevice:
    prof = builtin_profiles()["tower_crane_tcp_v1"]
    assert isinstance(prof, ModbusProfile)
    plan = plan_device(prof, max_gap=0, max_block=125)
    return ModbusDevice("TC-01", 1, plan, 0.5, retries)


def run(d: PolledDriver) -> PollResult:
    return asyncio.run(poll_device(d, None))  # type: ignore[arg-type]  # the script answers, not a link


def test_a_request_nobody_answered_is_tried_again_up_to_retries() -> None:
    dev = device(retries=2)
    n = len(dev.requests())
    assert n >= 2, "the profile should need more than one request for this test to mean something"
    f = Flaky(dev, [DeviceUnreachable("timeout"), DeviceBusy("busy")] + [[0] * 125] * n)
    res = run(f)
    first = dev.requests()[0].address
    assert f.attempts[:3] == [first, first, first] and len(f.attempts) == n + 2
    assert res.readings and not res.errors
    assert len({r.ts_ns for r in res.readings}) == 1  # one poll, one timestamp


def test_a_poll_fails_once_retries_are_spent() -> None:
    f = Flaky(device(retries=1), [DeviceUnreachable("timeout"), DeviceUnreachable("timeout again")])
    with pytest.raises(DeviceUnreachable, match="timeout again"):
        run(f)
    assert len(f.attempts) == 2


def test_an_error_answer_loses_its_block_not_the_poll_and_is_not_retried() -> None:
    dev = device(retries=3)
    blocks = dev.requests()
    f = Flaky(dev, [ProtocolError("exception 2: illegal address")] + [[0] * 125] * (len(blocks) - 1))
    res = run(f)
    assert str(res.errors[0]) == "exception 2: illegal address"
    assert len(f.attempts) == len(blocks)  # an answer is an answer: no retry
    lost = {p.quantity for p in blocks[0].points}
    assert res.readings and not lost & {r.quantity for r in res.readings}


SPARSE = """\
id: sparse_probe
kind: tower_crane
title: probe
transport: modbus
address_base: pdu
points:
  - {quantity: load, table: holding, address: 0, type: float32, unit: t}
  - {quantity: wind_speed, table: holding, address: 6, type: uint16, scale: 0.01, unit: m/s}
"""


def test_a_split_in_a_poll_that_then_fails_is_counted(tmp_path: Path) -> None:
    """The merged read 0..6 refused with exception 02 is split for good, then the part at 6 goes unanswered and the
    poll fails: the split was logged and kept but counted only from a finished poll's result, so never (a second
    review). Counted when it is made now."""
    f = tmp_path / "sparse_probe.yaml"
    f.write_text(SPARSE, encoding="utf-8")
    prof = load_profile_file(f)
    assert isinstance(prof, ModbusProfile)
    dev = ModbusDevice("C1", 1, plan_device(prof), 0.5, 0)
    assert [(b.address, b.count) for b in dev.requests()] == [(0, 7)]
    script: list[object] = [IllegalAddress("exception 2 (illegal data address)"), [0, 0], DeviceUnreachable("none")]
    metrics = Metrics()

    async def submit(_rs: object) -> None:
        return None

    flaky = Flaky(dev, script)
    link = SimpleNamespace(line=SimpleNamespace(id="l"), close=lambda: None)  # (the script answers, not a link)
    owner = LineOwner(link, [(flaky, 1.0)], submit, Liveness(metrics, {}), metrics, 3, 30.0)  # type: ignore[arg-type]
    asyncio.run(owner._poll(flaky, 1.0))
    assert [(b.address, b.count) for b in dev.requests()] == [(0, 2), (6, 1)]  # read in parts from now on
    assert dict(metrics.blocks_split) == {"C1": 1}
