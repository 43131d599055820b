"""Property: any tag value, field key and string field value our config accepts reads back identical from the
real InfluxDB 1.6.7 after going through our line protocol encoder and writer; every finite value a reading can hold
reads back bit-identical, in the number forms the readings' encoder writes (orjson's, not repr's)."""

from __future__ import annotations

import asyncio
import itertools
import math
import struct
import urllib.request
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.influx import BODY_SLICE, InfluxV1Writer, SlicedBody
from services.local import Service, rows, vm_export
from telemetry.lineproto import encode_line, encode_readings, series_tags
from telemetry.reading import Reading

# Tag values and keys: what config validation lets through: no control characters (InfluxDB cannot store
# newlines in tags), no backslash (1.x keeps a doubled one doubled and cannot store one before a separator),
# not empty (empty tags are not stored).
_CONTROL = "\x00\x7f" + "".join(map(chr, range(32)))
text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters=_CONTROL + "\\"), min_size=1, max_size=30
)
# String field values may hold anything printable, backslashes and quotes included.
field_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=_CONTROL), max_size=30)
_ts = itertools.count(1_700_000_000_000_000_000, 1000)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    zone=text,
    device=text,
    key=text.filter(lambda s: s not in ("time", "zone", "device")),
    value=field_text,
    number=st.floats(allow_nan=False, allow_infinity=False),
)
def test_round_trip_through_real_influxdb(
    influxdb: Service, zone: str, device: str, key: str, value: str, number: float
) -> None:
    ts = next(_ts)
    line = encode_line("lp 测量,m", {"zone": zone, "device": device}, {key: value, "num": number}, ts)

    async def write() -> None:
        w = InfluxV1Writer(f"http://127.0.0.1:{influxdb.port}", "lp_property")
        try:
            await w.write(line.encode())
        finally:
            await w.aclose()

    asyncio.run(write())
    got = rows(influxdb.port, "lp_property", f'SELECT * FROM "lp 测量,m" WHERE time = {ts}')
    assert len(got) == 1, line
    row = got[0]
    assert row["zone"] == zone and row["device"] == device, line
    assert row[key] == value, line
    assert float(row["num"]) == number, line  # JSON renders 1e16 as an integer


# the forms that differ from repr's: small exponents written "1e-7" (repr "1e-07") or in full ("0.00001"), large
# ones, the extremes, and float32 values as the sweep's devices send them (16-17 digits)
_FORMS = [1e-7, 1e-5, -6.906145119080974e-06, 1.4743698512810657e-05, 1e16, 1e22, 5e-324, 1.7976931348623157e308]
_FORMS += [-0.0, 0.1, 100.0, 123456.78901234567, *struct.unpack(">3f", struct.pack(">3f", 12.7, 0.3, -3.1e-6))]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(numbers=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=20))
@example(numbers=_FORMS)
def test_reading_values_read_back_bit_identical(influxdb: Service, victoria: Service, numbers: list[float]) -> None:
    """InfluxDB returns each value with the same 64 bits; VictoriaMetrics (the second sink, which keeps 12
    significant digits) takes every number form too."""
    ts = next(_ts)
    dev = f"LP-{ts}"  # (the databases live for the session: each example's own series)
    readings = [Reading(dev, f"v{i}", x, ts) for i, x in enumerate(numbers)]
    data, lines, n = encode_readings(readings, {dev: series_tags("lpnum", "s", dev, "")})
    assert (lines, n) == (1, len(numbers))

    async def write() -> None:
        w = InfluxV1Writer(f"http://127.0.0.1:{influxdb.port}", "lp_numbers")
        try:
            await w.write(data)
        finally:
            await w.aclose()

    asyncio.run(write())
    got = rows(influxdb.port, "lp_numbers", f"SELECT * FROM lpnum WHERE time = {ts}")
    assert len(got) == 1, data
    for i, x in enumerate(numbers):
        back = float(got[0][f"v{i}"])  # (JSON renders 1e16 as an integer, -0.0 as 0)
        assert back == x and (x == 0 or struct.pack(">d", back) == struct.pack(">d", x)), (i, x, data)
    urllib.request.urlopen(f"http://127.0.0.1:{victoria.port}/write", data=data, timeout=10).read()
    exported = vm_export(victoria.port, f'{{__name__=~"lpnum_v.*",device="{dev}"}}')
    vm = {s["metric"]["__name__"]: s["values"] for s in exported}
    assert set(vm) == {f"lpnum_v{i}" for i in range(len(numbers))}, data  # every field parsed
    for i, x in enumerate(numbers):
        # (its decimal store keeps no value far beyond a sensor's range: 2.5e-297 comes back as another number)
        if 1e-30 < abs(x) < 1e30:
            assert any(math.isclose(v, x, rel_tol=1e-11) for v in vm[f"lpnum_v{i}"]), (i, x, data)


def test_a_large_body_goes_out_in_slices_with_the_event_loop_free_between_them(influxdb: Service) -> None:
    """A second's lines at 10k readings/s (~1 MB) in one socket write held the loop for up to 5 ms; in 64 KiB
    slices other tasks run between them (a ticker counts its turns), and every point arrives."""
    n = 12_000
    body = "".join(
        f"big,device=TC-{i % 200:03d} load={i}.5,moment=2.5 {1_800_000_000_000_000_000 + i}\n" for i in range(n)
    )
    data = body.encode()
    assert len(data) > 8 * BODY_SLICE
    turns: list[int] = []
    sizes: list[int] = []

    async def write() -> None:
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                turns.append(len(sizes))  # slices handed over so far, at each of this task's turns
                await asyncio.sleep(0)

        orig = SlicedBody.write_with_length

        async def counting(self: SlicedBody, writer: Any, content_length: int | None) -> None:
            real = writer.write

            async def write_slice(chunk: Any) -> None:
                sizes.append(len(chunk))
                await real(chunk)

            writer.write = write_slice
            try:
                await orig(self, writer, content_length)
            finally:
                writer.write = real

        w = InfluxV1Writer(f"http://127.0.0.1:{influxdb.port}", "lp_big")
        tick = asyncio.create_task(ticker())
        try:
            await w.write(b"warm v=1 1\n")  # the database and the connection exist before the big write
            sizes.clear()
            turns.clear()
            SlicedBody.write_with_length = counting  # type: ignore[method-assign]
            await w.write(data)
        finally:
            SlicedBody.write_with_length = orig  # type: ignore[method-assign]
            done.set()
            await tick
            await w.aclose()

    asyncio.run(write())
    assert max(sizes) <= BODY_SLICE and sum(sizes) == len(data)
    between = {t for t in turns if 0 < t < len(sizes)}
    assert len(between) >= len(sizes) - 2, (len(sizes), sorted(between))  # the ticker ran between the slices
    got = rows(influxdb.port, "lp_big", "SELECT count(load) FROM big")
    assert got and int(got[0]["count"]) == n
