"""The issue's promise through the real gateway: a wind gust, an excavation settling too fast, a formwork pole
overloaded during a pour, a gas leak and a monitor gone silent each raise the right alarm at the right level.

Simulated devices on Modbus TCP, an RTU pty bus and MQTT -> `Gateway(cfg)` in-process -> evaluator -> lifecycle in
SQLite. Alarms are read back through a second connection to the state file, so what the tests see is committed. A
listener placed after the alarm engine's own records every reading the engine saw, which ties each alarm to the
exact reading that crossed its threshold. The crane overload is covered by test_alarm_escalation.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alerting.db import connect, wall_clock
from alerting.lifecycle import Alarm, AlarmState, Lifecycle
from alerting.rules import Level, default_rules
from gateway.app import Gateway
from gateway.config import SiteConfig
from gateway.model import Quality, Reading
from services import local
from services.local import Service, wait_for
from simulators.runner import SiteSimulator
from tests.sites import write_site

# Scenario steps (gust, pour, leak) run on the simulator's clock, in seconds; --time-scale only speeds the
# excavation trend. A simulator clock running SPEED times faster than real time puts their minutes into seconds.
SPEED = 10.0
CHART = [
    {"radius_m": 2.5, "rated_load_t": 6.0},
    {"radius_m": 12.0, "rated_load_t": 6.0},
    {"radius_m": 20.0, "rated_load_t": 3.6},
    {"radius_m": 50.0, "rated_load_t": 1.2},
]


def fast_clock(speed: float) -> Callable[[], float]:
    t0 = time.monotonic()
    return lambda: t0 + (time.monotonic() - t0) * speed


def crane(dev_id: str, line: str, unit: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": dev_id,
        "profile": "tower_crane_tcp_v1",
        "line": line,
        "unit_id": unit,
        "poll_interval_s": 0.25,
        "timeout_s": 0.2,
        "load_chart": CHART,
        **extra,
    }


def gas_detector(dev_id: str) -> dict[str, Any]:
    return {
        "id": dev_id,
        "profile": "gas_4in1_mqtt_v1",
        "broker": "b",
        "topic": "site/t/gas/+",
        "expected_interval_s": 0.5,
    }


class Seen:
    """Every reading the alarm engine was given, in order: a pipeline listener placed after the engine's own."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []

    def __call__(self, batch: list[Reading]) -> None:
        self.readings.extend(batch)

    def of(self, device: str, quantity: str, start: int = 0) -> list[Reading]:
        """The readings of one point that value rules evaluate (they skip BAD ones)."""
        return [
            r
            for r in self.readings[start:]
            if r.device == device and r.quantity == quantity and r.quality is not Quality.BAD
        ]


def watched(cfg: SiteConfig) -> tuple[Gateway, Seen]:
    gw = Gateway(cfg)
    seen = Seen()
    gw.pipeline.listeners.append(seen)  # before the gateway starts, so no batch escapes it
    return gw, seen


@contextmanager
def state_reader(cfg: SiteConfig) -> Iterator[Lifecycle]:
    """The alarms as committed to the state file, through a connection of the test's own: wait_for polls it in a
    worker thread while the gateway writes through its connection in the event loop."""
    conn = connect(cfg.alarms.state_file)
    try:
        yield Lifecycle(conn, default_rules(), wall_clock)
    finally:
        conn.close()


async def alarm_at(lc: Lifecycle, rule: str, device: str, level: Level, timeout: float = 30.0) -> Alarm:
    """The open alarm of `rule` on `device` once it is at `level` or higher (callers assert the exact level)."""

    def found() -> Alarm | None:
        got = [a for a in lc.open_alarms() if a.rule == rule and a.device == device and a.level >= level]
        return got[0] if got else None

    alarm: Alarm = await asyncio.to_thread(wait_for, found, timeout, 0.2, f"{rule} on {device} at {level.zh}")
    return alarm


async def until(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    return await asyncio.to_thread(wait_for, predicate, timeout, 0.2, what)


def entered(lc: Lifecycle, alarm: Alarm, level: Level) -> dict[str, Any]:
    """The alarm-log event at which the alarm first reached `level` (raised, or level_up from a lower one)."""
    return next(h for h in lc.history(alarm.id) if h["kind"] in ("raised", "level_up") and h["level"] >= level)


def first_reaching(readings: list[Reading], threshold: float, direction: str = "high") -> Reading:
    return next(r for r in readings if (r.value <= threshold if direction == "low" else r.value >= threshold))


async def test_wind_gust_alarms_at_the_standard_and_at_a_cranes_stricter_limit(
    tmp_path: Path, influxdb: Service
) -> None:
    """tc.wind 报警 at 10.8 m/s (JGJ 276-2012 §3.0.12) on a crane without a limit of its own, and at 9.0 m/s on a
    crane whose manual gives 9.0 m/s: the stricter of the two, cited as the device's own value."""
    cfg = write_site(
        tmp_path / "site.yaml",
        influx_port=influxdb.port,
        lines=[{"id": "cranes", "type": "modbus_tcp", "host": "127.0.0.1", "port": local.free_port()}],
        devices=[crane("TC-01", "cranes", 1), crane("TC-02", "cranes", 2, wind_limit_ms=9.0)],
    )
    gw, seen = watched(cfg)
    async with SiteSimulator(cfg, scenario="wind_gust", clock=fast_clock(SPEED)), gw:
        with state_reader(cfg) as lc:
            std = await alarm_at(lc, "tc.wind", "TC-01", Level.ALARM)
            own = await alarm_at(lc, "tc.wind", "TC-02", Level.ALARM)
            assert (std.level, std.threshold, std.source) == (Level.ALARM, 10.8, "JGJ 276-2012 3.0.12 [S]")
            assert std.title_zh == "风速超限 停止吊装" and std.category == "value"
            assert (own.level, own.threshold) == (Level.ALARM, 9.0)
            assert own.source == "device configuration (manufacturer's manual) wind_limit_ms [P]"
            # each crane entered 报警 on the first reading at or above its own threshold, with that reading's value:
            # TC-02 readings between 9.0 and 10.8 alarm, the same readings on TC-01 do not
            for alarm, limit in ((std, 10.8), (own, 9.0)):
                crossing = first_reaching(seen.of(alarm.device, "wind_speed"), limit)
                assert entered(lc, alarm, Level.ALARM)["value"] == crossing.value
