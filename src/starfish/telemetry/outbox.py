"""Undelivered events (the outbox) and the local audit log, both JSON lines in the app data dir.

Two locks keep concurrent processes honest. The *file lock* guards every edit of the two files
and is held for milliseconds, so a user's process never waits on it for long. The *delivery
lock* is held by one deliverer for the whole send, so two deliverers never send the same
outbox; user processes never take it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

OUTBOX_FILE = "telemetry_outbox.jsonl"
LOG_FILE = "telemetry_log.jsonl"
FILE_LOCK = ".telemetry.lock"
DELIVERY_LOCK = ".telemetry_delivery.lock"
MAX_OUTBOX = 1000
MAX_LOG = 1000


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _unlock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def locked(path: Path, timeout: float) -> Iterator[bool]:
    """Hold an exclusive lock on `path` if it can be had within `timeout`; yields whether it was.

    The OS drops the lock when the holder dies, so a killed deliverer never blocks the next one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    acquired = False
    try:
        deadline = time.monotonic() + timeout
        while not (acquired := _try_lock(fd)) and time.monotonic() < deadline:
            time.sleep(0.005)
        yield acquired
    finally:
        if acquired:
            _unlock(fd)
        os.close(fd)


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
    return _read_jsonl(directory / OUTBOX_FILE)


def settle(
    directory: Path,
    done: set[str],
    log_entries: list[dict[str, Any]],
    timeout: float = 5.0,
) -> bool:
    """Remove delivered (or undeliverable) events by uuid and log what left, in one step."""
    with locked(directory / FILE_LOCK, timeout) as ok:
        if not ok:
            return False
        if done:
            path = directory / OUTBOX_FILE
            _write_jsonl(path, [e for e in _read_jsonl(path) if e.get("uuid") not in done])
        if log_entries:
            _append_bounded(directory / LOG_FILE, log_entries, MAX_LOG)
        return True


def append_log(directory: Path, entries: list[dict[str, Any]], timeout: float) -> bool:
    return settle(directory, set(), entries, timeout)


def read_log(directory: Path, limit: int = MAX_LOG) -> list[dict[str, Any]]:
    return _read_jsonl(directory / LOG_FILE)[-limit:] if limit > 0 else []
