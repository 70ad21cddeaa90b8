"""Undelivered events (the outbox) and the local audit log, both JSON lines in the app data dir.

Two locks keep concurrent processes honest. The *file lock* guards every edit of the two files
and is held for milliseconds, so a user's process never waits on it for long. The *delivery
lock* is held by the one deliverer of an app data dir for its whole life: a user's process takes
it only to hand it, already held, to the deliverer it starts (so there is never a moment in which
a second one could start), and starts none when it is taken (the live one sends what it finds).

A finished job's event is appended at capture by `OutboxWriter`, so a process that ends at once
(`os._exit`, a forked worker, a killed kernel) still leaves it for a deliverer. That append is a
few system calls: the lock and the file stay open, and the outbox is only ever replaced as a
whole (`os.replace`), which the writer notices from its open file's link count.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from starfish._locks import record_unlock, try_lock, try_record_lock, unlock

__all__ = [
    "DELIVERY_LOCK",
    "FILE_LOCK",
    "LOG_FILE",
    "MAX_LOG",
    "MAX_OUTBOX",
    "OUTBOX_FILE",
    "OutboxWriter",
    "after_fork_in_child",
    "append_log",
    "append_outbox",
    "locked",
    "read_log",
    "read_outbox",
    "release_delivery_lock",
    "settle",
    "try_delivery_lock",
]

OUTBOX_FILE = "telemetry_outbox.jsonl"
LOG_FILE = "telemetry_log.jsonl"
FILE_LOCK = ".telemetry.lock"
DELIVERY_LOCK = ".telemetry_delivery.lock"
MAX_OUTBOX = 1000
MAX_LOG = 1000
# Past this size the writer trims the outbox to its newest MAX_OUTBOX lines: rarely, so the
# append itself never reads the file (a job event is about 700 bytes).
COMPACT_BYTES = 2 * 1024 * 1024


# The file lock is a POSIX record lock (`lockf`: no import on the caller's thread, unlike
# fcntl's 0.3 ms). Record locks belong to a process, not to an open file, and closing any open
# file of the lock file drops them, so every holder in this process first takes this mutex.
# The delivery lock is a `flock` instead: it must pass to the child that is started with it.
_process_mutex = threading.Lock()


def after_fork_in_child() -> None:
    """A fork while another thread held the mutex would leave it held forever in the child."""
    global _process_mutex
    _process_mutex = threading.Lock()


@contextmanager
def locked(path: Path, timeout: float) -> Iterator[bool]:
    """Hold the file lock `path` if it can be had within `timeout`; yields whether it was.

    The OS drops the lock when the holder dies, so a killed deliverer never blocks the next one.
    """
    deadline = time.monotonic() + timeout
    mutex = _process_mutex
    if not mutex.acquire(timeout=max(timeout, 0)):
        yield False
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        acquired = False
        try:
            acquired = _lock_within(fd, deadline - time.monotonic())
            yield acquired
        finally:
            if acquired:
                record_unlock(fd)
            os.close(fd)
    finally:
        mutex.release()


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    items = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue  # a torn or foreign line: skip it rather than lose the rest
        if isinstance(item, dict):
            items.append(item)
    return items


def _dumps(item: dict[str, Any]) -> str:
    return json.dumps(item, separators=(",", ":"), sort_keys=True)


def _write_jsonl(path: Path, items: Iterable[dict[str, Any]]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(_dumps(i) + "\n" for i in items), encoding="utf-8")
    os.replace(tmp, path)


def _append_bounded(path: Path, items: list[dict[str, Any]], limit: int) -> None:
    existing = _read_jsonl(path)
    if len(existing) + len(items) > limit:
        _write_jsonl(path, (existing + items)[-limit:])
        return
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(_dumps(i) + "\n" for i in items))


def append_outbox(directory: Path, events: list[dict[str, Any]], timeout: float) -> bool:
    """Add events to the outbox (oldest dropped past MAX_OUTBOX); False if not saved."""
    if not events:
        return True
    with locked(directory / FILE_LOCK, timeout) as ok:
        if ok:
            _append_bounded(directory / OUTBOX_FILE, events, MAX_OUTBOX)
        return ok


def read_outbox(directory: Path) -> list[dict[str, Any]]:
    """The undelivered events, at most the newest MAX_OUTBOX (older ones are dropped)."""
    return _read_jsonl(directory / OUTBOX_FILE)[-MAX_OUTBOX:]


def _lock_within(fd: int, timeout: float) -> bool:
    """The file lock on `fd` within `timeout` (the caller holds the process mutex)."""
    if try_record_lock(fd):
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.001)
        if try_record_lock(fd):
            return True
    return False


def _compact(path: Path) -> None:
    """Keep the newest MAX_OUTBOX lines, without parsing them (the caller holds the file lock)."""
    lines = path.read_bytes().splitlines(keepends=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(b"".join(lines[-MAX_OUTBOX:]))
    os.replace(tmp, path)


class OutboxWriter:
    """Appends finished jobs' events to one app data dir's outbox, from any thread.

    Keeps the lock file and the outbox open: an append is lock, fstat, write, unlock. A process
    forked while this is open calls `forget()` in the child, which must not share the parent's
    open files.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock_path = str(directory / FILE_LOCK)
        self._path = str(directory / OUTBOX_FILE)
        self._lock_fd: int | None = None
        self._fd: int | None = None

    def append(self, line: bytes, timeout: float) -> bool:
        """Append one JSON line; False (nothing written) if the lock or the disk says no."""
        mutex = _process_mutex
        if not mutex.acquire(timeout=timeout):
            return False
        try:
            if self._lock_fd is None:
                self._lock_fd = self._open(self._lock_path, os.O_RDWR | os.O_CREAT)
            if not _lock_within(self._lock_fd, timeout):
                return False
            try:
                self._append_locked(line)
            finally:
                record_unlock(self._lock_fd)
            return True
        except OSError:
            self.forget()
            return False
        finally:
            mutex.release()

    def _open(self, path: str, flags: int) -> int:
        try:
            return os.open(path, flags, 0o600)
        except FileNotFoundError:  # the first event of a new app data dir
            self.directory.mkdir(parents=True, exist_ok=True)
            return os.open(path, flags, 0o600)

    def _append_locked(self, line: bytes) -> None:
        fd = self._fd
        info = None
        if fd is not None:
            info = os.fstat(fd)
            if info.st_nlink == 0:  # a deliverer replaced the file: append to the new one
                os.close(fd)
                fd = self._fd = info = None
        if fd is None:  # (re)opened: its size is checked on the next append
            fd = self._fd = self._open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        if info is not None and info.st_size + len(line) > COMPACT_BYTES:
            _compact(Path(self._path))
        if os.name == "nt":  # an open file there would block the deliverer's os.replace
            os.close(fd)
            self._fd = None

    def forget(self) -> None:
        """Close the files; a forked child opens its own (record locks are not inherited)."""
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                with suppress(OSError):
                    os.close(fd)
        self._fd = self._lock_fd = None


def try_delivery_lock(directory: Path) -> int | None:
    """An open file holding the delivery lock, or None when someone holds it (or no dir)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / DELIVERY_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        if try_lock(fd):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def release_delivery_lock(fd: int) -> None:
    with suppress(OSError):
        unlock(fd)
    os.close(fd)


def settle(
    directory: Path,
    done: set[str | None],
    log_entries: list[dict[str, Any]],
    timeout: float = 5.0,
) -> bool:
    """Remove delivered (or undeliverable) events by uuid and log what left, in one step.

    Lines without a uuid (damaged, or foreign) go too: they could never be settled. So `done`
    may hold None (read from such a line): it asks for the rewrite without matching a line.
    """
    with locked(directory / FILE_LOCK, timeout) as ok:
        if not ok:
            return False
        if done:
            path = directory / OUTBOX_FILE
            kept = [e for e in read_outbox(directory) if _uuid(e) and e["uuid"] not in done]
            _write_jsonl(path, kept)
        if log_entries:
            _append_bounded(directory / LOG_FILE, log_entries, MAX_LOG)
        return True


def _uuid(event: dict[str, Any]) -> bool:
    return isinstance(event.get("uuid"), str) and bool(event["uuid"])


def append_log(directory: Path, entries: list[dict[str, Any]], timeout: float) -> bool:
    return settle(directory, set(), entries, timeout)


def read_log(directory: Path, limit: int = MAX_LOG) -> list[dict[str, Any]]:
    return _read_jsonl(directory / LOG_FILE)[-limit:] if limit > 0 else []
