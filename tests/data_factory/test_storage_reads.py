"""Local storage's transactions keep the error that explains a failure, and `jobs list` reads
all jobs in one query however many are stored."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from starfish import data_factory, jobs
from starfish.data_factory.storage.sqlite import SqliteStorage
from starfish.errors import StorageError
from tests.data_factory.stored import db_path

FULL = "database or disk is full"


class _Faulty(sqlite3.Connection):
    """A connection whose `fail_on` statement fails as on a full disk, after SQLite ended the
    transaction itself (`ended_by_sqlite`) or leaving it open with a ROLLBACK that fails too."""

    fail_on = ""
    ended_by_sqlite = False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
        if self.fail_on and sql.startswith(self.fail_on):
            if self.ended_by_sqlite:
                super().execute("ROLLBACK")
            raise sqlite3.OperationalError(FULL)
        if sql == "ROLLBACK" and self.fail_on and not self.ended_by_sqlite:
            raise sqlite3.OperationalError("disk I/O error")
        return super().execute(sql, *args)


@pytest.fixture
def faulty(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, bool], None]]:
    """Every connection opened from now on is a `_Faulty` one; call it to arm the fault."""
    real = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        return real(*args, **kwargs, factory=_Faulty)

    def arm(statement: str, ended_by_sqlite: bool) -> None:
        _Faulty.fail_on, _Faulty.ended_by_sqlite = statement, ended_by_sqlite

    monkeypatch.setattr(sqlite3, "connect", connect)
    yield arm
    arm("", False)


def _stored_job() -> str:
    @data_factory(storage="local", show_progress=False)
    async def f(i: int) -> list[dict[str, int]]:
        return [{"i": i}]

    f.run(i=[1, 2])
    return f.job_id


@pytest.mark.parametrize(
    "ended_by_sqlite", [True, False], ids=["ended-by-sqlite", "rollback-fails"]
)
def test_a_failed_delete_reports_the_full_disk_not_its_rollback(faulty, ended_by_sqlite):
    job_id = _stored_job()
    storage = SqliteStorage(db_path())
    faulty("DELETE FROM attempts", ended_by_sqlite)
    with pytest.raises(StorageError) as caught:
        storage.delete_job(job_id)
    assert caught.value.reason == FULL
    faulty("", False)
    storage.close()
    assert jobs.load_job(job_id).status == "completed"  # nothing was deleted


@pytest.mark.parametrize(
    "ended_by_sqlite", [True, False], ids=["ended-by-sqlite", "rollback-fails"]
)
def test_the_transaction_helper_raises_the_error_of_the_block(tmp_path, faulty, ended_by_sqlite):
    from starfish.data_factory.storage.sqlite.connection import connect, transaction

    conn = connect(tmp_path / "t.db")
    conn.execute("CREATE TABLE t (x)")
    faulty("INSERT INTO t", ended_by_sqlite)
    with pytest.raises(sqlite3.OperationalError, match=FULL), transaction(conn):
        conn.execute("INSERT INTO t VALUES (1)")
    faulty("", False)
    conn.close()


def _traced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement run on a connection opened from now on."""
    statements: list[str] = []
    real = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    return statements


def _queries(statements: list[str]) -> list[str]:
    """The statements that read or write, the set-up of a connection left out."""
    return [s for s in statements if not s.lstrip().upper().startswith(("PRAGMA", "CREATE"))]


def test_jobs_list_reads_every_job_in_one_query(monkeypatch):
    @data_factory(storage="local", show_progress=False, dead_queue_threshold=1)
    async def f(i: int) -> list[dict[str, int]]:
        if i == 3:
            raise ValueError("three")
        return [{"i": i}]

    ids = []
    for _ in range(100):
        f.run(i=[1, 2, 3])
        ids.append(f.job_id)
    statements = _traced(monkeypatch)
    assert len(jobs.list_jobs()) == 100
    assert len(_queries(statements)) == 1, _queries(statements)
    # Two jobs read as killed mid-run: stored `running` with no counts, and no lease held.
    with sqlite3.connect(db_path()) as conn:
        conn.execute(
            "UPDATE jobs SET status = 'running', counts = NULL, error_summary = NULL "
            "WHERE job_id IN (?, ?)",
            (ids[0], ids[1]),
        )
    conn.close()
    statements.clear()
    infos = jobs.list_jobs()
    assert len(infos) == 100
    # One query for all the jobs, and one more that reads the two stale ones again together.
    assert len(_queries(statements)) == 2, _queries(statements)
    for info in infos:
        assert info.dead_queue == [2]
        assert info.counts == {
            "completed": 2,
            "failed": 1,
            "filtered": 0,
            "duplicate": 0,
            "dead": 1,
        }
        assert info.error_summary == {"ValueError": 1}
        assert info.status == ("abandoned" if info.job_id in ids[:2] else "completed")

    storage = SqliteStorage(db_path())
    finished = [j for j in storage.job_overviews() if j["job_id"] not in ids[:2]]
    assert finished and all("live_counts" not in j for j in finished)
    storage.close()


def test_state_reads_back_the_same_from_its_rows_and_from_a_legacy_job_row():
    state = {'quote"d': 1, "ü\n\\": [1.5, {"x": None}], "": "empty key", "big": 10**30}

    @data_factory(storage="local", show_progress=False, initial_state_values=state)
    async def f(i: int) -> list[dict[str, int]]:
        return [{"i": i}]

    f.run(i=[1])
    [info] = jobs.list_jobs()
    assert info.state == state and jobs.load_job(f.job_id).state == state
    # A job stored before the `state` table kept its state in `jobs.state`.
    with sqlite3.connect(db_path()) as conn:
        conn.execute("DELETE FROM state")
        conn.execute("UPDATE jobs SET state = ?", ('{"old": true}',))
    conn.close()
    [info] = jobs.list_jobs()
    assert info.state == {"old": True} and jobs.load_job(f.job_id).state == {"old": True}
    storage = SqliteStorage(db_path())
    assert storage.load_progress(f.job_id, 1).state == {"old": True}
    storage.close()
