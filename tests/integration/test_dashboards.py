"""Grafana dashboards: the JSON model, every query run on real data, and a contract test of `dashboards push`.

There is no Grafana server on this machine. What runs for real: every panel query, template-variable query and
annotation query of dashboards/*.json against InfluxDB 1.6.7 holding data written by the real gateway from the
simulators, with Grafana's macros expanded the way Grafana's InfluxQL data source expands them. `dashboards push` is
checked against a local HTTP recorder that answers the few Grafana API routes it uses: a contract test of our client
code and of grafana-client's requests, not a test of Grafana.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import cli
from gateway.app import Gateway
from gateway.dashboards import DATASOURCE_UID, load_dashboards
from services import local
from services.local import Service, influxql, rows, wait_for
from simulators.runner import SiteSimulator
from tests.sites import db_of, write_site

ROOT = Path(__file__).resolve().parents[2]
DASH_DIR = ROOT / "dashboards"
DASHBOARDS = load_dashboards(DASH_DIR)
DS = {"type": "influxdb", "uid": DATASOURCE_UID}
UIDS = {"sitegw-overview", "sitegw-cranes", "sitegw-excavation", "sitegw-formwork", "sitegw-gas", "sitegw-health"}
MEASUREMENTS = {"tower_crane", "excavation", "formwork", "gas", "alarm_events", "sitegw"}
KIND_OF_DASHBOARD = {
    "sitegw-cranes": "tower_crane",
    "sitegw-excavation": "excavation",
    "sitegw-formwork": "formwork",
    "sitegw-gas": "gas",
}
DEVICES = {
    "tower_crane": {"TC-01", "TC-02"},
    "excavation": {"PIT-D01", "PIT-CX1", "PIT-ZL1"},
    "formwork": {"FW-A01"},
    "gas": {"GAS-01"},
}
ALL_DEVICES = set().union(*DEVICES.values())
CHART = [{"radius_m": 2.5, "rated_load_t": 6.0}, {"radius_m": 50.0, "rated_load_t": 1.2}]
# one value per kind outside its plausible range, so every kind has a `<quantity>_q` = 1 field for the quality panels
IMPLAUSIBLE = {
    "TC-01": {"wind_speed": 80.0},
    "PIT-D01": {"horizontal_displacement": 600.0},
    "FW-A01": {"settlement": 250.0},
    "GAS-01": {"lel": 120.0},
}


def panels_of(dash: dict[str, Any]) -> list[dict[str, Any]]:
    """Every non-row panel, including those nested in collapsed rows."""
    out = []
    for p in dash["panels"]:
        if p["type"] == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


def targets() -> list[Any]:
    return [
        pytest.param(d, p, t, id=f"{d['uid']}/{p['id']}{t['refId']}")
        for d in DASHBOARDS
        for p in panels_of(d)
        for t in p["targets"]
    ]


def annotation_queries() -> list[Any]:
    return [
        pytest.param(d, a, id=f"{d['uid']}/{a['name']}")
        for d in DASHBOARDS
        for a in d["annotations"]["list"]
        if a.get("datasource") == DS
    ]


# ---------------------------------------------------------------- the JSON model


def test_every_dashboard_is_complete_with_stable_uids_and_raw_influxql() -> None:
    assert {d["uid"] for d in DASHBOARDS} == UIDS  # the uids are what `push` and bookmarks rely on
    assert len(DASHBOARDS) == len(UIDS)
    for d in DASHBOARDS:
        assert d["title"].startswith("SiteGW · ") and "sitegw" in d["tags"], d["uid"]
        assert d.get("id") is None, "an id ties the JSON to one Grafana instance"
        ids = [p["id"] for p in d["panels"]] + [q["id"] for p in d["panels"] for q in p.get("panels", [])]
        assert len(ids) == len(set(ids)), d["uid"]
        ps = panels_of(d)
        assert len(ps) >= 8, d["uid"]
        for p in ps:
            where = f"{d['uid']} panel {p['id']} {p['title']}"
            assert p["datasource"] == DS, where
            assert set(p["gridPos"]) == {"x", "y", "w", "h"} and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, where
            assert p["targets"], where
            for t in p["targets"]:
                assert t["datasource"] == DS and t["rawQuery"] is True, where
                assert t["resultFormat"] in ("time_series", "table"), where
                q = t["query"]
                assert q.startswith("SELECT ") and " FROM " in q, where
                assert set(re.findall(r'FROM ((?:"\w+"(?:, )?)+)', q)[0].replace('"', "").split(", ")) <= MEASUREMENTS
                # a range-bound panel must use the dashboard's range; only "now" panels read the latest ever written
                assert "$timeFilter" in q or "Online now" in p["title"] or "Device state" in p["title"], where
        variables = {v["name"]: v for v in d["templating"]["list"]}
        assert variables["site"]["query"].startswith("SHOW TAG VALUES") and variables["site"]["datasource"] == DS
        assert variables["site"]["multi"] is False  # a wall screen shows one site
        if d["uid"] in KIND_OF_DASHBOARD:
            dev = variables["device"]
            assert dev["multi"] is True and dev["includeAll"] is True and dev["datasource"] == DS
            assert f'FROM "{KIND_OF_DASHBOARD[d["uid"]]}" WITH KEY = "device"' in dev["query"]
        names = {a["name"] for a in d["annotations"]["list"]}
        assert {"告警 Alarm raised", "恢复 Alarm cleared"} <= names, d["uid"]
        for a in d["annotations"]["list"]:
            if a.get("datasource") == DS:
                assert a["query"] == a["target"]["query"] and a["textColumn"] == "title", d["uid"]
                assert 'FROM "alarm_events" WHERE $timeFilter' in a["query"], d["uid"]


def test_provisioning_files() -> None:
    ds = yaml.safe_load((DASH_DIR / "provisioning/datasources/sitegw.yaml").read_text(encoding="utf-8"))
    (src,) = ds["datasources"]
    assert (src["uid"], src["type"], src["url"]) == (DATASOURCE_UID, "influxdb", "http://influxdb:8086")
    assert src["jsonData"]["dbName"] == "sitegw" and src["jsonData"]["version"] == "InfluxQL"
    # Grafana interpolates $VAR from its environment: the secret never sits in the file
    assert src["user"] == "$INFLUX_READ_USER" and src["secureJsonData"]["password"] == "$INFLUX_READ_PASSWORD"
    prov = yaml.safe_load((DASH_DIR / "provisioning/dashboards/sitegw.yaml").read_text(encoding="utf-8"))
    (provider,) = prov["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/etc/grafana/dashboards/sitegw"
    assert provider["folderUid"] == "sitegw"


# ---------------------------------------------------------------- Grafana's macro expansion


def regex_escape(value: str) -> str:
    """Grafana's lodash-style escapeRegex for InfluxQL variable values."""
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", lambda m: "\\" + m.group(0), value)


def format_variable(values: list[str], multi_or_all: bool) -> str:
    """How Grafana's InfluxDB data source writes a variable into a query (interpolateQueryExpr)."""
    if not multi_or_all:
        return values[0]
    escaped = [regex_escape(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def to_ms(interval: str) -> int:
    n, unit = int(interval[:-1]), interval[-1]
    return n * {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[unit]


def expand(q: str, time_filter: str, interval: str, variables: dict[str, str]) -> str:
    out = q.replace("$timeFilter", time_filter)
    out = out.replace("$__interval_ms", str(to_ms(interval))).replace("$__interval", interval)
    for name, value in variables.items():
        # a replacement string would read backslashes in escaped values as group references
        out = re.sub(rf"\$\{{{name}\}}|\${name}\b", value.replace("\\", "\\\\"), out)
    assert not re.search(r"\$[A-Za-z_{]", out), f"unexpanded macro in {out}"
    return out


def test_variable_formatting_matches_grafana() -> None:
    assert format_variable(["TC-01", "TC-02"], True) == "(TC-01|TC-02)"
    assert format_variable(["a.b"], True) == r"a\.b"
    assert format_variable(["a.b"], False) == "a.b"
    assert expand('"d" =~ /^$device$/', "", "2s", {"device": r"a\.b"}) == r'"d" =~ /^a\.b$/'
    q = expand(
        'WHERE "device" =~ /^$device$/ AND $timeFilter GROUP BY time($__interval)',
        "time >= now() - 1h",
        "2s",
        {"device": "(TC-01|TC-02)"},
    )
    assert q == 'WHERE "device" =~ /^(TC-01|TC-02)$/ AND time >= now() - 1h GROUP BY time(2s)'


# ---------------------------------------------------------------- data: the real gateway, plus alarm/health lines


@dataclass
class SiteData:
    port: int
    db: str
    now_ms: int
    gateway_alarm_lines: int
    written: dict[str, int] = field(default_factory=dict)


def _site(tmp: Path, influx: int, mqtt: int) -> Any:
    rtu = {"line": "pit", "poll_interval_s": 0.5, "timeout_s": 0.2}
    crane = {
        "profile": "tower_crane_tcp_v1",
        "unit_id": 1,
        "poll_interval_s": 0.5,
        "timeout_s": 0.3,
        "load_chart": CHART,
    }
    return write_site(
        tmp / "site.yaml",
        influx_port=influx,
        mqtt_port=mqtt,
        lines=[
            {"id": "crane1", "type": "modbus_tcp", "host": "127.0.0.1", "port": local.free_port()},
            {"id": "crane2", "type": "modbus_tcp", "host": "127.0.0.1", "port": local.free_port()},
            {"id": "pit", "type": "modbus_rtu", "port": "ttyPIT", "baudrate": 115200},
        ],
        devices=[
            {"id": "TC-01", "zone": "北区", "line": "crane1", **crane},
            {"id": "TC-02", "zone": "南区", "line": "crane2", **crane},
            {"id": "PIT-D01", "zone": "基坑东", "profile": "excavation_displacement_rtu_v1", "unit_id": 1, **rtu},
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


async def _run_gateway(cfg: Any, port: int, db: str) -> None:
    async with SiteSimulator(cfg, scenario="static") as sim:
        for dev, values in IMPLAUSIBLE.items():
            sim.set_values(dev, values)
        async with Gateway(cfg) as gw:

            def every_device_in() -> bool:
                got = rows(port, db, 'SELECT count("up") FROM tower_crane, excavation, formwork, gas GROUP BY device')
                flagged = rows(port, db, "SELECT count(wind_speed_q), count(lel_q) FROM tower_crane, gas")
                return {r["device"] for r in got} == ALL_DEVICES and len(flagged) == 2

            await asyncio.to_thread(wait_for, every_device_in, 30, 0.3, "every device in InfluxDB")
            await asyncio.sleep(4.0)  # a few seconds of readings: several $__interval buckets per series
            assert await gw.flush(20)


def _write(port: int, db: str, lines: list[str]) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/write?db={db}&precision=ms", data="\n".join(lines).encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 204


def _extra_lines(now_ms: int) -> dict[str, list[str]]:
    """What the gateway part being added now will write (alarm_events, sitegw), and hours of excavation history."""
    alarms = []
    # device, kind, rule, [(event, level, dt_s)], title; rules the gateway does not raise itself during the run.
    # TC-01: "cleared" and "closed" at one instant, as the lifecycle stamps an acknowledged alarm going back to
    # normal: one series and one timestamp, so InfluxDB keeps only "closed" (the annotation query takes both)
    events = [
        (
            "TC-01",
            "tower_crane",
            "tc.tilt_x",
            [("raised", 1, -300), ("level_up", 2, -240), ("acked", 2, -200), ("cleared", 0, -120), ("closed", 0, -120)],
            "塔身垂直度偏差",
        ),
        ("TC-02", "tower_crane", "tc.moment_ratio", [("raised", 2, -90)], "起重力矩超限"),
        (
            "PIT-D01",
            "excavation",
            "exc.horizontal_displacement",
            [("raised", 1, -280), ("cleared", 0, -100)],
            "水平位移 累计值",
        ),
        ("FW-A01", "formwork", "fw.settlement", [("raised", 2, -260), ("cleared", 0, -80)], "模板沉降"),
        ("GAS-01", "gas", "gas.h2s", [("raised", 2, -250), ("cleared", 0, -60), ("closed", 0, -30)], "硫化氢"),
    ]
    for alarm_id, (dev, kind, rule, evs, title) in enumerate(events, start=9001):
        for ev, level, dt in evs:
            alarms.append(
                f'alarm_events,device={dev},kind={kind},rule={rule},site=t level={level}i,event="{ev}",'
                f'alarm_id={alarm_id}i,value={12.5 + level},title="{title}" {now_ms + dt * 1000}'
            )
    health = []
    # every 10 s for 3 minutes, counters rising, an hour ago: the gateway under test writes its own `sitegw` lines
    # (selfmon) for the last minutes, and the exact-value checks below must not mix the two
    for i in range(19):
        t = now_ms - 3_600_000 - (180 - 10 * i) * 1000
        health.append(
            f"sitegw,site=t readings_total={1000 + 170 * i}i,lines_written_total={300 + 40 * i}i,"
            f"spool_pending_bytes={(i % 4) * 512}i,spool_dropped_lines_total={0 if i < 12 else 5}i,"
            f"write_failures_total={i // 6}i,alarm_transitions_total={2 * i}i,loop_stalls_total={i // 10}i,"
            f"mqtt_messages_total={50 * i}i,devices_up={6 if i == 9 else 7}i,devices_total=7i {t}"
        )
    # automated gauges log for days; the rate panel needs hours, which the simulators cannot give in seconds
    history = [
        f"excavation,device=PIT-D01,site=t,zone=基坑东 horizontal_displacement={3.0 + 0.1 * h},"
        f"vertical_displacement={-1.0 - 0.05 * h} {now_ms - (6 - h) * 3_600_000 - 600_000}"
        for h in range(6)
    ]
    return {"alarm_events": alarms, "sitegw": health, "excavation": history}


@pytest.fixture(scope="module")
def site_data(tmp_path_factory: pytest.TempPathFactory, influxdb: Service, mosquitto: Service) -> Iterator[SiteData]:
    cfg = _site(tmp_path_factory.mktemp("dash"), influxdb.port, mosquitto.port)
    db = db_of(cfg)
    # a thread of its own: this module-scoped setup must not share pytest-asyncio's event loop
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        ex.submit(asyncio.run, _run_gateway(cfg, influxdb.port, db)).result(timeout=120)
    from_gateway = rows(influxdb.port, db, "SELECT count(alarm_id) FROM alarm_events")
    now_ms = int(time.time() * 1000)
    data = SiteData(influxdb.port, db, now_ms, int(from_gateway[0]["count"]) if from_gateway else 0)
    for measurement, lines in _extra_lines(now_ms).items():
        _write(influxdb.port, db, lines)
        data.written[measurement] = len(lines)
    yield data


def time_filters(d: dict[str, Any], data: SiteData) -> list[tuple[str, str]]:
    """(timeFilter, $__interval) as Grafana renders them: the dashboard default range, relative, and an absolute one."""
    rel = d["time"]["from"].removeprefix("now-")
    start, end = data.now_ms - 7 * 3_600_000, data.now_ms + 60_000
    return [(f"time >= now() - {rel}", "2s"), (f"time >= {start}ms and time <= {end}ms", "10s")]


def resolve_variables(d: dict[str, Any], data: SiteData) -> dict[str, str]:
    """Run the dashboard's variable queries in order, as Grafana does on load; site 't', device 'All'."""
    values: dict[str, str] = {}
    for v in d["templating"]["list"]:
        q = expand(v["query"], "time >= now() - 1h", "2s", values)
        got = sorted({val for s in influxql(data.port, data.db, q) for _key, val in s["values"]})
        if v["name"] == "site":
            assert "t" in got, (d["uid"], got)
            got = ["t"]
        elif v["name"] == "device":
            assert set(got) == DEVICES[KIND_OF_DASHBOARD[d["uid"]]], (d["uid"], got)
        values[v["name"]] = format_variable(got, v["multi"] or v["includeAll"])
    return values


def expected_columns(q: str) -> tuple[list[str], tuple[str, re.Pattern[str]] | None]:
    """The columns a query must return after `time`: its aliases, its raw column list, or a regex-field family."""
    sel = re.match(r"SELECT (.*?) FROM ", q)
    assert sel, q
    aliases = re.findall(r'AS "(\w+)"', sel.group(1))
    if aliases:
        return aliases, None
    family = re.fullmatch(r"(\w+)\(/(.+)/\)", sel.group(1))
    if family:
        return [], (family.group(1) + "_", re.compile(family.group(2)))
    return [c.strip().strip('"') for c in sel.group(1).split(",")], None


@pytest.mark.parametrize(("dash", "panel", "target"), targets())
def test_panel_query_returns_its_series(
    site_data: SiteData, dash: dict[str, Any], panel: dict[str, Any], target: dict[str, Any]
) -> None:
    variables = resolve_variables(dash, site_data)
    kind = KIND_OF_DASHBOARD.get(dash["uid"])
    if kind == "tower_crane":
        assert variables["device"] == "(TC-01|TC-02)"  # 'All' of a multi-value variable, as Grafana writes it
    for time_filter, interval in time_filters(dash, site_data):
        # a panel's min interval wins over the auto interval, as in Grafana
        interval = panel.get("interval", interval)
        q = expand(target["query"], time_filter, interval, variables)
        series = influxql(site_data.port, site_data.db, q)
        assert series, f"no series for {q}"
        names, family = expected_columns(q)
        seen_values: set[str] = set()
        for s in series:
            assert s["columns"][0] == "time", q
            if family:
                prefix, regex = family  # e.g. max(/_q$/) gives max_wind_speed_q
                fields = [c.removeprefix(prefix) for c in s["columns"][1:] if c.startswith(prefix)]
                assert fields and len(fields) == len(s["columns"]) - 1, (s["columns"], q)
                assert all(regex.search(f) for f in fields), (s["columns"], q)
            else:
                assert s["columns"][1:] == names, (s["columns"], q)
            for i, col in enumerate(s["columns"][1:], start=1):
                if any(row[i] is not None for row in s["values"]):
                    seen_values.add(col)
            device = s.get("tags", {}).get("device")
            if device is not None:
                assert device in (DEVICES[kind] if kind else ALL_DEVICES), (device, q)
        assert seen_values == ({c for s in series for c in s["columns"][1:]}), f"columns never filled: {q}"
        if 'GROUP BY time($__interval), "device"' in target["query"] and kind and "deep_" not in q:
            assert {s["tags"]["device"] for s in series}, q
        if target["resultFormat"] == "table" and '"alarm_events"' in q:
            got = {
                s["tags"]["device"] if "tags" in s else row[s["columns"].index("device")]
                for s in series
                for row in s["values"]
            }
            assert got <= (DEVICES[kind] if kind else ALL_DEVICES) and got, (got, q)


def test_kind_panels_cover_every_device_of_their_kind(site_data: SiteData) -> None:
    """The 'All' devices selection really returns every crane, not just the first."""
    (dash,) = [d for d in DASHBOARDS if d["uid"] == "sitegw-cranes"]
    variables = resolve_variables(dash, site_data)
    (p,) = [p for p in panels_of(dash) if p["title"].startswith("力矩百分比 Load moment ratio")]
    q = expand(p["targets"][0]["query"], "time >= now() - 1h", "2s", variables)
    assert {s["tags"]["device"] for s in influxql(site_data.port, site_data.db, q)} == {"TC-01", "TC-02"}
    one = expand(p["targets"][0]["query"], "time >= now() - 1h", "2s", {**variables, "device": "TC-02"})
    assert {s["tags"]["device"] for s in influxql(site_data.port, site_data.db, one)} == {"TC-02"}


def test_health_dashboard_reads_the_gateway_counters(site_data: SiteData) -> None:
    (dash,) = [d for d in DASHBOARDS if d["uid"] == "sitegw-health"]
    variables = resolve_variables(dash, site_data)
    (p,) = [p for p in panels_of(dash) if p["title"].startswith("速率 Rates")]
    window = "time >= now() - 6h and time <= now() - 30m"  # the synthetic hour, not the live gateway's lines
    q = expand(p["targets"][0]["query"], window, "10s", variables)
    (s,) = influxql(site_data.port, site_data.db, q)
    readings = [row[1] for row in s["values"] if row[1] is not None]
    assert readings and all(r == pytest.approx(17.0) for r in readings)  # 170 readings per 10 s
    (p,) = [p for p in panels_of(dash) if p["title"].startswith("丢弃")]
    q = expand(p["targets"][0]["query"], window, "10s", variables)
    assert influxql(site_data.port, site_data.db, q)[0]["values"][0][1] == 5


@pytest.mark.parametrize(("dash", "anno"), annotation_queries())
def test_alarm_annotations(site_data: SiteData, dash: dict[str, Any], anno: dict[str, Any]) -> None:
    variables = resolve_variables(dash, site_data)
    kind = KIND_OF_DASHBOARD.get(dash["uid"])
    for time_filter, interval in time_filters(dash, site_data):
        q = expand(anno["query"], time_filter, interval, variables)
        got = rows(site_data.port, site_data.db, q)
        assert got, f"no annotations from {q}"
        for r in got:
            assert r["title"] and r["device"] in (DEVICES[kind] if kind else ALL_DEVICES), r
            assert r["level"] > 0 or "raised" not in anno["name"], r
        if kind is None and "raised" in anno["name"]:
            # every kind's alarms on the overview (the real gateway may have raised more of its own)
            assert {r["device"] for r in got} >= {"TC-01", "TC-02", "PIT-D01", "FW-A01", "GAS-01"}


def test_open_alarm_table_latest_event_per_alarm(site_data: SiteData) -> None:
    (dash,) = [d for d in DASHBOARDS if d["uid"] == "sitegw-overview"]
    variables = resolve_variables(dash, site_data)
    (p,) = [p for p in panels_of(dash) if p["title"].startswith("当前告警")]
    q = expand(p["targets"][0]["query"], "time >= now() - 1h", "2s", variables)
    latest = {(r["device"], r["rule"]): r["event"] for r in rows(site_data.port, site_data.db, q)}
    # the panel's filterByValue hides 'closed'; what stays is what is still open or unacknowledged
    assert latest[("TC-01", "tc.tilt_x")] == "closed" and latest[("GAS-01", "gas.h2s")] == "closed"
    assert latest[("TC-02", "tc.moment_ratio")] == "raised" and latest[("FW-A01", "fw.settlement")] == "cleared"
    assert p["transformations"][0]["options"]["filters"][0]["config"]["options"]["value"] == "closed"


# ---------------------------------------------------------------- `dashboards push`: contract test, HTTP recorder

TOKEN = "glsa_test_token_not_a_secret"


class GrafanaRecorder(ThreadingHTTPServer):
    """Plays the Grafana HTTP API routes `dashboards push` uses, keeps their state and records every request."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, str, Any]] = []
        self.folders: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: GrafanaRecorder

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _handle(self, method: str) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else None
        with self.server.lock:
            self.server.requests.append((method, self.path, body))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._reply(401, {"message": "Unauthorized"})
            self._route(method, self.path, body)

    def _route(self, method: str, path: str, body: Any) -> None:
        srv = self.server
        if m := re.fullmatch(r"/api/folders/([\w-]+)", path):
            uid = m.group(1)
            if uid not in srv.folders:
                return self._reply(404, {"message": "folder not found", "status": "not-found"})
            if method == "PUT":
                srv.folders[uid] = {
                    **srv.folders[uid],
                    "title": body["title"],
                    "version": srv.folders[uid]["version"] + 1,
                }
            return self._reply(200, srv.folders[uid])
        if path == "/api/folders" and method == "POST":
            if body.get("uid") in srv.folders:
                return self._reply(409, {"message": "a folder with the same uid already exists"})
            srv.folders[body["uid"]] = {
                "id": len(srv.folders) + 1,
                "uid": body["uid"],
                "title": body["title"],
                "version": 1,
            }
            return self._reply(200, srv.folders[body["uid"]])
        if m := re.fullmatch(r"/api/dashboards/uid/([\w-]+)", path):
            got = srv.dashboards.get(m.group(1))
            if got is None:
                return self._reply(404, {"message": "Dashboard not found"})
            return self._reply(200, {"dashboard": got["dashboard"], "meta": {"folderUid": got["folderUid"]}})
        if path == "/api/dashboards/db" and method == "POST":
            dash, uid = body["dashboard"], body["dashboard"]["uid"]
            if body.get("folderUid") not in srv.folders:
                return self._reply(400, {"message": "folder not found"})
            old = srv.dashboards.get(uid)
            if old and not body.get("overwrite"):
                return self._reply(
                    412, {"message": "The dashboard has been changed by someone else", "status": "version-mismatch"}
                )
            version = (old["version"] if old else 0) + 1
            stored = {**dash, "id": old["dashboard"]["id"] if old else len(srv.dashboards) + 1, "version": version}
            srv.dashboards[uid] = {"dashboard": stored, "folderUid": body["folderUid"], "version": version}
            return self._reply(
                200, {"id": stored["id"], "uid": uid, "url": f"/d/{uid}/x", "status": "success", "version": version}
            )
        return self._reply(404, {"message": "Not found"})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")


@pytest.fixture
def grafana() -> Iterator[GrafanaRecorder]:
    srv = GrafanaRecorder()
    t = threading.Thread(target=srv.serve_forever, name="grafana-recorder", daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    t.join(5)


def _posts(srv: GrafanaRecorder, since: int = 0) -> list[dict[str, Any]]:
    return [b for m, p, b in srv.requests[since:] if (m, p) == ("POST", "/api/dashboards/db")]


def test_push_creates_then_is_idempotent(
    grafana: GrafanaRecorder, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert cli.main(["dashboards", "push", "--url", grafana.url]) == 0
    out = capsys.readouterr().out
    assert "folder sitegw 'SiteGW': created" in out
    assert out.count(": created, version 1") == len(UIDS) and "6 created, 0 updated, 0 unchanged" in out
    assert TOKEN not in out
    first = _posts(grafana)
    assert {b["dashboard"]["uid"] for b in first} == UIDS
    assert all(b["overwrite"] is True and b["folderUid"] == "sitegw" and b["dashboard"]["id"] is None for b in first)
    assert grafana.folders["sitegw"]["title"] == "SiteGW"
    # what Grafana stores is our JSON, unchanged apart from id and version
    for d in DASHBOARDS:
        stored = grafana.dashboards[d["uid"]]["dashboard"]
        assert {k: v for k, v in stored.items() if k not in ("id", "version")} == {
            k: v for k, v in d.items() if k not in ("id", "version")
        }

    n = len(grafana.requests)
    assert cli.main(["dashboards", "push", "--url", grafana.url]) == 0
    out = capsys.readouterr().out
    assert "folder sitegw 'SiteGW': exists" in out
    assert out.count(": unchanged, version 2") == len(UIDS) and "0 created, 0 updated, 6 unchanged" in out
    second = _posts(grafana, n)
    assert second == first  # the same uids, bodies and overwrite flag: only Grafana's version moved
    assert not [r for r in grafana.requests[n:] if r[:2] == ("POST", "/api/folders")]
    assert {u: v["version"] for u, v in grafana.dashboards.items()} == dict.fromkeys(UIDS, 2)


def test_push_to_another_datasource_and_folder_title(
    grafana: GrafanaRecorder, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MY_GRAFANA", TOKEN)
    assert cli.main(["dashboards", "push", "--url", grafana.url, "--token-env", "MY_GRAFANA"]) == 0
    capsys.readouterr()
    args = ["--token-env", "MY_GRAFANA", "--folder", "工地看板", "--datasource-uid", "influx-site-7"]
    assert cli.main(["dashboards", "push", "--url", grafana.url, *args]) == 0
    out = capsys.readouterr().out
    assert "folder sitegw '工地看板': renamed from 'SiteGW'" in out and "6 updated" in out
    assert grafana.folders["sitegw"]["title"] == "工地看板"
    for uid, stored in grafana.dashboards.items():
        text = json.dumps(stored["dashboard"])
        assert DATASOURCE_UID not in text and '"uid": "influx-site-7"' in text, uid
        assert stored["version"] == 2


def test_push_refuses_without_token_or_with_a_wrong_one(
    grafana: GrafanaRecorder, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    assert cli.main(["dashboards", "push", "--url", grafana.url]) == 2
    assert "GRAFANA_TOKEN is not set" in capsys.readouterr().err
    assert grafana.requests == []
    monkeypatch.setenv("GRAFANA_TOKEN", "wrong-token-value")
    assert cli.main(["dashboards", "push", "--url", grafana.url]) == 1
    err = capsys.readouterr().err
    assert "Unauthorized" in err and "wrong-token-value" not in err
    assert not grafana.dashboards
