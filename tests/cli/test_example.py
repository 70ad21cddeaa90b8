"""The bundled qa_pairs example: a model through StructuredLLM when one is reachable, else the
embedded generator, saying which in one line. The model is the loopback OpenAI server."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import REPO, Cli
from tests.conftest import DEAD_LOOPBACK
from tests.openai_server import MODEL_ID, OpenAIServer

EXAMPLE = str(REPO / "examples" / "qa_pairs.py") + ":qa_pairs"
TOPICS = ["tides", "volcanoes", "prime numbers", "entropy", "tides", "compilers"]
# Nothing configured, and the local servers' addresses point at a closed loopback port.
NO_MODEL = {
    "QA_PAIRS_MODEL": "",
    "OPENAI_API_KEY": "",
    "OPENAI_BASE_URL": "",
    "OLLAMA_BASE_URL": DEAD_LOOPBACK + "/v1",
    "VLLM_BASE_URL": DEAD_LOOPBACK + "/v1",
}
KEY = "sk-example-test-0123456789"


def _topics_file(workdir: Path) -> Path:
    path = workdir / "topics.jsonl"
    path.write_text("".join(json.dumps({"topic": t}) + "\n" for t in TOPICS))
    return path


def _records(workdir: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (workdir / name).read_text().splitlines()]


def _run(cli: Cli, env: dict[str, str]) -> tuple[dict[str, Any], str]:
    result = cli(
        "run", EXAMPLE, "-i", "topics.jsonl", "-o", "qa.jsonl", "--json", "--no-progress", env=env
    )
    assert result.code == 0, result
    return result.json(), result.err


def test_bundled_topics_file_is_a_few_hundred_inputs() -> None:
    rows = (REPO / "examples" / "topics.jsonl").read_text().splitlines()
    assert 200 <= len(rows) <= 500
    assert all(set(json.loads(row)) == {"topic"} for row in rows)


def test_no_model_reachable_uses_the_embedded_generator_with_its_hooks(
    cli: Cli, workdir: Path
) -> None:
    _topics_file(workdir)
    job, err = _run(cli, NO_MODEL)
    lines = [line for line in err.splitlines() if line.startswith("qa_pairs:")]
    assert lines == [
        "qa_pairs: using the embedded generator "
        "(no QA_PAIRS_MODEL, no OPENAI_API_KEY, no local Ollama or vLLM)"
    ]
    records = _records(workdir, "qa.jsonl")
    assert job["counts"]["completed"] == len(records) > 0
    assert {r["source"] for r in records} == {"embedded"}
    assert all(r["topic"] in TOPICS and r["topic"] in r["question"] for r in records)
    assert all(len(r["answer"].split()) >= 8 for r in records), "filter hook let a short one by"
    questions = [r["question"] for r in records]
    assert len(questions) == len(set(questions)), "duplicate hook let a repeat by"


@pytest.fixture
def model_server() -> Iterator[OpenAIServer]:
    """A loopback OpenAI server answering each prompt with a distinct, long enough pair."""
    asked: list[str] = []

    def reply(body: dict[str, Any]) -> str:
        prompt = body["messages"][-1]["content"]
        topic = re.search(r"question about (.+?) and its answer", prompt).group(1)
        asked.append(topic)
        pair = {
            "question": f"Loopback question {len(asked)} about {topic}?",
            "answer": f"A loopback answer about {topic}, long enough to pass the filter hook.",
        }
        return json.dumps({"records": [pair]})

    server = OpenAIServer(reply=reply).start()
    yield server
    server.stop()


def _check_model_records(workdir: Path, server: OpenAIServer) -> None:
    records = _records(workdir, "qa.jsonl")
    assert sorted(r["topic"] for r in records) == sorted(TOPICS)
    assert {r["source"] for r in records} == {"llm"}
    assert all(r["answer"].startswith(f"A loopback answer about {r['topic']}") for r in records)
    assert len(server.requests) == len(TOPICS)
    prompts = [r["body"]["messages"][-1]["content"] for r in server.requests]
    asked = [re.search(r"concise question about (.+?) and", p).group(1) for p in prompts]
    assert sorted(asked) == sorted(TOPICS)


def test_a_key_makes_it_ask_the_model(cli: Cli, workdir: Path, model_server: OpenAIServer) -> None:
    _topics_file(workdir)
    env = {**NO_MODEL, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": model_server.url}
    job, err = _run(cli, env)
    assert "qa_pairs: using the model openai/gpt-4o-mini (OPENAI_API_KEY is set)" in err
    assert job["counts"]["completed"] == len(TOPICS)
    _check_model_records(workdir, model_server)
    assert {r["body"]["model"] for r in model_server.requests} == {"gpt-4o-mini"}
    assert {r["headers"]["Authorization"] for r in model_server.requests} == {f"Bearer {KEY}"}
    assert KEY not in err


def test_a_local_server_makes_it_ask_that_servers_model(
    cli: Cli, workdir: Path, model_server: OpenAIServer
) -> None:
    _topics_file(workdir)
    job, err = _run(cli, {**NO_MODEL, "VLLM_BASE_URL": model_server.url})
    assert (
        f"qa_pairs: using the model vllm/{MODEL_ID} "
        f"(a local vllm server answers at {model_server.url})"
    ) in err
    assert job["counts"]["completed"] == len(TOPICS)
    _check_model_records(workdir, model_server)
    assert {r["body"]["model"] for r in model_server.requests} == {MODEL_ID}
    assert all("Authorization" not in r["headers"] for r in model_server.requests)
