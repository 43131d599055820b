"""MQTT ingest: 10-field JSON from 200 devices through `sitegw run` into InfluxDB, beside a bare paho subscriber."""

from __future__ import annotations

import time

from bench import common
from bench.common import Options, Result
from bench.publisher import FIELDS_PER_MESSAGE
from services import local

NAME = "mqtt_ingest"
DEVICES = 200
CATCH_UP_S = 60.0  # how long to wait, after publishing, for the gateway to have everything in the database
WARMUP_S = 3.0  # left out of the sustained rate: connection set-up, first allocations, caches


def run(opts: Options) -> Result:
    duration = 60.0 if opts.long else 20.0
    wd = common.fresh_dir(opts.workdir / NAME)
    mq = local.mosquitto(wd / "mosquitto")
    db = local.influxdb(wd / "influxdb")
    details: dict[str, object] = {"devices": DEVICES, "fields_per_message": FIELDS_PER_MESSAGE, "duration_s": duration}
    notes: list[str] = []
    with common.running(mq, db):
        # 1. the ceiling: a bare paho subscriber (QoS 1, acknowledged by paho at once, nothing decoded)
        bare = common.Counter(mq.port, "bench/crane/+/data", "bench-bare")
        try:
            pub = common.Publisher(wd, mq.port, DEVICES, 0, duration).start()
            t_start = time.monotonic()
            publishing = pub.proc
            assert publishing is not None
            samples = common.sample(lambda: float(bare.n), lambda _n: publishing.poll() is None, 0.5)
            pstats = pub.wait()
        finally:
            bare.close()
        bare_rate = common.rate_between(samples, t_start + WARMUP_S, samples[-1][0])
        details["bare"] = {"messages_per_s": bare_rate, "publisher": pstats}

        # 2. the gateway: the same publisher, against `sitegw run` with InfluxDB 1.6.7 as its sink
        http = local.free_port()
        site = common.write_site(wd, mq.port, db.port, http, common.crane_devices(DEVICES))
        with common.gateway(site, http) as gw:
            gw.wait_connected()
            pub = common.Publisher(wd, mq.port, DEVICES, 0, duration).start()
            t_start = time.monotonic()
            series: list[tuple[float, dict[str, float]]] = []
            assert pub.proc is not None
            while pub.proc.poll() is None:
                series.append((time.monotonic(), gw.metrics()))
                time.sleep(1.0)
            t_end = time.monotonic()
            pstats = pub.wait()
            series.append((t_end, gw.metrics()))

            def counter(name: str) -> list[tuple[float, float]]:
                return [(t, m.get(name, 0.0)) for t, m in series]

            msg_rate = common.rate_between(counter("sitegw_mqtt_messages_total"), t_start + WARMUP_S, t_end)
            rd_rate = common.rate_between(counter("sitegw_readings_total"), t_start + WARMUP_S, t_end)
            written_rate = common.rate_between(counter("sitegw_lines_written_total"), t_start + WARMUP_S, t_end)
            # then: how long until everything published is in the database (the broker queued what we were behind)
            published = pstats.get("published", 0)
            try:
                local.wait_for(
                    lambda: (
                        (m := gw.metrics()).get("sitegw_mqtt_messages_total", 0) >= published
                        and m.get("sitegw_spool_pending_bytes", 1) == 0
                    ),
                    CATCH_UP_S,
                    0.5,
                    "the gateway to catch up",
                )
                caught_up = time.monotonic()
                details["all_in_database_after_publisher_stopped_s"] = caught_up - t_end
                details["end_to_end_messages_per_s"] = published / (caught_up - t_start)
            except AssertionError:
                m = gw.metrics()
                notes.append(
                    f"not all in the database {CATCH_UP_S:.0f} s after the publisher stopped: "
                    f"{m.get('sitegw_mqtt_messages_total', 0):.0f} of {published} messages received"
                )
            final = gw.metrics()
        details["gateway"] = {
            "messages_per_s": msg_rate,
            "readings_per_s": rd_rate,
            "lines_written_per_s": written_rate,
            "publisher": pstats,
            "final_metrics": {
                k: v
                for k, v in final.items()
                if k.startswith(("sitegw_mqtt", "sitegw_lines", "sitegw_read", "sitegw_write", "sitegw_dead"))
            },
        }
        if bare_rate is not None and pstats.get("elapsed_s"):
            pub_rate = pstats["published"] / pstats["elapsed_s"]
            if bare_rate > 0.95 * pub_rate:
                notes.append(
                    f"the bare subscriber kept up with the publisher ({pub_rate:.0f} msg/s): the baseline is the "
                    "publisher's rate, so the true ceiling is higher and the ratio flatters the gateway"
                )
    r = common.ratio(msg_rate, bare_rate)
    return Result(
        name=NAME,
        figure=msg_rate,
        baseline=bare_rate,
        unit="messages/s",
        ratio=r,
        target=">= 0.80 of bare paho",
        met=None if r is None else r >= 0.8,
        details=details,
        notes=notes,
    )
