"""The provider batches a job submitted (the batch lane, `starfish.llm.batch.lane`): one row per
submission, its data as JSON (the batch reference, the lines it carries, its last status).

A row is written before the batch is created (state `submitting`, its lines listed) and again
as soon as the provider returns the batch's id, each time in a commit of its own: a process
killed at any point finds on resume every request it may have paid for.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

__all__ = ["SCHEMA", "batches", "upsert"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS llm_batches (
    job_id TEXT NOT NULL,
    submission TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, submission)
) WITHOUT ROWID;
"""


def upsert(conn: sqlite3.Connection, job_id: str, rows: list[dict[str, Any]]) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO llm_batches (job_id, submission, data) VALUES (?, ?, ?)",
        [(job_id, row["submission"], json.dumps(row, separators=(",", ":"))) for row in rows],
    )


def batches(conn: sqlite3.Connection, job_id: str) -> list[dict[str, Any]]:
    """The job's submissions, oldest first."""
    try:
        rows = conn.execute("SELECT data FROM llm_batches WHERE job_id = ?", (job_id,)).fetchall()
    except sqlite3.OperationalError:  # a database from before the batch lane
        return []
    found = [json.loads(data) for (data,) in rows]
    found.sort(key=lambda row: row.get("started_at") or 0)
    return found
