"""A survey file's points are seen at their surveys' times (gateway/heard.py `marking_seen`), not at the import."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gateway.heard import marking_seen
from gateway.liveness import Liveness
from gateway.metrics import Metrics
from telemetry.reading import Reading

DAY, NS = 86400.0, 1_000_000_000


def _import(lv: Liveness, days_ago: float) -> list[Reading]:
    got: list[Reading] = []

    async def submit(rs: list[Reading], _on: Callable[[], object] | None) -> None:
        got.extend(rs)

    ts = time.time_ns() - int(days_ago * DAY * NS)
    asyncio.run(marking_seen(lv, submit, lambda n: None)([Reading("ZQT-3", "horizontal_displacement", 1.2, ts)]))
    return [r for r in got if r.quantity == "up"]


def test_a_late_file_of_old_surveys_does_not_make_a_point_fresh() -> None:
    """Surveying stopped; a file of surveys five days old is imported, the stale limit three days: the point was
    marked up and fresh from the import, and its missed-survey alarm came three days later than it should."""
    lv = Liveness(Metrics(), {"ZQT-3": 3 * DAY})
    assert _import(lv, 5) == [] and "ZQT-3" not in lv.state
    (down,) = lv.sweep(time.monotonic())
    assert (down.quantity, down.value) == ("up", 0.0)


def test_a_recent_survey_brings_the_point_up_and_its_clock_runs_from_the_survey() -> None:
    lv = Liveness(Metrics(), {"ZQT-3": 3 * DAY})
    (up,) = _import(lv, 2)
    assert up.value == 1.0
    now = time.monotonic()
    assert lv.sweep(now + 0.9 * DAY) == []  # 2.9 days after the survey
    (down,) = lv.sweep(now + 1.1 * DAY)  # 3.1 days after it, though 1.1 days after the import
    assert down.value == 0.0
    assert _import(lv, 4) == [] and lv.state["ZQT-3"] == 0  # an older file after it says nothing new


def test_a_survey_after_a_restart_brings_the_point_up() -> None:
    """The sweep's start-up grace marks every point seen at the start: a survey made before it (this morning's,
    imported after a restart) was then taken as nothing new, and the point stayed unknown until swept down."""
    lv = Liveness(Metrics(), {"ZQT-3": 3 * DAY})
    assert lv.sweep(time.monotonic()) == []  # the grace: last seen "now"
    (up,) = _import(lv, 2 / 24)
    assert up.value == 1.0 and lv.state["ZQT-3"] == 1
