"""What an outcome means: empty results, hook verdicts, hints on exceptions (issue 8, 10)."""

from __future__ import annotations

import asyncio
import time

import pytest

from starfish import HookError, InputError, data_factory
from starfish.jobs import load_job


@pytest.mark.parametrize("storage", ["local", "in_memory"])
def test_an_empty_list_completes_the_input_but_never_counts_toward_the_target(storage):
    calls: list[int] = []

    @data_factory(storage=storage, show_progress=False, target_count=3, max_concurrency=1)
    async def gen(i):
        calls.append(i)
        return [] if i % 2 else [{"i": i}]

    records = gen.run(i=list(range(10)))
    assert records == [{"i": 0}, {"i": 2}, {"i": 4}]
    assert calls == [0, 1, 2, 3, 4]  # the two empty inputs did not satisfy the target
    info = load_job(gen.job_id)
    assert info.status == "completed" and info.stop_reason == "target_count reached"
    assert info.counts["completed"] == 5  # empty inputs are done: a resume will not re-run them
    assert gen.get_index() == [0, 1, 2, 3, 4]


def test_on_resume_earlier_empty_inputs_do_not_count_toward_the_target():
    class Stop(Exception):
        fatal = True

    first_run = [True]
    seen: list[int] = []

    @data_factory(storage="local", show_progress=False, target_count=2, max_concurrency=1)
    async def gen(i):
        seen.append(i)
        if i == 0:
            return []
        if first_run[0]:
            raise Stop()  # ends the first run once input 0 completed empty
        return [{"i": i}]

    with pytest.raises(Stop):
        gen.run(i=list(range(6)))
    assert load_job(gen.job_id).counts["completed"] == 1
    first_run[0] = False
    seen.clear()
    assert gen.resume() == [{"i": 1}, {"i": 2}]
    assert seen == [1, 2]


def test_a_hook_verdict_that_is_not_a_verdict_stops_the_job_with_a_clear_error():
    calls: list[int] = []

    def keep_it(records, state):
        return "keep"

    @data_factory(
        storage="local", show_progress=False, on_record_complete=keep_it, max_concurrency=1
    )
    async def gen(i):
        calls.append(i)
        return [{"i": i}]

    with pytest.raises(HookError, match=r"hook .*keep_it returned 'keep'.*'filtered'"):
        gen.run(i=list(range(50)))
    assert calls == [0]  # no retry and no further input: every one would hit the same error
    info = load_job(gen.job_id)
    assert info.status == "failed"
    assert "keep_it returned 'keep'" in info.stop_reason
    assert info.counts["completed"] == 0 and info.counts["failed"] == 1


def test_an_error_marked_fatal_stops_the_job_at_once_and_the_input_stays_resumable():
    class Rejected(Exception):
        fatal = True

    calls: list[int] = []

    @data_factory(storage="local", show_progress=False, max_concurrency=1)
    async def gen(i):
        calls.append(i)
        if i == 3:
            raise Rejected("the API key was rejected")
        return [{"i": i}]

    with pytest.raises(Rejected):
        gen.run(i=list(range(20)))
    assert calls == [0, 1, 2, 3]
    info = load_job(gen.job_id)
    assert info.status == "failed"
    assert info.stop_reason == "fatal error: Rejected: the API key was rejected"
    assert info.counts["completed"] == 3 and info.counts["dead"] == 0
    assert gen.get_index_dead_queue() == []


def test_retry_after_on_an_exception_sets_the_delay_before_the_retry():
    attempts: list[float] = []

    class Busy(Exception):
        retry_after = 0.4

    @data_factory(storage="in_memory", show_progress=False)
    async def gen(i):
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise Busy()
        return [{"i": i}]

    assert gen.run(i=[0]) == [{"i": 0}]
    assert len(attempts) == 2
    assert attempts[1] - attempts[0] >= 0.4  # default backoff would be 10-30 ms


def test_an_async_generator_gets_its_own_message():
    with pytest.raises(InputError, match=r"async generator.*`return` the list"):

        @data_factory
        async def gen(i):
            yield {"i": i}


def test_an_empty_result_is_still_one_completed_input_in_run_output():
    @data_factory(storage="in_memory", show_progress=False)
    async def gen(i):
        await asyncio.sleep(0)
        return []

    # every input completed with nothing to keep: a completed job, no OutputError
    assert gen.run(i=[1, 2]) == []
    info = load_job(gen.job_id)
    assert info.status == "completed" and info.counts["completed"] == 2
