"""The spool's segment files: their records, listing them on open and cutting a torn tail."""

from __future__ import annotations

import json
import logging
import os
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("sitegw.spool")

_SEG = re.compile(r"^seg-(\d{16})\.lp$")


@dataclass(slots=True)
class Segment:
    seq: int
    path: Path
    size: int
    acked: int  # bytes from the start already in the database
    # (byte offset, wall time): every line at or after the offset was appended at or after the time. One mark per
    # second at most, so an outage of a day costs ~86k small tuples; the age of the oldest pending line comes from it.
    marks: deque[tuple[int, float]] = field(default_factory=deque)


@dataclass(frozen=True, slots=True)
class Chunk:
    seq: int
    start: int
    end: int
    data: bytes
    lines: int


def segment_path(directory: Path, seq: int) -> Path:
    return directory / f"seg-{seq:016d}.lp"


def load_segments(directory: Path, acked: dict[str, int]) -> list[Segment]:
    """The segment files in `directory`, oldest first, with their acknowledged offsets from acked.json."""
    out: list[Segment] = []
    for f in sorted(directory.iterdir()):
        m = _SEG.match(f.name)
        if not m:
            continue
        seq = int(m[1])
        st = f.stat()
        seg = Segment(seq, f, st.st_size, min(acked.get(str(seq), 0), st.st_size))
        # append times are not stored: the file's mtime (its newest line) makes the age a lower bound
        seg.marks.append((0, st.st_mtime))
        out.append(seg)
    return out


TAIL_STEP = 65536  # how far back each read looks for the last whole line


def repair_tail(seg: Segment) -> int:
    """Cut a partial last line (a write interrupted by kill -9, or the zero-filled blocks a power cut leaves of an
    unsynced write) so every stored line is whole; the bytes cut. The search for the last newline goes back step by
    step to the file's start: stopping after one step cut the whole segment, fsynced lines too, when the torn tail
    was longer than the step."""
    if seg.size == 0:
        return 0
    with open(seg.path, "rb+") as fh:
        end = seg.size
        fh.seek(end - 1)
        if fh.read(1) == b"\n":
            return 0
        keep = 0
        while end > 0:
            start = max(0, end - TAIL_STEP)
            fh.seek(start)
            nl = fh.read(end - start).rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            end = start
        cut = seg.size - keep
        log.warning(
            "spool: cut %d bytes of a torn last line at the end of %s (kept %d bytes of whole lines; "
            "metric sitegw_spool_torn_bytes_total)",
            cut,
            seg.path.name,
            keep,
        )
        fh.truncate(keep)
        seg.size = keep
        seg.acked = min(seg.acked, keep)
        return cut


def read_chunk(seg: Segment, max_lines: int, max_bytes: int) -> Chunk | None:
    """Up to `max_lines` whole lines of `seg` after its acknowledged offset."""
    start = seg.acked
    if start >= seg.size:
        return None
    with open(seg.path, "rb") as fh:
        fh.seek(start)
        buf = fh.read(min(seg.size - start, max_bytes))
    end = 0
    lines = 0
    while lines < max_lines:
        nl = buf.find(b"\n", end)
        if nl < 0:
            break
        end = nl + 1
        lines += 1
    if lines == 0:
        return None
    return Chunk(seg.seq, start, start + end, buf[:end], lines)


def oldest_pending_age(segments: list[Segment], now: float) -> float:
    """Seconds (wall clock) since the oldest line not yet acknowledged by the database was appended; 0.0 when none."""
    for s in segments:
        if s.acked >= s.size:
            continue
        appended = None
        for off, t in s.marks:  # few marks before the acked offset: older ones are trimmed on ack
            if off > s.acked:
                break
            appended = t
        if appended is None:
            return 0.0
        return max(0.0, now - appended)
    return 0.0


def read_acked(state: Path) -> dict[str, int]:
    """The acknowledged offsets (`acked.json`: {segment: byte offset}); {} when missing or unreadable."""
    if not state.exists():
        return {}
    try:
        return {str(k): int(v) for k, v in json.loads(state.read_text()).items()}
    except (ValueError, OSError) as err:
        # without it every line is resent: duplicates overwrite in InfluxDB, nothing is lost
        log.warning("spool: %s unreadable (%s); replaying every segment from its start", state, err)
        return {}


def acked_json(segments: list[Segment]) -> str:
    return json.dumps({str(s.seq): s.acked for s in segments if s.acked})


def segments_to_drop(directory: Path, segments: list[Segment], needed: int) -> int | None:
    """How many of the oldest segments to drop for `needed` bytes to fit on a full disk, never the active one (its
    lines may wait for their fsync, and an MQTT message's acknowledgement with them: refused, the message comes
    again); None when all they hold would not make that room (the disk is full of other files, or the spool is
    one segment): dropping would lose data and gain nothing."""
    droppable = segments[:-1]
    st = os.statvfs(directory)
    free, n = st.f_bavail * st.f_frsize, 0
    for seg in droppable:
        if free >= needed:
            break
        free += os.stat(seg.path).st_blocks * 512
        n += 1
    return n if free >= needed else None
