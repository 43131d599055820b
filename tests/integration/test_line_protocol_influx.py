"""Property: any tag value, field key and string field value our config accepts reads back identical from the
real InfluxDB 1.6.7 after going through our line protocol encoder and writer."""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.influx import InfluxV1Writer
from services.local import Service, rows
from telemetry.lineproto import encode_line

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
