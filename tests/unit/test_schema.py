"""The state database's schema versions: a new file and a file written by the release before versioning
(tests/fixtures/state-v0.db, made by tests/fixtures/make_state_v0.py at commit 553dca8) end with the same tables at
the latest version, with the old file's alarms, hazards, baselines, sessions and audit intact."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alerting.alarms import AlarmState, Lifecycle
from alerting.baselines import Baselines
from alerting.db import connect
from alerting.hazards import HazardConfig, Hazards
from alerting.rules import default_rules
from alerting.schema import LATEST, MIGRATIONS, SchemaError, migrate, statements, version
from gateway.daily import DailyValues

T0 = int(datetime(2026, 11, 23, 2, 0, tzinfo=UTC).timestamp() * 1e9)  # the fixture's first reading
V0 = Path(__file__).resolve().parents[1] / "fixtures" / "state-v0.db"


def shape(conn: sqlite3.Connection) -> dict[str, object]:
    """Every table's columns (name, type, not null, default, key) and every index's name and table."""
    out: dict[str, object] = {}
    for name, kind, table in conn.execute("SELECT name, type, tbl_name FROM sqlite_master ORDER BY name"):
        if kind == "table":
            out[name] = sorted(tuple(r)[1:] for r in conn.execute(f"PRAGMA table_info({name})"))
        elif kind == "index" and not name.startswith("sqlite_autoindex"):
            out[f"index {name}"] = table
    return out


def old_file(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    shutil.copyfile(V0, path)
    return path


def test_the_fixture_is_what_the_old_release_wrote() -> None:
    conn = sqlite3.connect(V0)
    assert version(conn) == 0
    assert conn.execute("SELECT count(*) FROM alarm_alarms").fetchone()[0] == 1
    conn.close()


def test_a_new_file_and_an_old_one_end_the_same(tmp_path: Path) -> None:
    new = connect(tmp_path / "new.db")
    old = connect(old_file(tmp_path))
    assert version(new) == version(old) == LATEST == len(MIGRATIONS)
    assert shape(new) == shape(old)
    assert {"alarm_alarms", "hazard_record", "esc_steps", "audit", "auth_sessions", "daily_values"} <= set(shape(new))


def test_the_old_files_records_read_back_after_the_migration(tmp_path: Path) -> None:
    conn = connect(old_file(tmp_path))
    life = Lifecycle(conn, default_rules(), lambda: 0)
    (a,) = life.open_alarms()
    assert (a.rule, a.device, a.state, a.acked_by, a.value) == ("gas.lel", "G1", AlarmState.ACTIVE_ACKED, "wang", 30.0)
    assert a.source_ns == T0  # a column the old release already wrote, kept as it was
    hz = Hazards(conn, lambda: 0, HazardConfig()).get(1)
    assert (hz["origin"], hz["alarm_id"], hz["status"], hz["accept_note"]) == ("alarm", a.id, "found", None)
    base = Baselines(conn, lambda: 0).get("ZQT-3", "horizontal_displacement")
    assert base is not None and base.value == 1.8
    assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] == 5
    assert conn.execute("SELECT count(*) FROM auth_sessions WHERE user = 'wang'").fetchone()[0] == 1
    daily = DailyValues(conn, "Asia/Shanghai", ["ZQT-3"])
    today = datetime(2026, 11, 23, tzinfo=UTC).date()
    assert [v for _, v in daily.series("ZQT-3", "horizontal_displacement", 30, today)] == [4.2]


def test_a_file_older_still_gets_the_columns_added_without_a_version(tmp_path: Path) -> None:
    path = old_file(tmp_path)
    raw = sqlite3.connect(path)
    dropped = (("alarm_alarms", "source_ns"), ("hazard_record", "accept_note"), ("auth_sessions", "last_seen_ns"))
    for table, column in dropped:
        raw.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    raw.commit()
    raw.close()
    conn = connect(path)
    assert version(conn) == LATEST
    assert shape(conn) == shape(connect(tmp_path / "new.db"))


def test_a_newer_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {LATEST + 1}")
    raw.close()
    before = path.read_bytes()
    newer = rf"schema version {LATEST + 1}, from a newer SiteGW; this release knows up to {LATEST}"
    with pytest.raises(SchemaError, match=newer):
        connect(path)
    assert path.read_bytes() == before


def test_migrating_again_changes_nothing(tmp_path: Path) -> None:
    conn = connect(tmp_path / "s.db")
    before = shape(conn)
    assert migrate(conn) == LATEST
    assert shape(conn) == before


def test_a_failed_migration_leaves_the_last_finished_version(tmp_path: Path) -> None:
    path = old_file(tmp_path)
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("DROP TABLE auth_sessions")  # version 2 adds a column to it: it fails, version 1 stays
    raw.execute("CREATE VIEW auth_sessions AS SELECT 1 AS token")
    with pytest.raises(SchemaError, match="migration to schema version 2"):
        migrate(raw)
    assert version(raw) == 1


def test_statements_split_whole_statements_only() -> None:
    assert statements("CREATE TABLE a (x -- a; comment\n);\nCREATE INDEX i ON a(x);\n") == [
        "CREATE TABLE a (x -- a; comment\n);",
        "CREATE INDEX i ON a(x);",
    ]
    with pytest.raises(ValueError, match="incomplete SQL statement"):
        statements("CREATE TABLE a (x")


def test_the_gateway_says_so_when_its_state_file_is_newer(tmp_path: Path) -> None:
    from gateway.app import Gateway
    from gateway.config import ConfigError
    from tests.sites import write_site

    gas = {"id": "G1", "profile": "gas_4in1_mqtt_v1", "broker": "b", "topic": "g/+"}
    cfg = write_site(tmp_path / "site.yaml", influx_port=18086, mqtt_port=1883, devices=[gas])
    cfg.alarms.state_file.parent.mkdir(parents=True, exist_ok=True)
    raw = sqlite3.connect(cfg.alarms.state_file)
    raw.execute(f"PRAGMA user_version = {LATEST + 1}")
    raw.close()
    with pytest.raises(ConfigError, match="from a newer SiteGW"):
        Gateway(cfg, fsync=False)


def test_version_7_adds_resend_of_to_the_deliveries_a_file_already_has(tmp_path: Path) -> None:
    """A delivery a mail server took for some recipients and refused for others (4xx) is resent to those only, as a
    delivery naming the one it resends; a file of version 6 keeps its deliveries, which resend nothing."""
    path = tmp_path / "v6.db"
    connect(path).close()
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("DROP INDEX esc_deliveries_resend")
    raw.execute("ALTER TABLE esc_deliveries DROP COLUMN resend_of")
    raw.execute(
        "INSERT INTO esc_deliveries(channel, group_key, recipients, key, level, subject, text, data, items, status,"
        " attempts, created_ns) VALUES ('mail', 'mail|li', '[\"li\"]', 'k1', 2, 's', 't', '{}', 1, 'sent', 1, 5)"
    )
    raw.execute("PRAGMA user_version = 6")
    raw.close()
    conn = connect(path)
    assert version(conn) == LATEST
    assert [tuple(r) for r in conn.execute("SELECT key, status, resend_of FROM esc_deliveries")] == [
        ("k1", "sent", None)
    ]
    assert shape(conn) == shape(connect(tmp_path / "new.db"))
