"""What a job left on disk, read straight from the SQLite file as another process would."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from starfish.data_factory.storage.base import COUNT_KEYS


def db_path() -> Path:
    return Path(os.environ["STARFISH_LOCAL_STORAGE_DIR"]) / "db" / "starfish.db"


def rows_on_disk(job_id: str, db: Path | None = None) -> dict[str, int]:
    """Counts of the job's stored rows: finished inputs by status, attempts by status."""
    conn = sqlite3.connect(db or db_path())
    try:
        (jid,) = conn.execute("SELECT id FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        counts = dict.fromkeys(COUNT_KEYS, 0)
        lo, hi = jid << 32, (jid << 32) | 0xFFFFFFFF
        for status, n in conn.execute(
            "SELECT status, count(*) FROM inputs WHERE key BETWEEN ? AND ? GROUP BY status",
            (lo, hi),
        ):
            counts[status] = n
        for status, n in conn.execute(
            "SELECT status, count(*) FROM attempts WHERE jid = ? GROUP BY status", (jid,)
        ):
            counts[status] = n
        return counts
    finally:
        conn.close()


def job_row(job_id: str, db: Path | None = None) -> dict[str, Any]:
    """The stored job row itself (status, stop reason, counts as JSON text)."""
    conn = sqlite3.connect(db or db_path())
    conn.row_factory = sqlite3.Row
    try:
        return dict(conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone())
    finally:
        conn.close()
