"""Execution semantics: concurrency, timeout, retries, dead queue, target count, breaker."""

from __future__ import annotations

import asyncio

import pytest

from starfish import OutputError, data_factory
from starfish.jobs import load_job


def test_concurrency_reaches_and_never_exceeds_the_limit():
    running = 0
    peak = 0

    @data_factory(storage="in_memory", show_progress=False, max_concurrency=7)
    async def gen(i):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.005)
        running -= 1
        return [{"i": i}]

    assert len(gen.run(i=list(range(60)))) == 60
    assert peak == 7


def test_timeout_is_a_failure_of_type_timeout_error():
    @data_factory(
        storage="in_memory",
        show_progress=False,
        task_runner_timeout=0.1,
        dead_queue_threshold=1,
        max_concurrency=4,
    )
    async def gen(i):
        await asyncio.sleep(30 if i == 1 else 0)
        return [{"i": i}]

    assert gen.run(i=[0, 1, 2]) == [{"i": 0}, {"i": 2}]
    [failure] = gen.get_output_data(filter="failed")
    assert failure["error_type"] == "TimeoutError" and failure["index"] == 1
    assert gen.get_index_dead_queue() == [1]


def test_retry_then_dead_queue_with_attempts_counted():
    calls: dict[int, int] = {}

    @data_factory(storage="local", show_progress=False, dead_queue_threshold=3)
    async def gen(i):
        calls[i] = calls.get(i, 0) + 1
        if i == 3 or (i == 5 and calls[i] == 1):
            raise ValueError(f"bad {i}")
        return [{"i": i}]

    records = gen.run(i=list(range(8)))
    assert records == [{"i": i} for i in range(8) if i != 3]
    assert calls[3] == 3 and calls[5] == 2
    assert gen.get_index_dead_queue() == [3]
    assert gen.get_input_data_in_dead_queue() == [{"i": 3}]
    failed = gen.get_output_data(filter="failed")
    assert [(f["index"], f["attempt"]) for f in failed] == [(3, 1), (3, 2), (3, 3), (5, 1)]
    assert gen.get_index(filter="failed") == [3, 5]
    info = load_job(gen.job_id)
    assert info.status == "completed"
    assert info.counts == {"completed": 7, "failed": 4, "filtered": 0, "duplicate": 0, "dead": 1}
    assert info.dead_queue == [3]
    assert info.error_summary == {"ValueError": 4}


def test_dead_queue_threshold_one_means_no_second_attempt():
    calls = []

    @data_factory(storage="in_memory", show_progress=False, dead_queue_threshold=1)
    async def gen(i):
        calls.append(i)
        if i == 0:
            raise RuntimeError("no")
        return [{"i": i}]

    gen.run(i=[0, 1])
    assert calls.count(0) == 1


def test_target_count_returns_exactly_that_many_inputs_and_cancels_in_flight():
    started = []
    finished = []

    @data_factory(storage="local", show_progress=False, max_concurrency=5, target_count=10)
    async def gen(i):
        started.append(i)
        await asyncio.sleep(0.001 * (i % 7))
        finished.append(i)
        return [{"i": i, "k": 0}, {"i": i, "k": 1}]

    records = gen.run(i=list(range(200)))
    assert len({r["i"] for r in records}) == 10
    assert len(records) == 20
    assert records == sorted(records, key=lambda r: (r["i"], r["k"]))
    assert len(started) < 200
    info = load_job(gen.job_id)
    assert info.status == "completed" and info.counts["completed"] == 10
    assert "target_count" in info.stop_reason


def test_a_single_failure_among_successes_does_not_stop_the_job():
    @data_factory(
        storage="in_memory",
        show_progress=False,
        max_concurrency=2,
        job_run_stop_threshold=3,
        dead_queue_threshold=3,
    )
    async def gen(i):
        if i == 4:
            raise ValueError("one bad input")
        await asyncio.sleep(0)
        return [{"i": i}]

    records = gen.run(i=list(range(30)))
    assert len(records) == 29
    info = load_job(gen.job_id)
    assert info.status == "completed"
    assert info.dead_queue == [4]


def test_a_job_where_nothing_completes_raises_output_error_and_stays_readable():
    @data_factory(storage="local", show_progress=False, dead_queue_threshold=2)
    async def gen(i):
        raise KeyError("missing")

    with pytest.raises(OutputError, match="without one completed input"):
        gen.run(i=[0, 1])
    info = load_job(gen.job_id)
    assert info.status == "failed"
    assert info.counts["failed"] == 4 and info.counts["dead"] == 2
    assert len(gen.get_output_data(filter="failed")) == 4


def test_run_works_inside_a_running_event_loop():
    @data_factory(storage="in_memory", show_progress=False)
    async def gen(i):
        return [{"i": i}]

    async def notebook_cell():
        return gen.run(i=[1, 2])

    assert asyncio.run(notebook_cell()) == [{"i": 1}, {"i": 2}]


def test_run_async_inside_a_loop():
    @data_factory(storage="local", show_progress=False)
    async def gen(i):
        return [{"i": i}]

    assert asyncio.run(gen.run_async(i=[3, 4])) == [{"i": 3}, {"i": 4}]


def test_cancelling_a_job_marks_it_interrupted_and_resume_finishes_it():
    slow = {"on": True}

    @data_factory(storage="local", show_progress=False, max_concurrency=4)
    async def gen(i):
        await asyncio.sleep(5 if slow["on"] and i >= 20 else 0.002)
        return [{"i": i}]

    async def cancel_soon():
        task = asyncio.ensure_future(gen.run_async(i=list(range(40))))
        while len(gen.get_index()) < 20 if gen.job_id else True:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_soon())
    info = load_job(gen.job_id)
    assert info.status == "interrupted"
    assert info.counts["completed"] == 20
    slow["on"] = False
    assert gen.resume(max_concurrency=10) == [{"i": i} for i in range(40)]
    assert load_job(gen.job_id).status == "completed"
