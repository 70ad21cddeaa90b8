"""Call counting and the kill -9 of the resume workload.

It lives in its own importable module so that cloudpickle stores the user function's reference
to it by name: the resume process gets a fresh counter and no kill order.

At the BENCH_KILL_AT-th call the job is frozen (later calls never return), the stored count of
completed inputs is read from the library's SQLite file until it stops growing, and the process
SIGKILLs itself. The count at the moment of that call is kept too: how far durable storage lagged
behind finished calls, which is what an unlucky kill -9 loses.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

CALLS = [0]
JOB_ID: list[Callable[[], str]] = []

# (database file under <app data dir>/db, query) for ours and for starfish-core
_STORES = (
    ("starfish.db", "SELECT count(*) FROM inputs WHERE status = 'completed'"),
    ("metadata.db", "SELECT count(*) FROM Records WHERE status = 'completed'"),
)


def stored_completed() -> int:
    """Completed inputs durably stored so far, read the way a second process would."""
    import sqlite3  # here, not at the top: every workload imports this module

    db = Path(os.environ["STARFISH_LOCAL_STORAGE_DIR"]) / "db"
    for name, query in _STORES:
        if (db / name).exists():
            conn = sqlite3.connect(db / name, timeout=5)
            try:
                return int(conn.execute(query).fetchone()[0])
            except sqlite3.OperationalError:
                return 0
            finally:
                conn.close()
    return 0


async def tick() -> None:
    """Count one call; at BENCH_KILL_AT calls, wait for storage to settle and SIGKILL."""
    CALLS[0] += 1
    kill_at = os.environ.get("BENCH_KILL_AT")
    if not kill_at:
        return
    if CALLS[0] > int(kill_at):
        await asyncio.sleep(3600)
    if CALLS[0] != int(kill_at):
        return
    at_call = stored_completed()
    start = time.monotonic()
    last, stable_since = at_call, start
    while time.monotonic() - start < 20:
        await asyncio.sleep(0.02)
        now = stored_completed()
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since > 0.3:
            break
    with open(os.environ["BENCH_JOB_ID_FILE"], "w") as f:
        json.dump(
            {
                "job_id": JOB_ID[0]() if JOB_ID else None,
                "stored_at_call": at_call,
                "stored_at_kill": last,
                "settle_s": time.monotonic() - start,
            },
            f,
        )
    os.kill(os.getpid(), signal.SIGKILL)
