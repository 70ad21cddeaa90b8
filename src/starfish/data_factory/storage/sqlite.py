"""Local storage: one SQLite database in WAL mode for every job.

Layout, chosen for write speed:
- `jobs`: one row per job; `specs`: the pickled call spec (function, inputs, config).
- `inputs`: one row per *finished* input, keyed by `jid << 32 | index` as the rowid, so an
  insert touches one b-tree and reading a job in input order is a rowid range scan. The
  completed records are one JSON array per input.
- `attempts`: attempts that did not complete (failed / filtered / duplicate).

Writes go through a dedicated thread that commits whatever has been handed to it in one
transaction (group commit), so the event loop never waits for the disk.
`synchronous=NORMAL` under WAL: a commit survives a process crash (kill -9); only a power
loss can drop the last transactions.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from starfish.data_factory.storage.base import (
    COUNT_KEYS,
    JobWriter,
    Progress,
    Storage,
    check_filter,
)

logger = logging.getLogger("starfish")

_SCHEMA = """
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
"""

_JOB_COLUMNS = (
    "job_id",
    "name",
    "status",
    "stop_reason",
    "run_mode",
    "storage",
    "num_inputs",
    "config",
    "counts",
    "error_summary",
    "state",
    "created_at",
    "finished_at",
    "execution_time",
)
_JSON_COLUMNS = ("config", "counts", "error_summary", "state")
_SHIFT = 32
_LOW = (1 << _SHIFT) - 1


def _make_dumps() -> Any:
    """Compact JSON with one C encoder built once (json.dumps rebuilds it on every call)."""
    from json import encoder

    plain = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
    if encoder.c_make_encoder is None or encoder.c_encode_basestring is None:
        return plain.encode
    make = encoder.c_make_encoder(
        None, plain.default, encoder.c_encode_basestring, None, ":", ",", False, False, True
    )
    join = "".join

    def dumps(value: Any) -> str:
        return join(make(value, 0))

    return dumps


_dumps = _make_dumps()
_scan = json.JSONDecoder().scan_once


def _loads(text: str) -> Any:
    """Parse JSON we wrote ourselves (no surrounding whitespace) with the C scanner directly."""
    return _scan(text, 0)[0]


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN/COMMIT), WAL, NORMAL sync."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


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
    def _db(self, create: bool = True) -> sqlite3.Connection | None:
        if self._conn is None:
            if not self.path.exists():
                if not create:
                    return None
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = connect(self.path)
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _jid(self, conn: sqlite3.Connection, job_id: str) -> int:
        row = conn.execute("SELECT id FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(job_id)
        return row[0]

    # jobs ------------------------------------------------------------------------------
    def create_job(self, meta: dict[str, Any], spec: Any) -> None:
        conn = self._db()
        values = [
            _json_column(meta.get(c)) if c in _JSON_COLUMNS else meta.get(c) for c in _JOB_COLUMNS
        ]
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(
                    f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(_JOB_COLUMNS))})",
                    values,
                )
                conn.execute("INSERT INTO specs (jid, spec) VALUES (?, ?)", (cur.lastrowid, spec))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def start_resume(self, job_id: str, run_mode: str, config: dict[str, Any]) -> None:
        conn = self._db()
        with self._lock:
            conn.execute(
                "UPDATE jobs SET status = 'running', stop_reason = NULL, run_mode = ?, "
                "config = ?, finished_at = NULL WHERE job_id = ?",
                (run_mode, _json_column(config), job_id),
            )

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        conn = self._db(create=False)
        if conn is None:
            return None
        row = conn.execute(
            f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        return None if row is None else _row_to_job(row)

    def find_job_ids(self, prefix: str) -> list[str]:
        conn = self._db(create=False)
        if conn is None or not prefix:
            return []
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = conn.execute(
            "SELECT job_id FROM jobs WHERE job_id LIKE ? ESCAPE '\\' LIMIT 10", (escaped + "%",)
        ).fetchall()
        return [r[0] for r in rows]

    def list_jobs(self) -> list[dict[str, Any]]:
        conn = self._db(create=False)
        if conn is None:
            return []
        rows = conn.execute(
            f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs ORDER BY created_at DESC, id DESC"
        ).fetchall()
        return [_row_to_job(r) for r in rows]

    def load_spec(self, job_id: str) -> Any:
        conn = self._db()
        row = conn.execute(
            "SELECT spec FROM specs WHERE jid = ?", (self._jid(conn, job_id),)
        ).fetchone()
        return None if row is None else row[0]

    def load_progress(self, job_id: str, num_inputs: int) -> Progress:
        conn = self._db()
        jid = self._jid(conn, job_id)
        lo = jid << _SHIFT
        completed = bytearray(num_inputs)
        dead: set[int] = set()
        for key, status in conn.execute(
            "SELECT key, status FROM inputs WHERE key BETWEEN ? AND ?", (lo, lo | _LOW)
        ):
            if status == "completed":
                completed[key & _LOW] = 1
            else:
                dead.add(key & _LOW)
        failed_counts = dict.fromkeys(("failed", "filtered", "duplicate"), 0)
        errors = _attempt_counts(conn, jid, failed_counts)
        row = conn.execute("SELECT state FROM jobs WHERE id = ?", (jid,)).fetchone()
        state = json.loads(row[0]) if row and row[0] else None
        return Progress(completed, dead, failed_counts, errors, state)

    def live_counts(self, job_id: str) -> tuple[dict[str, int], dict[str, int]]:
        conn = self._db()
        jid = self._jid(conn, job_id)
        lo = jid << _SHIFT
        counts = dict.fromkeys(COUNT_KEYS, 0)
        for status, n in conn.execute(
            "SELECT status, count(*) FROM inputs WHERE key BETWEEN ? AND ? GROUP BY status",
            (lo, lo | _LOW),
        ):
            counts[status] = n
        errors = _attempt_counts(conn, jid, counts)
        return counts, errors

    def open_writer(self, job_id: str, batch_size: int) -> JobWriter:
        conn = self._db()
        return _SqliteWriter(self.path, self._jid(conn, job_id), batch_size)

    def finish_job(self, job_id: str, fields: dict[str, Any]) -> None:
        conn = self._db()
        cols = list(fields)
        values = [_json_column(fields[c]) if c in _JSON_COLUMNS else fields[c] for c in cols]
        with self._lock:
            conn.execute(
                f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in cols)} WHERE job_id = ?",
                [*values, job_id],
            )

    # reading records --------------------------------------------------------------------
    def iter_records(self, job_id: str, filter: str = "completed") -> Iterator[dict]:
        """Stream records in input order with a cursor on a private connection."""
        check_filter(filter)
        conn = connect(self.path)
        try:
            jid = self._jid(conn, job_id)
            if filter == "completed":
                lo = jid << _SHIFT
                cur = conn.execute(
                    "SELECT data FROM inputs WHERE key BETWEEN ? AND ? AND status = 'completed'",
                    (lo, lo | _LOW),
                )
            else:
                cur = conn.execute(
                    "SELECT data FROM attempts WHERE jid = ? AND status = ? ORDER BY idx, id",
                    (jid, filter),
                )
            loads = _loads
            while True:
                rows = cur.fetchmany(512)
                if not rows:
                    break
                for (data,) in rows:
                    yield from loads(data)
        finally:
            conn.close()

    def indices(self, job_id: str, filter: str = "completed") -> list[int]:
        check_filter(filter)
        conn = self._db()
        jid = self._jid(conn, job_id)
        if filter == "completed":
            lo = jid << _SHIFT
            rows = conn.execute(
                "SELECT key FROM inputs WHERE key BETWEEN ? AND ? AND status = 'completed'",
                (lo, lo | _LOW),
            )
            return [k & _LOW for (k,) in rows]
        rows = conn.execute(
            "SELECT DISTINCT idx FROM attempts WHERE jid = ? AND status = ? ORDER BY idx",
            (jid, filter),
        )
        return [i for (i,) in rows]

    def dead_queue(self, job_id: str) -> list[int]:
        conn = self._db()
        lo = self._jid(conn, job_id) << _SHIFT
        rows = conn.execute(
            "SELECT key FROM inputs WHERE key BETWEEN ? AND ? AND status = 'dead'", (lo, lo | _LOW)
        )
        return [k & _LOW for (k,) in rows]

    def delete_job(self, job_id: str) -> None:
        conn = self._db()
        jid = self._jid(conn, job_id)
        lo = jid << _SHIFT
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM inputs WHERE key BETWEEN ? AND ?", (lo, lo | _LOW))
                conn.execute("DELETE FROM attempts WHERE jid = ?", (jid,))
                conn.execute("DELETE FROM specs WHERE jid = ?", (jid,))
                conn.execute("DELETE FROM jobs WHERE id = ?", (jid,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise


def _json_column(value: Any) -> str | None:
    try:
        return _dumps(value)
    except Exception as exc:  # e.g. a state value that is not JSON-serialisable
        logger.warning("starfish: not stored, not JSON-serialisable: %r", exc)
        return None


def _row_to_job(row: tuple) -> dict[str, Any]:
    job = dict(zip(_JOB_COLUMNS, row, strict=True))
    for c in _JSON_COLUMNS:
        job[c] = json.loads(job[c]) if job[c] else None
    return job


_CLOSE = object()
_HIGH_WATER = 20_000
"""Outcomes handed to the writer but not yet committed before the loop waits for it."""
_LOW_WATER = 5_000


class _SqliteWriter(JobWriter):
    """Batches outcomes on the loop thread, commits them on a writer thread.

    Every `batch_size` finished inputs the buffer is handed to the writer thread, which
    commits everything it has been handed since its last commit in one transaction. With
    `batch_size=1` each outcome is handed over at once and committed as soon as the writer is
    free; under load, commits naturally group many outcomes.
    """

    def __init__(self, path: Path, jid: int, batch_size: int) -> None:
        self._path = path
        self._jid = jid
        self._base = jid << _SHIFT
        self._batch_size = batch_size
        self._buf: list[tuple] = []
        self._finished = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._error: BaseException | None = None
        # each counter is written by one thread only, so no lock is needed
        self._handed = 0
        self._committed = 0
        self._room = threading.Event()
        self._thread = threading.Thread(target=self._run, name="starfish-writer", daemon=True)
        self._thread.start()

    def input_done(self, index: int, status: str, attempts: int, records: list | None) -> None:
        data = None if records is None else _dumps(records)
        self._buf.append((0, (self._base | index, status, attempts, data)))
        self._finished += 1
        if self._finished >= self._batch_size:
            self._hand_off()

    def attempt(
        self, index: int, attempt: int, status: str, records: list, error_type: str | None
    ) -> None:
        self._buf.append((1, (self._jid, index, attempt, status, error_type, _dumps(records))))
        if self._batch_size == 1:
            self._hand_off()

    def set_state(self, state: dict[str, Any]) -> None:
        text = _json_column(state)
        if text is not None:
            self._buf.append((2, text))

    def _hand_off(self) -> None:
        if self._buf:
            self._handed += len(self._buf)
            self._queue.put(self._buf)
            self._buf = []
        self._finished = 0
        if self._handed - self._committed > _HIGH_WATER:
            self._wait_for_room()

    def _wait_for_room(self) -> None:
        """Backpressure: when the function outruns the disk, memory stays bounded.

        Blocks the event loop briefly; it only happens when calls finish faster than SQLite
        can store them, so the disk is the bottleneck anyway.
        """
        while self._handed - self._committed > _LOW_WATER and self._thread.is_alive():
            self._room.clear()
            if self._handed - self._committed > _LOW_WATER:
                self._room.wait(0.05)

    def close(self) -> None:
        self._hand_off()
        self._queue.put(_CLOSE)
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"storage writer failed: {self._error!r}") from self._error

    def _run(self) -> None:
        conn = connect(self._path)
        get, get_nowait = self._queue.get, self._queue.get_nowait
        try:
            while True:
                batches = [get()]
                while True:
                    try:
                        batches.append(get_nowait())
                    except queue.Empty:
                        break
                closing = batches[-1] is _CLOSE
                if closing:
                    batches.pop()
                if batches and self._error is None:
                    try:
                        self._commit(conn, batches)
                    except BaseException as exc:
                        self._error = exc
                        logger.error("starfish: storage write failed: %r", exc)
                self._committed += sum(len(b) for b in batches)
                if self._handed - self._committed <= _LOW_WATER:
                    self._room.set()
                if closing:
                    return
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batches: list[list[tuple]]) -> None:
        inputs: list[tuple] = []
        attempts: list[tuple] = []
        state = None
        for batch in batches:
            for kind, row in batch:
                if kind == 0:
                    inputs.append(row)
                elif kind == 1:
                    attempts.append(row)
                else:
                    state = row
        conn.execute("BEGIN")
        try:
            if inputs:
                conn.executemany(
                    "INSERT OR REPLACE INTO inputs (key, status, attempts, data) "
                    "VALUES (?, ?, ?, ?)",
                    inputs,
                )
            if attempts:
                conn.executemany(
                    "INSERT INTO attempts (jid, idx, attempt, status, error_type, data) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    attempts,
                )
            if state is not None:
                conn.execute("UPDATE jobs SET state = ? WHERE id = ?", (state, self._jid))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _attempt_counts(conn: sqlite3.Connection, jid: int, counts: dict[str, int]) -> dict[str, int]:
    """Add the job's attempts by status into `counts`; return failures by exception type."""
    for status, n in conn.execute(
        "SELECT status, count(*) FROM attempts WHERE jid = ? GROUP BY status", (jid,)
    ):
        counts[status] = n
    return dict(
        conn.execute(
            "SELECT error_type, count(*) FROM attempts WHERE jid = ? AND status = 'failed' "
            "GROUP BY error_type",
            (jid,),
        ).fetchall()
    )
