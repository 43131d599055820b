"""One bad line never takes the gateway down: a serial port that refuses its settings beside a healthy TCP crane.

The fault is real: a socat pty refuses parity E (termios EINVAL), which is what pyserial meets on a USB adapter
that cannot do the line's settings.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.config import SiteConfig
from gateway.selfmon import health_report
from services import local
from services.local import Service, rows, wait_for
from simulators.runner import SiteSimulator
from tests.sites import db_of, write_site


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[Path]:
    link = tmp_path / "ttyRS485"
    proc = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={link}", f"pty,raw,echo=0,link={tmp_path / 'ttyPeer'}"],
        stderr=subprocess.DEVNULL,
    )
    wait_for(link.exists, 5, what="the pty")
    yield link
    proc.terminate()
    proc.wait(5)


def _crane_sim(tmp_path: Path, tcp: int) -> SiteSimulator:
    """The simulator of the crane alone (the serial lines have no device behind them)."""
    (tmp_path / "sim").mkdir()
    cfg = write_site(
        tmp_path / "sim" / "site.yaml",
        influx_port=1,
        lines=[{"id": "crane", "type": "modbus_tcp", "host": "127.0.0.1", "port": tcp}],
        devices=[{"id": "TC-01", "profile": "tower_crane_tcp_v1", "line": "crane", "unit_id": 1}],
    )
    return SiteSimulator(cfg, scenario="static")


def _site(tmp_path: Path, pty: Path, tcp: int, influx_port: int = 1) -> SiteConfig:
    return write_site(
        tmp_path / "site.yaml",
        influx_port=influx_port,
        lines=[
            {"id": "crane", "type": "modbus_tcp", "host": "127.0.0.1", "port": tcp},
            {"id": "pit-bus", "type": "modbus_rtu", "port": str(pty), "baudrate": 9600, "parity": "E"},
            {"id": "nowhere", "type": "modbus_rtu", "port": str(tmp_path / "ttyUSB9")},
        ],
        devices=[
            {"id": "TC-01", "profile": "tower_crane_tcp_v1", "line": "crane", "unit_id": 1, "poll_interval_s": 0.5,
             "timeout_s": 0.3},
            {"id": "PIT-D01", "profile": "excavation_displacement_rtu_v1", "line": "pit-bus", "unit_id": 1,
             "poll_interval_s": 0.5, "timeout_s": 0.3},
            {"id": "PIT-D02", "profile": "excavation_displacement_rtu_v1", "line": "nowhere", "unit_id": 2},
        ],
    )  # fmt: skip


async def test_once_prints_the_crane_and_why_the_serial_lines_failed(tmp_path: Path, pty: Path) -> None:
    tcp = local.free_port()
    _site(tmp_path, pty, tcp)
    async with _crane_sim(tmp_path, tcp) as sim:
        sim.set_values("TC-01", {"wind_speed": 9.87})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "once", str(tmp_path / "site.yaml"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 1, err.decode()
    assert "Traceback" not in text + err.decode()
    assert "wind_speed" in text and "9.87" in text  # the crane on its own line was read
    failed = {ln.split(" ")[0]: ln for ln in text.splitlines() if "FAILED" in ln}
    assert "parity E" in failed["PIT-D01"] and "not supported by this port" in failed["PIT-D01"]
    assert "no such file" in failed["PIT-D02"]


async def test_run_keeps_the_crane_flowing_while_a_line_is_refused(
    tmp_path: Path, pty: Path, influxdb: Service
) -> None:
    tcp = local.free_port()
    cfg = _site(tmp_path, pty, tcp, influxdb.port)
    async with _crane_sim(tmp_path, tcp), Gateway(cfg) as gw:
        # polls_total counts a poll when it starts, and a line polls its device one poll after another: the 9th
        # started means 8 have answered and handed their readings over (at 8 started, the 8th could be in flight)
        await asyncio.to_thread(wait_for, lambda: gw.metrics.polls["TC-01"] >= 9, 20, what="8 crane polls answered")
        await asyncio.to_thread(
            wait_for, lambda: gw.metrics.up.get("PIT-D01") == 0 and gw.metrics.up.get("PIT-D02") == 0, 20,
            what="the serial devices marked down",
        )  # fmt: skip
        assert gw.metrics.line_failures["pit-bus"] >= 2  # retried, with backoff
        assert "parity E" in gw.metrics.lines_down["pit-bus"]
        assert "no such file" in gw.metrics.lines_down["nowhere"]
        assert gw.metrics.up["TC-01"] == 1 and gw.metrics.poll_failures["TC-01"] == 0
        _code, health = health_report(gw)
        reasons = {r["code"]: r for r in health["reasons"]}
        assert health["status"] == "degraded" and "parity E" in reasons["lines_down"]["en"]
        assert all(not t.done() for t in gw._owned)  # every task, the refused lines' owners included, still runs
        assert await gw.flush(20)
    n = rows(influxdb.port, db_of(cfg), "SELECT count(wind_speed) FROM tower_crane WHERE device = 'TC-01'")
    assert n[0]["count"] >= 8
