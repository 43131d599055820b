"""Gateway self-observability on real services: /health through a database outage, an offline device and a broker
restart; /metrics in strict Prometheus text format with the new series; the `sitegw` line in InfluxDB."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from gateway import selfmon
from gateway.api import build_api
from gateway.app import Gateway
from gateway.config import SiteConfig
from gateway.selfmon import add_health_routes, health_line, monitor_of
from gateway.spool import Spool
from services import local
from services.local import Service
from simulators.runner import SiteSimulator
from tests.sites import db_of, write_site

T = TypeVar("T")
CHART = [{"radius_m": 2.5, "rated_load_t": 6.0}, {"radius_m": 50.0, "rated_load_t": 1.2}]
FIELDS = [
    "readings_total",
    "lines_written_total",
    "spool_pending_bytes",
    "spool_dropped_lines_total",
    "write_failures_total",
    "rejected_lines_total",
    "alarm_transitions_total",
    "loop_stalls_total",
    "mqtt_messages_total",
    "devices_up",
    "devices_total",
]

# ---- a strict reader of the Prometheus text format 0.0.4 (prometheus_client is not installed) ----------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*)\}})? (\S+)$")
_HELP = re.compile(rf"^# HELP ({_NAME}) \S.*$")
_TYPE = re.compile(rf"^# TYPE ({_NAME}) (counter|gauge|summary|histogram|untyped)$")
_VALUE = re.compile(r"^(?:[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|NaN|[+-]Inf)$")

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_prometheus(text: str) -> Series:
    """Every line a HELP, a TYPE or a sample of the family declared just before it; no family or series twice."""
    assert text.endswith("\n"), "exposition must end with a newline"
    out: Series = {}
    types: dict[str, str] = {}
    helped: set[str] = set()
    family: str | None = None
    for n, line in enumerate(text.splitlines(), 1):
        where = f"line {n}: {line!r}"
        if m := _HELP.match(line):
            assert m[1] not in helped, f"second HELP for {m[1]}, {where}"
            helped.add(m[1])
            family = None
            continue
        if m := _TYPE.match(line):
            assert m[1] in helped and m[1] not in types, f"TYPE without HELP before it or twice, {where}"
            types[m[1]] = m[2]
            family = m[1]
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample, {where}"
        name, labels, value = m[1], m[2], m[3]
        assert family is not None, f"sample before its TYPE, {where}"
        kind = types[family]
        allowed = {family} | ({f"{family}_sum", f"{family}_count"} if kind in ("summary", "histogram") else set())
        assert name in allowed, f"sample {name} inside family {family}, {where}"
        assert _VALUE.match(value), f"bad value, {where}"
        pairs = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels or ""))
        key = (name, pairs)
        assert key not in out, f"duplicate series, {where}"
        v = float(value)
        if kind == "counter" or name.endswith("_count"):
            assert v >= 0, f"negative counter, {where}"
        out[key] = v
    return out


def val(series: Series, name: str, **labels: str) -> float:
    return series[(name, frozenset(labels.items()))]


def test_prometheus_reader_refuses_what_is_not_valid() -> None:
    """The reader the tests rely on is strict: it would catch a broken exposition."""
    good = "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n"
    assert val(parse_prometheus(good), "a_total") == 1
    for bad in (
        "a_total 1\n",  # no HELP / TYPE
        "# HELP a_total A.\n# TYPE a_total counter\na_total{x=1} 1\n",  # unquoted label value
        "# HELP a_total A.\n# TYPE a_total counter\na_total 1\na_total 2\n",  # duplicate series
        "# HELP a_total A.\n# TYPE a_total counter\nb_total 1\n",  # sample outside its family
        "# HELP a_total A.\n# TYPE a_total counter\na_total one\n",  # not a number
        "# HELP a_total A.\n# TYPE a_total counter\na_total 1",  # no final newline
    ):
        with pytest.raises(AssertionError):
            parse_prometheus(bad)


# ---- helpers --------------------------------------------------------------------------------------------------


async def until(fn: Callable[[], Awaitable[T | None]], what: str, timeout_s: float = 20.0) -> T:
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = await fn()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def site(tmp_path: Path, influx: int, mqtt: int | None = None, **extra: Any) -> SiteConfig:
    tcp = local.free_port()
    devices: list[dict[str, Any]] = [
        {
            "id": "TC-01",
            "profile": "tower_crane_tcp_v1",
            "line": "crane",
            "unit_id": 1,
            "poll_interval_s": 0.25,
            "timeout_s": 0.2,
            "load_chart": CHART,  # the load ratio is derived from it: `derived` readings
        }
    ]
    if mqtt:
        # quiet enough that a broker restart does not take it offline
        devices.append(
            {
                "id": "FW-A01",
                "profile": "formwork_mqtt_v1",
                "broker": "b",
                "topic": "site/t/formwork/+/data",
                "expected_interval_s": 0.5,
                "stale_factor": 40,
            }
        )
    return write_site(
        tmp_path / "site.yaml",
        influx_port=influx,
        mqtt_port=mqtt,
        lines=[{"id": "crane", "type": "modbus_tcp", "host": "127.0.0.1", "port": tcp}],
        devices=devices,
        modbus={"breaker_max_backoff_s": 2.0},  # a crane back online is polled again within seconds
        **extra,
    )


@asynccontextmanager
async def api_of(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    app = build_api(gw)
    add_health_routes(app, gw)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as api:
        yield api


async def health(api: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    r = await api.get("/health")
    return r.status_code, r.json()


def codes(body: dict[str, Any]) -> set[str]:
    return {r["code"] for r in body["reasons"]}


async def metrics(api: httpx.AsyncClient) -> Series:
    r = await api.get("/metrics")
    assert r.status_code == 200
    return parse_prometheus(r.text)


# ---- tests ----------------------------------------------------------------------------------------------------


async def test_health_through_a_database_outage_and_the_sitegw_line(
    tmp_path: Path, own_influx: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(selfmon, "PERIOD_S", 1.0)  # the line every second instead of every 10 s
    monkeypatch.setattr(selfmon, "SPOOL_AGE_LIMIT_S", 2.0)  # so that `spool_stale` shows within the outage
    cfg = site(tmp_path, own_influx.port, spool={"batch_lines": 50})
    db = db_of(cfg)
    async with SiteSimulator(cfg, scenario="static"), Gateway(cfg, fsync=False) as gw, api_of(gw) as api:
        status, body = await health(api)
        assert (status, body["status"]) == (503, "starting")  # no sweep yet

        async def ready() -> dict[str, Any] | None:
            status, body = await health(api)
            return body if status == 200 and body["status"] == "ready" else None

        await until(ready, "ready")

        await asyncio.to_thread(own_influx.stop)  # off the loop: a blocked loop is a stall, a reason of its own
        stopped_ns = time.time_ns()

        async def degraded_by(code: str) -> dict[str, Any] | None:
            status, body = await health(api)
            assert status == 200 and body["status"] in ("ready", "degraded"), body
            return body if code in codes(body) else None

        body = await until(lambda: degraded_by("database_down"), "database_down")
        assert body["status"] == "degraded"
        down = next(r for r in body["reasons"] if r["code"] == "database_down")
        assert down["detail"]["target"] == gw.writer.target and down["detail"]["write_failures"] >= 1
        assert "数据库" in down["zh"] and "database" in down["en"]
        assert "数据库" in body["zh"] and "database" in body["en"]

        # the readings wait: the oldest one grows older, and past the limit that is a reason of its own
        stale = await until(lambda: degraded_by("spool_stale"), "spool_stale", 30)
        age = next(r for r in stale["reasons"] if r["code"] == "spool_stale")["detail"]["oldest_age_s"]
        assert age >= 2.0  # rounded to 0.1 s in the detail
        m = await metrics(api)
        assert val(m, "sitegw_spool_oldest_age_seconds") > 2.0 and val(m, "sitegw_spool_pending_bytes") > 0

        # the age comes from one append mark a second, so `spool_stale` can show a second early: keep the database
        # away long enough for a line (one a second) to be stamped during the outage whatever the timing
        await asyncio.sleep(max(0.0, 2.5 - (time.time_ns() - stopped_ns) / 1e9))
        await asyncio.to_thread(own_influx.start)
        restarted_ns = time.time_ns()
        await until(ready, "ready after the restart", 40)
        assert await gw.flush(30)

        def sitegw_rows() -> list[dict[str, Any]]:
            sel = ", ".join(FIELDS)
            return local.rows(own_influx.port, db, f"SELECT {sel} FROM sitegw WHERE site = 't' ORDER BY time")

        async def rows_past_the_restart() -> list[dict[str, Any]] | None:
            rows = await asyncio.to_thread(sitegw_rows)
            return rows if rows and rows[-1]["time"] > restarted_ns else None

        # a line every second: one from before the outage, one stamped during it, one after the restart
        rows = await until(rows_past_the_restart, "a sitegw line stamped after the restart")
        assert len(rows) >= 3
        for row in rows:
            assert all(isinstance(row[f], int) for f in FIELDS), row  # integer fields, as the dashboard expects
            assert row["devices_total"] == 1
        totals = [r["readings_total"] for r in rows]
        assert totals == sorted(totals) and totals[-1] > totals[0]
        # lines stamped during the outage were spooled and arrived afterwards, like readings
        during = [r for r in rows if stopped_ns < r["time"] < restarted_ns]
        assert during and max(r["write_failures_total"] for r in during) >= 1
        assert any(r["spool_pending_bytes"] > 0 for r in during)


async def test_offline_device_broker_restart_and_metrics(
    tmp_path: Path, influxdb: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    mq = local.mosquitto(tmp_path / "mq")
    mq.start()
    try:
        cfg = site(tmp_path, influxdb.port, mq.port)
        async with (
            SiteSimulator(cfg, scenario="static") as sim,
            Gateway(cfg, fsync=False) as gw,
            api_of(gw) as api,
        ):

            async def ready() -> dict[str, Any] | None:
                status, body = await health(api)
                return body if status == 200 and body["status"] == "ready" else None

            await until(ready, "ready")

            async def flowing() -> Series | None:
                m = await metrics(api)
                drv = {d: val(m, "sitegw_driver_readings_total", driver=d) for d in ("modbus", "mqtt", "derived")}
                return m if all(drv.values()) and val(m, "sitegw_devices_up") == 2 else None

            m = await until(flowing, "readings from every driver")
            assert val(m, "sitegw_driver_readings_total", driver="liveness") >= 2  # each device came online
            count = val(m, "sitegw_poll_seconds_count", line="crane")
            total = val(m, "sitegw_poll_seconds_sum", line="crane")
            assert count >= 1 and 0 < total and 0 < val(m, "sitegw_poll_seconds_max", line="crane") <= total
            assert count <= val(m, "sitegw_polls_total", device="TC-01")
            assert val(m, "sitegw_devices_total") == 2
            assert val(m, "sitegw_mqtt_connected", broker="b") == 1
            assert val(m, "sitegw_mqtt_reconnects_total", broker="b") == 0
            assert val(m, "sitegw_mqtt_read_windows_total", broker="b") == 0  # a device's few messages: no window
            assert val(m, "sitegw_mqtt_read_pauses_total", broker="b") == 0  # nor more than the window at once
            assert val(m, "sitegw_mqtt_retained_ignored_total", broker="b") == 0  # nothing retained on its topics
            assert val(m, "sitegw_spool_bound_bytes") == cfg.spool.max_bytes
            assert val(m, "sitegw_readings_total") > 0 and val(m, "sitegw_lines_written_total") > 0

            async def drained() -> Series | None:
                m = await metrics(api)
                return m if val(m, "sitegw_spool_pending_bytes") == 0 else None

            m = await until(drained, "a scrape with the spool drained")
            assert val(m, "sitegw_spool_oldest_age_seconds") == 0

            # a broker restart: disconnected while it is away, one reconnect counted when it is back
            await asyncio.to_thread(mq.stop)  # off the loop: a blocked loop is a stall, a reason of its own

            async def degraded_by(code: str) -> dict[str, Any] | None:
                status, body = await health(api)
                return body if status == 200 and code in codes(body) else None

            body = await until(lambda: degraded_by("mqtt_disconnected"), "mqtt_disconnected")
            assert next(r for r in body["reasons"] if r["code"] == "mqtt_disconnected")["detail"]["brokers"] == ["b"]
            await asyncio.to_thread(mq.start)

            async def reconnected() -> Series | None:
                m = await metrics(api)
                return m if val(m, "sitegw_mqtt_reconnects_total", broker="b") >= 1 else None

            m = await until(reconnected, "an MQTT reconnect", 30)
            assert val(m, "sitegw_mqtt_connected", broker="b") == 1
            await until(ready, "ready after the broker restart")

            # the crane goes dark: its breaker opens, `up` drops, and /health names it
            await sim.set_fault("TC-01", "offline")
            body = await until(lambda: degraded_by("devices_offline"), "devices_offline")
            off = next(r for r in body["reasons"] if r["code"] == "devices_offline")
            assert off["detail"]["devices"] == ["TC-01"] and off["detail"]["total"] == 2
            assert "TC-01" in off["zh"] and "离线" in off["zh"] and "TC-01" in off["en"]
            m = await metrics(api)
            assert val(m, "sitegw_device_up", device="TC-01") == 0 and val(m, "sitegw_devices_up") == 1
            assert val(m, "sitegw_poll_failures_total", device="TC-01") >= 1

            await sim.set_fault("TC-01", "none")
            await until(ready, "ready once the crane answers again", 30)
    finally:
        mq.stop()


async def test_recent_failures_age_out_and_the_spool_bound(tmp_path: Path) -> None:
    """The time windows of /health on the real monitor and a real spool, the clock moved by hand (no waiting an
    hour); counters set the way the alarm engine and the liveness timer set them."""
    cfg = site(tmp_path, local.free_port(), spool={"max_bytes": 65536, "segment_bytes": 16384})
    gw = Gateway(cfg, fsync=False)
    gw.spool.open()
    try:
        mon = monitor_of(gw)
        assert selfmon.health_report(gw)[0] == 503
        t0 = time.monotonic()
        mon.sweep(t0)
        assert selfmon.health_report(gw) == (
            200,
            {"status": "ready", "site": "t", "reasons": [], "zh": "网关运行正常", "en": "gateway ready"},
        )

        gw.metrics.deliveries[("hook", "failed")] += 2
        gw.metrics.deliveries[("mail", "sent")] += 5  # sent and retried deliveries are not failures
        gw.metrics.deliveries[("mail", "retry")] += 1
        gw.metrics.deliveries[("mail", "partial")] += 1  # sent, but a supervisor's mailbox refused it
        gw.metrics.alarm_errors += 1
        gw.metrics.loop_stalls += 1
        gw.metrics.rejected_lines += 3  # refused by the database (a field type conflict), kept in rejected.lp
        gw.spool.dropped_lines += 7  # the oldest data dropped: a disk full below the spool's bound says nothing else
        gw.metrics.uplink_set_aside = 1  # an event over the hub cluster's max_payload, kept on the site
        now = t0 + 5
        mon.sweep(now)
        got = {r["code"]: r for r in mon.reasons(now)}
        assert set(got) == {
            "notification_failures",
            "alarm_engine_errors",
            "loop_stalls",
            "rejected_lines",
            "spool_dropped",
            "uplink_set_aside",
        }
        assert got["uplink_set_aside"]["detail"] == {"count": 1, "window_s": 3600.0, "table": "uplink_set_aside"}
        assert got["spool_dropped"]["detail"] == {"count": 7, "window_s": 3600.0, "max_bytes": 65536}
        assert got["rejected_lines"]["detail"] == {"count": 3, "window_s": 3600.0, "file": "rejected.lp"}
        assert got["notification_failures"]["detail"] == {"count": 3, "window_s": 3600.0, "channels": ["hook", "mail"]}
        assert got["alarm_engine_errors"]["detail"]["count"] == 1
        for r in got.values():
            assert r["zh"] and r["en"] and r["zh"] != r["en"]

        # every 10 s for 11 minutes: the stall (10 min window) ages out, the others (1 h) do not
        for i in range(66):
            now = t0 + 10 + 10 * i
            mon.sweep(now)
        assert {r["code"] for r in mon.reasons(now)} == {
            "notification_failures",
            "alarm_engine_errors",
            "rejected_lines",
            "spool_dropped",
            "uplink_set_aside",
        }
        for _ in range(300):  # past the hour
            now += 10
            mon.sweep(now)
        assert mon.reasons(now) == []
        assert len(mon.history) < 400  # trimmed, not growing without end

        # a spool past half its bound
        line = b"m,device=x v=1 1\n"
        gw.spool.append(line * (40000 // len(line)), 40000 // len(line))
        got = {r["code"]: r for r in mon.reasons(now)}
        assert set(got) == {"spool_filling"} and got["spool_filling"]["detail"]["percent"] > 50

        # the line for the dashboard: exactly the agreed fields, all integers
        text = health_line(gw, 1_700_000_000_000_000_000)
        assert text.startswith("sitegw,site=t ") and text.endswith(" 1700000000000000000\n")
        fields = dict(kv.split("=") for kv in text.split(" ")[1].split(","))
        assert list(fields) == FIELDS and all(re.fullmatch(r"\d+i", v) for v in fields.values())
        assert fields["rejected_lines_total"] == "3i"
        assert fields["devices_total"] == "1i" and int(fields["spool_pending_bytes"][:-1]) > 32768
    finally:
        gw.spool.close()
        await gw.alarms.aclose()
        await gw.writer.aclose()


def test_spool_age_of_the_oldest_unacknowledged_line(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "sp", 1 << 20, 1 << 16, fsync=False)
    sp.open()
    assert sp.oldest_pending_age_s() == 0.0
    t0 = time.time()
    sp.append(b"a v=1 1\n", 1)
    sp.segments[-1].marks[-1] = (0, t0 - 100)  # as if appended 100 s ago
    sp.append(b"a v=2 2\n", 1)  # over a second after the mark in effect: it gets a mark of its own
    assert 99 < sp.oldest_pending_age_s(t0) <= 101
    first = sp.read(sp.live_segment(), 1)
    assert first is not None and first.lines == 1
    sp.ack(first)  # the old line is in the database: the age is that of the newer one
    assert sp.oldest_pending_age_s(t0 + 5) <= 6
    assert len(sp.segments[-1].marks) == 1
    rest = sp.read(sp.live_segment(), 10)
    assert rest is not None
    sp.ack(rest)
    assert sp.oldest_pending_age_s(t0 + 1000) == 0.0
    # after a restart, unacknowledged lines are aged from their file's last change
    sp.append(b"a v=3 3\n", 1)
    sp.close()
    again = Spool(tmp_path / "sp", 1 << 20, 1 << 16, fsync=False)
    again.open()
    try:
        mtime = again.segments[-1].path.stat().st_mtime
        assert math.isclose(again.oldest_pending_age_s(mtime + 42), 42, abs_tol=0.01)
    finally:
        again.close()
