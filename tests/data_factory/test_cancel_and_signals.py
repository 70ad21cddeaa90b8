"""Cancellation that is not the job's own, interrupted notebooks and SIGTERM (issue 8: 3, 5, 6).

A `CancelledError` raised by the user's function (an HTTP client's cancel scope can leak one)
is a failure of that attempt; a Ctrl-C in a notebook and a SIGTERM both stop the job, flush it
and store it `interrupted`. The process cases run in real subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from starfish import data_factory
from starfish.jobs import load_job


def test_a_cancelled_error_from_the_function_is_a_failed_attempt_that_is_retried():
    calls: dict[int, int] = {}

    @data_factory(storage="local", show_progress=False, dead_queue_threshold=3)
    async def gen(i):
        calls[i] = calls.get(i, 0) + 1
        await asyncio.sleep(0)
        if i == 2 and calls[i] == 1:
            raise asyncio.CancelledError()  # leaked by a library, not a cancellation of ours
        return [{"i": i}]

    assert gen.run(i=list(range(5))) == [{"i": i} for i in range(5)]
    assert calls[2] == 2
    info = load_job(gen.job_id)
    assert info.status == "completed"
    assert info.counts["completed"] == 5 and info.counts["failed"] == 1
    assert info.error_summary == {"CancelledError": 1}
    [failure] = gen.get_output_data(filter="failed")
    assert failure["index"] == 2 and failure["error_type"] == "CancelledError"


def test_many_leaked_cancellations_kill_no_worker_and_lose_no_input():
    @data_factory(
        storage="local",
        show_progress=False,
        max_concurrency=4,
        dead_queue_threshold=2,
        job_run_stop_threshold=0,
    )
    async def gen(i):
        await asyncio.sleep(0)
        if i % 3 == 0:
            raise asyncio.CancelledError()
        return [{"i": i}]

    records = gen.run(i=list(range(100)))
    assert records == [{"i": i} for i in range(100) if i % 3]
    info = load_job(gen.job_id)
    dead = [i for i in range(100) if i % 3 == 0]
    assert info.status == "completed"
    assert gen.get_index_dead_queue() == dead
    assert info.counts["completed"] == 100 - len(dead) and info.counts["dead"] == len(dead)
    assert info.counts["failed"] == 2 * len(dead)


def test_cancelling_the_caller_still_interrupts_the_job():
    """The job's own cancellation must not be mistaken for a leaked one."""

    @data_factory(storage="local", show_progress=False, max_concurrency=2)
    async def gen(i):
        await asyncio.sleep(30)
        return [{"i": i}]

    async def main() -> None:
        task = asyncio.ensure_future(gen.run_async(i=list(range(4))))
        await asyncio.sleep(0.2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 10
    assert load_job(gen.job_id).status == "interrupted"


NOTEBOOK = """
import asyncio, os, signal, sys
from starfish import data_factory

LOG = sys.argv[1]

@data_factory(max_concurrency=5, show_progress=False)
async def gen(i):
    with open(LOG, "a") as f:
        f.write(f"{i}\\n")
    await asyncio.sleep(0.01)
    return [{"i": i}]

async def cell():
    # A notebook cell: a loop is already running, so run() uses a thread of its own; and, as
    # ipykernel does while a cell executes, Ctrl-C raises KeyboardInterrupt in this thread.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        gen.run(i=list(range(100000)))
    except KeyboardInterrupt:
        with open(LOG, "a") as f:
            f.write("RETURNED\\n")  # every call line after this one started after run() returned
        print("JOB", gen.job_id, flush=True)
        await asyncio.sleep(1.5)  # the kernel lives on after the interrupt

asyncio.run(cell())
"""


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_interrupting_a_notebook_cell_stops_the_job_and_stores_it_interrupted(tmp_path):
    log = tmp_path / "calls.log"
    script = tmp_path / "nb.py"
    script.write_text(NOTEBOOK)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(log)], stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while _lines(log) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    line = proc.stdout.readline()
    assert line.startswith("JOB "), line
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    lines = log.read_text().splitlines()
    # once run() has returned, no further call starts (the kernel idled 1.5 s after it)
    assert lines[-1] == "RETURNED", lines[-5:]
    calls = len(lines) - 1
    info = load_job(line.split()[1])
    assert info.status == "interrupted"
    assert 0 < info.counts["completed"] <= calls


SCRIPT = """
import asyncio, sys
from starfish import data_factory

@data_factory(max_concurrency=5, show_progress=False)
async def gen(i):
    with open(sys.argv[1], "a") as f:
        f.write(f"{i}\\n")
    await asyncio.sleep(0.01)
    return [{"i": i}]

gen.run(i=list(range(100000)))
"""


def _wait_for_calls(log: Path, n: int) -> None:
    deadline = time.monotonic() + 30
    while _lines(log) < n and time.monotonic() < deadline:
        time.sleep(0.01)


def test_sigterm_stores_the_job_interrupted_and_exits_143(tmp_path):
    log = tmp_path / "calls.log"
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(log)], stderr=subprocess.PIPE)
    _wait_for_calls(log, 50)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    from starfish.jobs import list_jobs

    [info] = list_jobs()
    assert info.status == "interrupted" and info.stop_reason == "terminated (SIGTERM)"
    assert 0 < info.counts["completed"] <= _lines(log)


def test_sigterm_of_the_cli_prints_the_resume_hint_and_exits_143(tmp_path):
    (tmp_path / "gen.py").write_text(
        "import asyncio\n\n"
        "async def gen(i: int):\n"
        "    await asyncio.sleep(0.01)\n"
        "    return [{'i': i}]\n"
    )
    (tmp_path / "in.jsonl").write_text("".join(f'{{"i": {i}}}\n' for i in range(50000)))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "starfish", "run", "gen:gen", "-i", "in.jsonl"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = Path(os.environ["STARFISH_LOCAL_STORAGE_DIR"]) / "db" / "starfish.db"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        from starfish.jobs import list_jobs

        jobs = list_jobs() if db.exists() else []
        if jobs and load_job(jobs[0].job_id).counts["completed"] >= 20:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    [info] = list_jobs()
    assert info.status == "interrupted"
    assert f"starfish jobs resume {info.job_id}" in err
    assert "Traceback" not in err
