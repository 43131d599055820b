"""`sitegw once`: polls every Modbus device and waits for one message per MQTT device, against the simulators."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from drivers.mqtt.session import MqttSession
from gateway.cli import _once
from services import local
from services.local import Service
from simulators.runner import SiteSimulator
from tests.sites import write_site


async def test_once_prints_every_device(tmp_path: Path, mosquitto: Service) -> None:
    tcp = local.free_port()
    cfg = write_site(
        tmp_path / "site.yaml",
        influx_port=1,
        mqtt_port=mosquitto.port,
        lines=[
            {"id": "crane", "type": "modbus_tcp", "host": "127.0.0.1", "port": tcp},
            {"id": "ghost", "type": "modbus_tcp", "host": "127.0.0.1", "port": local.free_port()},
        ],
        devices=[
            {"id": "TC-01", "profile": "tower_crane_tcp_v1", "line": "crane", "unit_id": 1},
            {"id": "TC-09", "profile": "tower_crane_tcp_v1", "line": "ghost", "unit_id": 1},
            {
                "id": "GAS-01",
                "profile": "gas_4in1_mqtt_v1",
                "broker": "b",
                "topic": "site/t/gas/+",
                "match": "SN1",
                "expected_interval_s": 0.5,
            },
        ],
    )
    async with SiteSimulator(cfg, scenario="static") as sim:
        await sim.set_fault("TC-09", "offline")  # its listener closes: connection refused
        sim.set_values("TC-01", {"wind_speed": 9.87, "load": 1.25})
        sim.set_values("GAS-01", {"lel": 7.5})
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            "once",
            str(tmp_path / "site.yaml"),
            "--timeout",
            "5",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 1, err.decode()  # TC-09 has no device behind it
    lines = {ln.split()[0]: ln.split() for ln in text.splitlines() if ln.startswith("  ")}
    assert lines["wind_speed"][1:3] == ["9.87", "m/s"]
    assert lines["load"][1:3] == ["1.25", "t"]
    assert lines["lel"][1:3] == ["7.5", "%LEL"]
    assert "TC-09 (): FAILED:" in text


async def test_once_says_why_a_broker_cannot_be_reached(tmp_path: Path) -> None:
    # a CA file that exists but holds no certificate (a real ssl failure, not a broker's refusal): the device is
    # reported silent and the log says why the session could not connect
    (tmp_path / "ca.crt").write_text("not a certificate\n", encoding="utf-8")
    gas = {"id": "GAS-01", "profile": "gas_4in1_mqtt_v1", "broker": "b", "topic": "site/t/gas/+"}
    write_site(tmp_path / "site.yaml", influx_port=1, mqtt_port=local.free_port(), devices=[gas])
    doc = yaml.safe_load((tmp_path / "site.yaml").read_text(encoding="utf-8"))
    doc["brokers"][0]["tls"] = {"ca_file": str(tmp_path / "ca.crt")}
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "once", str(tmp_path / "site.yaml"), "--timeout", "2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 1
    assert "GAS-01 (): FAILED: no message within 2 s" in out.decode()
    assert "NO_CERTIFICATE_OR_CRL_FOUND" in err.decode()


async def test_once_charges_a_failed_session_to_its_devices_rather_than_calling_it_silence(
    tmp_path: Path,
    mosquitto: Service,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a bug in a session (an error that is no broker's): `once` owns its tasks, so it must say so, not report silence
    async def broken(self: MqttSession, on_connected: Callable[[], None]) -> None:
        raise RuntimeError("a bug in the session")

    monkeypatch.setattr(MqttSession, "stream", broken)
    gas = {"id": "GAS-01", "profile": "gas_4in1_mqtt_v1", "broker": "b", "topic": "site/t/gas/+"}
    cfg = write_site(tmp_path / "site.yaml", influx_port=1, mqtt_port=mosquitto.port, devices=[gas])
    assert await _once(cfg, 1.0) == 1
    assert "GAS-01 (): FAILED: MQTT session failed: RuntimeError: a bug in the session" in capsys.readouterr().out
    assert "broker b: the MQTT session failed" in caplog.text
