"""The viewer's reads of the job database: read-only (`mode=ro`), bounded per request.

Its own queries over the storage layout (see `data_factory/storage/sqlite.py`), so that a page
never creates a table or takes a write lock while a job is running:
- `inputs` is keyed by `jid << 32 | index`, so a job's inputs in order are a rowid range and a
  page of them is a keyset step (`key > after LIMIT n`), never an OFFSET.
- `attempts` has the index `(jid, status, idx)`: the failed / filtered / duplicate attempts of a
  job in input order are a walk of that index.
- A predicate that can be rare (a text search, the dead inputs) is checked over a window of at
  most `WINDOW` inputs per request; a page that found fewer rows says how far it looked and
  where the next request goes on, so no request scans a million rows.

Every figure of a finished job comes from its `jobs` row; a running one is counted live.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from starfish.data_factory.storage.base import COUNT_KEYS
from starfish.data_factory.storage.sqlite.connection import LOW, SHIFT
from starfish.data_factory.storage.sqlite.reads import JOB_COLUMNS

__all__ = ["JOB_STATUSES", "RECORD_STATUSES", "Reader", "database_path"]

RECORD_STATUSES = ("completed", "failed", "filtered", "duplicate", "dead")
JOB_STATUSES = ("running", "abandoned", "interrupted", "completed", "failed", "stopped")
WINDOW = 50_000
"""Inputs a rare predicate is checked over per request (about 20 ms here)."""
PREVIEW = 300
"""Characters of a record's JSON sent in a table row; the whole JSON comes on a click."""
MAX_RECORD = 2_000_000
"""Characters of one record's JSON sent on a click (a 50 MB record is cut, and says so)."""


def database_path() -> Path:
    """The job database of `STARFISH_LOCAL_STORAGE_DIR`, as every command finds it."""
    from starfish.paths import app_data_dir

    return app_data_dir() / "db" / "starfish.db"


class Reader:
    """Read-only queries; one connection per thread (aiohttp runs them in its executor)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection | None]:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if not self.path.exists():
                yield None  # no job stored yet: nothing is created
                return
            conn = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True, timeout=10)
            self._local.conn = conn
        yield conn

    def _tables(self, conn: sqlite3.Connection) -> set[str]:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    # jobs -------------------------------------------------------------------------------
    def list_jobs(self) -> list[dict[str, Any]]:
        """Every job, newest first, with counts, progress and cost."""
        with self._db() as conn:
            if conn is None or "jobs" not in self._tables(conn):
                return []
            costs = self._costs(conn, None)
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM jobs ORDER BY created_at DESC, id DESC"
            ).fetchall()
            return [self._job(conn, row, costs.get(row[1])) for row in rows]

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        """One job (by id or unique prefix) with what its page shows above the records."""
        with self._db() as conn:
            if conn is None or "jobs" not in self._tables(conn):
                return None
            sql = f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?"
            row = conn.execute(sql, (job_id,)).fetchone()
            if row is None:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM jobs WHERE substr(job_id, 1, ?) = ? LIMIT 2",
                    (len(job_id), job_id),
                ).fetchall()
                if len(rows) != 1:
                    return None
                row = rows[0]
            costs = self._costs(conn, row[1])
            job = self._job(conn, row, costs.get(row[1]), full=True)
            job["llm"] = self._llm(conn, row[1])
            job["dead_by_error"] = self._dead_by_error(conn, row[0])
            job["batches"] = _batches(job["state"])
            return job

    def _job(
        self, conn: sqlite3.Connection, row: tuple[Any, ...], cost: float | None, full: bool = False
    ) -> dict[str, Any]:
        job = dict(zip(_NAMES, row, strict=True))
        jid = job.pop("id")
        for name in ("config", "counts", "error_summary", "state"):
            job[name] = json.loads(job[name]) if job[name] else None
        if job["status"] == "running" and not self._live(job["job_id"]):
            job["status"] = "abandoned"  # stored running, but no process holds its lease
        if job["status"] in ("running", "abandoned") or job["counts"] is None:
            job["counts"], job["error_summary"] = _live_counts(conn, jid)
        stored = job["counts"] or {}
        job["waiting"] = int(stored.get("waiting", 0))  # deferred inputs, to run again
        job["counts"] = {k: int(stored.get(k, 0)) for k in COUNT_KEYS}
        job["done"] = job["counts"]["completed"] + job["counts"]["dead"]
        job["cost_usd"] = cost
        end = job["finished_at"] if job["status"] != "running" else time.time()
        job["duration"] = job["execution_time"] or (
            end - job["created_at"] if end is not None else None
        )
        if not full:
            for name in ("config", "state", "error_summary"):
                job.pop(name)
        else:
            job["state"] = _state(conn, jid) or job["state"] or {}
        return job

    def _live(self, job_id: str) -> bool:
        from starfish.data_factory.storage.lease import holder

        return holder(self.path.parent / "leases" / job_id) is not None

    def _costs(self, conn: sqlite3.Connection, job_id: str | None) -> dict[str, float | None]:
        if "llm_counts" not in self._tables(conn):
            return {}
        where, args = ("WHERE job_id = ?", (job_id,)) if job_id else ("", ())
        return dict(conn.execute(f"SELECT job_id, cost_usd FROM llm_counts {where}", args))

    def _llm(self, conn: sqlite3.Connection, job_id: str) -> dict[str, Any] | None:
        if "llm_counts" not in self._tables(conn):
            return None
        cur = conn.execute("SELECT * FROM llm_counts WHERE job_id = ?", (job_id,))
        row = cur.fetchone()
        if row is None:
            return None
        names = [d[0] for d in cur.description]
        return {k: v for k, v in zip(names, row, strict=True) if k != "job_id"}

    def _dead_by_error(self, conn: sqlite3.Connection, jid: int) -> list[dict[str, Any]]:
        """The dead inputs grouped by the error type of their last failure, with one example
        each: a walk of the failed attempts (the index), never of every input."""
        lo = jid << SHIFT
        groups = conn.execute(
            "SELECT last.error_type, count(*), min(last.idx), min(last.id) "
            "FROM (SELECT idx, error_type, max(id) AS id FROM attempts "
            "      WHERE jid = ? AND status = 'failed' GROUP BY idx) AS last "
            "JOIN inputs ON inputs.key = ? | last.idx AND inputs.status = 'dead' "
            "GROUP BY last.error_type ORDER BY count(*) DESC LIMIT 50",
            (jid, lo),
        ).fetchall()
        out = []
        for error_type, n, _, example_id in groups:
            index, data, size = conn.execute(
                "SELECT idx, substr(data, 1, ?), length(data) FROM attempts WHERE id = ?",
                (PREVIEW * 4, example_id),
            ).fetchone()
            out.append(
                {
                    "error_type": error_type or "(unknown)",
                    "count": n,
                    "example_index": index,
                    "example": _text(data, size),
                }
            )
        return out

    # records ------------------------------------------------------------------------------
    def records(
        self,
        job_id: str,
        status: str = "completed",
        after: str = "-1",
        limit: int = 50,
        search: str = "",
    ) -> dict[str, Any]:
        """A page of one job's records with `status`, past cursor `after` (an input index; for
        attempts `index.id`), in input order, optionally holding `search` (case-insensitive
        for ASCII). `next` is the cursor of the next page, None at the end; `scanned_to` the
        last input index looked at."""
        if status not in RECORD_STATUSES:
            raise ValueError(f"status must be one of {', '.join(RECORD_STATUSES)}")
        limit = max(1, min(int(limit), 500))
        with self._db() as conn:
            if conn is None:
                return {"rows": [], "next": None, "scanned_to": None}
            row = conn.execute("SELECT id FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                raise KeyError(job_id)
            jid = row[0]
            if status in ("completed", "dead"):
                return _input_page(conn, jid, status, int(after), limit, search)
            return _attempt_page(conn, jid, status, after, limit, search)

    def record(self, job_id: str, status: str, key: str) -> dict[str, Any] | None:
        """One row's whole JSON: `key` is the input index (completed, dead) or attempt id."""
        with self._db() as conn:
            if conn is None:
                return None
            found = conn.execute("SELECT id FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if found is None:
                return None
            jid = found[0]
            if status in ("completed", "dead"):
                row = conn.execute(
                    "SELECT substr(data, 1, ?), length(data), attempts FROM inputs WHERE key = ?",
                    (MAX_RECORD, (jid << SHIFT) | int(key)),
                ).fetchone()
            else:
                row = conn.execute(
                    "SELECT substr(data, 1, ?), length(data), attempt FROM attempts "
                    "WHERE id = ? AND jid = ?",
                    (MAX_RECORD, int(key), jid),
                ).fetchone()
            if row is None:
                return None
            data, size, attempts = row
            return {"json": _pretty(data, size), "length": size, "attempts": attempts}

    # model and quality figures --------------------------------------------------------------
    def chart(self, job_id: str, since_rowid: int, max_rows: int = 100_000) -> dict[str, Any]:
        """The job's model responses per second since `since_rowid` (requests, tokens and cost
        by second), read from the response cache in rowid order, at most `max_rows` a call: the
        caller adds them up (see `server.Charts`), so no request reads the whole cache. Cost is
        None for seconds whose answers were kept without theirs (an older version)."""
        with self._db() as conn:
            if conn is None or "llm_cache" not in self._tables(conn):
                return {"seconds": {}, "last_rowid": since_rowid, "more": False}
            columns = {row[1] for row in conn.execute("PRAGMA table_info(llm_cache)")}
            cost = "cost_usd" if "cost_usd" in columns else "NULL"
            rows = conn.execute(
                "SELECT rowid, job_id, CAST(created_at AS INTEGER), "
                "  CASE WHEN json_valid(response) THEN "
                "    coalesce(json_extract(response, '$.usage.prompt_tokens'), 0) END, "
                "  CASE WHEN json_valid(response) THEN "
                f"    coalesce(json_extract(response, '$.usage.completion_tokens'), 0) END, {cost} "
                "FROM llm_cache WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (since_rowid, max_rows),
            ).fetchall()
        per_job: dict[str, dict[int, list[Any]]] = {}
        last = since_rowid
        for rowid, owner, second, prompt, completion, usd in rows:
            last = rowid
            if owner is None:
                continue
            cell = per_job.setdefault(owner, {}).setdefault(second, [0, 0, 0, 0.0])
            cell[0] += 1
            cell[1] += prompt or 0
            cell[2] += completion or 0
            cell[3] = None if usd is None or cell[3] is None else cell[3] + usd
        return {"seconds": per_job, "last_rowid": last, "more": len(rows) == max_rows}

    def quality(self, job_id: str) -> dict[str, Any] | None:
        """Duplicates by kind and the judge's score histogram, as `jobs show` counts them;
        None when no quality hook ran in the job."""
        from starfish.quality.report import tally

        with self._db() as conn:
            if conn is None or "quality" not in self._tables(conn):
                return None
            rows = conn.execute("SELECT outcome, data FROM quality WHERE job_id = ?", (job_id,))
            return tally((outcome, json.loads(data)) for outcome, data in rows)


_NAMES = ("id", *JOB_COLUMNS)  # the stored job row, as storage itself reads it
_COLUMNS = ", ".join(_NAMES)


def _live_counts(conn: sqlite3.Connection, jid: int) -> tuple[dict[str, int], dict[str, int]]:
    """A running job's counts: its inputs by status (a range of the rowid) and its attempts
    by status and error type (the index)."""
    lo = jid << SHIFT
    counts = dict.fromkeys(COUNT_KEYS, 0)
    for status, n in conn.execute(
        "SELECT status, count(*) FROM inputs WHERE key BETWEEN ? AND ? GROUP BY status",
        (lo, lo | LOW),
    ):
        counts[status] = n
    for status, n in conn.execute(
        "SELECT status, count(*) FROM attempts WHERE jid = ? GROUP BY status", (jid,)
    ):
        counts[status] = n
    errors = dict(
        conn.execute(
            "SELECT coalesce(error_type, '(unknown)'), count(*) FROM attempts "
            "WHERE jid = ? AND status = 'failed' GROUP BY error_type",
            (jid,),
        ).fetchall()
    )
    return counts, errors


def _state(conn: sqlite3.Connection, jid: int) -> dict[str, Any]:
    try:
        rows = conn.execute("SELECT key, value FROM state WHERE jid = ?", (jid,)).fetchall()
    except sqlite3.OperationalError:  # a database from before the state table
        return {}
    return {k: json.loads(v) for k, v in rows}


def _batches(state: dict[str, Any]) -> Any:
    """A job's batches, where it kept them in its state (`batches` or `batch`)."""
    for key in ("batches", "batch"):
        if key in state:
            return state[key]
    return None


def _like(search: str) -> str:
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _input_page(
    conn: sqlite3.Connection, jid: int, status: str, after: int, limit: int, search: str
) -> dict[str, Any]:
    """Completed or dead inputs past `after`: a range of the rowid. A dead input shows its last
    failure (one step of the attempts index)."""
    lo = jid << SHIFT
    start = max(after + 1, 0)
    rare = bool(search) or status == "dead"
    end = min(start + WINDOW - 1, LOW) if rare else LOW
    sql = (
        "SELECT key & ?, attempts, substr(data, 1, ?), length(data) FROM inputs "
        "WHERE key >= ? AND key <= ? AND status = ?"
    )
    args: list[Any] = [LOW, PREVIEW, lo | start, lo | end, status]
    if search:
        sql += " AND data LIKE ? ESCAPE '\\'"
        args.append(_like(search))
    sql += " ORDER BY key LIMIT ?"
    args.append(limit + 1)
    rows = conn.execute(sql, args).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    out = []
    for index, attempts, data, size in rows:
        row: dict[str, Any] = {"key": str(index), "index": index, "attempts": attempts}
        if status == "completed":
            row["preview"] = _text(data, size)
            row["records"] = _count_records(data, size)
        else:
            last = conn.execute(
                "SELECT id, error_type, substr(data, 1, ?), length(data) FROM attempts "
                "WHERE jid = ? AND status = 'failed' AND idx = ? ORDER BY id DESC LIMIT 1",
                (PREVIEW, jid, index),
            ).fetchone()
            row["error_type"] = last[1] if last else None
            row["preview"] = _text(last[2], last[3]) if last else ""
            row["attempt_id"] = last[0] if last else None
        out.append(row)
    if more:
        nxt: int | None = out[-1]["index"]
        scanned = nxt
    elif rare and end < LOW and _any_input_after(conn, lo, end):
        nxt = scanned = end  # nothing more in this window: the next request looks further
    else:
        nxt, scanned = None, None
    return {"rows": out, "next": None if nxt is None else str(nxt), "scanned_to": scanned}


def _any_input_after(conn: sqlite3.Connection, lo: int, index: int) -> bool:
    row = conn.execute(
        "SELECT 1 FROM inputs WHERE key > ? AND key <= ? LIMIT 1", (lo | index, lo | LOW)
    ).fetchone()
    return row is not None


def _attempt_page(
    conn: sqlite3.Connection, jid: int, status: str, after: str, limit: int, search: str
) -> dict[str, Any]:
    """Failed, filtered or duplicate attempts past cursor `idx.id`: a walk of the index."""
    idx, _, ident = after.partition(".")
    after_idx, after_id = int(idx), int(ident or -1)
    end = min(after_idx + WINDOW, LOW) if search else LOW
    sql = (
        "SELECT id, idx, attempt, error_type, substr(data, 1, ?), length(data) FROM attempts "
        "WHERE jid = ? AND status = ? AND (idx, id) > (?, ?) AND idx <= ?"
    )
    args: list[Any] = [PREVIEW, jid, status, after_idx, after_id, end]
    if search:
        sql += " AND data LIKE ? ESCAPE '\\'"
        args.append(_like(search))
    sql += " ORDER BY idx, id LIMIT ?"
    args.append(limit + 1)
    rows = conn.execute(sql, args).fetchall()
    more = len(rows) > limit
    out = [
        {
            "key": str(ident),
            "index": index,
            "attempts": attempt,
            "error_type": error_type,
            "preview": _text(data, size),
            "cursor": f"{index}.{ident}",
        }
        for ident, index, attempt, error_type, data, size in rows[:limit]
    ]
    nxt: str | None = None
    scanned: int | None = None
    if more:
        nxt, scanned = out[-1]["cursor"], out[-1]["index"]
    elif search and end < LOW:
        further = conn.execute(
            "SELECT 1 FROM attempts WHERE jid = ? AND status = ? AND idx > ? LIMIT 1",
            (jid, status, end),
        ).fetchone()
        if further is not None:
            nxt, scanned = f"{end}.{1 << 62}", end
    for row in out:
        row.pop("cursor")
    return {"rows": out, "next": nxt, "scanned_to": scanned}


def _text(data: str | None, size: int | None = None) -> str:
    """A preview as plain text (the page shows it with textContent, never as HTML)."""
    if data is None:
        return ""
    if size is not None and size > len(data):
        return data + " …"
    return data


def _count_records(data: str | None, size: int) -> int | None:
    """Records in an input's JSON array, when the preview holds all of it."""
    if data is None or size > len(data):
        return None
    try:
        return len(json.loads(data))
    except ValueError:
        return None


def _pretty(data: str | None, size: int) -> str:
    if data is None:
        return "null"
    if size > len(data):
        return data + f"\n… cut: {size:,} characters in all; `starfish jobs export` has them"
    try:
        return json.dumps(json.loads(data), indent=2, ensure_ascii=False)
    except ValueError:
        return data
