"""The loopback batch server is checked against the official `openai` and `anthropic` SDKs: if
an SDK cannot use the fake, the fake is wrong (and so would be every batch test using it)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.batch_server import BatchServer
from tests.llm.conftest import KEY

SCHEMA = {
    "type": "object",
    "properties": {"records": {"type": "array", "items": {"type": "object", "properties": {
        "q": {"type": "string"}}, "required": ["q"]}}},
    "required": ["records"],
}  # fmt: skip


@pytest.fixture
def batch_server() -> Iterator[BatchServer]:
    with BatchServer(key=KEY) as server:
        yield server


def oa(server: BatchServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=10)


def an(server: BatchServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.root, api_key=KEY, max_retries=0, timeout=10)


def openai_file(n: int, structured: bool = True) -> bytes:
    lines = []
    for i in range(n):
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{i}"}]}
        if structured:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "records", "schema": SCHEMA},
            }
        line = {"custom_id": f"r-{i}", "method": "POST", "url": "/v1/chat/completions"}
        lines.append(json.dumps({**line, "body": body}))
    return ("\n".join(lines) + "\n").encode()


def test_openai_sdk_uploads_creates_polls_and_downloads(batch_server):
    client = oa(batch_server)
    content = openai_file(3)
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(content)), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(content)
    assert batch_server.uploads[uploaded.id].content == content
    assert batch_server.uploads[uploaded.id].filename == "in.jsonl"
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"starfish_job": "job-1"},
    )
    assert batch.status == "validating" and batch.metadata == {"starfish_job": "job-1"}
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.error_file_id is None
    assert done.request_counts is not None and done.request_counts.completed == 3
    assert done.output_file_id is not None
    lines = client.files.content(done.output_file_id).text.splitlines()
    answers = {json.loads(x)["custom_id"]: json.loads(x)["response"] for x in lines}
    assert set(answers) == {"r-0", "r-1", "r-2"}
    body = answers["r-1"]["body"]
    assert answers["r-1"]["status_code"] == 200
    assert json.loads(body["choices"][0]["message"]["content"]) == {"records": [{"q": "text"}]}
    assert batch_server.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"
    assert batch_server.lines_per_batch == [3]


def test_openai_sdk_lists_with_pagination_and_cancels(batch_server):
    client = oa(batch_server)
    batch_server.hold = True
    ids = []
    for _ in range(5):
        up = client.files.create(file=("in.jsonl", io.BytesIO(openai_file(1))), purpose="batch")
        batch = client.batches.create(
            input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        ids.append(batch.id)
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[::-1][:2] and first.has_more
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]  # auto-paginated
    assert [b.id for b in client.batches.list(limit=2, after=ids[2]).data] == ids[1::-1]
    cancelling = client.batches.cancel(ids[0])
    assert cancelling.status == "cancelling"
    assert client.batches.retrieve(ids[0]).status == "cancelled"
    assert client.batches.retrieve(ids[1]).status == "in_progress"


def test_openai_sdk_sees_held_partial_expired_failed_lines_and_rejection(batch_server):
    client = oa(batch_server)
    batch_server.hold = True
    batch_server.fail("r-1", status=400, message="bad line")
    up = client.files.create(file=("in.jsonl", io.BytesIO(openai_file(4))), purpose="batch")
    batch = client.batches.create(
        input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch_server.finish(batch.id, 2)
    running = client.batches.retrieve(batch.id)
    assert running.status == "in_progress"
    assert running.request_counts is not None
    assert (running.request_counts.completed, running.request_counts.failed) == (1, 1)
    batch_server.expire(batch.id)
    expired = client.batches.retrieve(batch.id)
    assert expired.status == "expired" and expired.output_file_id and expired.error_file_id
    out = [json.loads(x) for x in client.files.content(expired.output_file_id).text.splitlines()]
    err = [json.loads(x) for x in client.files.content(expired.error_file_id).text.splitlines()]
    assert [x["custom_id"] for x in out] == ["r-0"]
    assert {x["custom_id"]: (x["response"] or {}).get("status_code") for x in err} == {
        "r-1": 400,
        "r-2": None,
        "r-3": None,
    }
    assert err[1]["error"]["code"] == "batch_expired"

    batch_server.reject("the file holds more than one model", code="mismatched_model")
    up = client.files.create(file=("in.jsonl", io.BytesIO(openai_file(1))), purpose="batch")
    rejected = client.batches.create(
        input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed = client.batches.retrieve(rejected.id)
    assert failed.status == "failed" and failed.errors and failed.errors.data
    assert failed.errors.data[0].code == "mismatched_model"


@pytest.mark.parametrize(
    ("status", "error"), [(429, openai.RateLimitError), (503, openai.InternalServerError)]
)
def test_openai_sdk_raises_its_own_error_for_scripted_faults(batch_server, status, error):
    batch_server.script({"status": status, "match": "GET /v1/batches"})
    with pytest.raises(error):
        oa(batch_server).batches.list()
    assert oa(batch_server).batches.list().data == []


def test_openai_sdk_is_refused_without_the_key(batch_server):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=batch_server.url, api_key="wrong", max_retries=0).batches.list()


def anthropic_requests(n: int) -> list[dict]:
    tool = {"name": "records", "input_schema": SCHEMA}
    requests = []
    for i in range(n):
        params = {
            "model": "claude-haiku",
            "max_tokens": 256,
            "system": "be brief",
            "messages": [{"role": "user", "content": f"q{i}"}],
        }
        if i % 2 == 0:
            params |= {"tools": [tool], "tool_choice": {"type": "tool", "name": "records"}}
        requests.append({"custom_id": f"r-{i}", "params": params})
    return requests


def test_anthropic_sdk_creates_retrieves_and_reads_results(batch_server):
    client = an(batch_server)
    batch = client.messages.batches.create(requests=anthropic_requests(3))  # type: ignore[arg-type]
    assert batch.processing_status == "in_progress" and batch.request_counts.processing == 3
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.request_counts.succeeded == 3
    assert ended.results_url and ended.ended_at is not None
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    first, second = results["r-0"], results["r-1"]
    assert first.type == "succeeded" and second.type == "succeeded"
    assert first.message.content[0].type == "tool_use"
    assert first.message.content[0].input == {"records": [{"q": "text"}]}
    assert second.message.content[0].type == "text"
    assert second.message.content[0].text == "echo: q1"
    headers = batch_server.requests[0]["headers"]
    assert KEY in (headers.get("x-api-key"), headers.get("Authorization", "")[7:])
    assert headers["anthropic-version"]  # the SDK sends its own date


def test_anthropic_sdk_lists_cancels_and_sees_expired_errored_canceled(batch_server):
    client = an(batch_server)
    batch_server.hold = True
    batch_server.fail("r-1", status=500, message="overloaded")
    ids = [client.messages.batches.create(requests=anthropic_requests(3)).id for _ in range(3)]  # type: ignore[arg-type]
    assert [b.id for b in client.messages.batches.list(limit=2)] == ids[::-1]
    page = client.messages.batches.list(limit=2)
    assert page.has_more and [b.id for b in page.data] == ids[:0:-1]

    batch_server.finish(ids[0], 2)
    assert client.messages.batches.retrieve(ids[0]).request_counts.processing == 3
    batch_server.expire(ids[0])
    counts = client.messages.batches.retrieve(ids[0]).request_counts
    assert (counts.succeeded, counts.errored, counts.expired) == (1, 1, 1)
    kinds = {r.custom_id: r.result.type for r in client.messages.batches.results(ids[0])}
    assert kinds == {"r-0": "succeeded", "r-1": "errored", "r-2": "expired"}
    errored = next(r for r in client.messages.batches.results(ids[0]) if r.custom_id == "r-1")
    assert errored.result.type == "errored"
    assert errored.result.error.error.type == "api_error"

    assert client.messages.batches.cancel(ids[1]).processing_status == "canceling"
    canceled = client.messages.batches.retrieve(ids[1])
    assert canceled.processing_status == "ended" and canceled.request_counts.canceled == 3
    assert canceled.cancel_initiated_at is not None


def test_anthropic_sdk_gets_its_own_errors(batch_server):
    batch_server.script({"status": 529, "match": "POST /v1/messages/batches"})
    with pytest.raises(anthropic.InternalServerError):
        an(batch_server).messages.batches.create(requests=anthropic_requests(1))  # type: ignore[arg-type]
    bad = [{"custom_id": "not valid!", "params": anthropic_requests(1)[0]["params"]}]
    with pytest.raises(anthropic.BadRequestError, match="custom_id"):
        an(batch_server).messages.batches.create(requests=bad)  # type: ignore[arg-type]
    wrong = anthropic.Anthropic(base_url=batch_server.root, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.batches.list()
    batch_server.reject("requests: too large")
    with pytest.raises(anthropic.BadRequestError, match="too large"):
        an(batch_server).messages.batches.create(requests=anthropic_requests(1))  # type: ignore[arg-type]
