"""Stored baselines on a real SQLite file: set, get, reset, history, audit rows and persistence."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from alerting.baselines import Baseline, Baselines
from alerting.db import audit_rows, connect, tx

S = 1_000_000_000
T0 = 1_714_521_600 * S  # 2024-05-01 00:00 UTC
POINT = ("inc1", "horizontal_displacement")
TARGET = "baseline:inc1/horizontal_displacement"


class FakeClock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def value(b: Baselines) -> float | None:
    got = b.get(*POINT)
    return None if got is None else got.value


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


def test_set_get_and_replace(db_path: Path, clock: FakeClock) -> None:
    b = Baselines(connect(db_path), clock)
    assert b.get(*POINT) is None
    got = b.set(*POINT, 12.5, "zhang", "first survey", reading_ts_ns=T0 - 60 * S)
    assert got == Baseline("inc1", "horizontal_displacement", 12.5, T0, "zhang", "first survey", T0 - 60 * S)
    assert b.get(*POINT) == got
    clock.now += 3_600 * S
    again = b.set(*POINT, 13, "li")  # an int from the API comes back as a float, as the table stores it
    assert again == Baseline("inc1", "horizontal_displacement", 13.0, T0 + 3_600 * S, "li", None, None)
    assert b.get(*POINT) == again
    assert b.get("inc1", "vertical_displacement") is None


def test_reset_needs_a_reason_and_removes_the_baseline(db_path: Path, clock: FakeClock) -> None:
    conn = connect(db_path)
    b = Baselines(conn, clock)
    b.set(*POINT, 12.5, "zhang")
    for why in (None, "", "   "):
        with pytest.raises(ValueError, match="reason"):
            b.reset(*POINT, "li", why)  # type: ignore[arg-type]
    assert b.get(*POINT) is not None
    assert [r["action"] for r in audit_rows(conn, TARGET)] == ["baseline.set"]  # refused resets leave no trace
    clock.now += S
    b.reset(*POINT, "li", "inclinometer re-installed after strut work")
    assert b.get(*POINT) is None
    assert b.all() == []
    with pytest.raises(KeyError):
        b.reset(*POINT, "li", "again")


def test_history_and_audit_record_every_change(db_path: Path, clock: FakeClock) -> None:
    conn = connect(db_path)
    b = Baselines(conn, clock)
    b.set(*POINT, 12.5, "zhang", "first survey", reading_ts_ns=T0 - S)
    clock.now = T0 + 10 * S
    b.set(*POINT, 13.0, "li", "re-surveyed")
    clock.now = T0 + 20 * S
    b.reset(*POINT, "wang", "gauge replaced")
    b.set("inc2", "horizontal_displacement", 1.0, "zhang")  # another point: not in this history
    assert b.history(*POINT) == [
        {
            "action": "set",
            "at_ns": T0,
            "actor": "zhang",
            "why": "first survey",
            "old": None,
            "new": 12.5,
            "reading_ts_ns": T0 - S,
        },
        {"action": "set", "at_ns": T0 + 10 * S, "actor": "li", "why": "re-surveyed", "old": 12.5, "new": 13.0}
        | {"reading_ts_ns": None},
        {"action": "reset", "at_ns": T0 + 20 * S, "actor": "wang", "why": "gauge replaced", "old": 13.0, "new": None}
        | {"reading_ts_ns": None},
    ]
    rows = list(reversed(audit_rows(conn, TARGET)))  # audit_rows lists newest first
    assert [(r["action"], r["actor"], r["at_ns"], r["why"]) for r in rows] == [
        ("baseline.set", "zhang", T0, "first survey"),
        ("baseline.set", "li", T0 + 10 * S, "re-surveyed"),
        ("baseline.reset", "wang", T0 + 20 * S, "gauge replaced"),
    ]
    assert rows[0]["detail"] == {"old": None, "new": 12.5, "reading_ts_ns": T0 - S}
    assert rows[1]["detail"] == {"old": 12.5, "new": 13.0, "reading_ts_ns": None}
    assert rows[2]["detail"] == {"old": 13.0}


def test_baselines_survive_reopening_the_file(db_path: Path, clock: FakeClock) -> None:
    conn = connect(db_path)
    b = Baselines(conn, clock)
    b.set(*POINT, 12.5, "zhang", "first survey")
    b.set("fw3", "settlement", -0.8, "li")
    b.set("inc1", "deep_displacement_d5.0m", 4.25, "li")  # a depth of an inclinometer string
    b.set("gone", "settlement", 1.0, "li")
    b.reset("gone", "settlement", "li", "point abandoned")
    conn.close()

    again = Baselines(connect(db_path), FakeClock(T0 + 86_400 * S))
    assert again.all() == [
        Baseline("fw3", "settlement", -0.8, T0, "li", None, None),
        Baseline("inc1", "deep_displacement_d5.0m", 4.25, T0, "li", None, None),
        Baseline("inc1", "horizontal_displacement", 12.5, T0, "zhang", "first survey", None),
    ]
    assert again.get("gone", "settlement") is None
    assert [h["action"] for h in again.history("gone", "settlement")] == ["set", "reset"]


def test_bad_input_is_refused_and_writes_nothing(db_path: Path, clock: FakeClock) -> None:
    conn = connect(db_path)
    b = Baselines(conn, clock)
    with pytest.raises(ValueError, match="unknown quantity"):
        b.set("inc1", "horizontal_displacment", 1.0, "zhang")
    with pytest.raises(ValueError, match="finite"):
        b.set(*POINT, math.nan, "zhang")
    with pytest.raises(ValueError, match="required"):
        b.set(*POINT, 1.0, "")
    assert b.all() == []
    assert audit_rows(conn) == []


def test_cache_follows_an_outer_transaction_that_rolls_back(db_path: Path, clock: FakeClock) -> None:
    conn = connect(db_path)
    b = Baselines(conn, clock)
    b.set(*POINT, 12.5, "zhang")
    with pytest.raises(RuntimeError), tx(conn):
        b.set(*POINT, 99.0, "li")
        assert value(b) == 99.0  # inside: the uncommitted value
        assert [x.value for x in b.all()] == [99.0]
        raise RuntimeError("the caller's change failed")
    assert value(b) == 12.5
    assert [h["new"] for h in b.history(*POINT)] == [12.5]
    with tx(conn):
        b.reset(*POINT, "li", "committed with the caller's change")
    assert b.get(*POINT) is None


def test_a_second_instance_on_the_same_file_shares_the_table(db_path: Path, clock: FakeClock) -> None:
    a = Baselines(connect(db_path), clock)
    a.set(*POINT, 12.5, "zhang")
    b = Baselines(connect(db_path), clock)  # the constructor's CREATE IF NOT EXISTS keeps existing rows
    assert b.get(*POINT) == a.get(*POINT)
    b.set(*POINT, 14.0, "li")
    assert value(a) == 12.5  # per-instance cache, documented
    a.reload()
    assert value(a) == 14.0
