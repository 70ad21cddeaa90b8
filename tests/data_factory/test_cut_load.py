"""A kill -9 while an input file is still loading (issue 16, "Also").

Such a job used to read `abandoned` with 0 inputs, and its resume ran nothing and stored it
`failed (no input completed)` over the orphan rows. Now the job says its load is incomplete and
a resume refuses with how to start again; deleting it removes the rows.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from starfish import ResumeError, jobs
from tests.data_factory.stored import db_path, job_row

LOADER = """
import asyncio, sys, time
from starfish import data_factory
from starfish.data_factory.inputs import stream_inputs

MARKER = sys.argv[1]

@data_factory(show_progress=False)
async def gen(i: int):
    await asyncio.sleep(0)
    return {"i": i}

def rows():
    for i in range(20000):
        if i == 5000:  # the first 4096-row chunk is committed: a big file, still loading
            open(MARKER, "w").close()
            time.sleep(60)
        yield {"i": i}, None

gen.run_rows(stream_inputs(gen.func, ("i",), rows(), {}))
"""


def _input_rows() -> int:
    with sqlite3.connect(db_path()) as conn:
        return conn.execute("SELECT count(*) FROM input_rows").fetchone()[0]


def test_a_load_cut_by_kill_9_is_shown_incomplete_and_resume_says_how_to_restart(tmp_path: Path):
    marker = tmp_path / "loading"
    script = tmp_path / "load.py"
    script.write_text(LOADER)
    proc = subprocess.Popen([sys.executable, str(script), str(marker)])
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    [info] = jobs.list_jobs()
    assert info.status == "abandoned"
    assert info.stop_reason == "input file load incomplete"
    assert _input_rows() == 4096

    out = subprocess.run(
        [sys.executable, "-m", "starfish", "jobs", "resume", info.job_id],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "was stopped while its input file was loading (4,096 rows stored)" in out.stderr
    assert f"starfish jobs delete {info.job_id}" in out.stderr
    with pytest.raises(ResumeError, match="input file was loading"):
        jobs.resume_job(info.job_id)
    row = job_row(info.job_id)  # the resumes changed nothing
    assert row["status"] == "running" and row["stop_reason"] == "input file load incomplete"
    assert jobs.load_job(info.job_id).counts["failed"] == 0

    jobs.delete_job(info.job_id)
    assert _input_rows() == 0


def test_a_finished_load_clears_the_mark(tmp_path: Path):
    (tmp_path / "gen.py").write_text("async def gen(i: int):\n    return {'i': i}\n")
    (tmp_path / "in.jsonl").write_text("".join(f'{{"i": {i}}}\n' for i in range(5000)))
    out = subprocess.run(
        [sys.executable, "-m", "starfish", "run", "gen.py:gen", "-i", "in.jsonl", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    [info] = jobs.list_jobs()
    assert info.status == "completed" and info.stop_reason == "all inputs done"
    assert info.num_inputs == 5000 and info.counts["completed"] == 5000
