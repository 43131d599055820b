"""MQTT drain: how fast `sitegw run` takes in a backlog the broker queued while it was away, beside a bare paho client.

The flat-out `mqtt_ingest` runs the publisher beside the subscriber; on a slow 2-core machine the publisher is the
limit and the bare subscriber just keeps up with it, so the ratio measures the publisher. Here the broker holds the
same backlog (one flat-out publish) for two persistent sessions, the bare client's and the gateway's, and each then
takes it in alone: nothing else runs but the broker (and InfluxDB for the gateway), which is also what a site sees
when a gateway comes back after a restart or an outage. The bare client runs as fast as paho goes here: MQTT 3.1.1
(on MQTT 5 with the gateway's window of 1 000 it took in 11-15k msg/s, on 3.1.1 18-27k, 2026-12-07).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench import common
from bench.common import Options, Result
from bench.publisher import FIELDS_PER_MESSAGE
from services import local

NAME = "mqtt_drain"
DEVICES = 200
TOPIC = "bench/crane/+/data"
BARE_ID = "bench-drain-bare"
WARMUP_S = 1.0  # left out of the rate: connecting, the first burst, the first allocations
SAMPLE_S = 0.5
DRAIN_LIMIT_S = 180.0  # a subject that has not taken in the backlog by then is reported, not waited for
CATCH_UP_S = 60.0  # after the last message is taken in, how long the gateway may take to have it all in InfluxDB


def _window(samples: list[tuple[float, float]], total: float) -> tuple[float, float] | None:
    """From WARMUP_S after the first message to the last sample before the backlog's tail (98 %): the steady part."""
    started = [t for t, n in samples if n > 0]
    if not started:
        return None
    inside = [t for t, n in samples if n < 0.98 * total]
    return started[0] + WARMUP_S, inside[-1] if inside else samples[-1][0]


def _drain_rate(samples: list[tuple[float, float]], total: float) -> float | None:
    w = _window(samples, total)
    return None if w is None else common.rate_between(samples, *w)


def _sample(read: Callable[[], float], total: float) -> list[tuple[float, float]]:
    """Until the whole backlog is taken in, or DRAIN_LIMIT_S has passed."""
    deadline = time.monotonic() + DRAIN_LIMIT_S
    return common.sample(read, lambda n: n < total and time.monotonic() < deadline, SAMPLE_S)


def run(opts: Options) -> Result:
    publish_s = 60.0 if opts.long else 20.0
    wd = common.fresh_dir(opts.workdir / NAME)
    mq = local.mosquitto(wd / "mosquitto")
    db = local.influxdb(wd / "influxdb")
    details: dict[str, object] = {"devices": DEVICES, "fields_per_message": FIELDS_PER_MESSAGE, "publish_s": publish_s}
    notes: list[str] = []
    rate: float | None = None
    bare_rate: float | None = None
    with common.running(mq, db):
        # 1. both sessions subscribe, then go away: the broker queues what follows for each
        common.Counter(mq.port, TOPIC, BARE_ID, persistent=True).close()
        http = local.free_port()
        site = common.write_site(wd, mq.port, db.port, http, common.crane_devices(DEVICES))
        gw = common.GatewayProc(site, http)
        gw.start()
        try:
            gw.wait_connected()
        finally:
            gw.stop()
        pstats = common.Publisher(wd, mq.port, DEVICES, 0, publish_s).start().wait()
        total = float(pstats.get("published", 0))
        details["backlog_messages"] = total
        details["publisher"] = pstats

        # 2. the bare client comes back and takes in its backlog
        bare = common.Counter(mq.port, TOPIC, BARE_ID, persistent=True)
        try:
            samples = _sample(lambda: float(bare.n), total)
        finally:
            bare.close()
        bare_rate = _drain_rate(samples, total)
        bare_d = {"messages_per_s": bare_rate, "taken": samples[-1][1], "seconds": samples[-1][0] - samples[0][0]}
        details["bare"] = bare_d

        # 3. the gateway comes back (its session, its spool) and takes in the same backlog into InfluxDB
        gw.start()
        try:
            series: list[tuple[float, dict[str, float]]] = []
            rss: list[float] = []

            def taken() -> float:
                series.append((time.monotonic(), gw.metrics()))
                rss.append(common.rss_mb(gw.pid) or 0.0)
                return series[-1][1].get("sitegw_mqtt_messages_total", 0.0)

            samples = _sample(taken, total)
            w = _window(samples, total)
            rate = None if w is None else common.rate_between(samples, *w)
            t_taken = samples[-1][0]
            try:
                local.wait_for(
                    lambda: gw.metrics().get("sitegw_spool_pending_bytes", 1) == 0, CATCH_UP_S, 0.5, "the spool"
                )
                t_stored = time.monotonic()
                details["all_in_database_after_taken_s"] = t_stored - t_taken
                t_first = next((t for t, n in samples if n > 0), samples[0][0])
                details["end_to_end_messages_per_s"] = total / (t_stored - t_first)  # first taken in -> all stored
            except AssertionError:
                notes.append(f"the spool still held lines {CATCH_UP_S:.0f} s after the backlog was taken in")
            final = gw.metrics()
        finally:
            gw.stop()
        readings = [(t, m.get("sitegw_readings_total", 0.0)) for t, m in series]  # (over the messages' window)
        gw_d = {
            "messages_per_s": rate,
            "taken": samples[-1][1],
            "seconds": samples[-1][0] - samples[0][0],
            "readings_per_s": None if w is None else common.rate_between(readings, *w),
            "readings": readings[-1][1],
        }
        details["gateway"] = gw_d
        # received (decoded and handed over) against spooled: what the gateway held in memory at once
        ahead = [m.get("sitegw_mqtt_messages_total", 0.0) - m.get("sitegw_lines_spooled_total", 0.0) for _, m in series]
        gw_d["most_messages_ahead_of_the_spool"] = max(ahead, default=0.0)
        gw_d["rss_mb_max"] = max(rss, default=0.0)
        details["gateway_final_metrics"] = {
            k: v for k, v in final.items() if k.startswith(("sitegw_mqtt", "sitegw_lines", "sitegw_dead"))
        }
        for who, got in (("bare client", bare_d), ("gateway", gw_d)):
            if (got["taken"] or 0.0) < total:
                notes.append(f"the {who} took in {got['taken']:.0f} of {total:.0f} messages")
    r = common.ratio(rate, bare_rate)
    return Result(
        name=NAME,
        figure=rate,
        baseline=bare_rate,
        unit="messages/s",
        ratio=r,
        target=">= 0.80 of bare paho",
        met=None if r is None else r >= 0.8,
        details=details,
        notes=notes,
    )
