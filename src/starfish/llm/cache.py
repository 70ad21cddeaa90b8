"""How the model layer keys the answers it keeps, and the cache as a whole (`starfish cache`).

The key is a hash of the final request body (model, messages, response format, every
generation parameter), the base URL, the input's index and the attempt number: a retry after
`filtered`/`duplicate` asks again, and two identical inputs get two samples. The API key is
never part of the key and never stored.

The answers themselves are kept by the job's storage, with the outcomes (`effects.py`,
`storage/sqlite/cache.py`): a call finds them through its context, never through a connection
of its own. Outside a job there is no input index to key by, so nothing is cached.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from starfish.data_factory.storage.base import LLM_COUNT_KEYS

__all__ = ["COUNT_KEYS", "as_text", "cache_info", "cache_key", "clear_cache", "read_counts"]

COUNT_KEYS = LLM_COUNT_KEYS


def cache_key(base_url: str, payload: bytes, index: int, attempt: int, occurrence: int) -> str:
    """`payload` is the request body as sent; `occurrence` tells apart the same request made
    twice in one attempt (`gather` of identical calls: each is its own sample)."""
    digest = hashlib.sha256(payload)
    digest.update(f"\0{base_url}\0{index}\0{attempt}\0{occurrence}".encode())
    return digest.hexdigest()


def as_text(response: Any) -> str:
    """An answer as stored: the body text as received, or a value made here, as JSON."""
    if isinstance(response, str):
        return response
    if isinstance(response, bytes):
        return response.decode("utf-8", "replace")
    return json.dumps(response, separators=(",", ":"))


def read_counts(path: Path, job_id: str) -> dict[str, Any] | None:
    """A job's model-layer counts in the database at `path`, read without creating anything."""
    from starfish.data_factory.storage.sqlite import SqliteStorage

    if not Path(path).exists():
        return None
    storage = SqliteStorage(Path(path))
    try:
        return storage.llm_counts(job_id)
    finally:
        storage.close()


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
            from starfish.data_factory.storage.sqlite.cache import ensure

            ensure(conn)  # a database from before `job_id` was kept per answer
            return conn.execute("DELETE FROM llm_cache WHERE job_id = ?", (job_id,)).rowcount
        return conn.execute("DELETE FROM llm_cache").rowcount
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()
