"""Line protocol encoding: escaping, grouping of readings into lines, quality fields."""

from __future__ import annotations

from telemetry.lineproto import encode_line, encode_readings, series_tags
from telemetry.reading import Quality, Reading


def test_escaping() -> None:
    line = encode_line("my meas,x", {"zone": "北区 A,B=C", "empty": ""}, {"f k": 1.5, "s": 'say "hi" \\ ok', "n": 3}, 7)
    assert line == 'my\\ meas\\,x,zone=北区\\ A\\,B\\=C f\\ k=1.5,s="say \\"hi\\" \\\\ ok",n=3i 7\n'


def test_readings_grouped_per_device_and_timestamp() -> None:
    series = {"TC-01": series_tags("tower_crane", "demo", "TC-01", "北区")}
    rs = [
        Reading("TC-01", "load", 2.5, 10),
        Reading("TC-01", "radius", 12.0, 10),
        Reading("TC-01", "load", 2.6, 20, Quality.UNCERTAIN),
        Reading("TC-01", "wind_speed", float("nan"), 20),
        Reading("ghost", "load", 1.0, 10),
    ]
    data, n_lines, n = encode_readings(rs, series)
    assert data.decode().splitlines() == [
        "tower_crane,device=TC-01,site=demo,zone=北区 load=2.5,radius=12.0 10",
        "tower_crane,device=TC-01,site=demo,zone=北区 load=2.6,load_q=1i,wind_speed_q=2i 20",
    ]
    assert (n_lines, n) == (2, 4)
