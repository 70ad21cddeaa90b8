"""Attempt numbers go on across runs (issue 16, case 9).

The model layer keys its cache by input and attempt: when a resume numbered its attempts from 1
again, inputs that had died on bad model output died again on resume from the cache, with no
new request. Now a resume's first attempt at an input is one more than the last stored one,
while the dead-letter threshold counts the attempts of this run (dead inputs get fresh ones).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator

import pytest

from starfish import data_factory
from starfish.data_factory import resume_from_checkpoint
from starfish.data_factory.context import current_call
from starfish.jobs import load_job
from tests.data_factory.stored import db_path, rows_on_disk
from tests.openai_server import OpenAIServer


def _stored_attempts(job_id: str) -> dict[int, list[tuple[int, str]]]:
    """Per input: (attempt, status) of every stored attempt row, from the file itself."""
    conn = sqlite3.connect(db_path())
    try:
        (jid,) = conn.execute("SELECT id FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        rows = conn.execute(
            "SELECT idx, attempt, status FROM attempts WHERE jid = ? ORDER BY idx, attempt",
            (jid,),
        ).fetchall()
    finally:
        conn.close()
    out: dict[int, list[tuple[int, str]]] = {}
    for idx, attempt, status in rows:
        out.setdefault(idx, []).append((attempt, status))
    return out


def _dead_attempts(job_id: str) -> dict[int, int]:
    conn = sqlite3.connect(db_path())
    try:
        (jid,) = conn.execute("SELECT id FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        rows = conn.execute(
            "SELECT key, status, attempts FROM inputs WHERE key BETWEEN ? AND ?",
            (jid << 32, (jid << 32) | 0xFFFFFFFF),
        ).fetchall()
    finally:
        conn.close()
    return {key & 0xFFFFFFFF: attempts for key, status, attempts in rows if status == "dead"}


SEEN: list[tuple[int, int]] = []
FIXED = {"on": False}


@data_factory(storage="local", show_progress=False, dead_queue_threshold=2)
async def flaky(i: int):
    call = current_call()
    assert call is not None
    SEEN.append((i, call.attempt))
    await asyncio.sleep(0)
    if i % 2 and not FIXED["on"]:
        raise ValueError(f"odd {i}")
    return [{"i": i}]


def test_a_resume_numbers_attempts_on_from_the_stored_ones_and_dead_inputs_get_fresh_ones():
    SEEN.clear()
    FIXED["on"] = False
    flaky.run(i=list(range(4)))
    job_id = flaky.job_id
    assert sorted(a for i, a in SEEN if i == 1) == [1, 2]
    assert _dead_attempts(job_id) == {1: 2, 3: 2}

    SEEN.clear()
    resume_from_checkpoint(job_id)  # still failing: two fresh attempts, numbered 3 and 4
    assert sorted(SEEN) == [(1, 3), (1, 4), (3, 3), (3, 4)]
    assert _stored_attempts(job_id)[1] == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
        (4, "failed"),
    ]
    assert _dead_attempts(job_id) == {1: 4, 3: 4}
    info = load_job(job_id)
    assert info.status == "completed" and info.counts["dead"] == 2 and info.counts["failed"] == 8

    SEEN.clear()
    FIXED["on"] = True
    records = resume_from_checkpoint(job_id)
    assert sorted(SEEN) == [(1, 5), (3, 5)]
    assert records == [{"i": i} for i in range(4)]
    info = load_job(job_id)
    assert info.status == "completed" and info.counts["dead"] == 0
    assert rows_on_disk(job_id)["completed"] == 4


def test_in_memory_storage_numbers_resumed_attempts_on_too():
    seen: list[tuple[int, int]] = []
    fixed = {"on": False}

    @data_factory(storage="in_memory", show_progress=False, dead_queue_threshold=2)
    async def gen(i: int):
        call = current_call()
        assert call is not None
        seen.append((i, call.attempt))
        await asyncio.sleep(0)
        if i == 1 and not fixed["on"]:
            raise ValueError("one")
        return [{"i": i}]

    gen.run(i=[0, 1])
    seen.clear()
    fixed["on"] = True
    assert gen.resume() == [{"i": 0}, {"i": 1}]
    assert seen == [(1, 3)]
    failed = gen.get_output_data(filter="failed")
    assert [(r["index"], r["attempt"]) for r in failed] == [(1, 1), (1, 2)]
    info = load_job(gen.job_id)
    assert info.status == "completed" and info.counts["completed"] == 2


@pytest.fixture
def llm_server() -> Iterator[OpenAIServer]:
    from starfish.llm import endpoint

    endpoint.reset_endpoints()
    server = OpenAIServer().start()
    yield server
    server.stop()
    endpoint.reset_endpoints()


def test_a_resume_asks_the_model_again_instead_of_replaying_cached_bad_output(llm_server):
    from starfish import StructuredLLM

    server = llm_server
    llm = StructuredLLM(
        model_name="loopback-model",
        base_url=server.url,
        prompt="Say {{n}}.",
        output_schema=[{"name": "n", "type": "int"}],
        reasks=0,
    )

    @data_factory(storage="local", show_progress=False, dead_queue_threshold=2)
    async def ask(n: int):
        return (await llm.run(n=n)).data

    server.script({"content": "not json"}, {"content": "not json"})
    with pytest.raises(Exception):  # noqa: B017 - OutputError: no input completed
        ask.run(n=[7])
    job_id = ask.job_id
    assert len(server.requests) == 2
    assert load_job(job_id).counts["dead"] == 1

    records = resume_from_checkpoint(job_id)  # the server answers well now
    assert len(server.requests) == 3  # asked again: attempt 3 is a new cache key
    assert len(records) == 1 and isinstance(records[0]["n"], int)
    info = load_job(job_id)
    assert info.status == "completed" and info.counts["completed"] == 1 and info.counts["dead"] == 0
