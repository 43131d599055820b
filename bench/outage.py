"""Outage recovery: InfluxDB stopped for N s under 2k readings/s, then restarted: time to drain the spool, and how far
behind live readings are meanwhile (marker readings' arrival in InfluxDB), beside a bare POST -> query visibility."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench import common
from bench.common import Options, Result
from bench.publisher import payload
from services import local

NAME = "outage"
DEVICES = 200
RATE = 200.0  # messages/s x 10 fields = 2k readings/s
MARKER = "C9999"
MARKER_EVERY_S = 0.5
DRAINED_BYTES = 100_000  # "drained": pending below ~2 s of live data (live data keeps arriving, so never exactly 0)
LIVE_LIMIT_S = 5.0


def _visible_ts(port: int, db: str, since_ns: int) -> set[int]:
    q = f"SELECT slew_angle FROM tower_crane WHERE device = '{MARKER}' AND time >= {since_ns}"
    url = f"http://127.0.0.1:{port}/query?" + urllib.parse.urlencode({"db": db, "q": q, "epoch": "ns"})
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            body = json.loads(r.read())
    except OSError:
        return set()
    series = body.get("results", [{}])[0].get("series", [])
    return {int(v[0]) for s in series for v in s["values"]}


class Markers:
    """Publishes a marker reading every MARKER_EVERY_S and notes when each becomes visible in InfluxDB."""

    def __init__(self, mqtt_port: int, influx_port: int, db: str) -> None:
        self.sent: dict[int, float] = {}  # ts_ns -> monotonic publish time
        self.seen: dict[int, float] = {}  # ts_ns -> monotonic time first seen in InfluxDB
        self._port, self._db = influx_port, db
        self._stop = threading.Event()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-marker")
        self.c.connect("127.0.0.1", mqtt_port)
        self.c.loop_start()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._publish, self._watch)]
        for t in self._threads:
            t.start()

    def _publish(self) -> None:
        k = 0
        while not self._stop.is_set():
            ts_ms = time.time_ns() // 1_000_000
            self.sent[ts_ms * 1_000_000] = time.monotonic()
            self.c.publish(f"bench/crane/{MARKER}/data", payload(ts_ms, k), qos=1)
            k += 1
            self._stop.wait(MARKER_EVERY_S)

    def _watch(self) -> None:
        while not self._stop.is_set():
            pending = [ts for ts in list(self.sent) if ts not in self.seen]
            if pending:
                now = time.monotonic()
                for ts in _visible_ts(self._port, self._db, min(pending)):
                    if ts in self.sent and ts not in self.seen:
                        self.seen[ts] = now
            self._stop.wait(0.1)

    def latencies(self, published_from: float, published_to: float, now: float) -> list[float]:
        """Seconds from publish to visible for markers published in the window; an unseen one counts till now."""
        return [self.seen.get(ts, now) - t for ts, t in list(self.sent.items()) if published_from <= t <= published_to]

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self.c.loop_stop()
        self.c.disconnect()


def bare_visibility(port: int, db: str, n: int = 20) -> list[float]:
    """POST one point with httpx, poll the query every 0.1 s like the markers: the floor of the marker latency."""
    out = []
    with httpx.Client(timeout=5) as c:
        c.post(f"http://127.0.0.1:{port}/query", params={"q": f'CREATE DATABASE "{db}"'}).raise_for_status()
        for k in range(n):
            ts = time.time_ns()
            line = f"tower_crane,device={MARKER},site=bare slew_angle={k}.0 {ts}\n"
            t0 = time.monotonic()
            c.post(f"http://127.0.0.1:{port}/write", params={"db": db, "precision": "ns"}, content=line)
            while ts not in _visible_ts(port, db, ts) and time.monotonic() - t0 < 10:
                time.sleep(0.1)
            out.append(time.monotonic() - t0)
    return out


def run(opts: Options) -> Result:
    outage_s = 600.0 if opts.long else 60.0
    wd = common.fresh_dir(opts.workdir / NAME)
    mq = local.mosquitto(wd / "mosquitto")
    db = local.influxdb(wd / "influxdb")
    notes: list[str] = []
    details: dict[str, Any] = {"outage_s": outage_s, "offered_msg_per_s": RATE, "devices": DEVICES}
    with common.running(mq, db):
        http = local.free_port()
        marker = common.crane_devices(1, prefix="bench/crane", interval_s=MARKER_EVERY_S)[0] | {"id": MARKER}
        devices = [*common.crane_devices(DEVICES), marker]
        site = common.write_site(wd, mq.port, db.port, http, devices)
        dbname = common.database_of(site)
        pub: common.Publisher | None = None
        markers: Markers | None = None
        pstats: dict[str, float] = {}
        try:
            with common.gateway(site, http) as gw:
                gw.wait_connected()
                pub = common.Publisher(wd, mq.port, DEVICES, RATE, 24 * 3600).start()
                markers = Markers(mq.port, db.port, dbname)
                time.sleep(10)
                bare = bare_visibility(db.port, f"{dbname}_bare")
                before = markers.latencies(time.monotonic() - 8, time.monotonic() - 2, time.monotonic())
                db.stop()
                t_down = time.monotonic()
                time.sleep(outage_s)
                pending_at_restart = gw.healthz().get("spool_pending_bytes", 0)
                m_restart = gw.metrics()
                db.start()
                t_up = time.monotonic()
                t_db_seen = t_drained = None
                limit = t_up + (900 if opts.long else 300)
                while time.monotonic() < limit:
                    h = gw.healthz()
                    now = time.monotonic()
                    if t_db_seen is None and h.get("database_up"):
                        t_db_seen = now
                    if t_db_seen is not None and h.get("spool_pending_bytes", 0) < DRAINED_BYTES:
                        t_drained = now
                        break
                    time.sleep(0.2)
                time.sleep(10)  # markers published around the end of the drain need time to show up
                now = time.monotonic()
                end = t_drained if t_drained is not None else now - 10
                live = markers.latencies(t_up, end, now)
                live_after_seen = markers.latencies(t_db_seen, end, now) if t_db_seen else []
                during = markers.latencies(t_down, t_up, now)
                m_end = gw.metrics()
        finally:
            if markers is not None:
                markers.close()
            if pub is not None:
                pstats = pub.stop()
    drained_s = None if t_drained is None else t_drained - t_up
    details.update(
        {
            "publisher": pstats,
            "spool_pending_bytes_at_restart": pending_at_restart,
            "lines_spooled_before_restart": m_restart.get("sitegw_lines_spooled_total", 0),
            "lines_replayed": m_end.get("sitegw_lines_replayed_total", 0),
            "database_seen_up_after_restart_s": None if t_db_seen is None else t_db_seen - t_up,
            "drained_after_restart_s": drained_s,
            "marker_latency_before_outage_s": _summary(before),
            "marker_latency_after_restart_s": _summary(live),
            "marker_latency_after_gateway_saw_db_s": _summary(live_after_seen),
            "marker_latency_published_during_outage_s": _summary(during),
            "bare_visibility_s": _summary(bare),
            "gateway_received_msg_per_s_overall": m_end.get("sitegw_mqtt_messages_total", 0)
            / max(1.0, pstats.get("elapsed_s", 1.0)),
        }
    )
    drain_target = 180.0 * outage_s / 600.0  # 3 min for 10 min of outage, scaled to the outage measured
    worst_live = max(live) if live else None
    if drained_s is None:
        notes.append("the spool did not drain within the wait")
    elif drained_s > drain_target:
        notes.append(f"drained after {drained_s:.1f} s, {drained_s - drain_target:.1f} s over the scaled target")
    if worst_live is not None and worst_live > LIVE_LIMIT_S:
        notes.append(
            f"live readings were up to {worst_live:.1f} s behind after the restart "
            f"({worst_live - LIVE_LIMIT_S:.1f} s over {LIVE_LIMIT_S:.0f} s)"
        )
    bare_p50 = sorted(bare)[len(bare) // 2] if bare else None
    met = drained_s is not None and drained_s <= drain_target and worst_live is not None
    met = met and worst_live <= LIVE_LIMIT_S  # type: ignore[operator]
    return Result(
        name=NAME,
        figure=worst_live,
        baseline=bare_p50,
        unit="s max live lag (drain)",
        ratio=common.ratio(worst_live, bare_p50),
        target=f"drained <= {drain_target:.0f} s, live <= {LIVE_LIMIT_S:.0f} s",
        met=bool(met),
        details=details,
        notes=notes,
    )


def _summary(xs: list[float]) -> dict[str, float | int | None]:
    if not xs:
        return {"n": 0, "p50": None, "max": None}
    s = sorted(xs)
    return {"n": len(s), "p50": s[len(s) // 2], "max": s[-1]}
