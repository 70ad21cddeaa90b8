"""Starfish against a real model server: llama-cpp-python with SmolLM2-135M-Instruct.

The thresholds are the issue's: a 135M model writes JSON poorly when free, so these pass only
if the structured-output mode the server constrains by grammar is found and used.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from starfish import StructuredLLM, data_factory
from tests.real_model.server import MODEL, Recorder

TOPICS = [
    "rust", "sqlite", "tides", "volcanoes", "bees", "jazz", "chess", "coffee", "glaciers",
    "bridges", "owls", "tea", "comets", "deserts", "origami", "rivers", "violins", "kites",
    "lighthouses", "mushrooms",
]  # fmt: skip
QA = [{"name": "question", "type": "str"}, {"name": "answer", "type": "str"}]
PROMPT = "Write one short question and its answer about {{topic}}."


def starfish(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "starfish", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=900,
    )


def test_generate_gets_valid_records_then_a_rerun_sends_nothing(recorder: Recorder, tmp_path):
    topics = tmp_path / "topics.jsonl"
    topics.write_text("".join(json.dumps({"topic": t}) + "\n" for t in TOPICS))
    args = [
        "generate", "--model", MODEL, "--base-url", recorder.url, "--prompt", PROMPT,
        "--schema", "question:str,answer:str", "--input", str(topics), "--max-tokens", "256",
        "--output", "qa.jsonl", "--no-progress", "--json",
    ]  # fmt: skip
    first = starfish(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    job = json.loads(first.stdout)
    records = [json.loads(line) for line in (tmp_path / "qa.jsonl").read_text().splitlines()]
    # Valid: the schema's two strings, not blank, on a record that holds its input's topic.
    valid = [
        r for r in records if r["question"].strip() and r["answer"].strip() and r["topic"] in TOPICS
    ]
    assert job["counts"]["completed"] >= 18, job
    assert len(valid) >= 18, records
    assert {r["topic"] for r in records} <= set(TOPICS)
    # The mode the server constrains by grammar was found and used for every answer.
    assert job["llm"]["answers_json_object"] >= 18
    # The tokens counted are the server's own `usage`, summed over what it answered.
    assert (job["llm"]["prompt_tokens"], job["llm"]["completion_tokens"]) == recorder.usage_total()
    assert job["llm"]["requests"] == len(recorder.answers)

    recorder.reset()
    (tmp_path / "qa.jsonl").rename(tmp_path / "first.jsonl")
    again = starfish(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert recorder.answers == []  # the server received nothing
    assert json.loads(again.stdout)["llm"]["requests"] == 0
    assert (tmp_path / "qa.jsonl").read_text() == (tmp_path / "first.jsonl").read_text()


def test_a_python_job_at_concurrency_4_completes_nine_in_ten(recorder: Recorder):
    llm = StructuredLLM(
        MODEL, prompt=PROMPT, output_schema=QA, base_url=recorder.url,
        model_kwargs={"max_tokens": 256},
    )  # fmt: skip

    @data_factory(max_concurrency=4, task_runner_timeout=60, show_progress=False)
    async def qa(topic: str) -> list[dict[str, str]]:
        return [{**r, "topic": topic} for r in (await llm.run(topic=topic)).data]

    records = qa.run(topic=TOPICS)
    completed = {r["topic"] for r in records}
    assert len(completed) >= 0.9 * len(TOPICS), completed
    # No call timed out queued behind others at a server that answers one at a time.
    from starfish import jobs

    info = jobs.load_job(qa.job_id)
    assert info.counts["completed"] == len(completed)
    assert "TimeoutError" not in json.dumps(info.to_dict())
    assert llm.counts["requests"] == len(recorder.answers)


def test_a_cut_answer_says_which_limit_cut_it(recorder: Recorder):
    from starfish.llm import LLMOutputError

    llm = StructuredLLM(
        MODEL, prompt="Write a long story about {{topic}}.", base_url=recorder.url,
        model_kwargs={"max_tokens": 8},
    )  # fmt: skip
    try:
        asyncio.run(llm.run(topic="the sea"))
    except LLMOutputError as exc:
        assert "max_tokens=8" in str(exc) and "max_tokens in model_kwargs" in str(exc)
    else:
        raise AssertionError("an 8-token story was not cut")
