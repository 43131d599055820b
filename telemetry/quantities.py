"""The quantity catalog: canonical unit and plausible range of every quantity, and unit conversion at the edge."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Quantity:
    """A measured quantity: its canonical unit and the range outside which a value is implausible."""

    name: str
    unit: str
    low: float
    high: float
    title_zh: str
    title_en: str


def _q(name: str, unit: str, low: float, high: float, zh: str, en: str) -> Quantity:
    return Quantity(name, unit, low, high, zh, en)


# Plausible ranges are sensor-physics bounds (what a working device can report), not alarm thresholds:
# a value outside them is marked UNCERTAIN, never clamped or dropped.
CATALOG: dict[str, Quantity] = {
    q.name: q
    for q in (
        # liveness, emitted by the supervisor
        _q("up", "state", 0, 1, "在线", "online"),
        # device health seen by the gateway, emitted on change: messages arrive but none decodes; device clock off
        _q("decode_errors", "state", 0, 1, "数据无法解析", "messages do not decode"),
        _q("clock_skew", "state", 0, 1, "设备时钟偏差", "device clock off"),
        # a reading stamped ahead of the gateway is stored at the gateway's time; this says by how much it was ahead
        _q("clock_ahead_s", "s", 0, math.inf, "设备时钟超前", "device clock ahead by"),
        # a person's finding on inspection (巡视检查), entered through the API: 1 danger found, 0 cleared
        _q("inspection_danger", "state", 0, 1, "巡视发现危险情况", "danger found by inspection"),
        # tower crane
        _q("load", "t", -1, 100, "起重量", "hoist load"),
        _q("rated_load", "t", 0, 100, "额定起重量", "rated load at radius"),
        _q("load_ratio", "%", -5, 200, "载荷百分比", "load as % of rated"),
        _q("load_moment", "t·m", -10, 2000, "起重力矩", "load moment"),
        _q("load_moment_ratio", "%", -5, 200, "力矩百分比", "moment as % of rated"),
        _q("radius", "m", 0, 100, "幅度", "radius"),
        _q("hook_height", "m", -50, 400, "吊钩高度", "hook height"),
        _q("slew_angle", "°", -3600, 3600, "回转角度", "slew angle"),
        _q("wind_speed", "m/s", 0, 75, "风速", "wind speed"),
        _q("tilt_x", "‰", -100, 100, "塔身倾斜X", "tower tilt X"),
        _q("tilt_y", "‰", -100, 100, "塔身倾斜Y", "tower tilt Y"),
        _q("limit_load", "state", 0, 1, "起重量限位", "load limiter tripped"),
        _q("limit_moment", "state", 0, 1, "力矩限位", "moment limiter tripped"),
        _q("limit_height", "state", 0, 1, "高度限位", "height limit"),
        _q("limit_radius", "state", 0, 1, "幅度限位", "radius limit"),
        _q("limit_slew", "state", 0, 1, "回转限位", "slew limit"),
        _q("hoisting_up", "state", 0, 1, "起升上行", "hoist moving up"),
        _q("limiter_bypass", "state", 0, 1, "限位旁路", "limiter bypass switch"),
        # deep excavation
        _q("horizontal_displacement", "mm", -500, 500, "水平位移", "horizontal displacement"),
        _q("vertical_displacement", "mm", -500, 500, "竖向位移", "vertical displacement"),
        _q("deep_displacement", "mm", -500, 500, "深层水平位移", "deep horizontal displacement"),
        _q("strut_force", "kN", -2000, 30000, "支撑轴力", "strut axial force"),
        _q("groundwater_level", "m", -100, 100, "地下水位", "groundwater level"),
        # high formwork
        _q("settlement", "mm", -200, 200, "模板沉降", "formwork settlement"),
        _q("pole_tilt", "‰", -200, 200, "立杆倾角", "pole tilt"),
        _q("axial_force", "kN", -50, 500, "立杆轴力", "pole axial force"),
        # gas and confined space
        _q("lel", "%LEL", 0, 100, "可燃气体", "combustible gas"),
        _q("o2", "%VOL", 0, 30, "氧气", "oxygen"),
        _q("h2s", "ppm", 0, 200, "硫化氢", "hydrogen sulphide"),
        _q("co", "ppm", 0, 2000, "一氧化碳", "carbon monoxide"),
        _q("sensor_fault", "state", 0, 1, "传感器故障", "sensor fault"),
        _q("calibrating", "state", 0, 1, "标定中", "calibration in progress"),
        # environment monitors on the same gateway (扬尘 / 噪声; domain.md §7)
        _q("noise", "dB(A)", 0, 150, "噪声", "sound level"),
        _q("pm2_5", "µg/m³", 0, 10000, "PM2.5", "PM2.5"),
        _q("pm10", "µg/m³", 0, 20000, "PM10", "PM10"),
        _q("tsp", "µg/m³", 0, 50000, "总悬浮颗粒物", "total suspended particulates"),
        _q("temperature", "°C", -50, 100, "温度", "temperature"),
        _q("humidity", "%RH", 0, 100, "湿度", "relative humidity"),
        _q("wind_direction", "°", 0, 360, "风向", "wind direction"),
    )
}

# Families: one quantity measured at several positions, e.g. an inclinometer string read at depths.
# The suffix is part of the field name in InfluxDB (`deep_displacement_d5.0m`).
_FAMILY = re.compile(r"^(?P<base>[a-z_0-9]+?)_d(?P<depth>\d+(?:\.\d+)?)m$")


# Auxiliary quantities declared by device profiles (uptime, battery, RSSI, raw status words): registered when a profile
# loads, so the pipeline, the encoder and the console treat them like catalog quantities. Two profiles may declare
# the same name only with the same definition.
AUXILIARY: dict[str, Quantity] = {}


def depth_of(name: str) -> tuple[str, float] | None:
    """(base name, depth in m) of a depth family's member (`deep_displacement_d4.5m`); None for any other name."""
    m = _FAMILY.match(name)
    return (m["base"], float(m["depth"])) if m else None


def register_auxiliary(q: Quantity) -> None:
    """Add a profile's auxiliary quantity; ValueError when the name is a catalog name or defined differently."""
    m = _FAMILY.match(q.name)
    if q.name in CATALOG or (m is not None and m["base"] in CATALOG):
        raise ValueError(f"auxiliary quantity {q.name!r} is a catalog quantity; use it without declaring it")
    old = AUXILIARY.get(q.name)
    if old is not None and (old.unit, old.low, old.high) != (q.unit, q.low, q.high):
        raise ValueError(
            f"auxiliary quantity {q.name!r} is already declared by another profile as {old.unit} "
            f"{old.low:g}..{old.high:g}; declare it the same way or choose another name"
        )
    AUXILIARY.setdefault(q.name, q)  # titles may differ between profiles; unit and range may not


def lookup(name: str) -> Quantity:
    """The catalog entry of `name`, resolving depth families; KeyError names the unknown quantity."""
    q = CATALOG.get(name) or AUXILIARY.get(name)
    if q is not None:
        return q
    m = _FAMILY.match(name)
    if m and m["base"] in CATALOG:
        return CATALOG[m["base"]]
    if m and m["base"] in AUXILIARY:
        return AUXILIARY[m["base"]]
    raise KeyError(f"unknown quantity {name!r}; known: {', '.join(sorted(CATALOG))} (depth families: NAME_d<depth>m)")


class Ranges(dict[str, tuple[float, float]]):
    """(low, high) of each quantity by name, its catalog entry looked up on first use (depth families, auxiliary
    quantities): one dict lookup per reading after that."""

    def __missing__(self, name: str) -> tuple[float, float]:
        q = lookup(name)
        r = self[name] = (q.low, q.high)
        return r


def quantity_zh(name: str) -> str:
    """A quantity's Chinese name as people read it (a depth family with its depth: 深层水平位移 10 m); the raw name
    when the catalog does not know it."""
    try:
        title = lookup(name).title_zh
    except KeyError:
        return name
    m = _FAMILY.match(name)
    return f"{title} {m['depth']} m" if m else title


def is_plausible(name: str, value: float) -> bool:
    q = lookup(name)
    return math.isfinite(value) and q.low <= value <= q.high


# Unit conversions: (from, to) -> function. Linear ones as factors; tilt in degrees needs tan().
G = 9.80665
_LINEAR: dict[tuple[str, str], tuple[float, float]] = {
    ("kN", "t"): (1 / G, 0.0),
    ("kg", "t"): (0.001, 0.0),
    ("N", "kN"): (0.001, 0.0),
    ("t", "kN"): (G, 0.0),
    ("MN", "kN"): (1000.0, 0.0),
    ("kN·m", "t·m"): (1 / G, 0.0),
    ("cm", "m"): (0.01, 0.0),
    ("mm", "m"): (0.001, 0.0),
    ("m", "mm"): (1000.0, 0.0),
    ("cm", "mm"): (10.0, 0.0),
    ("km/h", "m/s"): (1 / 3.6, 0.0),
    ("mrad", "‰"): (1.0, 0.0),  # mrad ≈ ‰ for small angles, within 0.01 % below 20 ‰
    ("%", "‰"): (10.0, 0.0),
    ("ratio", "%"): (100.0, 0.0),
    ("%VOL", "ppm"): (10000.0, 0.0),
    ("mg/m³", "µg/m³"): (1000.0, 0.0),
    ("ug/m3", "µg/m³"): (1.0, 0.0),
    ("mg/m3", "µg/m³"): (1000.0, 0.0),
    ("dB", "dB(A)"): (1.0, 0.0),  # sound-level meters on sites report A-weighted levels and label them dB
    ("%", "%RH"): (1.0, 0.0),
    ("℃", "°C"): (1.0, 0.0),
}


def _deg_to_permille(v: float) -> float:
    return math.tan(math.radians(v)) * 1000.0


_FUNCS: dict[tuple[str, str], Callable[[float], float]] = {("°", "‰"): _deg_to_permille, ("deg", "‰"): _deg_to_permille}


def converter(from_unit: str, to_unit: str) -> Callable[[float], float] | None:
    """A function converting `from_unit` to `to_unit`; None when they are equal; ValueError when unknown."""
    if from_unit == to_unit:
        return None
    if (from_unit, to_unit) in _LINEAR:
        k, off = _LINEAR[(from_unit, to_unit)]
        return lambda v: v * k + off
    fn = _FUNCS.get((from_unit, to_unit))
    if fn is not None:
        return fn
    raise ValueError(f"no conversion from {from_unit!r} to {to_unit!r}")


def linear_factor(from_unit: str, to_unit: str) -> tuple[float, float] | None:
    """(factor, offset) when the conversion is linear (so it folds into scale/offset), else None."""
    if from_unit == to_unit:
        return (1.0, 0.0)
    return _LINEAR.get((from_unit, to_unit))
