"""A time parser remembers the strings it has parsed: the same answer as parsing afresh, bounded, no failures kept."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import ProtocolError
from drivers.timefmt import SEEN_CHARS, SEEN_TIMES, TimeParser, TimestampFormat, TimestampSpec

SPECS = [
    TimestampSpec(path="t", format=TimestampFormat.PATTERN, pattern="yyyy-MM-dd HH:mm:ss", zone="site"),
    TimestampSpec(path="t", format=TimestampFormat.PATTERN, pattern="yyyyMMddHHmmss", zone="+08:00"),
    TimestampSpec(path="t", format=TimestampFormat.ISO8601),
    TimestampSpec(path="t", format=TimestampFormat.ISO8601, zone="UTC"),
]
TIMES = st.datetimes(min_value=datetime(1995, 1, 1))
TEXTS = st.one_of(
    TIMES.map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S")),
    TIMES.map(lambda d: d.strftime("%Y%m%d%H%M%S")),
    TIMES.map(lambda d: d.isoformat()),
    TIMES.map(lambda d: d.isoformat() + "+08:00"),
    TIMES.map(lambda d: "  " + d.strftime("%Y-%m-%d %H:%M:%S") + " "),
    st.text(max_size=30),
)


def outcome(p: TimeParser, v: Any) -> tuple[str, object]:
    try:
        return "ok", p.parse(v)
    except ProtocolError as err:
        return "error", str(err)


@settings(max_examples=300, deadline=None)
@given(spec=st.sampled_from(SPECS), texts=st.lists(TEXTS, min_size=1, max_size=20))
def test_a_remembered_time_is_the_time_parsed_afresh(spec: TimestampSpec, texts: list[str]) -> None:
    kept = TimeParser(spec, "Asia/Shanghai")
    for v in texts + texts:  # each a second time: from memory when it parsed
        assert outcome(kept, v) == outcome(TimeParser(spec, "Asia/Shanghai"), v)
    assert all(isinstance(ns, int) for ns in kept._seen.values())
    assert set(kept._seen) <= {v for v in texts if outcome(kept, v)[0] == "ok"}  # no failure is kept


def test_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    p = TimeParser(SPECS[0], "Asia/Shanghai")
    calls: list[str] = []
    parse_text = p._parse_text
    monkeypatch.setattr(p, "_parse_text", lambda v: calls.append(v) or parse_text(v))
    assert p.parse("2026-12-05 12:00:00") == p.parse("2026-12-05 12:00:00")
    assert calls == ["2026-12-05 12:00:00"]  # the second one from memory
    for i in range(SEEN_TIMES + 10):
        p.parse(f"2026-12-05 {i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}")
    assert 0 < len(p._seen) <= SEEN_TIMES
    padded = " " * SEEN_CHARS + "2026-12-05 12:00:01"  # parses, but is not kept
    assert p.parse(padded) == p.parse("2026-12-05 12:00:01")
    assert padded not in p._seen
    with pytest.raises(ProtocolError):
        p.parse("2026-13-05 12:00:00")
