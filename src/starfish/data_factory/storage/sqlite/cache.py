"""Model answers and model-call counts in the job database: the `llm_cache` and `llm_counts`
tables, how a database made by an earlier version gains their newer columns, and their reads.

An answer is keyed by a hash of the request as sent and the input and attempt it was made for
(the model layer's `cache_key`); it also carries that index and attempt in columns, so the
answers of the calls about to run elsewhere (Ray) are found in one indexed query. They are
written by the job's writer, with the outcomes.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable
from typing import Any

from starfish.data_factory.storage.base import LLM_COUNT_KEYS
from starfish.data_factory.storage.sqlite.batches import SCHEMA as BATCHES

__all__ = ["cached_answer", "cached_answers", "ensure", "llm_counts", "upsert_counts"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS llm_cache (
    key TEXT PRIMARY KEY,
    response TEXT NOT NULL,
    job_id TEXT,
    created_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    idx INTEGER,
    attempt INTEGER,
    cost_usd REAL
);
"""
_ADDED_CACHE = (
    ("job_id", "TEXT"),
    ("idx", "INTEGER"),
    ("attempt", "INTEGER"),
    ("cost_usd", "REAL"),
)
"""Columns newer than the first `llm_cache`: rows kept before them belong to no job and no
call (found by key only)."""


def _count_column(name: str) -> str:
    """`cost_usd` stays NULL while no price is known; every other count starts at 0."""
    return f"{name} REAL" if name == "cost_usd" else f"{name} INTEGER NOT NULL DEFAULT 0"


_COUNTS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS llm_counts (job_id TEXT PRIMARY KEY, "
    + ", ".join(_count_column(name) for name in LLM_COUNT_KEYS)
    + ");"
)

_UPSERT_COUNTS = (
    "INSERT INTO llm_counts (job_id, {cols}) VALUES (?, {marks}) "
    "ON CONFLICT(job_id) DO UPDATE SET {sets}"
)


def ensure(conn: sqlite3.Connection) -> None:
    """Create the tables, or add the columns an earlier version's tables lack."""
    conn.executescript(_SCHEMA + _COUNTS_SCHEMA + BATCHES)
    have = {row[1] for row in conn.execute("PRAGMA table_info(llm_cache)")}
    for column, kind in _ADDED_CACHE:
        if column not in have:
            with contextlib.suppress(sqlite3.OperationalError):  # another process was first
                conn.execute(f"ALTER TABLE llm_cache ADD COLUMN {column} {kind}")
    conn.execute("CREATE INDEX IF NOT EXISTS llm_cache_by_call ON llm_cache (idx, attempt)")
    have = {row[1] for row in conn.execute("PRAGMA table_info(llm_counts)")}
    for column in LLM_COUNT_KEYS:  # counts newer than the table
        if column not in have:
            with contextlib.suppress(sqlite3.OperationalError):
                conn.execute(f"ALTER TABLE llm_counts ADD COLUMN {_count_column(column)}")


def upsert_counts(conn: sqlite3.Connection, job_id: str, counts: dict[str, Any]) -> None:
    """Add `counts` to the job's row (inside the caller's transaction)."""
    cols = list(counts)
    sql = _UPSERT_COUNTS.format(
        cols=", ".join(cols),
        marks=", ".join("?" * len(cols)),
        sets=", ".join(f"{c} = coalesce({c}, 0) + excluded.{c}" for c in cols),
    )
    conn.execute(sql, (job_id, *counts.values()))


def cached_answer(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT response FROM llm_cache WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def cached_answers(
    conn: sqlite3.Connection, calls: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], Any]:
    found: dict[tuple[int, int], Any] = {}
    for index, attempt in calls:
        rows = conn.execute(
            "SELECT key, response FROM llm_cache WHERE idx = ? AND attempt = ?", (index, attempt)
        ).fetchall()
        if rows:
            found[(index, attempt)] = dict(rows)
    return found


def llm_counts(conn: sqlite3.Connection, job_id: str) -> dict[str, Any] | None:
    try:
        cur = conn.execute("SELECT * FROM llm_counts WHERE job_id = ?", (job_id,))
    except sqlite3.OperationalError:  # a database no job with model calls ever used
        return None
    row = cur.fetchone()
    if row is None:
        return None
    names = [d[0] for d in cur.description]
    stored = dict(zip(names, row, strict=True))
    return {k: stored.get(k, 0) for k in LLM_COUNT_KEYS}
