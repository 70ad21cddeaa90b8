"""Advisory locks on open files: the one way the job lease and the telemetry outbox lock.

`try_lock` takes a `flock` on POSIX: it belongs to the open file, so it passes to a child that
inherits the file and a second open in the same process conflicts too; the OS drops it when the
holder dies in any way, kill -9 included. On Windows it is a byte-range lock (exclusive only),
which is not tied to the open file: `OPEN_FILE_LOCKS` says which one a caller gets.
`try_record_lock` takes a POSIX record lock (`lockf`), which belongs to the process and needs
no import. The lock modules are imported where used, not at import time: `import starfish`
stays fast. Imports nothing of starfish's.
"""

from __future__ import annotations

import os
import sys

__all__ = ["OPEN_FILE_LOCKS", "record_unlock", "try_lock", "try_record_lock", "unlock"]

OPEN_FILE_LOCKS = sys.platform != "win32"
"""`try_lock` locks belong to the open file (`flock`), not to the process."""


def try_lock(fd: int, shared: bool = False) -> bool:
    """Lock the open file `fd` without waiting; False when another open file holds it."""
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def unlock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def try_record_lock(fd: int) -> bool:
    """A record lock on `fd` without waiting (`try_lock` where there are none, on Windows).

    Record locks belong to the process, and closing any open file of the locked file drops
    them: a caller with threads guards it with a mutex of its own.
    """
    if not hasattr(os, "lockf"):
        return try_lock(fd)
    try:
        os.lockf(fd, os.F_TLOCK, 0)
        return True
    except OSError:
        return False


def record_unlock(fd: int) -> None:
    if hasattr(os, "lockf"):
        os.lockf(fd, os.F_ULOCK, 0)
    else:
        unlock(fd)
