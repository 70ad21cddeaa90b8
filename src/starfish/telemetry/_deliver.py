"""The deliverer: sends the outbox, settles it, and leaves; one per app data dir at a time.

Started by the service (at exit, or shortly after a capture in a long-running process) as a
detached process with no terminal output, so neither a slow endpoint nor the posthog import ever
delays the user's process; in a frozen app it runs on a daemon thread instead. Stdin carries one
JSON line of settings, then one line per event that could not be saved to the outbox (e.g. an
unwritable app data dir).

The delivery lock is handed over already held (`lock_fd`), so a user's process that finds it
taken starts no second deliverer: this one reads the outbox again before it lets go of the lock,
so an event appended meanwhile is never left behind while the lock looks taken. It ends after
`MAX_SECONDS`, or at the first failure (the outbox then waits for a later run), keeping the lock
until it is gone, so its successor never overlaps it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from starfish.telemetry import outbox
from starfish.telemetry.transport import Undeliverable, send, silence_sdk

BATCH = 100
MAX_SECONDS = 20.0  # no new batch starts after this
HARD_LIMIT_SECONDS = 60  # the process is ended by the OS (SIGALRM) whatever it is doing

_log = logging.getLogger(__name__)


def _read_orders(stream: BinaryIO) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    lines = stream.read().decode("utf-8", errors="replace").splitlines()
    settings = json.loads(lines[0])
    events = []
    for line in lines[1:]:
        try:
            events.append(json.loads(line))
        except ValueError:
            break  # the parent's non-blocking write was cut short: keep the complete lines
    return settings, events


def _log_entries(wire: list[dict[str, Any]]) -> list[dict[str, Any]]:
    now = datetime.now(timezone.utc).isoformat()
    return [{"status": "sent", "logged_at": now, "event": msg} for msg in wire]


def _complete(event: dict[str, Any], directory: Path) -> dict[str, Any]:
    """Fill in what the capture left out to stay cheap: the timestamp and the client id."""
    if "timestamp" not in event and isinstance(event.get("t"), (int, float)):
        event["timestamp"] = datetime.fromtimestamp(event["t"], timezone.utc).isoformat()
    if not event.get("distinct_id"):
        from starfish.telemetry.identity import TelemetryConfig

        event["distinct_id"] = str(TelemetryConfig.generate_client_id(directory))
    return event


def _send_outbox(directory: Path, target: dict[str, str], deadline: float) -> bool:
    """Send every pending event; True when all went (or were refused for good)."""
    sent = {
        entry["event"].get("uuid")
        for entry in outbox.read_log(directory)
        if entry.get("status") == "sent" and isinstance(entry.get("event"), dict)
    }
    pending = outbox.read_outbox(directory)
    duplicates = {e.get("uuid") for e in pending if e.get("uuid") in sent}
    if duplicates:
        outbox.settle(directory, duplicates, [])
    todo = [e for e in pending if e.get("uuid") and e.get("uuid") not in sent]
    for start in range(0, len(todo), BATCH):
        if time.monotonic() > deadline:
            return False
        chunk = [_complete(e, directory) for e in todo[start : start + BATCH]]
        ids = {e["uuid"] for e in chunk}
        try:
            wire = send(chunk, **target)
        except Undeliverable:
            outbox.settle(directory, ids, [])
            continue
        except Exception as exc:
            _log.debug("outbox not delivered: %r", exc)
            return False
        outbox.settle(directory, ids, _log_entries(wire))
    return True


def _nothing_left(directory: Path, lock_fd: int) -> bool:
    """Under the file lock: if the outbox is empty, let go of the delivery lock (True)."""
    with outbox.locked(directory / outbox.FILE_LOCK, 5.0) as ok:
        if not ok or any(e.get("uuid") for e in outbox.read_outbox(directory)):
            return False
        outbox.release_delivery_lock(lock_fd)
        return True


def deliver(
    settings: dict[str, Any], unsaved: list[dict[str, Any]], lock_fd: int | None = None
) -> bool:
    """Send the unsaved events, then the outbox; only acknowledged events leave the outbox.

    Returns whether the delivery lock was released here; if not, the caller holds `lock_fd`
    (a process simply ends, which releases it).
    """
    target = {"api_key": settings["api_key"], "endpoint": settings["endpoint"]}
    directory = Path(settings["app_dir"]) if settings.get("app_dir") else None
    if unsaved:
        try:
            wire = send(unsaved, **target)
            if directory is not None:
                outbox.append_log(directory, _log_entries(wire), timeout=5.0)
        except Exception as exc:
            _log.debug("unsaved events not delivered: %r", exc)
    if directory is None or lock_fd is None:
        return False
    deadline = time.monotonic() + MAX_SECONDS
    while _send_outbox(directory, target, deadline):
        if _nothing_left(directory, lock_fd):
            return True
        if time.monotonic() > deadline:
            break
    return False


def main() -> None:
    import signal

    warnings.simplefilter("ignore")
    if hasattr(signal, "alarm"):  # POSIX: a hung DNS lookup or socket cannot keep it alive
        signal.alarm(HARD_LIMIT_SECONDS)
    silence_sdk()
    try:
        settings, unsaved = _read_orders(sys.stdin.buffer)
        lock_fd = settings.get("lock_fd")
        if lock_fd is None and settings.get("app_dir"):  # e.g. Windows: no handing over
            lock_fd = outbox.try_delivery_lock(Path(settings["app_dir"]))
        deliver(settings, unsaved, lock_fd)
    except Exception as exc:
        _log.debug("delivery failed: %r", exc)


if __name__ == "__main__":
    main()
