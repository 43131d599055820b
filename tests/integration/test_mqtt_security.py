"""MQTT with username/password (from the environment) over TLS, against a real Mosquitto with a password file."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from drivers.mqtt.config import Tls
from gateway.app import Gateway
from services import local
from services.local import Service, rows, wait_for
from tests.sites import db_of, write_site


def make_certs(d: Path) -> None:
    """A throw-away CA and a server certificate for 127.0.0.1."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=sitegw-test-ca",
    )
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[tuple[Service, int, Path]]:
    d = tmp_path / "mq"
    d.mkdir()
    make_certs(d)
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(d / "passwd"), "gw", "s3cret-gw"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(d / "passwd"), "dev", "s3cret-dev"], check=True)
    (d / "passwd").chmod(0o644)
    plain = local.free_port()
    tls_port = local.free_port()
    svc = local.mosquitto(d, tls_port, extra="")
    # replace the anonymous listener with TLS + passwords, keep a plain authenticated one for the test device
    svc.workdir.joinpath("mosquitto.conf").write_text(
        f"per_listener_settings false\nallow_anonymous false\npassword_file {d}/passwd\npersistence false\n"
        f"log_dest stderr\nuser root\n"
        f"listener {tls_port} 127.0.0.1\ncafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n"
        f"listener {plain} 127.0.0.1\n"
    )
    svc.start()
    yield svc, plain, d
    svc.stop()


async def test_tls_and_password_from_environment(
    tmp_path: Path, secure_broker: tuple[Service, int, Path], influxdb: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc, plain, certs = secure_broker
    monkeypatch.setenv("SITEGW_TEST_MQTT_PASSWORD", "s3cret-gw")
    cfg = write_site(
        tmp_path / "site.yaml",
        influx_port=influxdb.port,
        mqtt_port=svc.port,
        devices=[{"id": "FW-S1", "profile": "formwork_mqtt_v1", "broker": "b", "topic": "site/s/formwork/+/data"}],
    )
    b = cfg.brokers[0].model_copy(
        update={"username": "gw", "password_env": "SITEGW_TEST_MQTT_PASSWORD", "tls": Tls(ca_file=certs / "ca.crt")}
    )
    cfg = cfg.model_copy(update={"brokers": [b]})
    assert "s3cret" not in (tmp_path / "site.yaml").read_text()  # the secret never sits in the YAML
    async with Gateway(cfg) as gw:
        await asyncio.wait_for(gw.sessions[0].connected.wait(), 15)
        dev = paho.Client(paho.CallbackAPIVersion.VERSION2)
        dev.username_pw_set("dev", "s3cret-dev")
        dev.connect("127.0.0.1", plain)
        dev.loop_start()
        dev.publish(
            "site/s/formwork/FW-S1/data", json.dumps({"ts": 1795224600_000, "data": {"settlement": 4.5}}), qos=1
        ).wait_for_publish(5)
        dev.loop_stop()
        dev.disconnect()
        await asyncio.to_thread(wait_for, lambda: gw.metrics.mqtt_messages >= 1, 10, what="message over TLS")
        assert await gw.flush(10)
    got = rows(influxdb.port, db_of(cfg), "SELECT settlement FROM formwork WHERE device = 'FW-S1'")
    assert [r["settlement"] for r in got] == [4.5]


async def test_wrong_password_is_refused_and_reported(
    tmp_path: Path,
    secure_broker: tuple[Service, int, Path],
    influxdb: Service,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _svc, plain, _certs = secure_broker
    monkeypatch.setenv("SITEGW_TEST_MQTT_PASSWORD", "wrong")
    cfg = write_site(
        tmp_path / "site.yaml",
        influx_port=influxdb.port,
        mqtt_port=plain,
        devices=[{"id": "FW-S2", "profile": "formwork_mqtt_v1", "broker": "b", "topic": "site/s/formwork/+/data"}],
    )
    b = cfg.brokers[0].model_copy(update={"username": "gw", "password_env": "SITEGW_TEST_MQTT_PASSWORD"})
    cfg = cfg.model_copy(update={"brokers": [b]})
    async with Gateway(cfg) as gw:
        await asyncio.to_thread(wait_for, lambda: "credentials refused" in caplog.text, 10, what="auth error logged")
        assert not gw.sessions[0].connected.is_set()
    assert "wrong" not in caplog.text  # the password itself is never logged
