"""Device time as vendors write it: zone-less local strings, patterns, epoch units, register clocks; clock limits."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from drivers.errors import ProtocolError
from drivers.timefmt import (
    RegisterClock,
    TimeParser,
    TimestampFormat,
    TimestampOverride,
    TimestampSpec,
    decode_register_clock,
    parse_zone,
    strptime_pattern,
)
from gateway.metrics import Metrics
from gateway.timecheck import ClockCheck
from telemetry.reading import Quality, Reading

NS = 1_000_000_000
T = int(datetime(2026, 11, 21, 0, 15, 2, tzinfo=UTC).timestamp()) * NS  # 08:15:02 in Shanghai


def parser(fmt: str, pattern: str | None = None, zone: str | None = None, site: str = "Asia/Shanghai") -> TimeParser:
    return TimeParser(TimestampSpec(path="t", format=TimestampFormat(fmt), pattern=pattern, zone=zone), site)


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        ("yyyy-MM-dd HH:mm:ss", "2026-11-21 08:15:02"),
        ("%Y/%m/%d %H:%M:%S", "2026/11/21 08:15:02"),
        ("yyyy/MM/dd HH:mm:ss", "2026/11/21 08:15:02"),
        ("yyyyMMddHHmmss", "20261121081502"),  # HJ 212's DataTime
    ],
)
def test_zone_less_local_time_is_read_in_the_site_zone(pattern: str, text: str) -> None:
    assert parser("pattern", pattern, "site").parse(text) == T


def test_an_explicit_zone_and_another_site_zone() -> None:
    assert parser("pattern", "yyyy-MM-dd HH:mm:ss", "+08:00", site="UTC").parse("2026-11-21 08:15:02") == T
    assert parser("pattern", "yyyy-MM-dd HH:mm:ss", "UTC").parse("2026-11-21 00:15:02") == T
    assert parser("pattern", "yyyy-MM-dd HH:mm:ss", "site", site="Asia/Urumqi").parse("2026-11-21 06:15:02") == T


def test_milliseconds_in_a_pattern() -> None:
    assert strptime_pattern("yyyy-MM-dd HH:mm:ss.SSS") == "%Y-%m-%d %H:%M:%S.%f"
    assert parser("pattern", "yyyy-MM-dd HH:mm:ss.SSS", "site").parse("2026-11-21 08:15:02.250") == T + NS // 4


def test_iso_without_zone_needs_a_zone_and_keeps_its_own_when_it_has_one() -> None:
    with pytest.raises(ProtocolError, match="has no zone"):
        parser("iso8601").parse("2026-11-21 08:15:02")
    assert parser("iso8601", zone="site").parse("2026-11-21 08:15:02") == T
    assert parser("iso8601", zone="site").parse("2026-11-21T00:15:02Z") == T  # its own zone wins


@pytest.mark.parametrize(
    ("fmt", "value"),
    [
        ("epoch_s", T // NS),
        ("epoch_ms", T // 10**6),
        ("epoch_us", T // 1000),
        ("epoch_ns", T),
        ("epoch_ms", str(T // 10**6)),  # quoted by the DTU
        ("epoch_s", float(T // NS)),
    ],
)
def test_epoch_units(fmt: str, value: object) -> None:
    assert parser(fmt).parse(value) == T


def test_a_time_in_the_wrong_unit_or_not_matching_is_refused_with_its_path() -> None:
    with pytest.raises(ProtocolError, match="not a plausible epoch_s time"):
        parser("epoch_s").parse(T // 10**6)  # ms sent where s was declared: year 50000
    with pytest.raises(ProtocolError, match=r"timestamp 't': '21/11/2026' does not match the pattern"):
        parser("pattern", "yyyy-MM-dd HH:mm:ss", "site").parse("21/11/2026")


def test_spec_checks() -> None:
    with pytest.raises(ValueError, match="needs 'pattern'"):
        TimestampSpec(path="t", format=TimestampFormat.PATTERN, zone="site")
    with pytest.raises(ValueError, match="set 'zone'"):
        TimestampSpec(path="t", format=TimestampFormat.PATTERN, pattern="yyyyMMddHHmmss")
    with pytest.raises(ValueError, match="unknown IANA time zone"):
        parse_zone("Mars/Olympus", "UTC")
    base = TimestampSpec(path="t", format=TimestampFormat.ISO8601)
    over = TimestampOverride(format=TimestampFormat.PATTERN, pattern="yyyyMMddHHmmss", zone="+08:00").apply(base)
    assert (over.path, over.format, over.zone) == ("t", TimestampFormat.PATTERN, "+08:00")


def test_register_clocks_binary_and_bcd() -> None:
    tz = parse_zone("site", "Asia/Shanghai")
    binary = RegisterClock(address=100)
    assert decode_register_clock(binary, [2026, 11, 21, 8, 15, 2], tz, "clock") == T
    bcd_bytes = RegisterClock(address=100, encoding="bcd", packing="byte")  # YY MM | DD hh | mm ss
    assert bcd_bytes.count == 3
    assert decode_register_clock(bcd_bytes, [0x2611, 0x2108, 0x1502], tz, "clock") == T
    bcd_words = RegisterClock(address=100, encoding="bcd")
    assert decode_register_clock(bcd_words, [0x2026, 0x11, 0x21, 0x08, 0x15, 0x02], tz, "clock") == T
    with pytest.raises(ProtocolError, match="2611 2108 151A is not BCD"):
        decode_register_clock(bcd_bytes, [0x2611, 0x2108, 0x151A], tz, "clock")
    with pytest.raises(ProtocolError, match=r"registers 07EA 000D 0020 .* are not a date"):
        decode_register_clock(binary, [2026, 13, 32, 0, 0, 0], tz, "clock")


def test_clock_limits_flag_keep_and_never_freeze_latest() -> None:
    m = Metrics()
    check = ClockCheck({"D": (300.0, 86400.0)}, m)
    now = T
    ahead = Reading("D", "lel", 30.0, now + 300 * 86400 * NS)  # 300 days ahead
    stored, live, changes = check.apply([ahead], now)
    # stored and shown at the gateway's time, marked; the device's claim is kept as how far ahead it was
    assert (stored[0].ts_ns, stored[0].value, stored[0].quality) == (now, 30.0, Quality.UNCERTAIN)
    assert live[0] == stored[0]
    assert [(r.quantity, r.value, r.ts_ns) for r in changes] == [
        ("clock_ahead_s", 300 * 86400.0, now),
        ("clock_skew", 1.0, now),
    ]
    assert m.clock_skew_readings["D"] == 1 and "D" in m.clock_skewed
    old = Reading("D", "lel", 1.0, now - 2 * 86400 * NS)
    stored_old = check.apply([old], now)[0][0]
    assert stored_old.quality is Quality.UNCERTAIN and stored_old.ts_ns == old.ts_ns  # history keeps its own time
    ok = Reading("D", "lel", 2.0, now - NS)
    stored, live, changes = check.apply([ok], now)
    assert stored[0] is ok and [(r.quantity, r.value) for r in changes] == [("clock_skew", 0.0)]
    assert "D" not in m.clock_skewed


@pytest.mark.parametrize("zone", ["+14:30", "+14:59", "-12:45"])
def test_offset_past_the_world_s_range_is_refused(zone: str) -> None:
    # the message and docs say "-12:00 to +14:00"; +14:30 and -12:45 are accepted (only the hours are compared)
    with pytest.raises(ValueError, match="offset runs from"):
        parse_zone(zone, "UTC")
