"""Timeouts when synchronous code blocks the event loop (issue 16, cases 4 and 5).

Case 4: a hook that blocks the loop made the watchdog cancel calls whose answers had arrived
meanwhile, stored as false `TimeoutError`s. Case 5: a function that blocks past its deadline
(or ignores the cancellation) was stored `completed`. Now the blocked time is not held against
the calls that waited behind it, and the call that overran is a timeout that says by how much.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from starfish import data_factory
from starfish.jobs import load_job
from tests.data_factory.stored import rows_on_disk


def test_a_blocking_sync_hook_times_out_no_call_whose_answer_was_ready():
    blocked = {"done": False}

    def slow_hook(records, state):
        if not blocked["done"]:
            blocked["done"] = True
            time.sleep(1.5)  # three deadlines long: every call in flight falls due meanwhile

    @data_factory(
        storage="local",
        show_progress=False,
        max_concurrency=8,
        task_runner_timeout=0.5,
        on_record_complete=slow_hook,
    )
    async def gen(i: int):
        await asyncio.sleep(0.05 * (i % 4))  # some answer with the first, some later
        return {"i": i}

    records = gen.run(i=list(range(40)))
    assert records == [{"i": i} for i in range(40)]
    info = load_job(gen.job_id)
    assert info.status == "completed"
    assert info.error_summary == {} and info.counts["failed"] == 0
    assert rows_on_disk(gen.job_id)["completed"] == 40


def test_a_function_that_blocks_past_its_deadline_is_a_timeout_saying_by_how_much():
    @data_factory(
        storage="local",
        show_progress=False,
        max_concurrency=4,
        task_runner_timeout=0.5,
        dead_queue_threshold=1,
    )
    async def gen(i: int):
        if i == 3:
            for _ in range(6):
                time.sleep(0.25)  # 1.5 s without one await: nothing can cancel it
            return {"i": i, "late": True}
        await asyncio.sleep(0.05)
        return {"i": i}

    records = gen.run(i=list(range(12)))
    assert records == [{"i": i} for i in range(12) if i != 3]
    info = load_job(gen.job_id)
    assert info.status == "completed"
    assert info.error_summary == {"TimeoutError": 1}  # the others waited behind it: no timeout
    assert rows_on_disk(gen.job_id) == {
        "completed": 11,
        "failed": 1,
        "filtered": 0,
        "duplicate": 0,
        "dead": 1,
    }
    [failure] = gen.get_output_data(filter="failed")
    assert failure["index"] == 3 and failure["error_type"] == "TimeoutError"
    assert re.search(
        r"ran 1\.\d s for input 3, 1\.\d s past task_runner_timeout=0\.5s", failure["error"]
    )


def test_a_function_that_swallows_the_cancellation_is_a_timeout_not_completed():
    @data_factory(
        storage="local", show_progress=False, task_runner_timeout=0.3, dead_queue_threshold=1
    )
    async def gen(i: int):
        for _ in range(8):
            with contextlib.suppress(asyncio.CancelledError):  # a misbehaving library
                await asyncio.sleep(0.1)
        return {"i": i}

    started = time.monotonic()
    try:
        gen.run(i=[0])
    except Exception as exc:  # OutputError: no input completed
        assert "without one completed input" in str(exc)
    info = load_job(gen.job_id)
    assert info.status == "failed" and info.counts["completed"] == 0 and info.counts["dead"] == 1
    [failure] = gen.get_output_data(filter="failed")
    assert failure["error_type"] == "TimeoutError"
    assert "for input 0" in failure["error"] and "past task_runner_timeout=0.3s" in failure["error"]
    assert time.monotonic() - started < 10


BLOCKER = """
import asyncio, sys, time
from starfish import data_factory

@data_factory(max_concurrency=2, show_progress=False, task_runner_timeout=1)
async def gen(i: int):
    if i == 0:
        open(sys.argv[1], "w").close()
        time.sleep(3)  # SIGTERM arrives in here
        return {"i": i}
    await asyncio.sleep(30)
    return {"i": i}

gen.run(i=[0, 1])
"""


def test_sigterm_during_a_blocking_call_stores_it_as_a_timeout_and_exits_143(tmp_path: Path):
    marker = tmp_path / "blocking"
    script = tmp_path / "job.py"
    script.write_text(BLOCKER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(marker)], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert time.monotonic() - sent < 10  # handled once the blocking step returned
    from starfish.jobs import list_jobs

    [info] = list_jobs()
    assert info.status == "interrupted" and info.stop_reason == "terminated (SIGTERM)"
    counts = rows_on_disk(info.job_id)
    assert counts["completed"] == 0 and counts["failed"] == 1
    assert re.search(r"input 0 ran 3\.\d s", err), err
    assert os.path.exists(marker)


def test_a_loop_with_a_clock_of_its_own_keeps_its_deadlines():
    """The watchdog reads `time.monotonic` directly only for asyncio's own loops; another
    loop (uvloop) is read through `loop.time()`, or every deadline would be off by the
    difference between the two clocks: here an hour, so the timer would never fire."""
    from starfish.data_factory.watchdog import Watchdog

    class Behind(asyncio.SelectorEventLoop):
        def time(self) -> float:
            return super().time() - 3600.0

    async def call() -> bool:
        dog = Watchdog(asyncio.get_running_loop(), 0.05, 1)
        task = asyncio.current_task()
        assert task is not None
        dog.watch(0, task)
        dog.arm(0)
        try:
            await asyncio.sleep(2)
        except asyncio.CancelledError:
            return dog.disarm(0)  # cancelled for its deadline: the watchdog says it expired
        finally:
            dog.close()
        return False

    loop = Behind()
    try:
        started = time.monotonic()
        assert loop.run_until_complete(call()) is True
        assert time.monotonic() - started < 1
    finally:
        loop.close()
