"""Model calls on Ray are part of the job: the answers kept for each input and attempt reach the
workers with it, and what each call did comes back with its outcome (issue 18, point 2)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from starfish import StructuredLLM, data_factory
from starfish.jobs import list_jobs, load_job
from tests.openai_server import OpenAIServer

pytestmark = pytest.mark.usefixtures("ray_cluster")

QA = [{"name": "question", "type": "str"}, {"name": "answer", "type": "str"}]
PROMPT = "Write one question about {{topic}}."


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    from starfish.llm.endpoint import reset_endpoints

    reset_endpoints()
    running = OpenAIServer().start()
    yield running
    running.stop()
    reset_endpoints()


def _topic(request: dict) -> str:
    return request["body"]["messages"][-1]["content"]


def _job(llm: StructuredLLM, executor: str):
    @data_factory(executor=executor, storage="local", show_progress=False, max_concurrency=8)
    async def gen(topic: str):
        return (await llm.run(topic=topic)).data

    return gen


def test_a_finished_ray_job_run_again_sends_no_request(server: OpenAIServer):
    llm = StructuredLLM("m", prompt=PROMPT, output_schema=QA, base_url=server.url)
    topics = [f"t{i}" for i in range(24)]
    first = _job(llm, "ray")
    first.run(topic=topics)
    assert len(server.requests) == 24
    again = _job(llm, "ray")
    records = again.run(topic=topics)
    assert len(server.requests) == 24  # nothing more: every answer came from the job database
    assert len(records) == 24
    counts = load_job(again.job_id).llm
    assert counts is not None and counts["cache_hits"] == 24 and counts["requests"] == 0
    stored = load_job(first.job_id).llm
    assert stored is not None and stored["requests"] == 24 and stored["cache_hits"] == 0


def test_the_llm_counts_are_identical_on_the_local_and_the_ray_executor(
    server: OpenAIServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """Same server, deterministic answers, separate databases (no cache shared between them);
    the function makes two model calls per input, one of them answered by a re-ask."""
    bad_once: set[str] = set()

    def reply(body: dict) -> str:
        prompt = body["messages"][-1]["content"]
        if "re-ask" in prompt and prompt not in bad_once and len(body["messages"]) == 1:
            bad_once.add(prompt)
            return "not json"
        return json.dumps({"records": [{"question": prompt[:40], "answer": "a"}]})

    server.reply = reply
    llm = StructuredLLM("m", prompt=PROMPT, output_schema=QA, base_url=server.url, price=(1, 2))
    other = StructuredLLM(
        "m", prompt="Now a re-ask about {{topic}}.", output_schema=QA, base_url=server.url
    )

    def job(executor: str):
        @data_factory(executor=executor, storage="local", show_progress=False, max_concurrency=4)
        async def gen(topic: str):
            one = (await llm.run(topic=topic)).data
            two = (await other.run(topic=topic)).data
            return one + two

        return gen

    topics = [f"t{i}" for i in range(10)]
    seen = {}
    for executor in ("local", "ray"):
        monkeypatch.setenv("STARFISH_LOCAL_STORAGE_DIR", str(tmp_path / executor))
        bad_once.clear()
        gen = job(executor)
        gen.run(topic=topics)
        info = load_job(gen.job_id)
        assert info.status == "completed" and info.counts["completed"] == 10
        seen[executor] = info.llm
    assert seen["local"] == seen["ray"]
    counts = seen["ray"]
    assert counts is not None
    assert counts["requests"] == 30 and counts["reasks"] == 10 and counts["cache_hits"] == 0
    assert counts["prompt_tokens"] > 0 and counts["cost_usd"] > 0


DRIVER = """
import sys
from starfish import StructuredLLM, data_factory

llm = StructuredLLM(
    "m",
    prompt="Write one question about {{topic}}.",
    output_schema=[{"name": "question", "type": "str"}, {"name": "answer", "type": "str"}],
    base_url=sys.argv[2],
)

@data_factory(executor="ray", max_concurrency=4, show_progress=False)
async def gen(topic: str):
    return (await llm.run(topic=topic)).data

if sys.argv[1] == "run":
    gen.run(topic=[f"t{i}" for i in range(80)])
else:
    from starfish.data_factory import resume_from_checkpoint
    print(len(resume_from_checkpoint(sys.argv[3])))
"""


def test_after_a_kill_9_of_the_driver_resume_never_pays_twice_for_a_stored_answer(
    tmp_path: Path, ray_cluster: str
):
    from starfish.llm.endpoint import reset_endpoints

    reset_endpoints()
    server = OpenAIServer(latency=0.05).start()
    server.reply = lambda body: json.dumps(
        {"records": [{"question": body["messages"][-1]["content"], "answer": "a"}]}
    )
    try:
        script = tmp_path / "driver.py"
        script.write_text(DRIVER)
        env = {**os.environ, "RAY_ADDRESS": ray_cluster}
        db = Path(os.environ["STARFISH_LOCAL_STORAGE_DIR"]) / "db" / "starfish.db"
        proc = subprocess.Popen(
            [sys.executable, str(script), "run", server.url], env=env, cwd=tmp_path
        )

        def kept() -> set[str]:
            if not db.exists():
                return set()
            with sqlite3.connect(db) as conn:
                try:
                    rows = conn.execute("SELECT response FROM llm_cache").fetchall()
                except sqlite3.OperationalError:
                    return set()
            contents = (json.loads(r[0])["choices"][0]["message"]["content"] for r in rows)
            return {json.loads(c)["records"][0]["question"] for c in contents}

        deadline = time.monotonic() + 120
        while len(kept()) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        stored_at_kill = kept()
        sent_at_kill = len(server.requests)
        assert 20 <= len(stored_at_kill) < 80
        [job] = list_jobs()
        out = subprocess.run(
            [sys.executable, str(script), "resume", server.url, job.job_id],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.stop()
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "80"
    info = load_job(job.job_id)
    assert info.status == "completed" and info.counts["completed"] == 80
    asked = Counter(_topic(r) for r in server.requests)
    assert set(asked) == {f"Write one question about t{i}." for i in range(80)}
    after = Counter(_topic(r) for r in server.requests[sent_at_kill:])
    # Every answer stored before the kill was replayed, not asked again.
    assert not (stored_at_kill & set(after))
    assert all(asked[topic] == 1 for topic in stored_at_kill)
    # The stored counts hold what was stored; requests in flight at the kill were lost with it.
    assert info.llm is not None and info.llm["requests"] <= len(server.requests)
