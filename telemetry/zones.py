"""Time zones as people name them: an IANA zone name, checked against the names tzdata and the box give."""

from __future__ import annotations

import functools
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones


def iana_zone(name: str, hint: str = "e.g. 'Asia/Shanghai'") -> ZoneInfo:
    """The IANA zone `name`; ValueError for a name that is none, and for a file of the zone folder that is no
    place's zone: `localtime` (whatever the box is set to), `Factory`, and the `posix/` and `right/` copies
    (right/ zones count leap seconds: 27 s off)."""
    try:
        tz = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: 'Asia' is a folder, a name too long
        raise ValueError(f"unknown IANA time zone {name!r}: {hint}") from None
    if name not in _iana_names():
        raise ValueError(
            f"{name!r} is no IANA time zone name (localtime is the box's own setting, right/ zones count leap "
            f"seconds: 27 s off): {hint}"
        )
    return tz


@functools.cache
def _iana_names() -> frozenset[str]:
    # the box's and tzdata's names; available_timezones() leaves out posixrules and the posix/ and right/ copies
    zones = available_timezones() - {"localtime", "Factory"}
    return frozenset(z for z in zones if not z.startswith(("posix", "right/")))
