"""bench/mqtt_sweep.py's `sitegw[key=value;...]` subjects (review of the seventeenth session): every run of a
subject gets a gateway of its own, as the plain `sitegw` does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest

from bench import common, mqtt_sweep
from gateway.config import load_config


def test_each_run_of_a_subject_with_settings_has_its_own_mqtt_session_and_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The gateway keeps its MQTT session (clean_start false, 7-day expiry) and the bench's Mosquitto queues up to
    # 1 000 000 QoS 1 messages for it: a run that reuses an earlier run's client id gets every message published
    # during the other subjects' runs as a backlog, and one that reuses its database counts that run's readings.
    # tests/sites.py cuts client_id and database at 60 characters, and the sweep names a run's folder
    # `<subject>-<rate>-<round>`: with bench/common.py broker_settings' own example subject the rate and round are cut
    # off. (A plain `sitegw` run: sitegw-test-sitegw-1000-0.)
    seen: list[tuple[str, str]] = []

    @contextmanager
    def fake_sitegw(wd: Path, mq: Any, db: Any, broker: dict[str, Any] | None = None) -> Iterator[Any]:
        site = common.write_site(wd, 1883, 8086, 8080, common.crane_devices(2), broker=broker)
        cfg = load_config(site)
        seen.append((cfg.brokers[0].client_id or "", common.database_of(site)))
        yield None

    monkeypatch.setattr(common, "RUN_DIR", tmp_path)
    monkeypatch.setattr(mqtt_sweep.local, "mosquitto", lambda wd: None)
    monkeypatch.setattr(mqtt_sweep.local, "influxdb", lambda wd: None)
    monkeypatch.setattr(mqtt_sweep.common, "running", lambda *s: nullcontext())
    monkeypatch.setattr(mqtt_sweep, "sitegw", fake_sitegw)
    monkeypatch.setattr(
        mqtt_sweep,
        "measure",
        lambda subj, mq, db, wd, rate, seconds, name: mqtt_sweep.Run(name, rate, 1, 1.0, 1, 1, 0.0, 0.0, 0.0, 0),
    )
    subject = "sitegw[read_window_above=800;read_window_ms=1.5]"  # common.broker_settings' docstring example
    mqtt_sweep.sweep([1000.0, 2000.0], 1.0, 2, ["sitegw", subject])
    assert len(seen) == 8
    client_ids = [c for c, _ in seen]
    databases = [d for _, d in seen]
    assert len(set(client_ids)) == 8, client_ids
    assert len(set(databases)) == 8, databases
