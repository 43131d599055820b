"""Alarm latency: a gas detector's MQTT publish crossing 25 %LEL (and back) to the siren message on the broker, through
`sitegw run` under background load, beside the bare MQTT publish -> receive latency on the same broker."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench import common
from bench.common import Options, Result
from bench.publisher import FIELDS_PER_MESSAGE
from services import local

NAME = "alarm_latency"
BG_DEVICES = 200
BG_RATE = 1000.0  # messages/s x 10 fields = the 10k readings/s the brief asks for
# Alarms rotate over the detectors, one detector per two alarms: two raises each stay under the chatter rule (3 raises
# in 60 s), whose re-raises notify nobody (a fixed 25 made --long's 200 alarms chatter and wait out WAIT_S each)
ALARMS_PER_DETECTOR = 2
WAIT_S = 15.0  # per message; a slower one counts as lost


def gas_devices(detectors: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"GAS-{i:02d}",
            "profile": "gas_4in1_mqtt_v1",
            "broker": "b",
            "topic": "bench/gas/+",
            "match": f"SN-{i:02d}",
            "expected_interval_s": 600,  # they speak only when the benchmark makes them: never stale
        }
        for i in range(detectors)
    ]


ESCALATION = {
    "people": [{"id": "zhang", "name": "张安全", "title": "安全员"}],
    "duty": [{"role": "safety_officer", "people": ["zhang"]}],
    "channels": [{"id": "siren", "type": "mqtt", "broker": "b", "topic": "bench/siren"}],
    "policies": [
        {
            "id": "gas",
            "match": {"rules": ["gas.lel"]},
            "tiers": [{"after_s": 0, "roles": ["safety_officer"], "channels": ["siren"]}],
        }
    ],
    "group_window_s": 0,  # every alarm its own message: digests would hold messages back by design
}


def gas_message(i: int, lel: float) -> bytes:
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    readings = [("EX", lel, "%LEL"), ("O2", 20.9, "%VOL"), ("H2S", 0.0, "ppm"), ("CO", 0.0, "ppm")]
    doc = {
        "sn": f"SN-{i:02d}",
        "time": now,
        "readings": [{"gas": g, "value": v, "unit": u} for g, v, u in readings],
        "status": {"fault": 0, "cal": 0},
    }
    return json.dumps(doc).encode()


def _stats(xs: list[float]) -> dict[str, float | int | None]:
    if not xs:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "n": len(xs),
        "p50_ms": common.percentile(xs, 50),
        "p99_ms": common.percentile(xs, 99),
        "max_ms": max(xs),
    }


def run(opts: Options) -> Result:
    # A nearest-rank p99 of 100 samples (50 alarms) was the largest one, and the bare p99 of 50 its largest: the
    # verdict was one stall's on a 2-core machine. 200 alarms: the p99 of 400 leaves the 4 largest out, the bare
    # one of 200 the 2 largest (the maximum is reported beside it)
    n_alarms = 500 if opts.long else 200
    detectors = n_alarms // ALARMS_PER_DETECTOR
    wd = common.fresh_dir(opts.workdir / NAME)
    mq = local.mosquitto(wd / "mosquitto")
    db = local.influxdb(wd / "influxdb")
    notes: list[str] = []
    details: dict[str, Any] = {"alarms": n_alarms, "detectors": detectors}
    with common.running(mq, db):
        http = local.free_port()
        devices = common.crane_devices(BG_DEVICES, interval_s=10.0) + gas_devices(detectors)
        site = common.write_site(wd, mq.port, db.port, http, devices, escalation=ESCALATION)
        siren = common.Counter(mq.port, "bench/siren", "bench-siren", keep=True)
        echo = common.Counter(mq.port, "bench/echo", "bench-echo", keep=True)
        pubc = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-alarm-pub")
        pubc.connect("127.0.0.1", mq.port)
        pubc.loop_start()
        bg: common.Publisher | None = None
        try:
            with common.gateway(site, http) as gw:
                gw.wait_connected()
                # 1. can the gateway carry the background load? Offer it for 8 s and see what it takes in.
                offered = common.ALARM_LOAD or BG_RATE
                calib = common.Publisher(wd, mq.port, BG_DEVICES, offered, 8).start()
                samples = []
                assert calib.proc is not None
                while calib.proc.poll() is None:
                    samples.append((time.monotonic(), gw.metrics().get("sitegw_mqtt_messages_total", 0.0)))
                    time.sleep(0.5)
                cstats = calib.wait()
                taken = common.rate_between(samples, samples[0][0] + 3, samples[-1][0]) or 0.0
                details["calibration"] = {"offered_msg_per_s": offered, "taken_msg_per_s": taken}
                bg_rate = offered
                if taken < 0.9 * offered:
                    # a load the gateway cannot carry measures the broker's queue, not alarm latency
                    bg_rate = max(10.0, round(0.7 * taken))
                    notes.append(
                        f"the gateway took in only {taken:.0f} of {offered:.0f} msg/s offered; alarms measured under "
                        f"{bg_rate:.0f} msg/s (70 % of that) instead of the 10k readings/s aimed at"
                    )
                    published = cstats.get("published", 0)
                    try:
                        local.wait_for(
                            lambda: gw.metrics().get("sitegw_mqtt_messages_total", 0) >= published,
                            120,
                            0.5,
                            "the calibration backlog",
                        )
                    except AssertionError:
                        notes.append("the calibration backlog was not worked off within 120 s")
                bg = common.Publisher(wd, mq.port, BG_DEVICES, bg_rate, 3600).start()
                time.sleep(3)
                m0, t0 = gw.metrics(), time.monotonic()

                # 2. alarms: raise (30 %LEL), then clear (5 %LEL), on a rotating detector; before each pair, the bare
                # publish -> receive on the same broker. Taken in turns, both meet the same moments of the machine: bare
                # first, then the alarms, a burst of noise on this 2-core box fell on one and set the verdict (the bare
                # p99 ranged from 0.8 to 7.9 ms between runs on 2026-12-06)
                bare: list[float] = []
                raise_ms: list[float] = []
                clear_ms: list[float] = []
                # each alarm's latency in order, None where its siren message was not seen (placing outliers)
                in_order: dict[str, list[float | None]] = {"raise_ms": [], "clear_ms": []}
                lost = 0
                seen = 0
                for k in range(n_alarms):
                    t = time.perf_counter()
                    pubc.publish("bench/echo", b"%d" % k, qos=1)
                    echoed = echo.next_kept(k, WAIT_S)
                    if echoed is not None:
                        bare.append((echoed[0] - t) * 1000)
                    time.sleep(0.05)
                    det = k % detectors
                    for lel, into, key in ((30.0, raise_ms, "raise_ms"), (5.0, clear_ms, "clear_ms")):
                        t = time.perf_counter()
                        pubc.publish(f"bench/gas/SN-{det:02d}", gas_message(det, lel), qos=1)
                        got = siren.next_kept(seen, WAIT_S)
                        if got is None:
                            lost += 1
                            in_order[key].append(None)
                            continue
                        seen += 1
                        data = json.loads(got[1]).get("data", {})
                        if data.get("device") not in (None, f"GAS-{det:02d}"):
                            notes.append(f"siren message for {data.get('device')} while waiting for GAS-{det:02d}")
                        into.append((got[0] - t) * 1000)
                        in_order[key].append(round(into[-1], 2))
                        time.sleep(0.1)
                m1, t1 = gw.metrics(), time.monotonic()
                bg_stats = bg.stop()
                bg = None
        finally:
            if bg is not None:
                bg.stop()
            pubc.loop_stop()
            pubc.disconnect()
            siren.close()
            echo.close()
    readings_rate = (m1.get("sitegw_readings_total", 0) - m0.get("sitegw_readings_total", 0)) / (t1 - t0)
    msgs_rate = (m1.get("sitegw_mqtt_messages_total", 0) - m0.get("sitegw_mqtt_messages_total", 0)) / (t1 - t0)
    all_ms = raise_ms + clear_ms
    details.update(
        {
            "background": {
                "offered_msg_per_s": bg_rate,
                "received_msg_per_s": msgs_rate,
                "readings_per_s": readings_rate,
                "fields_per_message": FIELDS_PER_MESSAGE,
                "publisher": bg_stats,
            },
            "bare": _stats(bare),
            "raise": _stats(raise_ms),
            "clear": _stats(clear_ms),
            "all": _stats(all_ms),
            "lost": lost,
            **in_order,
        }
    )
    if lost:
        notes.append(f"{lost} siren message(s) not seen within {WAIT_S:.0f} s (left out of the percentiles)")
    p99 = common.percentile(all_ms, 99) if all_ms else None
    bare99 = common.percentile(bare, 99) if bare else None
    met = None if p99 is None or bare99 is None else p99 <= 3 * bare99 + 5
    if met is False and p99 is not None and bare99 is not None:
        notes.append(f"p99 {p99:.1f} ms is {p99 - (3 * bare99 + 5):.1f} ms over the target {3 * bare99 + 5:.1f} ms")
    return Result(
        name=NAME,
        figure=p99,
        baseline=bare99,
        unit="ms p99 publish->siren",
        ratio=common.ratio(p99, bare99),
        target="p99 <= 3 x bare p99 + 5 ms",
        met=met,
        details=details,
        notes=notes,
    )
