"""Which stored jobs are live: the process running a job holds an OS lock on a file named
after it, and the OS drops the lock when that process ends in any way, kill -9 included.

So a stored status of `running` whose lock nobody holds is a job that was killed mid-run
(`abandoned`, resumable), and a resume of a job whose lock is held is refused instead of
running its inputs a second time. `flock` locks belong to an open file, not to a process, so
a second open in the same process conflicts too (`starfish._locks`). Where locks do not belong
to the open file (Windows) there is no lease: a resume is never refused, and a stored
`running` job is taken to be live.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from starfish._locks import OPEN_FILE_LOCKS, try_lock, unlock

__all__ = ["Lease", "acquire", "holder"]

WAIT = 0.5
"""Seconds to keep trying a lock: a probe holds it for microseconds, and a finishing job holds
it between writing its final row and letting go."""


class Lease:
    """A held lock on one job's file; `release` when the job's final row is written."""

    def __init__(self, fd: int | None, path: Path) -> None:
        self._fd = fd
        self._path = path

    def release(self) -> None:
        if self._fd is None:
            return
        # Unlink while holding the lock: whoever opened the old file and then gets the lock
        # sees that the path no longer names it, and opens afresh.
        with contextlib.suppress(OSError):
            self._path.unlink()
        os.close(self._fd)
        self._fd = None


def acquire(path: Path) -> Lease | None:
    """The job's lock, or None when another open file (another process) holds it."""
    if not OPEN_FILE_LOCKS:
        return Lease(None, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + WAIT
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not try_lock(fd):
            os.close(fd)
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)
            continue
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # released and unlinked meanwhile: lock the file that is there now
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return Lease(fd, path)


def holder(path: Path) -> int | None:
    """The pid of the process holding the lock (0 if unknown), or None when nobody holds it."""
    if not OPEN_FILE_LOCKS:
        return 0  # cannot tell: say live, as a stored `running` status does
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if try_lock(fd, shared=True):
            unlock(fd)
            return None
        try:
            return int(os.read(fd, 32).split()[0])
        except (ValueError, IndexError, OSError):
            return 0  # held, by a process that has not written its pid yet
    finally:
        os.close(fd)
