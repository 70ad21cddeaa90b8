"""StructuredLLM inside `@data_factory` jobs: the cache in the job database, counts, resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from starfish import StructuredLLM, data_factory, jobs
from starfish.llm.cache import read_counts
from tests.llm.conftest import KEY

QA = [{"name": "question", "type": "str"}, {"name": "answer", "type": "str"}]
PROMPT = "Write one question about {{topic}}."


def db_path() -> Path:
    return Path(os.environ["STARFISH_LOCAL_STORAGE_DIR"]) / "db" / "starfish.db"


def echo_topic(body):
    """Answer with the prompt as the question, so stored responses say which input they were."""
    return json.dumps({"records": [{"question": body["messages"][-1]["content"], "answer": "a"}]})


def make_job(llm, **options):
    options.setdefault("show_progress", False)
    options.setdefault("max_concurrency", 8)

    @data_factory(**options)
    async def gen(topic):
        return (await llm.run(topic=topic)).data

    return gen


def stored_bytes() -> bytes:
    base = db_path()
    return b"".join(
        Path(str(base) + suffix).read_bytes()
        for suffix in ("", "-wal", "-shm")
        if Path(str(base) + suffix).exists()
    )


def test_a_re_run_makes_zero_requests_and_identical_inputs_get_two_samples(make_server):
    server = make_server(reply=echo_topic)
    llm = StructuredLLM("m", prompt=PROMPT, output_schema=QA, base_url=server.url, api_key=KEY)
    topics = [f"t{i}" for i in range(20)] + ["same", "same"]
    gen = make_job(llm)
    first = gen.run(topic=topics)
    assert len(server.requests) == 22  # by input index: the two "same" are two samples
    counts = read_counts(db_path(), gen.job_id)
    assert counts["requests"] == 22 and counts["cache_hits"] == 0

    again = make_job(llm)
    second = again.run(topic=topics)
    assert len(server.requests) == 22  # nothing new was sent
    assert second == first
    counts = read_counts(db_path(), again.job_id)
    assert counts["cache_hits"] == 22 and counts["requests"] == 0
    assert KEY.encode() not in stored_bytes()


def test_tokens_and_cost_are_counted_per_job(make_server):
    server = make_server()
    llm = StructuredLLM("m", prompt=PROMPT, output_schema=QA, base_url=server.url, price=(2, 4))
    gen = make_job(llm)
    gen.run(topic=["a", "b", "c"])
    counts = read_counts(db_path(), gen.job_id)
    served = [json.loads(json.dumps(b)) for b in server.bodies]
    assert len(served) == 3 == counts["requests"]
    from tests.openai_server import count_tokens, prompt_tokens

    expected_prompt = sum(prompt_tokens(b["messages"]) for b in served)
    completion = count_tokens(json.dumps({"records": [{"question": "text", "answer": "text"}]}))
    assert counts["prompt_tokens"] == expected_prompt
    assert counts["completion_tokens"] == 3 * completion
    assert abs(counts["cost_usd"] - (expected_prompt * 2 + 3 * completion * 4) / 1e6) < 1e-12


def test_a_retry_after_filtered_asks_again(make_server):
    server = make_server()
    llm = StructuredLLM("m", prompt=PROMPT, output_schema=QA, base_url=server.url)
    seen = []

    def filter_first(records, state):
        seen.append(1)
        return "filtered" if len(seen) == 1 else None

    gen = make_job(llm, on_record_complete=filter_first, max_concurrency=1)
    out = gen.run(topic=["x"])
    assert len(out) == 1
    assert len(server.requests) == 2  # attempt 2 is a new cache key: a new sample


def test_cache_false_pays_again(make_server):
    server = make_server()
    llm = StructuredLLM("m", prompt=PROMPT, output_schema=QA, base_url=server.url, cache=False)
    make_job(llm).run(topic=["a", "b"])
    gen = make_job(llm)
    gen.run(topic=["a", "b"])
    assert len(server.requests) == 4
    assert read_counts(db_path(), gen.job_id)["requests"] == 2


def test_in_memory_jobs_cache_in_memory_and_calls_outside_a_job_are_not_cached(make_server):
    """An in-memory job keeps its answers for the process (its storage holds them, no file);
    a call outside a job has no input and attempt to key an answer by."""
    server = make_server()
    llm = StructuredLLM("m", prompt=PROMPT, output_schema=QA, base_url=server.url)
    first = make_job(llm, storage="in_memory")
    first.run(topic=["a"])
    again = make_job(llm, storage="in_memory")
    again.run(topic=["a"])
    assert len(server.requests) == 1
    assert jobs.load_job(again.job_id).llm["cache_hits"] == 1
    import asyncio

    asyncio.run(llm.run(topic="a"))
    asyncio.run(llm.run(topic="a"))
    assert len(server.requests) == 3
    assert not db_path().exists() or b"llm_cache" not in stored_bytes()


def test_a_429_in_a_job_is_not_an_input_failure(make_server):
    server = make_server()
    server.script({}, *[{"status": 429, "headers": {"retry-after-ms": "100"}}] * 10)
    llm = StructuredLLM("m", prompt=PROMPT, output_schema=QA, base_url=server.url)
    gen = make_job(llm, max_concurrency=10)
    out = gen.run(topic=[f"t{i}" for i in range(30)])
    assert len(out) == 30
    from starfish.jobs import load_job

    info = load_job(gen.job_id)
    assert info.status == "completed"
    assert info.counts["failed"] == 0 and info.counts["dead"] == 0
    assert read_counts(db_path(), gen.job_id)["rate_limited"] == 10


JOB = textwrap.dedent(
    """
    import asyncio
    from starfish import StructuredLLM, data_factory

    llm = StructuredLLM(
        "openai/test-model",
        prompt="Write one question about {{topic}}.",
        output_schema=[{"name": "question", "type": "str"}, {"name": "answer", "type": "str"}],
    )

    @data_factory(max_concurrency=8, show_progress=False)
    async def gen(topic):
        data = (await llm.run(topic=topic)).data
        await asyncio.sleep(0.3)  # paid and cached, not yet recorded: what resume must reuse
        return data

    gen.run(topic=[f"topic-{i:03d}" for i in range(%d)])
    """
)
RESUME = textwrap.dedent(
    """
    import json, sys
    from starfish.data_factory import resume_from_checkpoint

    print(json.dumps(resume_from_checkpoint(sys.argv[1])))
    """
)


def _completed(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*) FROM inputs WHERE status = 'completed'").fetchone()[0]
    finally:
        conn.close()


def _cached_questions(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT response FROM llm_cache").fetchall()
    finally:
        conn.close()
    out = set()
    for (text,) in rows:
        content = json.loads(text)["choices"][0]["message"]["content"]
        out.add(json.loads(content)["records"][0]["question"])
    return out


def test_kill_9_mid_job_then_resume_never_pays_twice(make_server, tmp_path, monkeypatch):
    n = 80
    server = make_server(latency=0.05, reply=echo_topic)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    script = tmp_path / "job.py"
    script.write_text(JOB % n)
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path)
    deadline = time.monotonic() + 60
    while len(server.requests) < 40 and time.monotonic() < deadline:
        assert proc.poll() is None, "the job ended before it could be killed"
        time.sleep(0.005)
    time.sleep(0.15)  # answers in hand, the function still sleeping: cached, not recorded
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = len(server.requests)
    assert 40 <= before < n
    cached = _cached_questions(db_path())
    completed_at_kill = _completed(db_path())
    from starfish.jobs import list_jobs

    [info] = list_jobs()
    assert info.status == "abandoned"  # killed: no process holds its lease

    resume = tmp_path / "resume.py"
    resume.write_text(RESUME)
    out = subprocess.run(
        [sys.executable, str(resume), info.job_id], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)
    questions = [f"Write one question about topic-{i:03d}." for i in range(n)]
    assert sorted(r["question"] for r in records) == questions

    after = [b["messages"][-1]["content"] for b in server.bodies[before:]]
    assert not set(after) & cached  # a response kept before the kill is never bought again
    assert len(after) == len(set(after)) == n - len(cached)
    assert set(b["messages"][-1]["content"] for b in server.bodies) == set(questions)
    assert _completed(db_path()) == n
    # every input kept in the cache but not yet recorded at the kill was a cache hit on resume
    counts = read_counts(db_path(), info.job_id)
    assert counts["cache_hits"] == len(cached) - completed_at_kill > 0
    assert KEY.encode() not in stored_bytes()


def test_jobs_show_has_the_llm_counts(make_server):
    server = make_server()
    server.script({"status": 429, "headers": {"retry-after-ms": "50"}})
    llm = StructuredLLM("m", prompt=PROMPT, output_schema=QA, base_url=server.url, price=(1, 1))
    gen = make_job(llm)
    gen.run(topic=["a", "b"])
    shown = subprocess.run(
        [sys.executable, "-m", "starfish", "jobs", "show", gen.job_id, "--json"],
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr
    llm_counts = json.loads(shown.stdout)["llm"]
    assert llm_counts["requests"] == 3 == len(server.requests)
    assert llm_counts["rate_limited"] == 1 and llm_counts["cache_hits"] == 0
    assert llm_counts["cost_usd"] > 0
    human = subprocess.run(
        [sys.executable, "-m", "starfish", "jobs", "show", gen.job_id],
        capture_output=True,
        text=True,
    )
    assert "llm:         3 requests, 0 cache hits" in human.stdout


def test_a_re_run_in_a_new_process_skips_an_unsupported_mode_without_asking(make_server):
    from starfish.llm.endpoint import reset_endpoints

    server = make_server(reject_formats=("json_schema",))
    llm = StructuredLLM("m", prompt=PROMPT, output_schema=QA, base_url=server.url)
    first = make_job(llm).run(topic=["a", "b", "c"])
    sent = len(server.requests)
    assert sent == 4  # one 400 for json_schema, then json_object for each input
    reset_endpoints()  # what a new process knows
    again = make_job(llm).run(topic=["a", "b", "c"])
    assert again == first and len(server.requests) == sent


def test_cache_info_and_clear_commands(make_server):
    server = make_server()
    llm = StructuredLLM("m", prompt=PROMPT, output_schema=QA, base_url=server.url)
    make_job(llm).run(topic=["a", "b"])

    def starfish(*args):
        out = subprocess.run(
            [sys.executable, "-m", "starfish", *args], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    info = json.loads(starfish("cache", "info", "--json"))
    assert info["responses"] == 2 and info["bytes"] > 0
    assert "responses:  2" in starfish("cache", "info")
    assert "deleted 2 cached responses" in starfish("cache", "clear")
    assert json.loads(starfish("cache", "info", "--json"))["responses"] == 0
    make_job(llm).run(topic=["a", "b"])
    assert len(server.requests) == 4  # cleared: asked again


def test_identical_calls_in_one_attempt_are_separate_samples_and_replay_in_order(make_server):
    import asyncio
    import itertools

    numbers = itertools.count()

    def numbered(body):
        return json.dumps({"records": [{"question": f"q{next(numbers)}", "answer": "a"}]})

    server = make_server(reply=numbered)
    llm = StructuredLLM("m", prompt=PROMPT, output_schema=QA, base_url=server.url)

    def job():
        @data_factory(show_progress=False)
        async def gen(topic):
            a, b = await asyncio.gather(llm.run(topic=topic), llm.run(topic=topic))
            return a.data + b.data

        return gen

    first = job().run(topic=["x"])
    assert len(server.requests) == 2
    assert first[0]["question"] != first[1]["question"]
    assert job().run(topic=["x"]) == first
    assert len(server.requests) == 2


def test_a_200_that_is_not_json_is_an_error_and_is_not_cached(make_server):
    server = make_server()
    server.script({"raw": "<html>proxy error</html>"})
    llm = StructuredLLM("m", prompt=PROMPT, output_schema=QA, base_url=server.url)
    gen = make_job(llm, max_concurrency=1)
    out = gen.run(topic=["a"])  # the input's attempt 2 asks again and succeeds
    assert out == [{"question": "text", "answer": "text"}]
    from starfish.jobs import load_job

    info = load_job(gen.job_id)
    assert info.counts["failed"] == 1 and info.error_summary == {"LLMRequestError": 1}
    assert len(server.requests) == 2
    # a re-run's attempt 1 asks again: the broken answer was not kept
    assert make_job(llm).run(topic=["a"]) == out and len(server.requests) == 3


PROGRESS_JOB = textwrap.dedent(
    """
    import sys
    from starfish.data_factory import progress
    progress.LOG_INTERVAL = 0.05
    from starfish import StructuredLLM, data_factory

    llm = StructuredLLM("m", prompt="About {{topic}}", base_url=sys.argv[1], price=(1, 1))

    @data_factory(max_concurrency=2)
    async def gen(topic):
        return (await llm.run(topic=topic)).data

    gen.run(topic=[str(i) for i in range(12)])
    """
)


def test_the_progress_line_shows_the_model_counts(make_server, tmp_path):
    server = make_server(latency=0.03)
    server.script({}, {"status": 429, "headers": {"retry-after-ms": "50"}})
    script = tmp_path / "job.py"
    script.write_text(PROGRESS_JOB)
    proc = subprocess.run(
        [sys.executable, str(script), server.url], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("starfish: gen:")]
    assert lines, proc.stderr
    import re

    found = re.search(
        r"completed (\d+) .* llm (\d+) requests, 0 cached, \d+ tokens, 1 rate-limited, \$0\.0",
        lines[-1],
    )
    assert found, lines[-1]
    completed, requests = int(found.group(1)), int(found.group(2))
    assert completed + 1 <= requests <= 13  # the 429 is a request too


def test_budget_usd_stops_the_job_once_its_model_calls_cost_that_much(server):
    # 10 prompt + 20 completion tokens per call (the server's usage) at $1,000/M each: 3 ¢
    llm = StructuredLLM(
        "m", prompt=PROMPT, output_schema=QA, base_url=server.url, api_key=KEY, price=(1000, 1000)
    )
    gen = make_job(llm, max_concurrency=1, budget_usd=0.10)
    records = gen.run(topic=[f"t{i}" for i in range(50)])
    from starfish.jobs import load_job

    info = load_job(gen.job_id)
    spent = read_counts(db_path(), gen.job_id)["cost_usd"]
    assert info.status == "stopped"
    assert info.stop_reason.startswith("budget_usd=0.1 reached")
    per_call = spent / len(server.requests)
    assert 0.10 <= spent < 0.10 + 1.01 * per_call  # at most one request past the budget
    assert len(records) == info.counts["completed"] < 50
    assert len(server.requests) < 50

    # a resume counts what earlier runs spent: the budget is already used up
    before = len(server.requests)
    from starfish.data_factory import resume_from_checkpoint

    resume_from_checkpoint(gen.job_id)
    assert len(server.requests) <= before + 1
    assert load_job(gen.job_id).status == "stopped"


def test_a_rejected_key_stops_the_job_at_once(server):
    server.script({"status": 401, "error": f"Incorrect API key provided: {KEY}"})
    llm = StructuredLLM("m", prompt=PROMPT, output_schema=QA, base_url=server.url, api_key=KEY)
    gen = make_job(llm, max_concurrency=1)
    import pytest

    from starfish.llm import LLMAuthError

    with pytest.raises(LLMAuthError):
        gen.run(topic=[f"t{i}" for i in range(30)])
    from starfish.jobs import load_job

    info = load_job(gen.job_id)
    assert info.status == "failed" and info.stop_reason.startswith("fatal error: LLMAuthError")
    assert len(server.requests) == 1  # no retry, no further input
    assert KEY not in info.stop_reason
    assert gen.get_index_dead_queue() == []  # resumable once the key is fixed


def test_a_turn_waited_in_the_rate_limiter_does_not_count_against_the_timeout(server):
    # 60 requests/min is one a second; six inputs at once wait up to ~5 s for their turn,
    # far past task_runner_timeout=1.5, but each call itself takes milliseconds.
    llm = StructuredLLM(
        "m", prompt=PROMPT, output_schema=QA, base_url=server.url, api_key=KEY, rpm=60
    )
    gen = make_job(llm, max_concurrency=6, task_runner_timeout=1.5)
    records = gen.run(topic=[f"t{i}" for i in range(6)])
    from starfish.jobs import load_job

    info = load_job(gen.job_id)
    assert len(records) == 6
    assert info.counts["failed"] == 0 and info.error_summary == {}
    assert len(server.requests) == 6


def test_a_call_that_overruns_after_its_turn_still_times_out(make_server):
    server = make_server(latency=3.0)
    llm = StructuredLLM(
        "m", prompt=PROMPT, output_schema=QA, base_url=server.url, api_key=KEY, rpm=600
    )
    gen = make_job(llm, max_concurrency=2, task_runner_timeout=0.5, dead_queue_threshold=1)
    import pytest

    from starfish import OutputError

    with pytest.raises(OutputError):
        gen.run(topic=["a", "b"])
    from starfish.jobs import load_job

    assert load_job(gen.job_id).error_summary == {"TimeoutError": 2}


def test_an_in_memory_job_keeps_its_model_counts_after_it_ends(server):
    llm = StructuredLLM("m", prompt=PROMPT, output_schema=QA, base_url=server.url, price=(1, 1))
    gen = make_job(llm, storage="in_memory")
    gen.run(topic=["a", "b", "c"])
    from starfish.jobs import load_job

    counts = load_job(gen.job_id).llm
    assert counts is not None and counts["requests"] == len(server.requests) == 3
    assert counts["cache_hits"] == 0 and counts["cost_usd"] > 0


def test_deleting_a_job_removes_its_model_counts_and_keeps_its_answers(make_server):
    """The counts belong to the job; the answers to the cache (`cache clear --job` removes
    them), so the same job run again after a delete still asks nothing."""
    server = make_server()
    llm = StructuredLLM("m", prompt=PROMPT, output_schema=QA, base_url=server.url, api_key=KEY)
    gen = make_job(llm)
    gen.run(topic=["a", "b"])
    assert read_counts(db_path(), gen.job_id)["requests"] == 2
    jobs.delete_job(gen.job_id)
    assert read_counts(db_path(), gen.job_id) is None
    again = make_job(llm)
    again.run(topic=["a", "b"])
    assert len(server.requests) == 2
