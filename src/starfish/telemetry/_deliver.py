"""The detached delivery process: reads its orders on stdin, sends, settles the outbox, exits.

Started by the service at exit (or shortly after a capture in a long-running process) in its
own session with no terminal output, so neither a slow endpoint nor the posthog import ever
delays the user's process. Stdin carries one JSON line of settings, then one line per event
that could not be saved to the outbox (e.g. an unwritable app data dir).
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from starfish.telemetry import outbox
from starfish.telemetry.transport import Undeliverable, send, silence_sdk

BATCH = 100
# How long a deliverer waits for another one to finish before leaving the outbox to a later run.
WAIT_FOR_OTHER = 30.0

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


def deliver(settings: dict[str, Any], unsaved: list[dict[str, Any]]) -> None:
    """Send the unsaved events, then the outbox; only acknowledged events leave the outbox."""
    target = {"api_key": settings["api_key"], "endpoint": settings["endpoint"]}
    directory = Path(settings["app_dir"]) if settings.get("app_dir") else None
    if unsaved:
        try:
            wire = send(unsaved, **target)
            if directory is not None:
                outbox.append_log(directory, _log_entries(wire), timeout=5.0)
        except Exception as exc:
            _log.debug("unsaved events not delivered: %r", exc)
    if directory is None:
        return
    with outbox.locked(directory / outbox.DELIVERY_LOCK, WAIT_FOR_OTHER) as ours:
        if not ours:
            return
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
            chunk = todo[start : start + BATCH]
            ids = {e["uuid"] for e in chunk}
            try:
                wire = send(chunk, **target)
            except Undeliverable:
                outbox.settle(directory, ids, [])
                continue
            except Exception as exc:
                _log.debug("outbox not delivered: %r", exc)
                return
            outbox.settle(directory, ids, _log_entries(wire))


def main() -> None:
    warnings.simplefilter("ignore")
    silence_sdk()
    try:
        settings, unsaved = _read_orders(sys.stdin.buffer)
        deliver(settings, unsaved)
    except Exception as exc:
        _log.debug("delivery failed: %r", exc)


if __name__ == "__main__":
    main()
