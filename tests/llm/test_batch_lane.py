"""The batch lane end to end: `StructuredLLM(batch=True)` in jobs against the loopback batch
server (OpenAI's Files and Batches, Anthropic's Message Batches), with every fault the issue
names; the stored job is checked after each run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from starfish import StructuredLLM, data_factory, jobs
from starfish.llm.errors import LLMConfigError
from tests.batch_server import BatchServer
from tests.llm.conftest import KEY

QA = [{"name": "question", "type": "str"}, {"name": "answer", "type": "str"}]
PROMPT = "Write one question about {{topic}}."


@pytest.fixture(autouse=True)
def _fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARFISH_BATCH_POLL_S", "0.05")


@pytest.fixture
def batch_server() -> Iterator[BatchServer]:
    server = BatchServer(key=KEY).start()
    yield server
    server.stop()


def db_path() -> Path:
    return Path(os.environ["STARFISH_LOCAL_STORAGE_DIR"]) / "db" / "starfish.db"


def echo(body: dict[str, Any]) -> str:
    """The question says which prompt it answers."""
    return json.dumps({"records": [{"question": body["messages"][-1]["content"], "answer": "a"}]})


def make_llm(server: BatchServer, **settings: Any) -> StructuredLLM:
    settings.setdefault("api_key", KEY)
    return StructuredLLM(
        "m", prompt=PROMPT, output_schema=QA, base_url=server.url, batch=True, **settings
    )


def make_job(llm: StructuredLLM, **options: Any):
    options.setdefault("show_progress", False)
    options.setdefault("max_concurrency", 50)

    @data_factory(**options)
    async def gen(topic: str):
        return (await llm.run(topic=topic)).data

    return gen


def topics(n: int) -> list[str]:
    return [f"t{i}" for i in range(n)]


def chat_requests(server: BatchServer) -> list[dict[str, Any]]:
    return [r for r in server.requests if r["path"].endswith("/chat/completions")]


def test_one_batch_answers_every_input_at_half_price(batch_server: BatchServer):
    batch_server.reply = echo
    llm = make_llm(batch_server, price=(2.0, 4.0))
    gen = make_job(llm)
    records = gen.run(topic=topics(30))
    assert sorted(r["question"] for r in records) == sorted(
        f"Write one question about t{i}." for i in range(30)
    )
    assert batch_server.lines_per_batch == [30] and len(batch_server.uploads) == 1
    assert chat_requests(batch_server) == []  # nothing went the online way
    info = jobs.load_job(gen.job_id)
    assert info.status == "completed" and info.counts["completed"] == 30
    llm_counts = info.llm
    assert llm_counts is not None
    assert llm_counts["requests"] == 30 and llm_counts["batch_requests"] == 30
    assert llm_counts["cache_hits"] == 0  # the replays are the batch's answers, not hits
    online = (llm_counts["prompt_tokens"] * 2.0 + llm_counts["completion_tokens"] * 4.0) / 1e6
    assert llm_counts["cost_usd"] == pytest.approx(online / 2)
    [row] = jobs_batches(gen.job_id)
    assert row["state"] == "ended" and len(row["lines"]) == 30


def jobs_batches(job_id: str) -> list[dict[str, Any]]:
    from starfish.data_factory.storage.sqlite import SqliteStorage

    return SqliteStorage(db_path()).batches(job_id)


def test_batch_size_splits_the_requests(batch_server: BatchServer):
    gen = make_job(make_llm(batch_server, batch_size=4))
    gen.run(topic=topics(10))
    sizes = batch_server.lines_per_batch
    assert sum(sizes) == 10 and max(sizes) <= 4 and len(sizes) >= 3
    assert jobs.load_job(gen.job_id).counts["completed"] == 10


def test_two_calls_one_after_the_other_take_two_rounds(batch_server: BatchServer):
    first = make_llm(batch_server)
    second = StructuredLLM(
        "m",
        prompt="Answer {{q}}.",
        output_schema=QA,
        base_url=batch_server.url,
        api_key=KEY,
        batch=True,
    )

    @data_factory(show_progress=False, max_concurrency=20)
    async def chain(topic: str):
        q = (await first.run(topic=topic)).data[0]["question"]
        return (await second.run(q=q)).data

    records = chain.run(topic=topics(8))
    assert len(records) == 8
    assert batch_server.lines_per_batch == [8, 8]
    assert jobs.load_job(chain.job_id).llm["batch_requests"] == 16


def test_an_invalid_answer_is_re_asked_in_the_next_round(batch_server: BatchServer):
    def reply(body: dict[str, Any]) -> str:
        if len(body["messages"]) == 1 and "t1." in body["messages"][0]["content"]:
            return "not json"
        return echo(body)

    batch_server.reply = reply
    gen = make_job(make_llm(batch_server))
    gen.run(topic=topics(3))
    assert batch_server.lines_per_batch == [3, 1]
    counts = jobs.load_job(gen.job_id).llm
    assert counts["reasks"] == 1 and counts["batch_requests"] == 4


def test_a_re_run_of_the_finished_job_sends_nothing(batch_server: BatchServer):
    llm = make_llm(batch_server)
    first = make_job(llm).run(topic=topics(12))
    made = (len(batch_server.uploads), len(batch_server.batches))
    again = make_job(llm)
    records = again.run(topic=topics(12))
    assert (len(batch_server.uploads), len(batch_server.batches)) == made
    assert sorted(map(json.dumps, records)) == sorted(map(json.dumps, first))
    counts = jobs.load_job(again.job_id).llm
    assert counts["requests"] == 0 and counts["cache_hits"] == 12


def test_an_expired_batch_keeps_its_answers_and_only_the_rest_goes_again(
    batch_server: BatchServer,
):
    batch_server.hold = True
    gen = make_job(make_llm(batch_server))
    done: dict[str, Any] = {}

    def run() -> None:
        done["records"] = gen.run(topic=topics(10))

    worker = threading.Thread(target=run)
    worker.start()
    first = _wait_for_batches(batch_server, 1)[0]
    batch_server.hold = False  # the next batch answers at once
    batch_server.finish(first.id, 4)
    batch_server.expire(first.id)
    worker.join(60)
    assert not worker.is_alive()
    assert len(done["records"]) == 10
    sizes = batch_server.lines_per_batch
    assert sizes == [10, 6]
    second = list(batch_server.batches.values())[1]
    assert not set(first.custom_ids[:4]) & set(second.custom_ids)
    states = [row["state"] for row in jobs_batches(gen.job_id)]
    assert states == ["expired", "ended"]


def _wait_for_batches(server: BatchServer, n: int, timeout: float = 30) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        made = list(server.batches.values())
        if len(made) >= n:
            return made
        time.sleep(0.02)
    raise AssertionError(f"{n} batch(es) not created within {timeout} s")


def test_failing_lines_are_retried_in_later_batches_then_dead(batch_server: BatchServer):
    """Input t0's line fails in every batch: it is retried as a new attempt in the next
    batch, and dead after dead_queue_threshold attempts; the others complete."""
    batch_server.hold = True
    stop = threading.Event()

    def fail_t0() -> None:
        seen: set[str] = set()
        while not stop.is_set():
            for batch in list(batch_server.batches.values()):
                if batch.id in seen:
                    continue
                seen.add(batch.id)
                bad = [cid for cid, body in batch.lines if "t0." in json.dumps(body)]
                batch_server.fail(*bad, status=500, message="scripted server error")
                batch_server.release(batch.id)
            time.sleep(0.01)

    watcher = threading.Thread(target=fail_t0)
    watcher.start()
    try:
        gen = make_job(make_llm(batch_server), dead_queue_threshold=3, stop_threshold=0)
        records = gen.run(topic=topics(5))
    finally:
        stop.set()
        watcher.join()
    assert len(records) == 4
    info = jobs.load_job(gen.job_id)
    assert info.counts["completed"] == 4 and info.counts["dead"] == 1
    failed = gen.get_output_data(filter="failed")
    assert [(f["index"], f["attempt"]) for f in failed] == [(0, 1), (0, 2), (0, 3)]
    assert all("scripted server error" in f["error"] for f in failed)
    assert batch_server.lines_per_batch == [5, 1, 1]


def test_a_refused_key_inside_a_batch_stops_the_job(batch_server: BatchServer):
    batch_server.hold = True
    gen = make_job(make_llm(batch_server), stop_threshold=0)
    done: dict[str, Any] = {}

    def run() -> None:
        try:
            gen.run(topic=topics(3))
        except Exception as exc:
            done["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    [batch] = _wait_for_batches(batch_server, 1)
    batch_server.fail(batch.custom_ids[0], status=401, message="bad key")
    batch_server.release(batch.id)
    worker.join(60)
    assert type(done["error"]).__name__ == "LLMAuthError"
    info = jobs.load_job(gen.job_id)
    assert info.status == "failed" and "refused the API key" in (info.stop_reason or "")


def test_a_rejected_batch_stops_the_job_with_the_providers_reason(batch_server: BatchServer):
    batch_server.reject("the file holds a line over the size limit")
    gen = make_job(make_llm(batch_server))
    with pytest.raises(Exception, match="size limit"):
        gen.run(topic=topics(3))
    info = jobs.load_job(gen.job_id)
    assert info.status == "failed"
    assert "the file holds a line over the size limit" in (info.stop_reason or "")


def test_budget_usd_is_checked_before_each_submission(batch_server: BatchServer):
    """Each request is estimated at prompt/4 + max_tokens tokens at half price; only the lines
    that fit are submitted, then the job stops with the budget's reason."""
    batch_server.reply = lambda body: json.dumps(
        {"records": [{"question": "q", "answer": "long answer " * 30}]}
    )  # about 100 tokens: an answer costs about what the estimate says
    llm = make_llm(batch_server, price=(1000.0, 1000.0), model_kwargs={"max_tokens": 100})
    # one request: about (9 + 100) tokens x $1000/M / 2 = $0.0545
    gen = make_job(llm, budget_usd=0.3)
    records = gen.run(topic=topics(20))
    sent = sum(batch_server.lines_per_batch)
    assert 0 < sent < 20 and len(records) == sent
    info = jobs.load_job(gen.job_id)
    assert info.status == "stopped" and "budget_usd=0.3" in (info.stop_reason or "")
    assert info.llm["cost_usd"] <= 0.3


def test_the_key_is_in_no_uploaded_file_and_not_in_the_database(batch_server: BatchServer):
    gen = make_job(make_llm(batch_server))
    gen.run(topic=topics(6))
    assert batch_server.uploads
    for upload in batch_server.uploads.values():
        assert KEY.encode() not in upload.content
    for suffix in ("", "-wal"):
        path = Path(str(db_path()) + suffix)
        if path.exists():
            assert KEY.encode() not in path.read_bytes()
    auth = {r["headers"].get("Authorization") for r in batch_server.requests}
    assert auth == {f"Bearer {KEY}"}


def test_anthropic_end_to_end(batch_server: BatchServer, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", batch_server.root)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    llm = StructuredLLM(
        "anthropic/claude-3-5-haiku-latest", prompt=PROMPT, output_schema=QA, batch=True
    )
    gen = make_job(llm)
    records = gen.run(topic=topics(7))
    assert len(records) == 7 and all(set(r) >= {"question", "answer"} for r in records)
    assert [b.kind for b in batch_server.batches.values()] == ["anthropic"]
    assert jobs.load_job(gen.job_id).llm["batch_requests"] == 7


def test_batch_true_is_refused_where_it_cannot_work(batch_server: BatchServer):
    with pytest.raises(LLMConfigError, match="openai/, groq/, together/, anthropic/"):
        StructuredLLM("ollama/llama3", prompt=PROMPT, batch=True)
    with pytest.raises(LLMConfigError, match="cache=True"):
        make_llm(batch_server, cache=False)
    with pytest.raises(LLMConfigError, match="batch_size"):
        make_llm(batch_server, batch_size=0)
    llm = make_llm(batch_server)
    import asyncio

    with pytest.raises(LLMConfigError, match="outside a @data_factory job"):
        asyncio.run(llm.run(topic="x"))
    gen = make_job(llm, storage="in_memory")
    with pytest.raises(LLMConfigError, match="storage='in_memory'"):
        gen.run(topic=topics(2))
    assert batch_server.batches == {}


DRIVER = """
import sys
from starfish import StructuredLLM, data_factory

llm = StructuredLLM(
    "m",
    prompt="Write one question about {{topic}}.",
    output_schema=[{"name": "question", "type": "str"}, {"name": "answer", "type": "str"}],
    base_url=sys.argv[2],
    api_key_env="BATCH_KEY",
    batch=True,
)

@data_factory(max_concurrency=20, show_progress=False)
async def gen(topic: str):
    return (await llm.run(topic=topic)).data

if sys.argv[1] == "run":
    gen.run(topic=[f"t{i}" for i in range(15)])
else:
    from starfish.data_factory import resume_from_checkpoint
    print(len(resume_from_checkpoint(sys.argv[3])))
"""


def killed_driver(server: BatchServer, tmp_path: Path, *, until_stored: bool = True) -> str:
    """The id of a DRIVER job killed (-9) once the server holds its batch and, `until_stored`,
    once the job stored the batch's id (the server holds the batch: `hold`)."""
    server.hold = True
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.Popen(
        [sys.executable, str(script), "run", server.url],
        env={**os.environ, "BATCH_KEY": KEY},
        cwd=tmp_path,
    )
    try:
        _wait_for_batches(server, 1)
        deadline = time.monotonic() + 30
        while until_stored and time.monotonic() < deadline and not _stored_running():
            time.sleep(0.02)
        assert not until_stored or _stored_running(), "the batch id was not stored"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    [job] = jobs.list_jobs()
    return job.job_id


def resume_driver(server: BatchServer, tmp_path: Path, job_id: str) -> Any:
    """`resume_from_checkpoint` of a DRIVER job in a new process (what it printed: the count)."""
    return subprocess.run(
        [sys.executable, str(tmp_path / "driver.py"), "resume", server.url, job_id],
        env={**os.environ, "BATCH_KEY": KEY},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_kill_9_after_the_batch_is_created_then_resume_submits_nothing_again(
    batch_server: BatchServer, tmp_path: Path
):
    job_id = killed_driver(batch_server, tmp_path)
    batch_server.release()
    out = resume_driver(batch_server, tmp_path, job_id)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "15"
    assert len(batch_server.uploads) == 1 and batch_server.lines_per_batch == [15]
    info = jobs.load_job(job_id)
    assert info.status == "completed" and info.counts["completed"] == 15


def _stored_running() -> bool:
    if not db_path().exists():
        return False
    with sqlite3.connect(db_path()) as conn:
        try:
            rows = conn.execute("SELECT data FROM llm_batches").fetchall()
        except sqlite3.OperationalError:
            return False
    return any(json.loads(d)["state"] == "running" for (d,) in rows)


def test_a_lost_create_before_the_id_was_stored_is_adopted_on_resume(
    batch_server: BatchServer, tmp_path: Path
):
    """Killed between the provider creating the batch and the job storing its id: the
    resumed job finds the batch by its metadata instead of paying for it again."""
    from starfish.data_factory.storage.sqlite import SqliteStorage

    job_id = killed_driver(batch_server, tmp_path, until_stored=False)
    storage = SqliteStorage(db_path())
    rows = storage.batches(job_id)
    storage.close()
    # Make it look as if the kill came before the id was stored.
    with sqlite3.connect(db_path()) as conn:
        for row in rows:
            row["state"], row["ref"] = "submitting", None
            conn.execute(
                "UPDATE llm_batches SET data = ? WHERE submission = ?",
                (json.dumps(row), row["submission"]),
            )
    batch_server.release()
    out = resume_driver(batch_server, tmp_path, job_id)
    assert out.returncode == 0, out.stderr
    assert len(batch_server.batches) == 1 and len(batch_server.uploads) == 1
    assert jobs.load_job(job_id).counts["completed"] == 15


def test_the_progress_line_shows_the_batches_while_they_run(
    batch_server: BatchServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    import logging

    from starfish.data_factory import progress

    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.05)  # off a terminal: a log line each time
    caplog.set_level(logging.INFO, logger="starfish")
    batch_server.hold = True
    gen = make_job(make_llm(batch_server), show_progress=True)
    worker = threading.Thread(target=lambda: gen.run(topic=topics(5)))
    worker.start()
    try:
        _wait_for_batches(batch_server, 1)
        deadline = time.monotonic() + 20
        while "batch 1 running · 0/5 answered" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text[-2000:]
            time.sleep(0.05)
    finally:
        batch_server.release()
        worker.join(60)
    assert jobs.load_job(gen.job_id).counts["completed"] == 5
