"""The durable spool: whole lines only, acked lines leave, a torn tail is cut, the bound drops counted lines."""

from __future__ import annotations

from pathlib import Path

from gateway.spool import Spool


def lines(a: int, b: int) -> bytes:
    return b"".join(f"m,device=d v={i} {i}\n".encode() for i in range(a, b))


def drain(sp: Spool) -> list[bytes]:
    out = []
    while True:
        seg = sp.backlog_segment() or sp.live_segment()
        ch = sp.read(seg, 7)
        if ch is None:
            break
        out.extend(ch.data.splitlines())
        sp.ack(ch)
    return out


def test_append_read_ack_in_order(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=200)
    sp.open()
    sp.append(lines(0, 50), 50)
    assert len(sp.segments) > 1  # rolled at 200 bytes
    got = drain(sp)
    assert got == lines(0, 50).splitlines()
    assert sp.pending_bytes() == 0 and sp.acked_lines == 50
    sp.close()


def test_survives_reopen_and_torn_tail(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    sp.open()
    sp.append(lines(0, 10), 10)
    ch = sp.read(sp.live_segment(), 4)
    assert ch is not None
    sp.ack(ch)
    # simulate kill -9 in the middle of a write: a partial line at the end of the file
    with open(sp.live_segment().path, "ab") as fh:
        fh.write(b"m,device=d v=99")
    del sp  # no close(): as after kill -9
    sp2 = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    sp2.open()
    assert drain(sp2) == lines(4, 10).splitlines()
    sp2.close()


def test_bound_drops_oldest_and_counts(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=64 * 1024, segment_bytes=8 * 1024)
    sp.open()
    total = 0
    for i in range(0, 6000, 100):
        sp.append(lines(i, i + 100), 100)
        total += 100
    assert sp.disk_bytes() <= 64 * 1024
    remaining = drain(sp)
    assert sp.dropped_lines > 0
    assert sp.dropped_lines + len(remaining) == total  # every line is either delivered or counted
    # what remains is the newest data, in order
    assert remaining == lines(total - len(remaining), total).splitlines()
    sp.close()
