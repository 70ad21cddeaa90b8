"""Responses kept in the job database, so a re-run or a resume never pays twice.

The key is a hash of the final request body (model, messages, response format, every
generation parameter), the base URL, the input's index and the attempt number: a retry after
`filtered`/`duplicate` asks again, and two identical inputs get two samples. The API key is
never part of the key and never stored. A response is committed before it is returned, so
a kill -9 after a paid call does not pay again on resume.

Its own tables (`llm_cache`, `llm_counts`) and its own connection to the same WAL file as
the job storage. Outside a job there is no input index to key by, so nothing is cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COUNT_KEYS = (
    "requests",
    "cache_hits",
    "prompt_tokens",
    "completion_tokens",
    "rate_limited",
    "retries",
    "reasks",
    "cost_usd",
    "answers_json_schema",
    "answers_json_object",
    "answers_prompt",
    "judge_requests",
    "embedding_requests",
)
_ADDED = (
    "answers_json_schema",
    "answers_json_object",
    "answers_prompt",
    "judge_requests",
    "embedding_requests",
)
"""Columns newer than the table: added to a database made by an earlier version."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS llm_cache (
    key TEXT PRIMARY KEY,
    response TEXT NOT NULL,
    job_id TEXT,
    created_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
CREATE TABLE IF NOT EXISTS llm_counts (
    job_id TEXT PRIMARY KEY,
    requests INTEGER NOT NULL DEFAULT 0,
    cache_hits INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    rate_limited INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    reasks INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL,
    answers_json_schema INTEGER NOT NULL DEFAULT 0,
    answers_json_object INTEGER NOT NULL DEFAULT 0,
    answers_prompt INTEGER NOT NULL DEFAULT 0,
    judge_requests INTEGER NOT NULL DEFAULT 0,
    embedding_requests INTEGER NOT NULL DEFAULT 0
);
"""

_UPSERT = (
    "INSERT INTO llm_counts (job_id, {cols}) VALUES (?, {marks}) "
    "ON CONFLICT(job_id) DO UPDATE SET {sets}"
)


def cache_key(base_url: str, payload: bytes, index: int, attempt: int, occurrence: int) -> str:
    """`payload` is the request body as sent; `occurrence` tells apart the same request made
    twice in one attempt (`gather` of identical calls: each is its own sample)."""
    digest = hashlib.sha256(payload)
    digest.update(f"\0{base_url}\0{index}\0{attempt}\0{occurrence}".encode())
    return digest.hexdigest()


def _text(response: Any) -> str:
    """An answer as stored: the body text as received, or a value made here, as JSON."""
    if isinstance(response, str):
        return response
    if isinstance(response, bytes):
        return response.decode("utf-8", "replace")
    return json.dumps(response, separators=(",", ":"))


def _migrate(conn: sqlite3.Connection) -> None:
    cached = {row[1] for row in conn.execute("PRAGMA table_info(llm_cache)")}
    if "job_id" not in cached:  # rows kept before then belong to no job (`clear` takes them)
        with contextlib.suppress(sqlite3.OperationalError):
            conn.execute("ALTER TABLE llm_cache ADD COLUMN job_id TEXT")
    have = {row[1] for row in conn.execute("PRAGMA table_info(llm_counts)")}
    for column in _ADDED:
        if column not in have:
            with contextlib.suppress(sqlite3.OperationalError):  # another process was first
                conn.execute(
                    f"ALTER TABLE llm_counts ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
                )


@dataclass
class _Batch:
    done: Any  # an asyncio.Future resolved once the batch is committed
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)


class ResponseStore:
    """The cache and per-job counts in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=30
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        _migrate(self._conn)
        self._lock = threading.Lock()
        self._batches: dict[Any, _Batch] = {}  # per event loop: what its next commit holds

    def get(self, key: str) -> Any | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT response FROM llm_cache WHERE key = ?", (key,)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def save(
        self, job_id: str, counts: dict[str, Any], key: str | None, response: Any | bytes
    ) -> None:
        """Add `counts` to the job's and keep `response` (JSON, or its text as received) under
        `key`: one transaction, now."""
        self._write([(key, _text(response), job_id)] if key is not None else [], {job_id: counts})

    async def save_soon(
        self, job_id: str, counts: dict[str, Any], key: str | None, response: Any | bytes
    ) -> None:
        """`save`, grouped with every other save of this turn of the event loop into one
        transaction (a commit per response cost as much as the rest of a call); returns once
        that transaction is committed."""
        import asyncio

        loop = asyncio.get_running_loop()
        batch = self._batches.get(loop)
        if batch is None:
            batch = self._batches[loop] = _Batch(loop.create_future())
            loop.call_soon(self._flush, loop)
        if key is not None:
            batch.rows.append((key, _text(response), job_id))
        if counts:
            total = batch.counts.setdefault(job_id, {})
            for name, value in counts.items():
                total[name] = total.get(name, 0) + value
        await asyncio.shield(batch.done)

    def _flush(self, loop: Any) -> None:
        batch = self._batches.pop(loop)
        try:
            self._write(batch.rows, batch.counts)
        except Exception as exc:
            batch.done.set_exception(exc)
            batch.done.add_done_callback(lambda f: f.exception())  # seen even if none waits
        else:
            batch.done.set_result(None)

    def _write(
        self, rows: list[tuple[str, str, str]], counts_by_job: dict[str, dict[str, Any]]
    ) -> None:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if rows:
                    conn.executemany(
                        "INSERT OR REPLACE INTO llm_cache (key, response, job_id) VALUES (?, ?, ?)",
                        rows,
                    )
                for job_id, counts in counts_by_job.items():
                    if not counts:
                        continue
                    cols = list(counts)
                    sql = _UPSERT.format(
                        cols=", ".join(cols),
                        marks=", ".join("?" * len(cols)),
                        sets=", ".join(f"{c} = coalesce({c}, 0) + excluded.{c}" for c in cols),
                    )
                    conn.execute(sql, (job_id, *counts.values()))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def counts(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            cur = self._conn.execute(
                f"SELECT {', '.join(COUNT_KEYS)} FROM llm_counts WHERE job_id = ?", (job_id,)
            )
            row = cur.fetchone()
        return dict(zip(COUNT_KEYS, row, strict=True)) if row else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()


_stores: dict[Path, ResponseStore] = {}
_stores_lock = threading.Lock()


def store_for(path: Path) -> ResponseStore:
    store = _stores.get(path)
    if store is None:
        with _stores_lock:
            store = _stores.get(path)
            if store is None:
                store = _stores[path] = ResponseStore(path)
    return store


def read_counts(path: Path, job_id: str) -> dict[str, Any] | None:
    """A job's model-layer counts, read without creating the tables."""
    if not Path(path).exists():
        return None
    conn = sqlite3.connect(str(path), timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM llm_counts WHERE job_id = ?", (job_id,)).fetchone()
    except sqlite3.OperationalError:  # no model call ever made here
        return None
    finally:
        conn.close()
    if row is None:
        return None
    have = set(row.keys())
    return {k: row[k] if k in have else 0 for k in COUNT_KEYS}


def _default_path() -> Path:
    from starfish.paths import app_data_dir

    return app_data_dir() / "db" / "starfish.db"


def cache_info(path: Path | None = None) -> dict[str, Any]:
    """How many responses the local job database keeps, and their size (nothing is created)."""
    path = Path(path) if path is not None else _default_path()
    info: dict[str, Any] = {"path": str(path), "responses": 0, "bytes": 0}
    if not path.exists():
        return info
    conn = sqlite3.connect(str(path), timeout=30)
    try:
        n, size = conn.execute(
            "SELECT count(*), coalesce(sum(length(response)), 0) FROM llm_cache"
        ).fetchone()
    except sqlite3.OperationalError:  # no model call was ever cached here
        return info
    finally:
        conn.close()
    return {**info, "responses": n, "bytes": size}


def clear_cache(path: Path | None = None, job_id: str | None = None) -> int:
    """Delete every cached response, or those `job_id` kept (jobs and their counts stay);
    returns how many."""
    path = Path(path) if path is not None else _default_path()
    if not path.exists():
        return 0
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    try:
        if job_id is not None:
            _migrate(conn)
            return conn.execute("DELETE FROM llm_cache WHERE job_id = ?", (job_id,)).rowcount
        return conn.execute("DELETE FROM llm_cache").rowcount
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()
