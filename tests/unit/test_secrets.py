"""Secrets are read from the environment one way: a missing one is a clear error naming where it is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.config import ConfigError
from telemetry.secrets import MissingSecret, secret
from tests.sites import write_site


def test_a_secret_is_read_or_named_missing() -> None:
    env = {"SITE_PW": "s3cret", "EMPTY": ""}
    assert secret("SITE_PW", "brokers.b", env) == "s3cret"
    assert secret("EMPTY", "sink.password_env", env) == ""  # set, if empty: a password may be empty
    with pytest.raises(MissingSecret, match=r"^notify channel siren: environment variable EMPTY is not set$"):
        secret("EMPTY", "notify channel siren", env, allow_empty=False)  # a robot URL or key may not
    with pytest.raises(MissingSecret, match=r"^brokers\.b: environment variable NOPE is not set$"):
        secret("NOPE", "brokers.b", env)


def test_the_gateway_refuses_to_start_without_a_brokers_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SITEGW_T_BROKER_PW", raising=False)
    gas = {"id": "G1", "profile": "gas_4in1_mqtt_v1", "broker": "b", "topic": "g/+"}
    cfg = write_site(tmp_path / "site.yaml", influx_port=18086, mqtt_port=1883, devices=[gas])
    broker = cfg.brokers[0].model_copy(update={"username": "gw", "password_env": "SITEGW_T_BROKER_PW"})
    cfg = cfg.model_copy(update={"brokers": [broker]})
    with pytest.raises(ConfigError, match=r"brokers\.b: environment variable SITEGW_T_BROKER_PW is not set"):
        Gateway(cfg, fsync=False)
    monkeypatch.setenv("SITEGW_T_BROKER_PW", "pw")
    assert Gateway(cfg, fsync=False).sessions[0].p.password == "pw"
