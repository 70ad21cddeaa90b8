"""Input rows streamed from a file into local storage, one row per input, and read back in order.

`starfish run --input FILE` does not hold the file in memory or pickle it as one blob (which
cost 900 MB of RSS for a 200 MB file and failed past SQLite's 1 GB blob limit): the rows go
from the file into the `input_rows` table in chunks, one transaction per chunk, keyed like
`inputs` by `jid << 32 | index`. Workers then read them back a window of consecutive rows at a
time (one range scan per window, not one query per input), and so does a resume.

A row is stored as compact JSON text when it came from JSON or CSV (the round trip is exact),
otherwise (Parquet: dates, decimals, bytes) pickled; the column's type says which.
"""

from __future__ import annotations

import pickle
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from starfish.data_factory.storage.sqlite.codec import dumps, scan
from starfish.data_factory.storage.sqlite.connection import (
    LOW,
    SCHEMA,
    SHIFT,
    connect,
    job_rowid,
    key_range,
    transaction,
)
from starfish.errors import InputError

__all__ = ["CHUNK", "StoredRows", "delete_rows", "store_rows"]

CHUNK = 4096
"""Rows per insert transaction, and per window read back."""


def store_rows(
    path: Path, job_id: str, rows: Iterable[tuple[dict[str, Any], str | None]], as_json: bool
) -> int:
    """Insert `rows`, pairs of a row and its own JSON text (or None), as the inputs of job
    `job_id`, a chunk per transaction; return how many. A row's text is stored as it is (a
    JSONL line needs no second encoding); without one the row is encoded here.

    On any error the rows stored so far stay: the caller deletes the job.
    """
    encode = dumps if as_json else _pickle
    conn = connect(path)
    try:
        conn.executescript(SCHEMA)
        base = job_rowid(conn, job_id) << SHIFT
        chunk: list[tuple[int, Any]] = []
        count = 0
        for row, text in rows:
            if count > LOW:
                raise InputError(f"more than {LOW + 1:,} rows: split the file into jobs.")
            chunk.append((base | count, encode(row) if text is None else text))
            count += 1
            if len(chunk) >= CHUNK:
                _insert(conn, chunk)
                chunk = []
        if chunk:
            _insert(conn, chunk)
        if count:
            conn.execute(
                "UPDATE jobs SET num_inputs = ?, stop_reason = NULL WHERE job_id = ?",
                (count, job_id),
            )
        return count
    finally:
        conn.close()


def _pickle(row: dict[str, Any]) -> bytes:
    return pickle.dumps(row, protocol=pickle.HIGHEST_PROTOCOL)


def _insert(conn: sqlite3.Connection, chunk: list[tuple[int, Any]]) -> None:
    with transaction(conn):
        conn.executemany("INSERT INTO input_rows (key, data) VALUES (?, ?)", chunk)


class StoredRows:
    """The inputs of a job whose rows are in storage: what the runner asks `kwargs(i)` of.

    The runner asks in input order (retries aside), so rows are fetched a window of `CHUNK`
    consecutive indices at a time; the previous window is kept for retries that come soon,
    and an older index is fetched alone. Memory: two windows, whatever the job's size.
    """

    def __init__(
        self,
        path: Path,
        job_id: str,
        names: tuple[str, ...],
        scalars: dict[str, Any],
        num_inputs: int,
    ) -> None:
        self.path = Path(path)
        self.job_id = job_id
        self.names = names
        self.scalars = scalars
        self.num_inputs = num_inputs
        self._base: int | None = None
        self._start = 0
        self._window: dict[int, Any] = {}
        self._previous: dict[int, Any] = {}
        self.fetches = 0  # queries made: about num_inputs / CHUNK when read in order

    def to_payload(self) -> dict[str, Any]:
        return {"names": self.names, "scalars": self.scalars, "stored_rows": True}

    def kwargs(self, index: int) -> dict[str, Any]:
        """The keyword arguments of input `index`: its row plus the broadcast scalars."""
        data = self._window.get(index)
        if data is None:
            data = self._previous.get(index)
            if data is None:
                data = self._fetch(index)
        row: dict[str, Any] = scan(data, 0)[0] if type(data) is str else pickle.loads(data)
        if not self.scalars:
            return row
        kw = self.scalars.copy()
        kw.update(row)
        return kw

    def _fetch(self, index: int) -> Any:
        if not 0 <= index < self.num_inputs:
            raise IndexError(f"input {index} of job {self.job_id} does not exist")
        self.fetches += 1
        conn = sqlite3.connect(str(self.path))
        try:
            if self._base is None:
                self._base = job_rowid(conn, self.job_id) << SHIFT
            base = self._base
            if index < self._start:  # a retry from far behind: leave the windows alone
                row = conn.execute(
                    "SELECT data FROM input_rows WHERE key = ?", (base | index,)
                ).fetchone()
                if row is None:
                    raise LookupError(f"input {index} of job {self.job_id} is not stored")
                return row[0]
            last = min(index + CHUNK, self.num_inputs) - 1
            rows = conn.execute(
                "SELECT key, data FROM input_rows WHERE key BETWEEN ? AND ?",
                (base | index, base | last),
            ).fetchall()
        finally:
            conn.close()
        self._previous = self._window
        self._window = {key & LOW: data for key, data in rows}
        self._start = index
        data = self._window.get(index)
        if data is None:
            raise LookupError(f"input {index} of job {self.job_id} is not stored")
        return data


def delete_rows(conn: sqlite3.Connection, jid: int) -> None:
    """Inside the caller's transaction: the stored input rows of job `jid`."""
    conn.execute("DELETE FROM input_rows WHERE key BETWEEN ? AND ?", key_range(jid))
