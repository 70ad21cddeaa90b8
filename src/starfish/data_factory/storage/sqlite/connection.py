"""The database file: its schema, how a connection is opened, how rows are keyed, and the one
way a transaction is run.

Every multi-statement write goes through `transaction()`: SQLite ends a transaction itself on
some errors (a full disk), so a bare ROLLBACK would then fail and its error ("no transaction is
active", or the disk's next error) would replace the one that explains what happened.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "LOW",
    "SCHEMA",
    "SHIFT",
    "connect",
    "job_rowid",
    "key_range",
    "rollback",
    "transaction",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    stop_reason TEXT,
    run_mode TEXT NOT NULL,
    storage TEXT NOT NULL,
    num_inputs INTEGER NOT NULL,
    config TEXT NOT NULL,
    counts TEXT,
    error_summary TEXT,
    state TEXT,
    created_at REAL NOT NULL,
    finished_at REAL,
    execution_time REAL
);
CREATE TABLE IF NOT EXISTS specs (jid INTEGER PRIMARY KEY, spec BLOB);
CREATE TABLE IF NOT EXISTS inputs (
    key INTEGER PRIMARY KEY,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    data TEXT
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    jid INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    error_type TEXT,
    data TEXT
);
CREATE INDEX IF NOT EXISTS attempts_by_job ON attempts (jid, status, idx);
CREATE TABLE IF NOT EXISTS state (
    jid INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (jid, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS input_rows (key INTEGER PRIMARY KEY, data BLOB NOT NULL);
"""

SHIFT = 32
"""Rows of one job's inputs are keyed `jid << SHIFT | index`: a job is one rowid range."""
LOW = (1 << SHIFT) - 1


def key_range(jid: int) -> tuple[int, int]:
    """The first and last key of job `jid`'s rows in `inputs` and `input_rows`."""
    lo = jid << SHIFT
    return lo, lo | LOW


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN/COMMIT), WAL, NORMAL sync."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def job_rowid(conn: sqlite3.Connection, job_id: str) -> int:
    """The job's row id, which keys its rows in every other table; KeyError if not stored."""
    row = conn.execute("SELECT id FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    if row is None:
        raise KeyError(job_id)
    return int(row[0])


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, begin: str = "BEGIN") -> Iterator[sqlite3.Connection]:
    """Run the block in one transaction: COMMIT at its end, ROLLBACK if anything is raised.

    The exception that ended the block is the one that propagates, even when the ROLLBACK
    fails too (see `rollback`).
    """
    conn.execute(begin)
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open; a failing ROLLBACK is dropped, for the caller
    is already raising the error that caused it."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
