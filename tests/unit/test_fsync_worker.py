"""The spool's fsync thread: answers with the fsync's time or its error, closes the descriptor either way, and a
cancelled wait leaves no descriptor open."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest

from gateway.spool_sync import FsyncWorker


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_an_fsync_in_the_thread_answers_and_closes_the_descriptor(tmp_path: Path) -> None:
    async def main() -> None:
        worker = FsyncWorker("test-fsync")
        try:
            fd = os.open(tmp_path / "seg", os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, b"x\n")
            took = await worker.sync(fd)
            assert took >= 0.0 and not _is_open(fd)
            # a descriptor that is not open: the waiting task raises the thread's OSError
            with pytest.raises(OSError) as err:
                await worker.sync(999_999)
            assert err.value.errno == errno.EBADF
            # a wait cancelled: the thread still closes its descriptor
            fd2 = os.open(tmp_path / "seg", os.O_WRONLY)
            wait = asyncio.ensure_future(worker.sync(fd2))
            wait.cancel()
            with pytest.raises(asyncio.CancelledError):
                await wait
            for _ in range(200):
                if not _is_open(fd2):
                    break
                await asyncio.sleep(0.01)
            assert not _is_open(fd2)
        finally:
            worker.close()

    asyncio.run(main())


def test_a_close_during_an_fsync_then_more_fsyncs_leave_no_thread_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from gateway import spool_sync

    release = threading.Event()
    real = spool_sync.sync_and_close

    def slow(fd: int) -> float:
        release.wait(5)
        return real(fd)

    monkeypatch.setattr(spool_sync, "sync_and_close", slow)

    def fd() -> int:
        return os.open(tmp_path / "seg", os.O_WRONLY | os.O_CREAT, 0o644)

    async def main() -> None:
        worker = FsyncWorker("test-fsync-reuse")
        first = worker.sync(fd())
        worker.close()  # while the first fsync waits
        second = worker.sync(fd())  # a new thread, on a queue of its own
        release.set()
        await asyncio.gather(first, second)
        await worker.sync(fd())
        worker.close()

    asyncio.run(main())
    for _ in range(200):
        if not any(t.name == "test-fsync-reuse" for t in threading.enumerate()):
            break
        threading.Event().wait(0.01)
    assert not any(t.name == "test-fsync-reuse" for t in threading.enumerate())
