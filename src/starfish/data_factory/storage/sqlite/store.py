"""Local storage: one SQLite database in WAL mode for every job.

Layout, chosen for write speed:
- `jobs`: one row per job; `specs`: the pickled call spec (function, inputs, config).
- `inputs`: one row per *finished* input, keyed by `jid << 32 | index` as the rowid, so an
  insert touches one b-tree and reading a job in input order is a rowid range scan. The
  completed records are one JSON array per input.
- `attempts`: attempts that did not complete (failed / filtered / duplicate).
- `state`: the job state, one row per key (JSON), written per changed key in the same
  transaction as the outcomes whose hooks changed it. (`jobs.state` is read only for jobs
  stored before this table existed.)
- `input_rows`: the rows of an input file, one per input (see `_input_rows`).

Writes are committed on the event loop once per turn of the loop (group commit, see
`_SqliteWriter`): a finished input is durable before the loop starts anything else.
`synchronous=NORMAL` under WAL: a commit survives a process crash (kill -9); only a power
loss can drop the last transactions.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starfish.data_factory._json import dumps
from starfish.data_factory.storage import _input_rows
from starfish.data_factory.storage.base import (
    COUNT_KEYS,
    JobWriter,
    Progress,
    Storage,
    check_filter,
)
from starfish.errors import ResumeError, StorageError

if TYPE_CHECKING:
    from starfish.data_factory.state import JobState

__all__ = ["SqliteStorage", "connect", "storage_error"]

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
CREATE TABLE IF NOT EXISTS state (
    jid INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (jid, key)
) WITHOUT ROWID;
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


_dumps = dumps
# Set by `JSONDecoder.__init__` but absent from typeshed's stubs.
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


_MAX_TEXT = 1_000_000_000
"""SQLite's default SQLITE_MAX_LENGTH in bytes: a longer value fails the whole transaction."""


def _encode(records: list[dict[str, Any]]) -> str:
    """One input's records as JSON text that SQLite will take, or an error for that input only.

    Checked here, per input, so that no record content can fail a batch commit (and with it
    every input of the batch): a lone surrogate (half an emoji from a model) is valid in a
    Python str but not in UTF-8, and a value over SQLite's length limit is refused whole.
    `isascii` is O(1), so ASCII records of a sane size pay two cheap calls.
    """
    data = _dumps(records)
    if not data.isascii() or len(data) > _MAX_TEXT:
        _check_text(data)
    return data


def _check_text(data: str) -> None:
    size = len(data.encode("utf-8"))  # raises UnicodeEncodeError for a lone surrogate
    if size > _MAX_TEXT:
        raise ValueError(
            f"records of {size:,} bytes as JSON are over SQLite's limit of {_MAX_TEXT:,}"
        )


def _encode_failure(records: list[dict[str, Any]]) -> str:
    """A failure's own record must always be storable: escape what UTF-8 cannot hold."""
    try:
        return _encode(records)
    except ValueError:  # UnicodeEncodeError included: an error message quoting bad output
        cut = [{k: v[:100_000] if isinstance(v, str) else v for k, v in r.items()} for r in records]
        return json.dumps(cut, ensure_ascii=True, default=repr)


def _loads(text: str) -> Any:
    """Parse JSON we wrote ourselves (no surrounding whitespace) with the C scanner directly."""
    return _scan(text, 0)[0]


READ_BATCH_ROWS = 512
READ_BATCH_BYTES = 1 << 20


def _parse_batch(batch: list[str]) -> Iterator[dict[str, Any]]:
    """The records of a batch of rows; the batch is emptied and the text dropped before the
    first record is handed on, and no record is kept once handed on: a big record is held
    once, by the caller, and no longer than the caller holds it."""
    if not batch:
        return
    text = batch[0] if len(batch) == 1 else "[" + ",".join(batch) + "]"
    parsed = [_loads(text)] if len(batch) == 1 else _loads(text)
    batch.clear()
    del text
    # Popped, not iterated: a record handed on is no longer held here.
    parsed.reverse()
    while parsed:
        records = parsed.pop()
        records.reverse()
        while records:
            yield records.pop()


_RESERVE_BYTES = 256 * 1024
"""Space kept beside the database in a file: given back when a full disk would otherwise keep
a job's final row (status, counts) from being written."""


def _cause(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _fix(cause: str) -> str:
    text = cause.lower()
    if "full" in text or "no space" in text:
        return "free disk space"
    if "readonly" in text or "read-only" in text or "permission" in text:
        return "make the file and its directory writable"
    if "i/o error" in text:
        return "check the disk: free space, the file size limit (ulimit -f), the system log"
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return (
            "the file is damaged: move it aside (its jobs are then not listed) or set "
            "STARFISH_LOCAL_STORAGE_DIR to another directory"
        )
    return (
        "check that it is a readable database file in a writable directory, or set "
        "STARFISH_LOCAL_STORAGE_DIR to another directory"
    )


def storage_error(path: Path, exc: BaseException, action: str = "write") -> StorageError:
    """One line naming the file, the cause and the fix; `.reason` is the cause alone."""
    cause = " ".join(_cause(exc).split())
    error = StorageError(f"cannot {action} {path}: {cause}; {_fix(cause)}")
    error.reason = cause
    return error


def _is_full(exc: BaseException) -> bool:
    return "full" in str(exc).lower() or (isinstance(exc, OSError) and exc.errno == 28)


def _reading(method: Callable[..., Any]) -> Callable[..., Any]:
    """SQLite errors of a read (a damaged page, a locked file) as one-line `StorageError`s."""

    @functools.wraps(method)
    def wrapper(self: SqliteStorage, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc, "read") from None

    return wrapper


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
                    conn.executescript(_SCHEMA + _input_rows.SCHEMA)
                except BaseException:
                    conn.close()
                    raise
            except (sqlite3.Error, OSError) as exc:
                raise storage_error(self.path, exc, "open") from None
            self._conn = conn
        return self._conn

    def _reserve_path(self) -> Path:
        return self.path.with_name(self.path.name + ".reserve")

    def _ensure_reserve(self) -> None:
        """Keep `_RESERVE_BYTES` of real disk blocks beside the database (once per job start)."""
        reserve = self._reserve_path()
        if reserve.exists():
            return
        try:
            with open(reserve, "wb") as f:
                f.write(bytes(_RESERVE_BYTES))
        except OSError:
            reserve.unlink(missing_ok=True)  # no room even for that: nothing to keep

    def _release_reserve(self) -> bool:
        try:
            self._reserve_path().unlink()
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _jid(self, conn: sqlite3.Connection, job_id: str) -> int:
        row = conn.execute("SELECT id FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(job_id)
        return int(row[0])

    # jobs ------------------------------------------------------------------------------
    def create_job(self, meta: dict[str, Any], spec: Any) -> None:
        conn = self._db()
        self._ensure_reserve()
        state = meta.get("state") or {}
        meta = {**meta, "state": None}  # stored per key in `state`
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
                conn.executemany(
                    "INSERT INTO state (jid, key, value) VALUES (?, ?, ?)",
                    [(cur.lastrowid, k, _dumps(v)) for k, v in state.items()],
                )
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(conn)
                raise storage_error(self.path, exc) from None
            except BaseException:
                _rollback(conn)
                raise

    def start_resume(self, job_id: str, run_mode: str, config: dict[str, Any]) -> None:
        conn = self._db()
        self._ensure_reserve()
        with self._lock:
            try:
                conn.execute(
                    "UPDATE jobs SET status = 'running', stop_reason = NULL, run_mode = ?, "
                    "config = ?, finished_at = NULL WHERE job_id = ?",
                    (run_mode, _json_column(config), job_id),
                )
            except sqlite3.Error as exc:
                raise storage_error(self.path, exc) from None

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

    # input rows (`starfish run --input FILE`, see _input_rows.py) ---------------------
    def store_input_rows(
        self, job_id: str, rows: Iterable[tuple[dict[str, Any], str | None]], as_json: bool
    ) -> int:
        """Stream `rows` in as the inputs of job `job_id`; return how many."""
        return _input_rows.store_rows(self.path, job_id, rows, as_json)

    def input_rows(
        self, job_id: str, names: tuple[str, ...], scalars: dict[str, Any], num_inputs: int
    ) -> _input_rows.StoredRows:
        """The reader of job `job_id`'s stored input rows."""
        return _input_rows.StoredRows(self.path, job_id, names, scalars, num_inputs)

    @_reading
    def live_input_rows(self, job_id: str) -> int:
        """How many input rows of the job are stored (a load may have been cut short)."""
        conn = self._db()
        lo = self._jid(conn, job_id) << _SHIFT
        (n,) = conn.execute(
            "SELECT count(*) FROM input_rows WHERE key BETWEEN ? AND ?", (lo, lo | _LOW)
        ).fetchone()
        return int(n)

    def is_live(self, job_id: str) -> bool:
        from starfish.data_factory.storage.lease import holder

        return holder(self._lease_path(job_id)) is not None

    @_reading
    def get_job(self, job_id: str) -> dict[str, Any] | None:
        conn = self._existing_db()
        if conn is None:
            return None
        row = conn.execute(
            f"SELECT id, {', '.join(_JOB_COLUMNS)} FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        return None if row is None else _row_to_job(conn, row)

    @_reading
    def find_job_ids(self, prefix: str) -> list[str]:
        conn = self._existing_db()
        if conn is None or not prefix:
            return []
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = conn.execute(
            "SELECT job_id FROM jobs WHERE job_id LIKE ? ESCAPE '\\' LIMIT 10", (escaped + "%",)
        ).fetchall()
        return [r[0] for r in rows]

    @_reading
    def list_jobs(self) -> list[dict[str, Any]]:
        conn = self._existing_db()
        if conn is None:
            return []
        rows = conn.execute(
            f"SELECT id, {', '.join(_JOB_COLUMNS)} FROM jobs ORDER BY created_at DESC, id DESC"
        ).fetchall()
        return [_row_to_job(conn, r) for r in rows]

    @_reading
    def load_spec(self, job_id: str) -> Any:
        conn = self._db()
        row = conn.execute(
            "SELECT spec FROM specs WHERE jid = ?", (self._jid(conn, job_id),)
        ).fetchone()
        return None if row is None else row[0]

    @_reading
    def load_progress(self, job_id: str, num_inputs: int) -> Progress:
        conn = self._db()
        jid = self._jid(conn, job_id)
        lo = jid << _SHIFT
        completed = bytearray(num_inputs)
        dead: set[int] = set()
        empty = 0
        for key, status, is_empty in conn.execute(
            "SELECT key, status, data = '[]' FROM inputs WHERE key BETWEEN ? AND ?", (lo, lo | _LOW)
        ):
            if status == "completed":
                completed[key & _LOW] = 1
                empty += is_empty
            else:
                dead.add(key & _LOW)
        failed_counts = dict.fromkeys(("failed", "filtered", "duplicate"), 0)
        errors = _attempt_counts(conn, jid, failed_counts)
        return Progress(
            completed,
            dead,
            failed_counts,
            errors,
            _load_state(conn, jid),
            empty,
            _last_attempts(conn, jid, completed),
        )

    @_reading
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

    @_reading
    def open_writer(self, job_id: str, batch_size: int) -> JobWriter:
        conn = self._db()
        return _SqliteWriter(conn, self._jid(conn, job_id), batch_size, self.path)

    def finish_job(self, job_id: str, fields: dict[str, Any]) -> None:
        """Write the job's final row; on a full disk, give back the reserve and write it then.

        A job stopped by a full disk must still store its true status and counts: the few
        pages this update needs come from the reserve file kept beside the database.
        """
        conn = self._db()
        cols = list(fields)
        values = [_json_column(fields[c]) if c in _JSON_COLUMNS else fields[c] for c in cols]
        sql = f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in cols)} WHERE job_id = ?"
        with self._lock:
            try:
                conn.execute(sql, [*values, job_id])
                return
            except sqlite3.Error as exc:
                _rollback(conn)
                if not (_is_full(exc) and self._release_reserve()):
                    raise storage_error(self.path, exc) from None
            try:
                conn.execute(sql, [*values, job_id])
            except sqlite3.Error as exc:
                _rollback(conn)
                raise storage_error(self.path, exc) from None

    # reading records --------------------------------------------------------------------
    def iter_records(self, job_id: str, filter: str = "completed") -> Iterator[dict[str, Any]]:
        """Stream records in input order with a cursor on a private connection."""
        check_filter(filter)
        try:
            yield from self._iter_records(job_id, filter)
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc, "read") from None

    def _iter_records(self, job_id: str, filter: str) -> Iterator[dict[str, Any]]:
        """Rows come one at a time and are parsed in batches of at most READ_BATCH_ROWS rows or
        READ_BATCH_BYTES of text: one parse per batch (each row is a JSON array, so a batch is
        an array of them) is fast for small records, and a big one is parsed alone. After a big
        row the query starts again past it, so that SQLite lets go of its copy of the row too:
        60 records of 10 MB once peaked at 1.8 GB, read 512 rows at a time."""
        conn = connect(self.path)
        try:
            jid = self._jid(conn, job_id)
            lo = jid << _SHIFT
            if filter == "completed":
                sql = (
                    "SELECT data, key FROM inputs WHERE key > ? AND key <= ? AND status = ? "
                    "ORDER BY key"
                )
                after: tuple[Any, ...] = (lo - 1,)
                bounds: tuple[Any, ...] = (lo | _LOW, "completed")
            else:
                sql = (
                    "SELECT data, idx, id FROM attempts WHERE jid = ? AND status = ? "
                    "AND (idx, id) > (?, ?) ORDER BY idx, id"
                )
                after, bounds = (-1, -1), (jid, filter)
            batch: list[str] = []
            size = 0
            while True:
                args = (*after, *bounds) if filter == "completed" else (*bounds, *after)
                cur = conn.execute(sql, args)
                big = False
                for row in cur:
                    data: str = row[0]
                    after = row[1:]
                    del row
                    if batch and size + len(data) > READ_BATCH_BYTES:
                        yield from _parse_batch(batch)
                        size = 0
                    batch.append(data)
                    size += len(data)
                    big = len(data) >= READ_BATCH_BYTES
                    del data
                    if big:
                        cur.close()  # SQLite's copy of the row goes before it is parsed
                        break
                    if size >= READ_BATCH_BYTES or len(batch) >= READ_BATCH_ROWS:
                        yield from _parse_batch(batch)
                        size = 0
                yield from _parse_batch(batch)
                size = 0
                if not big:
                    break
        finally:
            conn.close()

    @_reading
    def count_records(self, job_id: str) -> int:
        """Counted in SQL: no record is parsed in Python (1,000,000 took 5 s that way)."""
        conn = self._db()
        (n,) = _finished_inputs(
            conn, self._jid(conn, job_id), "completed", "coalesce(sum(json_array_length(data)), 0)"
        ).fetchone()
        return int(n)

    @_reading
    def indices(self, job_id: str, filter: str = "completed") -> list[int]:
        check_filter(filter)
        conn = self._db()
        jid = self._jid(conn, job_id)
        if filter == "completed":
            return [k & _LOW for (k,) in _finished_inputs(conn, jid, "completed", "key")]
        rows = conn.execute(
            "SELECT DISTINCT idx FROM attempts WHERE jid = ? AND status = ? ORDER BY idx",
            (jid, filter),
        )
        return [i for (i,) in rows]

    @_reading
    def dead_queue(self, job_id: str) -> list[int]:
        conn = self._db()
        return [k & _LOW for (k,) in _finished_inputs(conn, self._jid(conn, job_id), "dead", "key")]

    @_reading
    def delete_job(self, job_id: str) -> None:
        conn = self._db()
        jid = self._jid(conn, job_id)
        lo = jid << _SHIFT
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM inputs WHERE key BETWEEN ? AND ?", (lo, lo | _LOW))
                conn.execute("DELETE FROM attempts WHERE jid = ?", (jid,))
                _input_rows.delete_rows(conn, jid)
                conn.execute("DELETE FROM specs WHERE jid = ?", (jid,))
                conn.execute("DELETE FROM state WHERE jid = ?", (jid,))
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


def _row_to_job(conn: sqlite3.Connection, row: tuple[Any, ...]) -> dict[str, Any]:
    job = dict(zip(_JOB_COLUMNS, row[1:], strict=True))
    for c in _JSON_COLUMNS:
        job[c] = json.loads(job[c]) if job[c] else None
    job["state"] = _load_state(conn, row[0], job["state"])
    return job


def _load_state(
    conn: sqlite3.Connection, jid: int, legacy: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The job state from its rows; a job stored before the `state` table kept it in `jobs`."""
    rows = conn.execute("SELECT key, value FROM state WHERE jid = ?", (jid,)).fetchall()
    if rows:
        return {key: _loads(value) for key, value in rows}
    if legacy is None:
        row = conn.execute("SELECT state FROM jobs WHERE id = ?", (jid,)).fetchone()
        legacy = json.loads(row[0]) if row and row[0] else None
    return legacy or {}


_MAX_PENDING = 256
"""Outcomes that wait for the end of a loop turn before they are committed regardless."""


class _SqliteWriter(JobWriter):
    """Commits a job's outcomes on the event loop, once per turn of the loop (group commit).

    Each outcome is appended to a buffer; the first one of a turn schedules a commit with
    `call_soon`, which runs after every callback already ready, so all the inputs that finished
    in that turn go in one transaction. Under WAL with `synchronous=NORMAL` a commit is a write
    to the WAL file, not an fsync: tens of microseconds. This beat a writer thread here on
    throughput (no GIL hand-offs, no queue per outcome). With `batch_size=1` a finished input
    is durable by the end of the loop turn it finished in; a function that never awaits keeps
    the loop from turning, so then at most `_MAX_PENDING` outcomes wait.
    """

    def __init__(self, conn: sqlite3.Connection, jid: int, batch_size: int, path: Path) -> None:
        import asyncio

        self._path = path
        self._conn = conn
        self._jid = jid
        self._base = jid << _SHIFT
        self._batch_size = batch_size
        self._loop = asyncio.get_running_loop()
        self._inputs: list[tuple[int, str, int, str | None]] = []
        self._attempts: list[tuple[int, int, int, str, str | None, str]] = []
        self._state: dict[str, str] = {}
        self._scheduled = False
        self._error: BaseException | None = None

    def input_done(
        self, index: int, status: str, attempts: int, records: list[dict[str, Any]] | None
    ) -> None:
        if records is None:
            data = None
        else:  # _encode inlined: this runs once per input
            data = _dumps(records)
            if not data.isascii() or len(data) > _MAX_TEXT:
                _check_text(data)
        self._inputs.append((self._base | index, status, attempts, data))
        if len(self._inputs) >= self._batch_size:
            self._schedule()

    def attempt(
        self,
        index: int,
        attempt: int,
        status: str,
        records: list[dict[str, Any]],
        error_type: str | None,
    ) -> None:
        data = _encode_failure(records) if status == "failed" else _encode(records)
        self._attempts.append((self._jid, index, attempt, status, error_type, data))
        if self._batch_size == 1:
            self._schedule()

    def _schedule(self) -> None:
        if len(self._inputs) + len(self._attempts) >= max(self._batch_size, _MAX_PENDING):
            self._commit_now()  # a function that never awaits keeps the loop from turning
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._commit_at_end_of_turn)

    def set_state(self, state: JobState) -> None:
        self._state.update(state.take_json_changes())

    def _commit_at_end_of_turn(self) -> None:
        self._scheduled = False
        self._commit_now()

    def _commit_now(self) -> None:
        if self._error is not None:
            return
        try:
            self._commit()
        except Exception as exc:  # kept for close(), which raises it: never lost silently
            self._error = exc
            self.failure = storage_error(self._path, exc)
            if self.on_failure is not None:
                self.on_failure(self.failure)  # the job stops: no new call starts

    def _commit(self) -> None:
        inputs, attempts, state = self._inputs, self._attempts, self._state
        if not (inputs or attempts or state):
            return
        self._inputs, self._attempts, self._state = [], [], {}
        conn = self._conn
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
            if state:
                jid = self._jid
                conn.executemany(
                    "INSERT OR REPLACE INTO state (jid, key, value) VALUES (?, ?, ?)",
                    [(jid, key, value) for key, value in state.items()],
                )
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def close(self) -> None:
        self._commit_now()
        if self.failure is not None:
            raise self.failure


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open: SQLite ends one itself on some errors (a full
    disk), and a failing ROLLBACK must not hide the error that caused it."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _finished_inputs(
    conn: sqlite3.Connection, jid: int, status: str, column: str
) -> sqlite3.Cursor:
    """A job's finished inputs with `status`, in input order: one range scan of the rowid."""
    lo = jid << _SHIFT
    return conn.execute(
        f"SELECT {column} FROM inputs WHERE key BETWEEN ? AND ? AND status = ?",
        (lo, lo | _LOW, status),
    )


def _last_attempts(conn: sqlite3.Connection, jid: int, completed: bytearray) -> dict[int, int]:
    """The highest attempt number of each input that has not completed (dead or pending)."""
    last: dict[int, int] = {}
    for idx, attempt in conn.execute(
        "SELECT idx, max(attempt) FROM attempts WHERE jid = ? GROUP BY idx", (jid,)
    ):
        if idx < len(completed) and not completed[idx]:
            last[idx] = attempt
    lo = jid << _SHIFT
    for key, attempts in conn.execute(
        "SELECT key, attempts FROM inputs WHERE key BETWEEN ? AND ? AND status = 'dead'",
        (lo, lo | _LOW),
    ):
        idx = key & _LOW
        last[idx] = max(last.get(idx, 0), attempts)
    return last


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
