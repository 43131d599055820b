"""The spool's segment files: their records, listing them on open and cutting a torn tail."""

from __future__ import annotations

import logging
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


def repair_tail(seg: Segment) -> None:
    """Cut a partial last line (a write interrupted by kill -9) so every stored line is whole."""
    if seg.size == 0:
        return
    with open(seg.path, "rb+") as fh:
        fh.seek(max(0, seg.size - 65536))
        tail = fh.read()
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        keep = seg.size - len(tail) + cut + 1 if cut >= 0 else 0
        log.warning("spool: cut %d bytes of a torn line at the end of %s", seg.size - keep, seg.path.name)
        fh.truncate(keep)
        seg.size = keep
        seg.acked = min(seg.acked, keep)
