"""`SqliteStorage`: the storage interface over one database file. It owns the file's shared
connection and writes the job rows (create, resume, finish, delete); the outcomes go through
the writer, everything read back through `reads`, input files through `input_rows`."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from starfish.data_factory.storage.base import JobWriter, Progress, Storage, check_filter
from starfish.data_factory.storage.sqlite import batches, cache, input_rows, reads, reserve
from starfish.data_factory.storage.sqlite.codec import dumps, json_column
from starfish.data_factory.storage.sqlite.connection import (
    SCHEMA,
    connect,
    job_rowid,
    key_range,
    rollback,
    transaction,
)
from starfish.data_factory.storage.sqlite.errors import is_full, reading, storage_error
from starfish.data_factory.storage.sqlite.reads import JOB_COLUMNS, JSON_COLUMNS
from starfish.data_factory.storage.sqlite.writer import SqliteWriter
from starfish.errors import ResumeError

__all__ = ["SqliteStorage"]


class SqliteStorage(Storage):
    kind = "local"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @classmethod
    def default(cls) -> SqliteStorage:
        from starfish.paths import app_data_dir

        return cls(app_data_dir() / "db" / "starfish.db")

    # connections -----------------------------------------------------------------------
    def _existing_db(self) -> sqlite3.Connection | None:
        """The connection, or None while the database file does not exist (reads create none)."""
        if self._conn is None and not self.path.exists():
            return None
        return self._db()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            if not self.path.exists():
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise storage_error(self.path.parent, exc, "create") from None
            try:
                conn = connect(self.path)
                try:
                    conn.executescript(SCHEMA)
                    cache.ensure(conn)
                except BaseException:
                    conn.close()
                    raise
            except (sqlite3.Error, OSError) as exc:
                raise storage_error(self.path, exc, "open") from None
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # jobs ------------------------------------------------------------------------------
    def create_job(self, meta: dict[str, Any], spec: Any) -> None:
        conn = self._db()
        reserve.ensure(self.path)
        state = meta.get("state") or {}
        meta = {**meta, "state": None}  # stored per key in `state`
        values = [
            json_column(meta.get(c)) if c in JSON_COLUMNS else meta.get(c) for c in JOB_COLUMNS
        ]
        with self._lock:
            try:
                with transaction(conn, "BEGIN IMMEDIATE"):
                    cur = conn.execute(
                        f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(JOB_COLUMNS))})",
                        values,
                    )
                    conn.execute(
                        "INSERT INTO specs (jid, spec) VALUES (?, ?)", (cur.lastrowid, spec)
                    )
                    conn.executemany(
                        "INSERT INTO state (jid, key, value) VALUES (?, ?, ?)",
                        [(cur.lastrowid, k, dumps(v)) for k, v in state.items()],
                    )
            except sqlite3.Error as exc:
                raise storage_error(self.path, exc) from None

    def start_resume(self, job_id: str, run_mode: str, config: dict[str, Any]) -> None:
        conn = self._db()
        reserve.ensure(self.path)
        with self._lock:
            try:
                conn.execute(
                    "UPDATE jobs SET status = 'running', stop_reason = NULL, run_mode = ?, "
                    "config = ?, finished_at = NULL WHERE job_id = ?",
                    (run_mode, json_column(config), job_id),
                )
            except sqlite3.Error as exc:
                raise storage_error(self.path, exc) from None

    def finish_job(self, job_id: str, fields: dict[str, Any]) -> None:
        """Write the job's final row; on a full disk, give back the reserve and write it then.

        A job stopped by a full disk must still store its true status and counts: the few
        pages this update needs come from the reserve file kept beside the database.
        """
        conn = self._db()
        cols = list(fields)
        values = [json_column(fields[c]) if c in JSON_COLUMNS else fields[c] for c in cols]
        sql = f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in cols)} WHERE job_id = ?"
        with self._lock:
            try:
                conn.execute(sql, [*values, job_id])
                return
            except sqlite3.Error as exc:
                rollback(conn)
                if not (is_full(exc) and reserve.release(self.path)):
                    raise storage_error(self.path, exc) from None
            try:
                conn.execute(sql, [*values, job_id])
            except sqlite3.Error as exc:
                rollback(conn)
                raise storage_error(self.path, exc) from None

    @reading
    def delete_job(self, job_id: str) -> None:
        conn = self._db()
        jid = job_rowid(conn, job_id)
        with self._lock, transaction(conn, "BEGIN IMMEDIATE"):
            conn.execute("DELETE FROM inputs WHERE key BETWEEN ? AND ?", key_range(jid))
            conn.execute("DELETE FROM attempts WHERE jid = ?", (jid,))
            input_rows.delete_rows(conn, jid)
            conn.execute("DELETE FROM specs WHERE jid = ?", (jid,))
            conn.execute("DELETE FROM state WHERE jid = ?", (jid,))
            conn.execute("DELETE FROM llm_batches WHERE job_id = ?", (job_id,))
            conn.execute("DELETE FROM llm_counts WHERE job_id = ?", (job_id,))
            conn.execute("DELETE FROM jobs WHERE id = ?", (jid,))

    @reading
    def open_writer(self, job_id: str, batch_size: int) -> JobWriter:
        conn = self._db()
        return SqliteWriter(conn, job_id, job_rowid(conn, job_id), batch_size, self.path)

    # leases ----------------------------------------------------------------------------
    def _lease_path(self, job_id: str) -> Path:
        return self.path.parent / "leases" / job_id

    def acquire_lease(self, job_id: str) -> Any:
        from starfish.data_factory.storage.lease import acquire, holder

        path = self._lease_path(job_id)
        try:
            lease = acquire(path)
        except OSError as exc:
            raise storage_error(path.parent, exc, "create a lock file in") from None
        if lease is None:
            pid = holder(path)
            where = f"another process (pid {pid})" if pid else "another process"
            raise ResumeError(
                f"job {job_id} is running in {where}: resuming it too would call its inputs "
                "twice; wait for it to end, or stop it (Ctrl-C), then resume it."
            )
        return lease

    def is_live(self, job_id: str) -> bool:
        from starfish.data_factory.storage.lease import holder

        return holder(self._lease_path(job_id)) is not None

    # input rows (`starfish run --input FILE`) -------------------------------------------
    def store_input_rows(
        self, job_id: str, rows: Iterable[tuple[dict[str, Any], str | None]], as_json: bool
    ) -> int:
        """Stream `rows` in as the inputs of job `job_id`; return how many."""
        return input_rows.store_rows(self.path, job_id, rows, as_json)

    def input_rows(
        self, job_id: str, names: tuple[str, ...], scalars: dict[str, Any], num_inputs: int
    ) -> input_rows.StoredRows:
        """The reader of job `job_id`'s stored input rows."""
        return input_rows.StoredRows(self.path, job_id, names, scalars, num_inputs)

    @reading
    def live_input_rows(self, job_id: str) -> int:
        """How many input rows of the job are stored (a load may have been cut short)."""
        return reads.live_input_rows(self._db(), job_id)

    # reads -----------------------------------------------------------------------------
    @reading
    def get_job(self, job_id: str) -> dict[str, Any] | None:
        conn = self._existing_db()
        return None if conn is None else reads.get_job(conn, job_id)

    @reading
    def find_job_ids(self, prefix: str) -> list[str]:
        conn = self._existing_db()
        return [] if conn is None or not prefix else reads.find_job_ids(conn, prefix)

    @reading
    def list_jobs(self) -> list[dict[str, Any]]:
        conn = self._existing_db()
        return [] if conn is None else reads.list_jobs(conn)

    @reading
    def job_overviews(self, job_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One query, however many jobs: `starfish jobs list` reads nothing else."""
        conn = self._existing_db()
        return [] if conn is None else reads.overviews(conn, job_ids)

    @reading
    def load_spec(self, job_id: str) -> Any:
        return reads.load_spec(self._db(), job_id)

    @reading
    def load_progress(self, job_id: str, num_inputs: int) -> Progress:
        return reads.load_progress(self._db(), job_id, num_inputs)

    @reading
    def live_counts(self, job_id: str) -> tuple[dict[str, int], dict[str, int]]:
        return reads.live_counts(self._db(), job_id)

    def iter_records(self, job_id: str, filter: str = "completed") -> Iterator[dict[str, Any]]:
        """Stream records in input order with a cursor on a private connection."""
        check_filter(filter)
        try:
            yield from reads.iter_records(self.path, job_id, filter)
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc, "read") from None

    def iter_outcomes(
        self, job_id: str, filter: str = "completed"
    ) -> Iterator[tuple[int, int, list[dict[str, Any]]]]:
        check_filter(filter)
        try:
            yield from reads.iter_outcomes(self.path, job_id, filter)
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc, "read") from None

    @reading
    def count_records(self, job_id: str) -> int:
        return reads.count_records(self._db(), job_id)

    @reading
    def indices(self, job_id: str, filter: str = "completed") -> list[int]:
        check_filter(filter)
        return reads.indices(self._db(), job_id, filter)

    @reading
    def dead_queue(self, job_id: str) -> list[int]:
        return reads.dead_queue(self._db(), job_id)

    # model answers and counts ----------------------------------------------------------
    @reading
    def llm_counts(self, job_id: str) -> dict[str, Any] | None:
        conn = self._existing_db()
        return None if conn is None else cache.llm_counts(conn, job_id)

    @reading
    def batches(self, job_id: str) -> list[dict[str, Any]]:
        conn = self._existing_db()
        return [] if conn is None else batches.batches(conn, job_id)

    @reading
    def cached_answer(self, key: str) -> str | None:
        return cache.cached_answer(self._db(), key)

    @reading
    def cached_answers(self, calls: Iterable[tuple[int, int]]) -> dict[tuple[int, int], Any]:
        return cache.cached_answers(self._db(), calls)
