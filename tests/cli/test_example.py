"""The bundled qa_pairs example: embedded by default, an OpenAI-compatible endpoint when set."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import REPO, Cli, run_job

EXAMPLE = str(REPO / "examples" / "qa_pairs.py") + ":qa_pairs"
TOPICS = ["tides", "volcanoes", "prime numbers", "entropy", "tides", "compilers"]


def _topics_file(workdir: Path) -> Path:
    path = workdir / "topics.jsonl"
    path.write_text("".join(json.dumps({"topic": t}) + "\n" for t in TOPICS))
    return path


def _records(workdir: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (workdir / name).read_text().splitlines()]


def test_bundled_topics_file_is_a_few_hundred_inputs() -> None:
    rows = (REPO / "examples" / "topics.jsonl").read_text().splitlines()
    assert 200 <= len(rows) <= 500
    assert all(set(json.loads(row)) == {"topic"} for row in rows)


def test_embedded_generator_with_its_hooks(cli: Cli, workdir: Path) -> None:
    _topics_file(workdir)
    job = run_job(cli, EXAMPLE, "-i", "topics.jsonl", "-o", "qa.jsonl")
    records = _records(workdir, "qa.jsonl")
    assert job["counts"]["completed"] == len(records) > 0
    assert {r["source"] for r in records} == {"embedded"}
    assert all(r["topic"] in TOPICS and r["topic"] in r["question"] for r in records)
    assert all(len(r["answer"].split()) >= 8 for r in records), "filter hook let a short one by"
    questions = [r["question"] for r in records]
    assert len(questions) == len(set(questions)), "duplicate hook let a repeat by"


class _FakeOpenAI(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        prompt = body["messages"][-1]["content"]
        n = len(self.requests)
        reply = {
            "question": f"Fake question {n}: {prompt[:40]}",
            "answer": f"A fake but sufficiently long answer number {n} from the loopback server.",
        }
        payload = json.dumps(
            {
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": json.dumps(reply)}}
                ]
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_openai() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    requests: list[dict[str, Any]] = []
    handler = type("Handler", (_FakeOpenAI,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    server.shutdown()
    server.server_close()


def test_llm_path_calls_the_configured_endpoint(
    cli: Cli, workdir: Path, fake_openai: tuple[str, list[dict[str, Any]]]
) -> None:
    base_url, requests = fake_openai
    _topics_file(workdir)
    env = {"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "sk-test", "OPENAI_MODEL": "fake-1"}
    result = cli("run", EXAMPLE, "-i", "topics.jsonl", "-o", "qa.jsonl", "--no-progress", env=env)
    assert result.code == 0, result
    records = _records(workdir, "qa.jsonl")
    assert len(records) == len(TOPICS)
    assert {r["source"] for r in records} == {"llm"}
    assert [r["topic"] for r in records] == TOPICS
    assert all(r["answer"].startswith("A fake but sufficiently long answer") for r in records)
    assert len(requests) == len(TOPICS)
    assert {r["path"] for r in requests} == {"/v1/chat/completions"}
    assert {r["auth"] for r in requests} == {"Bearer sk-test"}
    assert {r["body"]["model"] for r in requests} == {"fake-1"}
    prompts = [r["body"]["messages"][-1]["content"] for r in requests]
    asked = sorted(p.split(" about ", 1)[1].split(" and its answer", 1)[0] for p in prompts)
    assert asked == sorted(TOPICS)


def test_llm_reply_that_is_not_json_becomes_the_answer() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("qa_pairs_example", REPO / "examples/qa_pairs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module._parse_pair('```json\n{"question": "Q?", "answer": "A."}\n```', "x") == {
        "question": "Q?",
        "answer": "A.",
    }
    assert module._parse_pair("Just prose.", "tides") == {
        "question": "What is tides?",
        "answer": "Just prose.",
    }
