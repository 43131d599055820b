"""`kill -9` of the gateway mid-stream, with the database down: everything in the spool survives the restart, and
every message the device published reaches the database (MQTT messages are acknowledged only once spooled)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as paho

from services import local
from services.local import Service, rows, wait_for
from tests.sites import db_of, write_site

ROOT = Path(__file__).resolve().parents[2]


def start_gateway(site: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", str(site)], stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT
        )


def health(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
        return dict(json.loads(r.read()))


def spooled_points(spool: Path) -> set[tuple[int, float]]:
    """(timestamp, settlement) of every line the spool still owes the database, read from its files."""
    acked = json.loads((spool / "acked.json").read_text()) if (spool / "acked.json").exists() else {}
    out = set()
    for f in sorted(spool.glob("seg-*.lp")):
        data = f.read_bytes()[acked.get(str(int(f.stem[4:])), 0) :]
        for line in data.decode().splitlines():
            fields, ts = line.rsplit(" ", 2)[1:]
            kv = dict(x.split("=", 1) for x in fields.split(","))
            if "settlement" in kv:
                out.add((int(ts), float(kv["settlement"])))
    return out


def test_kill9_keeps_the_spool(tmp_path: Path, mosquitto: Service, own_influx: Service) -> None:
    http_port = local.free_port()
    site = tmp_path / "site.yaml"
    cfg = write_site(
        site,
        influx_port=own_influx.port,
        mqtt_port=mosquitto.port,
        http_port=http_port,
        devices=[{"id": "FW-K9", "profile": "formwork_mqtt_v1", "broker": "b", "topic": "site/k9/formwork/+/data"}],
    )
    log = tmp_path / "gateway.log"
    gw = start_gateway(site, log)
    stop = threading.Event()
    sent = [0]

    def publish() -> None:
        c = paho.Client(paho.CallbackAPIVersion.VERSION2)
        c.connect("127.0.0.1", mosquitto.port)
        c.loop_start()
        i = 0
        while not stop.is_set():
            c.publish(
                "site/k9/formwork/FW-K9/data",
                json.dumps({"ts": 1795224600_000 + i, "data": {"settlement": i / 100}}),
                qos=1,
            ).wait_for_publish(5)
            i += 1
            sent[0] = i
            time.sleep(0.002)
        c.loop_stop()
        c.disconnect()

    pub = threading.Thread(target=publish, name="publisher")
    try:
        wait_for(lambda: health(http_port)["database_up"], 20, what="gateway up")
        pub.start()
        wait_for(lambda: sent[0] > 200, 20, what="stream started")
        own_influx.kill()  # database down: readings pile up in the spool
        wait_for(
            lambda: int(health(http_port)["spool_pending_bytes"]) > 20_000,
            30,  # type: ignore[call-overload]
            what="spool filling",
        )
        os.kill(gw.pid, 9)  # kill -9 the gateway mid-stream
        gw.wait()
        stop.set()
        pub.join()
        owed = spooled_points(cfg.spool.dir)
        assert len(owed) > 100
        own_influx.start()
        gw = start_gateway(site, log)
        wait_for(
            lambda: health(http_port)["database_up"] and health(http_port)["spool_pending_bytes"] == 0,
            60,
            what="spool drained after restart",
        )
        got = {
            (int(r["time"]), float(r["settlement"]))
            for r in rows(own_influx.port, db_of(cfg), "SELECT settlement FROM formwork")
        }
        missing = owed - got
        assert not missing, f"{len(missing)} of {len(owed)} spooled readings lost, e.g. {sorted(missing)[:3]}"
        # and end to end: every message the broker accepted from the device, including those in flight to the
        # gateway when it died (acknowledged to the broker only once spooled, so delivered again)
        published = {((1795224600_000 + i) * 1_000_000, i / 100) for i in range(sent[0])}

        def all_in() -> bool:
            have = {
                (int(r["time"]), float(r["settlement"]))
                for r in rows(own_influx.port, db_of(cfg), "SELECT settlement FROM formwork")
            }
            return published <= have

        wait_for(all_in, 30, what=f"all {sent[0]} published messages in InfluxDB")
        assert "from before the restart, to be replayed" in log.read_text()
    finally:
        stop.set()
        if gw.poll() is None:
            gw.terminate()
            gw.wait(10)


def test_sitegw_run_collects_its_youngest_garbage_less_often_and_says_so(
    tmp_path: Path, mosquitto: Service, own_influx: Service
) -> None:
    """`sitegw run` raises the collector's first threshold (gateway/cli.py GC_YOUNG): at Python's 700, readings held
    ~100 ms for their fsync were promoted to the oldest generation, whose full pass stopped the event loop ~6 ms
    every 5-7 s at 1 000 msg/s. /metrics shows the thresholds and the collections of each generation."""
    http_port = local.free_port()
    site = tmp_path / "site.yaml"
    write_site(site, influx_port=own_influx.port, mqtt_port=mosquitto.port, http_port=http_port, devices=[
        {"id": "FW-GC", "profile": "formwork_mqtt_v1", "broker": "b", "topic": "site/gc/formwork/+/data"}
    ])  # fmt: skip
    gw = start_gateway(site, tmp_path / "gateway.log")
    try:
        wait_for(lambda: _up(http_port), 30, 0.2, "the gateway's HTTP")
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert 'sitegw_gc_threshold{generation="0"} 10000' in metrics  # Python's own default is 700
        assert 'python_gc_collections_total{generation="2"}' in metrics
    finally:
        gw.terminate()
        gw.wait(20)


def _up(port: int) -> bool:
    try:
        return health(port) is not None
    except OSError:
        return False
