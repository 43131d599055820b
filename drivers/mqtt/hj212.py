"""HJ 212-2017 frames (the MEE data-transfer protocol of dust and noise monitors) read into a nested dict."""

from __future__ import annotations

from typing import Any

from drivers.errors import ProtocolError

MAX_DATA = 1024 * 4  # the standard limits the data segment to 1024 characters; allow split-packet slack


def crc16(data: bytes) -> int:
    """HJ 212's CRC16 over the data segment (start 0xFFFF, reflected polynomial 0xA001, domain.md §7.3)."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def parse_hj212(payload: bytes) -> dict[str, Any]:
    """`##0101QN=...;MN=...;CP=&&DataTime=...;a34002-Rtd=41,a34002-Flag=N&&1C80\\r\\n` (or the bare data segment,
    as some DTUs publish it over MQTT) -> {"QN": .., "MN": .., "CP": {"DataTime": .., "a34002-Rtd": "41", ...}}.

    Values stay strings: the profile says which are numbers. The length and CRC are checked when the frame has them.
    """
    try:
        text = payload.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ProtocolError("HJ 212 frame is not ASCII") from None
    if text.startswith("##"):
        if len(text) < 10 or not text[2:6].isdigit():
            raise ProtocolError(f"HJ 212 frame: no 4-digit length after '##': {text[:12]!r}")
        n = int(text[2:6])
        data, rest = text[6 : 6 + n], text[6 + n :]
        if len(data) != n:
            raise ProtocolError(f"HJ 212 frame truncated: header says {n} characters, {len(data)} arrived")
        if rest:
            if len(rest) != 4 or any(c not in "0123456789ABCDEFabcdef" for c in rest):
                raise ProtocolError(f"HJ 212 frame: {rest[:12]!r} after the data segment is not a CRC")
            want, got = int(rest, 16), crc16(data.encode("ascii"))
            if want != got:
                raise ProtocolError(f"HJ 212 frame: CRC {rest} does not match the data ({got:04X})")
    else:
        data = text
    if len(data) > MAX_DATA:
        raise ProtocolError(f"HJ 212 data segment of {len(data)} characters (limit {MAX_DATA})")
    head, sep, cp = data.partition("CP=&&")
    if not sep:
        raise ProtocolError("HJ 212 frame has no CP=&&...&& data area")
    if not cp.endswith("&&"):
        raise ProtocolError("HJ 212 frame: the CP data area does not end with &&")
    doc: dict[str, Any] = _pairs(head.split(";"), "frame")
    # CP groups are separated by `;`, the fields of one factor by `,`
    doc["CP"] = _pairs([kv for item in cp[:-2].split(";") for kv in item.split(",")], "CP")
    return doc


def _pairs(parts: list[str], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        if part:
            k, eq, v = part.partition("=")
            if not eq:
                raise ProtocolError(f"HJ 212 {where}: {part[:30]!r} is not KEY=value")
            out[k.strip()] = v.strip()
    return out
