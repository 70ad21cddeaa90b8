"""Hooks, state, dry run, in-memory storage, export and the `starfish.jobs` API."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from starfish import data_factory
from starfish.data_factory import resume_from_checkpoint
from starfish.jobs import (
    JobNotFoundError,
    delete_job,
    iter_records,
    list_jobs,
    load_job,
    resume_job,
)


def _app_dir() -> Path:
    return Path(os.environ["STARFISH_LOCAL_STORAGE_DIR"])


def test_hooks_sync_and_async_filter_duplicate_and_duplicate_wins():
    seen_errors = []

    def sync_hook(output, state):
        state.update(seen=state.get("seen") + 1)
        return "filtered" if output[0]["i"] % 3 == 0 else None

    async def async_hook(output, state):
        await asyncio.sleep(0)
        return "duplicate" if output[0]["i"] % 2 == 0 else None

    async def on_error(error, state):
        seen_errors.append(type(error).__name__)
        state.set("errors", state.get("errors", 0) + 1)

    @data_factory(
        storage="local",
        show_progress=False,
        dead_queue_threshold=2,
        initial_state_values={"seen": 0},
        on_record_complete=[sync_hook, async_hook],
        on_record_error=on_error,
    )
    async def gen(i):
        if i == 7:
            raise ArithmeticError("seven")
        return [{"i": i}]

    records = gen.run(i=list(range(12)))
    # 0, 6: filtered and duplicate -> duplicate wins; 3, 9: filtered; 2, 4, 8, 10: duplicate
    assert records == [{"i": i} for i in (1, 5, 11)]
    assert gen.get_index("duplicate") == [0, 2, 4, 6, 8, 10]
    assert gen.get_index("filtered") == [3, 9]
    # a filtered or duplicate result is kept with its status, and the input tried again
    assert gen.get_output_data("filtered") == [{"i": 3}, {"i": 3}, {"i": 9}, {"i": 9}]
    assert sorted(gen.get_index_dead_queue()) == [0, 2, 3, 4, 6, 7, 8, 9, 10]
    assert seen_errors == ["ArithmeticError", "ArithmeticError"]
    info = load_job(gen.job_id)
    assert info.counts == {"completed": 3, "failed": 2, "filtered": 4, "duplicate": 12, "dead": 9}
    assert gen.state.get("seen") == 19 and gen.state.get("errors") == 2
    assert info.state == {"seen": 19, "errors": 2}


def test_state_is_stored_and_restored_on_resume_in_a_new_factory():
    def count(output, state):
        state.update(done=state.get("done") + 1)

    @data_factory(
        storage="local",
        show_progress=False,
        max_concurrency=1,
        target_count=4,
        initial_state_values={"done": 100},
        on_record_complete=count,
    )
    async def gen(i):
        return [{"i": i}]

    assert gen.run(i=list(range(10))) == [{"i": i} for i in range(4)]
    assert load_job(gen.job_id).state == {"done": 104}
    # a new factory (as in another process) picks up the stored state
    records = resume_from_checkpoint(gen.job_id, target_count=0)
    assert records == [{"i": i} for i in range(10)]
    info = load_job(gen.job_id)
    assert info.state == {"done": 110}
    assert info.run_mode == "resume_from_checkpoint" and info.status == "completed"


def test_resume_never_reruns_completed_inputs():
    calls = []

    @data_factory(storage="local", show_progress=False, max_concurrency=2, target_count=5)
    async def gen(i):
        calls.append(i)
        return [{"i": i}]

    gen.run(i=list(range(12)))
    first = set(gen.get_index())
    calls.clear()
    assert gen.resume(target_count=0) == [{"i": i} for i in range(12)]
    assert not first & set(calls)
    assert sorted(calls) == sorted(set(range(12)) - first)


def test_dry_run_runs_the_first_input_and_writes_nothing():
    calls = []

    @data_factory(storage="local", show_progress=False)
    async def gen(i):
        calls.append(i)
        return [{"i": i}]

    assert gen.dry_run(i=[5, 6, 7]) == [{"i": 5}]
    assert calls == [5]
    assert not (_app_dir() / "db").exists()
    assert [j for j in list_jobs() if j.storage == "local"] == []


def test_in_memory_storage_writes_no_files_and_resumes_in_process():
    @data_factory(storage="in_memory", show_progress=False, target_count=2, max_concurrency=1)
    async def gen(i):
        return [{"i": i}]

    gen.run(i=[0, 1, 2])
    assert list(_app_dir().iterdir()) == []
    assert resume_job(gen.job_id, target_count=0) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert load_job(gen.job_id).storage == "in_memory"
    assert list(_app_dir().iterdir()) == []


def _local_ids() -> list[str]:
    return [j.job_id for j in list_jobs() if j.storage == "local"]


def test_jobs_api_list_load_prefix_iter_delete(tmp_path):
    @data_factory(storage="local", show_progress=False)
    async def gen(i):
        return [{"i": i, "text": "é"}]

    gen.run(i=[0, 1])
    first = gen.job_id
    gen.run(i=list(range(5)))
    second = gen.job_id
    assert _local_ids() == [second, first]
    info = load_job(second[:8])
    assert info.job_id == second and info.name.endswith("gen") and info.num_inputs == 5
    assert info.config["max_concurrency"] == 10 and info.execution_time is not None
    assert set(info.to_dict()) >= {"job_id", "status", "counts", "dead_queue", "config"}
    json.dumps(info.to_dict())
    assert list(iter_records(second)) == [{"i": i, "text": "é"} for i in range(5)]
    with pytest.raises(JobNotFoundError, match="no job with id"):
        load_job("nope")
    delete_job(first)
    assert _local_ids() == [second]
    with pytest.raises(JobNotFoundError):
        load_job(first)

    out = tmp_path / "records.jsonl"
    assert gen.export(out) == 5
    assert [json.loads(line) for line in out.read_text().splitlines()][-1] == {
        "i": 4,
        "text": "é",
    }


def test_batch_size_larger_than_one_still_stores_everything():
    @data_factory(storage="local", show_progress=False, batch_size=64)
    async def gen(i):
        return [{"i": i}]

    assert gen.run(i=list(range(1000))) == [{"i": i} for i in range(1000)]
    assert load_job(gen.job_id).counts["completed"] == 1000
