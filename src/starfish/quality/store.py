"""Where quality lives: two tables of this module's own in the job database.

- `quality_index`: per kept input and Dedupe hook, the keys of its records (exact digests,
  MinHash values, embedding vectors) as blobs. One row written per kept input, never a growing
  value rewritten: storing the index costs O(records). A row is committed *before* the runner
  stores the records it describes (the hook's `settle` runs first), so after a kill -9 no kept
  record lacks its row; a row whose input never got stored is ignored on restore (only inputs
  stored `completed` count).
- `quality`: per attempt and hook, what each record got (a judge's score and reason, a
  duplicate's kind, similarity and the input it repeats), as JSON beside the records, joined
  to them by (input index, attempt) at export.

Its own connection to the same WAL file, like the model layer's cache. In-memory jobs keep
the same rows in this process.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["IndexRow", "QualityStore", "store_for"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS quality_index (
    job_id TEXT NOT NULL,
    hook TEXT NOT NULL,
    idx INTEGER NOT NULL,
    n INTEGER NOT NULL,
    exact BLOB,
    minhash BLOB,
    vectors BLOB,
    PRIMARY KEY (job_id, hook, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quality (
    job_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    hook TEXT NOT NULL,
    outcome TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, idx, attempt, hook)
) WITHOUT ROWID;
"""

IndexRow = tuple[int, int, bytes | None, bytes | None, bytes | None]
"""(input index, records, exact digests, MinHash values, vectors)."""


class QualityStore:
    """The two tables in one SQLite file (`path`), or in this process (`path=None`)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._index: dict[tuple[str, str, int], IndexRow] = {}
        self._quality: dict[tuple[str, int, int, str], tuple[str, str]] = {}
        if path is not None:
            self._conn = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=False, timeout=30
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)

    # writing (each call one transaction, committed before it returns) -----------------------
    def put(
        self,
        job_id: str,
        hook: str,
        *,
        index: IndexRow | None = None,
        drop_index: int | None = None,
        quality: tuple[int, int, str, list[Any]] | None = None,
    ) -> None:
        """Keep `index` for its input, forget the index row of `drop_index`, keep `quality`
        `(index, attempt, outcome, per-record dicts)`."""
        q = None
        if quality is not None:
            q = (job_id, quality[0], quality[1], hook, quality[2], json.dumps(quality[3]))
        with self._lock:
            conn = self._conn
            if conn is None:
                if index is not None:
                    self._index[(job_id, hook, index[0])] = index
                if drop_index is not None:
                    self._index.pop((job_id, hook, drop_index), None)
                if q is not None:
                    self._quality[q[:4]] = q[4:]
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                if index is not None:
                    conn.execute(
                        "INSERT OR REPLACE INTO quality_index VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (job_id, hook, *index),
                    )
                if drop_index is not None:
                    conn.execute(
                        "DELETE FROM quality_index WHERE job_id = ? AND hook = ? AND idx = ?",
                        (job_id, hook, drop_index),
                    )
                if q is not None:
                    conn.execute("INSERT OR REPLACE INTO quality VALUES (?, ?, ?, ?, ?, ?)", q)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    # reading ---------------------------------------------------------------------------------
    def index_rows(self, job_id: str, hook: str, page: int = 2048) -> Iterator[IndexRow]:
        """The index rows in input order, read a page at a time: restoring a large index
        never holds every stored row at once (nor the lock between pages)."""
        if self._conn is None:
            with self._lock:
                rows: list[Any] = [
                    row for (j, h, _), row in self._index.items() if (j, h) == (job_id, hook)
                ]
            yield from sorted(rows)
            return
        after = -1
        while True:
            with self._lock:
                assert self._conn is not None
                rows = self._conn.execute(
                    "SELECT idx, n, exact, minhash, vectors FROM quality_index "
                    "WHERE job_id = ? AND hook = ? AND idx > ? ORDER BY idx LIMIT ?",
                    (job_id, hook, after, page),
                ).fetchall()
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1][0]

    def quality_rows(self, job_id: str) -> Iterator[tuple[int, int, str, str, list[Any]]]:
        """(index, attempt, hook, outcome, per-record dicts) of every attempt of the job."""
        with self._lock:
            if self._conn is None:
                rows: list[Any] = [
                    (i, a, h, *v) for (j, i, a, h), v in self._quality.items() if j == job_id
                ]
            else:
                rows = self._conn.execute(
                    "SELECT idx, attempt, hook, outcome, data FROM quality WHERE job_id = ?",
                    (job_id,),
                ).fetchall()
        for index, attempt, hook, outcome, data in rows:
            yield index, attempt, hook, outcome, json.loads(data)

    def delete_job(self, job_id: str) -> None:
        with self._lock:
            if self._conn is None:
                self._index = {k: v for k, v in self._index.items() if k[0] != job_id}
                self._quality = {k: v for k, v in self._quality.items() if k[0] != job_id}
                return
            self._conn.execute("DELETE FROM quality_index WHERE job_id = ?", (job_id,))
            self._conn.execute("DELETE FROM quality WHERE job_id = ?", (job_id,))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


_stores: dict[Path | None, QualityStore] = {}
_stores_lock = threading.Lock()


def store_for(path: Path | None) -> QualityStore:
    """One store per database file per process (`None`: in-memory jobs)."""
    with _stores_lock:
        store = _stores.get(path)
        if store is None:
            store = _stores[path] = QualityStore(path)
        return store


def existing_store(path: Path | None) -> QualityStore | None:
    """The store of a database that has quality tables, else None (nothing is created)."""
    if path is None:
        return _stores.get(None)
    if not Path(path).exists():
        return None
    conn = sqlite3.connect(str(path), timeout=30)
    try:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'quality'"
        ).fetchone()
    finally:
        conn.close()
    return store_for(path) if found else None
