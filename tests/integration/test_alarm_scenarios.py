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

from alerting.alarms import Alarm, AlarmState, Lifecycle
from alerting.db import audit_rows, connect
from alerting.rules import Level, default_rules
from gateway.app import Gateway
from gateway.config import SiteConfig
from services import local
from services.local import Service, wait_for
from simulators.runner import SiteSimulator
from telemetry.clock import wall_clock
from telemetry.reading import Quality, Reading
from tests.sites import write_site

# Scenario steps (gust, pour, leak) run on the simulator's clock, in seconds; --time-scale only speeds the
# excavation trend. A simulator clock running SPEED times faster than real time puts their minutes into seconds.
SPEED = 12.0
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


async def alarm_at(lc: Lifecycle, rule: str, device: str, level: Level, within_s: float = 30.0) -> Alarm:
    """The open alarm of `rule` on `device` once it is at `level` or higher (callers assert the exact level)."""

    def found() -> Alarm | None:
        got = [a for a in lc.open_alarms() if a.rule == rule and a.device == device and a.level >= level]
        return got[0] if got else None

    alarm: Alarm = await asyncio.to_thread(wait_for, found, within_s, 0.2, f"{rule} on {device} at {level.zh}")
    return alarm


async def until(predicate: Callable[[], Any], what: str, within_s: float = 30.0) -> Any:
    return await asyncio.to_thread(wait_for, predicate, within_s, 0.2, what)


def entered(lc: Lifecycle, alarm: Alarm, level: Level) -> dict[str, Any]:
    """The alarm-log event at which the alarm first reached `level` (raised, or level_up from a lower one)."""
    return next(h for h in lc.history(alarm.id) if h["kind"] in ("raised", "level_up") and h["level"] >= level)


def first_reaching(readings: list[Reading], threshold: float) -> Reading:
    """The first reading at or above `threshold`: where a rule of direction high enters its level."""
    return next(r for r in readings if r.value >= threshold)


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
            # each crane entered 报警 on its first reading at or above its own threshold, with that reading's value:
            # a gust between 9.0 and 10.8 m/s is 报警 on TC-02 and not on TC-01
            for alarm, limit in ((std, 10.8), (own, 9.0)):
                crossing = first_reaching(seen.of(alarm.device, "wind_speed"), limit)
                assert entered(lc, alarm, Level.ALARM)["value"] == crossing.value


async def test_excavation_settling_too_fast_raises_the_cumulative_alarm(tmp_path: Path, influxdb: Service) -> None:
    """A wall-crest gauge on an RS-485 bus (RTU pty) drifting 5 mm/d, one simulated day per 17.28 s (1 mm/s): the
    project's 预警 3 mm and 危险 6 mm, measured from the baseline (初始值) taken from the first reading, cite the
    monitoring plan. The day-normalised rate rule needs hours of data: tests/unit/test_excavation_days.py."""
    cfg = write_site(
        tmp_path / "site.yaml",
        influx_port=influxdb.port,
        lines=[{"id": "pit", "type": "modbus_rtu", "port": "ttyPIT", "baudrate": 115200}],
        devices=[
            {
                "id": "PIT-D01",
                "profile": "excavation_displacement_rtu_v1",
                "line": "pit",
                "unit_id": 1,
                "poll_interval_s": 0.3,
                "timeout_s": 0.2,
                # the design 预警值 of the monitoring plan: 6 mm cumulative (watch from 4.2 mm, 报警 at 6 mm)
                "warning_values": {
                    "horizontal_displacement": {
                        "cumulative": 6.0,
                        "source": {"standard": "XX基坑监测方案", "clause": "表3", "confidence": "P"},
                    }
                },
            }
        ],
    )
    gw, seen = watched(cfg)
    async with SiteSimulator(cfg, scenario="excavation_fast", time_scale=86400 / 5), gw:
        with state_reader(cfg) as lc:
            readings = await until(lambda: seen.of("PIT-D01", "horizontal_displacement")[2:], "three readings")
            first = seen.of("PIT-D01", "horizontal_displacement")[0]
            # the gauge reads more than 3 mm from the start (seed 0): only a cumulative measure keeps quiet
            assert first.value > 3.0 and readings[-1].value > first.value
            assert not [a for a in lc.open_alarms() if a.rule.startswith("exc.")]
            base = gw.alarms.baselines.set(
                "PIT-D01", "horizontal_displacement", first.value, "surveyor", "初始值", first.ts_ns
            )
            after = len(seen.readings)  # every reading from here on is judged against the baseline

            warn = await alarm_at(lc, "exc.horizontal_displacement", "PIT-D01", Level.PREWARNING)
            alarm = await alarm_at(lc, "exc.horizontal_displacement", "PIT-D01", Level.ALARM)
            assert alarm.id == warn.id  # one alarm, escalated 预警 -> 报警 (never 危险 from a value)
            assert (alarm.level, alarm.threshold, alarm.source) == (Level.ALARM, 100.0, "XX基坑监测方案 表3 [P]")
            assert alarm.title_zh == "围护墙顶水平位移累计值"
            log = lc.history(alarm.id)
            assert [(h["kind"], h["level"]) for h in log[:2]] == [
                ("raised", Level.PREWARNING),
                ("level_up", Level.ALARM),
            ]
            # the values are the change from the baseline as % of the 预警值, at the first readings at 70 and 100 %
            # (to 9 places, as the evaluator compares them: alerting/measures.py `_decimal`)
            pct = [
                round((r.value - base.value) / 6.0 * 100.0, 9)
                for r in seen.of("PIT-D01", "horizontal_displacement", after)
            ]
            assert log[0]["value"] == next(c for c in pct if c >= 70.0)
            assert log[1]["value"] == next(c for c in pct if c >= 100.0)
            # no other excavation rule has a project value here: they stay quiet
            assert {a.rule for a in lc.open_alarms() if a.device == "PIT-D01"} == {"exc.horizontal_displacement"}
            # the baseline is audited with who set it and the reading it came from
            (row,) = audit_rows(lc.conn, "baseline:PIT-D01/horizontal_displacement")
            assert (row["action"], row["actor"], row["detail"]["reading_ts_ns"]) == (
                "baseline.set",
                "surveyor",
                first.ts_ns,
            )


async def test_formwork_pour_and_gas_leak_alarm_at_their_levels(
    tmp_path: Path, mosquitto: Service, influxdb: Service
) -> None:
    """Over MQTT: a pole loaded past its 30 kN design value during a pour -> fw.axial_force 报警 at 100 % of design
    (2024 判定标准 6(二)); a leak ramping to 40 %LEL -> gas.lel 报警 at 25 %LEL (GB/T 50493-2019 level 1), never
    危险 (50 %LEL); O2 below 19.5 %VOL -> gas.o2_low 报警."""
    cfg = write_site(
        tmp_path / "site.yaml",
        influx_port=influxdb.port,
        mqtt_port=mosquitto.port,
        devices=[
            {
                "id": "FW-A01",
                "profile": "formwork_mqtt_v1",
                "broker": "b",
                "topic": "site/t/formwork/+/data",
                "expected_interval_s": 0.5,
                "design_values": {"axial_force": 30.0},  # the pour's full load is about 45-50 kN
            },
            gas_detector("GAS-01"),
        ],
    )
    gw, seen = watched(cfg)
    async with SiteSimulator(cfg, scenario="formwork_pour,gas_leak", clock=fast_clock(SPEED)) as sim, gw:
        with state_reader(cfg) as lc:
            pole = await alarm_at(lc, "fw.axial_force", "FW-A01", Level.ALARM)
            assert (pole.level, pole.threshold, pole.source) == (Level.ALARM, 100.0, "2024 判定标准 6(二) [P]")
            assert pole.title_zh == "立杆轴力" and pole.state is AlarmState.ACTIVE_UNACKED
            # the value is in % of the design value, from the first reading at or above 30 kN
            percent = [round(r.value / 30.0 * 100.0, 9) for r in seen.of("FW-A01", "axial_force")]  # (to 9 places)
            assert entered(lc, pole, Level.ALARM)["value"] == next(p for p in percent if p >= 100.0)
            # the settlement rule has no design value on this pole: it does not run rather than guess
            assert ("FW-A01", "fw.settlement", "needs design_values.settlement") in gw.alarms.evaluator.inactive

            lel = await alarm_at(lc, "gas.lel", "GAS-01", Level.ALARM)
            assert (lel.threshold, lel.source, lel.title_zh) == (25.0, "GB/T 50493-2019 5.5.2 [S+]", "可燃气体浓度超限")
            crossing = first_reaching(seen.of("GAS-01", "lel"), 25.0)
            assert entered(lc, lel, Level.ALARM)["value"] == crossing.value
            # the leak levels off at about 40 %LEL: still 报警, never 危险
            await until(lambda: [r for r in seen.of("GAS-01", "lel") if r.value > 38.0], "the leak's plateau")
            lel = lc.get(lel.id)
            assert (lel.state, lel.level, lel.max_level) == (AlarmState.ACTIVE_UNACKED, Level.ALARM, Level.ALARM)
            # the scenario's O2 drop (0.6 %VOL) stays above 19.5 %VOL: no oxygen alarm ...
            assert all(r.value > 19.5 for r in seen.of("GAS-01", "o2"))
            assert not [a for a in lc.open_alarms() if a.rule.startswith("gas.o2")]
            # ... until the oxygen really falls below it
            sim.set_values("GAS-01", {"o2": 19.2})
            o2 = await alarm_at(lc, "gas.o2_low", "GAS-01", Level.ALARM)
            assert (o2.level, o2.threshold, o2.source, o2.value) == (
                Level.ALARM,
                19.5,
                "GB/T 50493-2019 5.5.2 [S+]",
                sim.current("GAS-01")["o2"],
            )


async def test_monitors_gone_silent_raise_stale_and_suppress_their_value_alarms(
    tmp_path: Path, mosquitto: Service, influxdb: Service
) -> None:
    """A gas detector (MQTT) in a leak and a crane (Modbus TCP) in a gust go silent: health.stale 报警 for each,
    their value alarms stay open but are suppressed by design (not notifiable); back online, the stale alarms
    clear and the suppression lifts; silent again, the same stale alarms are raised again."""
    cfg = write_site(
        tmp_path / "site.yaml",
        influx_port=influxdb.port,
        mqtt_port=mosquitto.port,
        lines=[{"id": "crane", "type": "modbus_tcp", "host": "127.0.0.1", "port": local.free_port()}],
        devices=[crane("TC-01", "crane", 1, wind_limit_ms=9.0), gas_detector("GAS-01")],
        modbus={"breaker_failures": 2, "breaker_max_backoff_s": 1.0},  # back quickly once the crane answers
    )
    gw, _ = watched(cfg)
    async with SiteSimulator(cfg, scenario="wind_gust,gas_leak", clock=fast_clock(SPEED)) as sim, gw:
        with state_reader(cfg) as lc:
            values = {
                "GAS-01": await alarm_at(lc, "gas.lel", "GAS-01", Level.ALARM),
                "TC-01": await alarm_at(lc, "tc.wind", "TC-01", Level.ALARM),
            }
            assert all(a.notifiable and a.suppressed_by is None for a in values.values())
            assert not [a for a in lc.open_alarms() if a.rule == "health.stale"]

            for dev in values:
                await sim.set_fault(dev, "offline")
            stale = {dev: await alarm_at(lc, "health.stale", dev, Level.ALARM) for dev in values}
            for a in stale.values():
                assert (a.level, a.state, a.category, a.value, a.threshold) == (
                    Level.ALARM,
                    AlarmState.ACTIVE_UNACKED,
                    "health",
                    0.0,
                    0.0,
                )
                assert a.source == "domain.md recommendation §1.4, §2.5, §4.4 [rec]"
                assert a.notifiable  # a device-health alarm is never suppressed by the outage it reports

            def suppressed() -> list[Any]:
                now = [lc.get(a.id) for a in values.values()]
                return now if all(a.suppressed_by and "offline" in a.suppressed_by for a in now) else []

            for a in await until(suppressed, "value alarms suppressed while offline"):
                # still open at 报警 (the leak and the gust did not go away), but nobody is chased about it
                assert (a.state, a.level, a.notifiable) == (AlarmState.ACTIVE_UNACKED, Level.ALARM, False)
            assert {(d, r) for d, r, _, _ in lc.suppressions()} == {("GAS-01", "offline"), ("TC-01", "offline")}

            for dev in values:
                await sim.set_fault(dev, "none")

            def recovered() -> bool:
                cleared = all(lc.get(a.id).state is AlarmState.RTN_UNACKED for a in stale.values())  # nobody acked
                return cleared and all(lc.get(a.id).suppressed_by is None for a in values.values())

            await until(recovered, "stale alarms cleared and suppression lifted")
            for a in [lc.get(v.id) for v in values.values()]:
                assert (a.state, a.level, a.notifiable) == (AlarmState.ACTIVE_UNACKED, Level.ALARM, True)
                kinds = [h["kind"] for h in lc.history(a.id)]
                assert kinds.index("suppressed") < kinds.index("unsuppressed")
            assert not lc.suppressions()

            # a flaky monitor drops out again before anyone acknowledged the first outage: the same stale alarm is
            # raised again, still notifiable although its device is now suppressed, and the value alarms go quiet
            for dev in values:
                await sim.set_fault(dev, "offline")

            def raised_again() -> list[Alarm]:
                now = [lc.get(a.id) for a in stale.values()]
                return now if all(a.state is AlarmState.ACTIVE_UNACKED for a in now) else []

            for a in await until(raised_again, "stale alarms raised again"):
                assert (a.raise_count, a.level, a.suppressed_by, a.notifiable) == (2, Level.ALARM, None, True)
            await until(suppressed, "value alarms suppressed again")
