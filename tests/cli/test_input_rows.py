"""`starfish run` streams the input file into storage, one row per input (issue 8 case 12).

Peak memory of a 1,000,000-row file is measured in bench/large_input.py, not here; these tests
pin the mechanism: rows stored one per input (not one pickled blob), read back in windows, a
bad row reported before any call, and a resume that needs only the database.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from starfish import io, jobs
from starfish.data_factory import data_factory
from starfish.data_factory.inputs import stream_inputs
from starfish.data_factory.storage.sqlite import input_rows
from tests.cli.conftest import Cli, run_job

N = 3000


def _db() -> Path:
    from starfish.paths import app_data_dir

    return app_data_dir() / "db" / "starfish.db"


def _big(workdir: Path, n: int = N) -> Path:
    path = workdir / "big.jsonl"
    path.write_text("".join(json.dumps({"name": f"n{i}"}) + "\n" for i in range(n)))
    return path


def test_rows_are_stored_one_per_input_not_as_one_blob(cli: Cli, workdir: Path) -> None:
    _big(workdir)
    job = run_job(cli, "targets.py:echo", "-i", "big.jsonl", "-o", "out.jsonl")
    assert job["num_inputs"] == N and job["counts"]["completed"] == N
    with sqlite3.connect(_db()) as conn:
        (rows,) = conn.execute("SELECT count(*) FROM input_rows").fetchone()
        (spec_bytes,) = conn.execute("SELECT length(spec) FROM specs").fetchone()
    assert rows == N
    assert spec_bytes < 5000  # the function and options; the 3,000 rows are elsewhere
    out = [json.loads(line) for line in (workdir / "out.jsonl").read_text().splitlines()]
    assert out == [{"name": f"n{i}", "i": 0} for i in range(N)]


def test_workers_read_the_rows_back_in_windows_not_one_query_per_input() -> None:
    seen: list[int] = []

    @data_factory(max_concurrency=8, show_progress=False)
    async def f(i: int, tag: str) -> dict:
        seen.append(i)
        return {"i": i, "tag": tag}

    n = 3 * input_rows.CHUNK + 5
    f.run_rows(
        stream_inputs(f.func, ("i",), (({"i": i}, None) for i in range(n)), {"tag": "t"}, True)
    )
    reader = f._inputs
    assert isinstance(reader, input_rows.StoredRows)
    assert sorted(seen) == list(range(n))
    assert reader.fetches == 4  # ceil(n / CHUNK)
    assert list(jobs.iter_records(f.job_id)) == [{"i": i, "tag": "t"} for i in range(n)]
    assert jobs.load_job(f.job_id).num_inputs == n


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (
            '{"nom": "typo"}',
            f"big.jsonl: row {N + 1} lacks ['name']; every row needs the same columns",
        ),
        ('{"name": oops}', f"big.jsonl: line {N + 1}: malformed JSON: Expecting value"),
    ],
    ids=["other columns", "malformed"],
)
def test_a_bad_row_deep_in_the_file_stops_before_any_call_and_stores_no_job(
    cli: Cli, workdir: Path, line: str, error: str
) -> None:
    path = _big(workdir)
    with path.open("a") as f:
        f.write(line + "\n")
    (workdir / "FAIL").touch()  # flaky() would fail if it were called at all
    result = cli("run", "targets.py:flaky", "-i", "big.jsonl", "--no-progress")
    assert result.code == 2, result
    assert result.err.strip() == f"error: {error}"
    assert cli("jobs", "list", "--json").json() == []
    with sqlite3.connect(_db()) as conn:
        assert conn.execute("SELECT count(*) FROM input_rows").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM attempts").fetchone() == (0,)


def test_resume_reads_the_rows_back_from_storage_without_the_file(
    cli: Cli, workdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _big(workdir, 50)
    (workdir / "FAIL").touch()
    failed = cli("run", "targets.py:flaky", "-i", "big.jsonl", "--no-progress", "--json")
    assert failed.code == 1, failed
    job_id = failed.json()["job_id"]
    (workdir / "FAIL").unlink()
    (workdir / "big.jsonl").unlink()  # the job must not need its input file any more
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    resumed = cli("jobs", "resume", job_id, "--no-progress", "--json", cwd=elsewhere)
    assert resumed.code == 0, resumed
    assert resumed.json()["counts"]["completed"] == 50
    assert [r["name"] for r in jobs.iter_records(job_id)] == [f"n{i}" for i in range(50)]


def test_parquet_rows_keep_their_types(cli: Cli, workdir: Path) -> None:
    pytest.importorskip("pyarrow")
    import datetime as dt

    day = dt.date(2026, 11, 29)
    io.write_records(workdir / "in.parquet", [{"name": "a", "n": 2, "day": day}])
    (workdir / "typed.py").write_text(
        "async def typed(name, n, day):\n"
        "    return {'types': [type(v).__name__ for v in (name, n, day)], 'day': str(day)}\n"
    )
    run_job(cli, "typed.py:typed", "-i", "in.parquet", "-o", "out.jsonl")
    out = json.loads((workdir / "out.jsonl").read_text())
    assert out == {"types": ["str", "int", "date"], "day": "2026-11-29"}


def test_deleting_a_job_deletes_its_rows(cli: Cli, workdir: Path) -> None:
    _big(workdir, 10)
    job_id = run_job(cli, "targets.py:echo", "-i", "big.jsonl")["job_id"]
    assert cli("jobs", "delete", job_id).code == 0
    with sqlite3.connect(_db()) as conn:
        assert conn.execute("SELECT count(*) FROM input_rows").fetchone() == (0,)


def test_an_in_memory_target_still_runs_over_the_file(cli: Cli, workdir: Path) -> None:
    (workdir / "mem.py").write_text(
        "from starfish import data_factory\n\n\n"
        "@data_factory(storage='in_memory', show_progress=False)\n"
        "async def mem(name: str):\n"
        "    return {'name': name.upper()}\n"
    )
    result = cli("run", "mem.py:mem", "-i", "names.jsonl", "-o", "out.jsonl", "--no-progress")
    assert result.code == 0, result
    assert [json.loads(x) for x in (workdir / "out.jsonl").read_text().splitlines()] == [
        {"name": "ADA"},
        {"name": "BO"},
        {"name": "CY"},
    ]
