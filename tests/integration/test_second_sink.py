"""A second sink (issue 16): the site's readings also go to a central VictoriaMetrics through a spool of their own.
The central database is killed: the site's own InfluxDB goes on being written, /health and /metrics say the
second sink is down; when it is back it catches up, and both databases hold exactly the same readings, the last
ones written as the gateway stops."""

from __future__ import annotations

import json
import signal
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from services import local
from services.local import Service, rows, vm_export, wait_for
from tests.gas import Detector
from tests.sites import http_up, reasons, start_gateway, write_site


def _metrics(base: str) -> str:
    with urllib.request.urlopen(base + "/metrics", timeout=3) as r:
        return r.read().decode()


def _influx_ms(port: int, db: str) -> list[int]:
    got = rows(port, db, "SELECT lel FROM gas WHERE device = 'GAS-S2'")
    return sorted(int(r["time"]) // 1_000_000 for r in got)


def _vm_ms(port: int) -> list[int]:
    series = vm_export(port, '{__name__="gas_lel",device="GAS-S2"}')
    return sorted(t for s in series for t in s["timestamps"])


REGION = Path(__file__).resolve().parents[2] / "docker" / "hub-grafana" / "dashboards" / "region.json"


def _promql(port: int, expr: str) -> list[dict[str, Any]]:
    """An instant query as Grafana's Prometheus data source sends it ($site at its "All" value); VictoriaMetrics
    answers 422 to a query it cannot parse, which fails the test."""
    q = urllib.parse.urlencode({"query": expr.replace("$site", ".*"), "time": f"{time.time():.3f}"})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?{q}", timeout=5) as r:
        doc = json.loads(r.read())
    assert doc["status"] == "success", (expr, doc)
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result


def region_dashboard_answers(port: int) -> None:
    """The region's Grafana dashboard (docker-compose.hub.yml) run against what this site's second sink wrote:
    every query parses; the gateway's and the gas panels have this site's series; the kinds it has no device of
    have none."""
    dash = json.loads(REGION.read_text(encoding="utf-8"))
    exprs = {p["title"]: p["targets"][0]["expr"] for p in dash["panels"]}
    assert len(exprs) == 7
    got = {title: _promql(port, e) for title, e in exprs.items()}
    sites = {title: {r["metric"].get("site") for r in rs} for title, rs in got.items()}
    assert sites["各工地网关 Gateways (last 5 min)"] == {"t"}
    assert float(got["各工地网关 Gateways (last 5 min)"][0]["value"][1]) == 1.0  # its one device online
    assert sites["待写入 Spool backlog by site"] == {"t"}
    assert sites["可燃气体 LEL max by site"] == {"t"}
    assert {r["metric"]["device"] for r in got["可燃气体 LEL max by site"]} == {"GAS-S2"}
    for kind in ("塔吊力矩 Load moment ratio", "基坑 Horizontal displacement", "高支模 Settlement"):
        assert got[kind] == [], kind
    var = dash["templating"]["list"][0]["query"]["query"]  # label_values(sitegw_devices_total, site)
    metric = var.split("(")[1].split(",")[0]
    assert {r["metric"]["site"] for r in _promql(port, f"last_over_time({metric}[1h])")} == {"t"}


def test_the_central_database_down_holds_back_nothing_and_catches_up_exactly(
    tmp_path: Path, mosquitto: Service, influxdb: Service
) -> None:
    vm = local.victoria_metrics(tmp_path / "vm")
    vm.start()
    http = local.free_port()
    base = f"http://127.0.0.1:{http}"
    site = tmp_path / "site.yaml"
    cfg = write_site(
        site,
        influx_port=influxdb.port,
        mqtt_port=mosquitto.port,
        http_port=http,
        devices=[{"id": "GAS-S2", "profile": "gas_4in1_mqtt_v1", "broker": "b", "topic": "site/s2/gas/+"}],
        second_sink={
            # VictoriaMetrics through the InfluxDB 1.x /write (what docker-compose.hub.yml's VictoriaMetrics takes,
            # with its basic-auth login); it has no CREATE DATABASE
            "sink": {
                "type": "influxdb_v1",
                "url": f"http://127.0.0.1:{vm.port}",
                "database": "sites",
                "create_database": False,
            },
            # its last batch still gathering when the gateway is stopped: the stop waits for it
            "spool": {"dir": "spool-central", "max_bytes": "8MiB", "segment_bytes": "1MiB", "write_linger_s": 3.0},
        },
    )
    db = cfg.sink.database  # type: ignore[union-attr]
    det = Detector(mosquitto.port, lel=3.0, sn="GAS-S2", prefix="site/s2/gas", period_s=0.1)
    log = tmp_path / "gateway.log"
    gw = start_gateway(site, log)
    try:
        wait_for(lambda: http_up(base), 30, 0.2, "the gateway's HTTP")
        det.start()
        wait_for(lambda: len(_vm_ms(vm.port)) >= 10, 30, 0.3, "readings in VictoriaMetrics")
        vm.stop()  # the central database goes away
        wait_for(lambda: "second_sink_down" in (reasons(base) or {}),
                 30, 0.3, "/health: second_sink_down")  # fmt: skip
        codes = reasons(base)
        assert codes is not None
        assert "database_down" not in codes  # the site's own database is not held back
        n = len(_influx_ms(influxdb.port, db))
        wait_for(lambda: len(_influx_ms(influxdb.port, db)) >= n + 20, 30, 0.3, "InfluxDB written meanwhile")
        metrics = _metrics(base)
        assert "sitegw_second_sink_up 0" in metrics and "sitegw_second_sink_write_failures_total 0" not in metrics
        vm.start()  # back: its spool drains by itself

        wait_for(lambda: (r := reasons(base)) is not None and "second_sink_down" not in r, 60, 0.3,
                 "/health: second sink back")  # fmt: skip
        det.close()
        time.sleep(1.0)
        gw.send_signal(signal.SIGTERM)
        gw.wait(20)

        def same() -> list[int] | None:
            a, b = _influx_ms(influxdb.port, db), _vm_ms(vm.port)
            return a if a and a == b else None

        both = wait_for(same, 30, 0.5, "the same readings in both databases")
        region_dashboard_answers(vm.port)
    finally:
        det.close()
        if gw.poll() is None:
            gw.kill()
            gw.wait()
        vm.stop()
    # the readings of before, during and after the outage, in both (the last message or two the detector sent as it
    # closed may not have left its client: the two databases agree on every one that arrived)
    assert det.published - 2 <= len(both) <= det.published and len(set(both)) == len(both)
    assert "second sink write failed" in log.read_text(encoding="utf-8")


def test_the_second_sinks_full_disk_costs_the_first_sink_nothing(
    tmp_path: Path, mosquitto: Service, influxdb: Service
) -> None:
    """The second sink's spool on a 16 KiB filesystem that fills (its database unreachable, so nothing drains):
    /health says its spool is failing, and every reading still reaches the site's own InfluxDB."""
    from tests.integration.test_state_store_faults import small_tmpfs

    http = local.free_port()
    base = f"http://127.0.0.1:{http}"
    site = tmp_path / "site.yaml"
    with small_tmpfs(tmp_path / "spool-central", "16k") as central:
        cfg = write_site(
            site,
            influx_port=influxdb.port,
            mqtt_port=mosquitto.port,
            http_port=http,
            devices=[{"id": "GAS-S3", "profile": "gas_4in1_mqtt_v1", "broker": "b", "topic": "site/s3/gas/+"}],
            second_sink={
                "sink": {"type": "influxdb_v1", "url": f"http://127.0.0.1:{local.free_port()}", "database": "sites",
                         "create_database": False},  # nobody listens there
                "spool": {"dir": str(central), "max_bytes": "8MiB", "segment_bytes": "1MiB"},
            },
        )  # fmt: skip
        db = cfg.sink.database  # type: ignore[union-attr]
        det = Detector(mosquitto.port, lel=3.0, sn="GAS-S3", prefix="site/s3/gas", period_s=0.05)
        log = tmp_path / "gateway.log"
        gw = start_gateway(site, log)
        try:
            wait_for(lambda: http_up(base), 30, 0.2, "the gateway's HTTP")
            det.start()

            def failing() -> dict[str, Any] | None:
                return (reasons(base) or {}).get("second_sink_spool_failing")

            why = wait_for(failing, 60, 0.3, "/health: second_sink_spool_failing")
            assert "No space left on device" in why["detail"]["error"]
            det.close()
            time.sleep(1.0)
            gw.send_signal(signal.SIGTERM)
            gw.wait(20)
        finally:
            det.close()
            if gw.poll() is None:
                gw.kill()
                gw.wait()
    got = wait_for(lambda: (n := len(rows(influxdb.port, db, "SELECT lel FROM gas WHERE device = 'GAS-S3'")))
                   >= det.published - 2 and n, 30, 0.5, "every reading in the site's own InfluxDB")  # fmt: skip
    assert det.published - 2 <= got <= det.published
    # the stop says what it leaves in the second sink's spool (its database down: written at the next start)
    text = log.read_text(encoding="utf-8")
    assert "second sink: " in text and "bytes left in its spool, written at the next start" in text
