"""The batch clients (starfish.llm.batch) against the loopback batch server: the request lines
they send, the results they read back as chat completions the model layer parses, and every
fault the batch lane must survive (partial expiry, failed lines, a rejected batch, 429/5xx,
a lost create answer, adoption by metadata, cancellation), with the key only in headers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from starfish.llm import StructuredLLM
from starfish.llm.batch import (
    AnthropicBatchClient,
    BatchClient,
    BatchRef,
    BatchResult,
    OpenAIBatchClient,
    SubmitUncertain,
)
from starfish.llm.batch import openai as openai_batch
from starfish.llm.errors import LLMAuthError, LLMConfigError, LLMRequestError
from tests.batch_server import BatchServer
from tests.llm.conftest import KEY

PROVIDERS = ("openai", "anthropic")
JOB = {"starfish_job": "job-1"}
FAST = {"retry_base": 0.01, "retry_cap": 0.05}


@pytest.fixture
def batch_server() -> Iterator[BatchServer]:
    with BatchServer(key=KEY) as server:
        yield server


def client_for(kind: str, server: BatchServer, **kwargs: Any) -> BatchClient:
    if kind == "openai":
        return OpenAIBatchClient(server.url, KEY, **{**FAST, **kwargs})
    return AnthropicBatchClient(KEY, server.root, **{**FAST, **kwargs})


def llm() -> StructuredLLM:
    return StructuredLLM(
        "openai/gpt-4o-mini",
        prompt="Write a question about {{ topic }}.",
        output_schema=[{"name": "q", "type": "str"}],
        api_key=KEY,
    )


def bodies(n: int) -> list[dict[str, Any]]:
    """The bodies the online path would send (json_schema rung) for n topics."""
    model = llm()
    asks = [[{"role": "user", "content": f"Write a question about topic {i}."}] for i in range(n)]
    return [model._body(messages, "json_schema") for messages in asks]


def lines_for(client: BatchClient, n: int) -> list[bytes]:
    return [client.encode(f"r-{i}", body) for i, body in enumerate(bodies(n))]


async def collect(client: BatchClient, ref: BatchRef) -> dict[str, BatchResult]:
    return {r.custom_id: r async for r in client.results(ref)}


def records(result: BatchResult) -> list[dict[str, Any]]:
    """What the model layer makes of a result: the same parsing as an online answer."""
    model = llm()
    content, finish, refusal = model._choice(result.body)
    assert finish == "stop" and refusal is None
    return model._schema.parse(content)


# one batch, start to end ------------------------------------------------------------------


@pytest.mark.parametrize("kind", PROVIDERS)
def test_submit_poll_and_read_results(batch_server, kind):
    batch_server.hold = True
    client = client_for(kind, batch_server)

    async def run() -> tuple[Any, Any, Any, dict[str, BatchResult]]:
        ref = await client.submit(lines_for(client, 4), JOB)
        running = await client.status(ref)
        batch_server.release(ref.batch_id)
        ended = await client.status(ref)
        return ref, running, ended, await collect(client, ref)

    ref, running, ended, results = asyncio.run(run())
    assert ref.provider == kind and ref.requests == 4 and ref.created_at > 0
    assert running.state == "running" and not running.done
    assert ended.state == "ended" and (ended.total, ended.succeeded, ended.failed) == (4, 4, 0)
    assert sorted(results) == [f"r-{i}" for i in range(4)]
    for result in results.values():
        assert result.ok and not result.unfinished
        assert records(result) == [{"q": "text"}]
        assert result.body["usage"]["prompt_tokens"] > 0
    assert batch_server.lines_per_batch == [4]
    assert BatchRef.from_dict(json.loads(json.dumps(ref.as_dict()))) == ref


def test_openai_lines_are_the_online_bodies_in_one_uploaded_file(batch_server):
    client = OpenAIBatchClient(batch_server.url, KEY, **FAST)
    ref = asyncio.run(client.submit(lines_for(client, 3), JOB))
    (upload,) = batch_server.uploads.values()
    assert upload.purpose == "batch" and ref.input_file_id == upload.id
    lines = [json.loads(x) for x in upload.content.splitlines()]
    assert [x["custom_id"] for x in lines] == ["r-0", "r-1", "r-2"]
    assert {(x["method"], x["url"]) for x in lines} == {("POST", "/v1/chat/completions")}
    assert [x["body"] for x in lines] == bodies(3)
    (batch,) = batch_server.batches.values()
    assert batch.metadata is not None and batch.metadata["starfish_job"] == "job-1"
    assert batch.completion_window == "24h" and batch.endpoint == "/v1/chat/completions"


def test_anthropic_params_ask_for_the_schema_by_a_forced_tool(batch_server):
    client = AnthropicBatchClient(KEY, batch_server.root + "/v1", **FAST)  # a /v1 is dropped
    asyncio.run(client.submit(lines_for(client, 2), JOB))
    (batch,) = batch_server.batches.values()
    params = batch.lines[0][1]
    assert params["model"] == "gpt-4o-mini" and params["max_tokens"] == 1024
    assert params["messages"] == [{"role": "user", "content": "Write a question about topic 0."}]
    assert params["tool_choice"] == {"type": "tool", "name": "records"}
    assert (
        params["tools"][0]["input_schema"]
        == bodies(1)[0]["response_format"]["json_schema"]["schema"]
    )
    headers = batch_server.requests[0]["headers"]
    assert headers["x-api-key"] == KEY and headers["anthropic-version"] == "2023-06-01"
    assert "metadata" not in json.loads(batch_server.received[0])  # Message Batches have none


# faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PROVIDERS)
def test_partial_finish_then_expiry_keeps_the_answers_and_reports_the_rest(batch_server, kind):
    batch_server.hold = True
    client = client_for(kind, batch_server)

    async def run() -> tuple[Any, Any, dict[str, BatchResult]]:
        ref = await client.submit(lines_for(client, 5), JOB)
        batch_server.finish(ref.batch_id, 3)
        running = await client.status(ref)
        partial = await collect(client, ref)  # nothing to read while it runs
        assert partial == {}
        batch_server.expire(ref.batch_id)
        return running, await client.status(ref), await collect(client, ref)

    running, expired, results = asyncio.run(run())
    assert running.state == "running"
    assert expired.state == "expired" and expired.done
    assert (expired.succeeded, expired.unfinished) == (3, 2)
    assert [cid for cid, r in sorted(results.items()) if r.ok] == ["r-0", "r-1", "r-2"]
    rest = [results["r-3"], results["r-4"]]
    assert all(not r.ok and r.unfinished for r in rest)
    assert {r.body["error"]["code"] for r in rest} <= {"batch_expired"}
    assert records(results["r-0"]) == [{"q": "text"}]


@pytest.mark.parametrize("kind", PROVIDERS)
def test_failing_lines_come_back_failed_with_their_status(batch_server, kind):
    batch_server.fail("r-1", status=400, message="bad request line")
    batch_server.fail("r-2", status=401, message="key revoked")
    client = client_for(kind, batch_server)

    async def run() -> tuple[Any, dict[str, BatchResult]]:
        ref = await client.submit(lines_for(client, 4), JOB)
        return await client.status(ref), await collect(client, ref)

    status, results = asyncio.run(run())
    assert status.state == "ended" and (status.succeeded, status.failed) == (2, 2)
    assert results["r-0"].ok and results["r-3"].ok
    bad, revoked = results["r-1"], results["r-2"]
    assert not bad.ok and not bad.unfinished
    assert bad.body["error"]["status"] == 400 and bad.body["error"]["message"] == "bad request line"
    assert revoked.body["error"]["status"] == 401  # the job's rules: an auth error is fatal


def test_openai_rejected_batch_is_failed_with_the_providers_reason(batch_server):
    batch_server.reject("the file holds more than one model", code="mismatched_model")
    client = OpenAIBatchClient(batch_server.url, KEY, **FAST)

    async def run() -> tuple[Any, dict[str, BatchResult]]:
        ref = await client.submit(lines_for(client, 2), JOB)
        return await client.status(ref), await collect(client, ref)

    status, results = asyncio.run(run())
    assert status.state == "failed" and status.done and results == {}
    assert status.reason == "mismatched_model: the file holds more than one model"


def test_openai_invalid_lines_fail_the_batch_with_their_line_numbers(batch_server):
    client = OpenAIBatchClient(batch_server.url, KEY, **FAST)
    lines = lines_for(client, 2)
    status = asyncio.run(client.status(asyncio.run(client.submit([lines[0], lines[0]], JOB))))
    assert status.state == "failed" and status.reason is not None
    assert "duplicate_custom_id" in status.reason and "(line 2)" in status.reason


def test_anthropic_rejected_batch_raises_the_providers_reason(batch_server):
    batch_server.reject("requests: the batch is too large")
    client = AnthropicBatchClient(KEY, batch_server.root, **FAST)
    with pytest.raises(LLMRequestError, match="the batch is too large"):
        asyncio.run(client.submit(lines_for(client, 1), JOB))


@pytest.mark.parametrize("kind", PROVIDERS)
def test_429_and_5xx_of_the_batch_endpoints_are_retried(batch_server, kind):
    create = "POST /v1/batches" if kind == "openai" else "POST /v1/messages/batches"
    batch_server.script(
        {"status": 429, "headers": {"retry-after-ms": "10"}},  # the upload, or the create
        {"status": 503, "match": create},
        {"status": 529 if kind == "anthropic" else 502, "match": create},
        {"status": 500, "match": "GET"},
        {"drop": True, "match": "GET"},
    )
    client = client_for(kind, batch_server)

    async def run() -> tuple[Any, dict[str, BatchResult]]:
        ref = await client.submit(lines_for(client, 3), JOB)
        return await client.status(ref), await collect(client, ref)

    status, results = asyncio.run(run())
    assert status.state == "ended" and len(results) == 3
    assert len(batch_server.batches) == 1  # a 5xx create was looked up, not paid twice
    calls = [f"{r['method']} {r['path']}" for r in batch_server.requests]
    assert calls.count(create) == 3 + (kind == "anthropic")  # the 429 hit the create there
    if kind == "openai":
        assert len(batch_server.uploads) == 1


@pytest.mark.parametrize("kind", PROVIDERS)
def test_retries_end_and_a_bad_key_is_an_auth_error(batch_server, kind):
    batch_server.script(*[{"status": 503}] * 4)
    client = client_for(kind, batch_server, max_retries=2)
    ref = BatchRef(kind, "missing", 0.0, 1)
    with pytest.raises(Exception, match="after 2 retries"):
        asyncio.run(client.status(ref))
    wrong = (
        OpenAIBatchClient(batch_server.url, "sk-wrong", **FAST)
        if kind == "openai"
        else AnthropicBatchClient("sk-wrong", batch_server.root, **FAST)
    )
    with pytest.raises(LLMAuthError):
        asyncio.run(wrong.find("starfish_job", "job-1", created_after=0))


def test_openai_create_whose_answer_was_lost_is_found_not_sent_again(batch_server):
    batch_server.script({"drop_after": True, "match": "POST /v1/batches"})
    client = OpenAIBatchClient(batch_server.url, KEY, **FAST)
    ref = asyncio.run(client.submit(lines_for(client, 2), JOB))
    assert list(batch_server.batches) == [ref.batch_id]  # created once, adopted by its token
    calls = [f"{r['method']} {r['path']}" for r in batch_server.requests]
    assert calls.count("POST /v1/batches") == 1 and "GET /v1/batches" in calls


def test_anthropic_create_whose_answer_was_lost_is_found_by_time_and_size(batch_server):
    batch_server.script({"drop_after": True, "match": "POST /v1/messages/batches"})
    client = AnthropicBatchClient(KEY, batch_server.root, **FAST)
    with pytest.raises(SubmitUncertain) as lost:
        asyncio.run(client.submit(lines_for(client, 2), JOB))
    assert len(batch_server.batches) == 1  # not sent again
    found = asyncio.run(
        client.find("starfish_job", "job-1", created_after=lost.value.created_after, requests=2)
    )
    assert [r.batch_id for r in found] == list(batch_server.batches)


# finding a job's batches, cancelling ------------------------------------------------------------


def test_openai_find_adopts_the_jobs_batches_by_metadata(batch_server, monkeypatch):
    monkeypatch.setattr(openai_batch, "_LIST_PAGE", 2)  # three pages of listing
    batch_server.hold = True
    client = OpenAIBatchClient(batch_server.url, KEY, **FAST)

    async def run() -> tuple[list[BatchRef], list[BatchRef], list[BatchRef]]:
        mine = [await client.submit(lines_for(client, 1), {"starfish_job": "job-2"})]
        for _ in range(3):
            await client.submit(lines_for(client, 1), JOB)
        mine.append(await client.submit(lines_for(client, 1), {"starfish_job": "job-2"}))
        found = await client.find("starfish_job", "job-2")
        recent = await client.find("starfish_job", "job-2", created_after=mine[1].created_at)
        return mine, found, recent

    mine, found, recent = asyncio.run(run())
    assert [r.batch_id for r in found] == [mine[1].batch_id, mine[0].batch_id]
    assert {r.input_file_id for r in found} == {r.input_file_id for r in mine}
    assert mine[1].batch_id in [r.batch_id for r in recent]


def test_anthropic_find_picks_batches_by_creation_time_and_size(batch_server):
    batch_server.hold = True
    client = AnthropicBatchClient(KEY, batch_server.root, **FAST)

    async def run() -> tuple[BatchRef, list[BatchRef], list[BatchRef]]:
        await client.submit(lines_for(client, 2), JOB)
        mine = await client.submit(lines_for(client, 3), JOB)
        return (
            mine,
            await client.find("starfish_job", "job-1", requests=3),
            await client.find("starfish_job", "job-1", created_after=mine.created_at + 10),
        )

    mine, found, later = asyncio.run(run())
    assert [r.batch_id for r in found] == [mine.batch_id] and later == []
    with pytest.raises(LLMConfigError, match="no metadata"):
        asyncio.run(client.find("starfish_job", "job-1"))


@pytest.mark.parametrize("kind", PROVIDERS)
def test_cancel_keeps_the_finished_answers(batch_server, kind):
    batch_server.hold = True
    client = client_for(kind, batch_server)

    async def run() -> tuple[Any, Any, Any, dict[str, BatchResult]]:
        ref = await client.submit(lines_for(client, 4), JOB)
        batch_server.finish(ref.batch_id, 2)
        asked = await client.cancel(ref)
        cancelled = await client.status(ref)
        again = await client.cancel(ref)  # an ended batch is left as it is
        return asked, cancelled, again, await collect(client, ref)

    asked, cancelled, again, results = asyncio.run(run())
    assert asked.state == "running" and asked.provider_status in ("cancelling", "canceling")
    assert cancelled.state == "cancelled" and again.state == "cancelled"
    assert cancelled.unfinished == 2
    assert sorted(cid for cid, r in results.items() if r.ok) == ["r-0", "r-1"]
    assert all(r.unfinished for cid, r in results.items() if cid in ("r-2", "r-3"))


@pytest.mark.parametrize("kind", PROVIDERS)
def test_cancelling_an_ended_batch_leaves_it_ended(batch_server, kind):
    client = client_for(kind, batch_server)

    async def run() -> tuple[Any, dict[str, BatchResult]]:
        ref = await client.submit(lines_for(client, 2), JOB)
        await client.status(ref)
        return await client.cancel(ref), await collect(client, ref)

    status, results = asyncio.run(run())
    assert status.state == "ended" and len(results) == 2
    assert (
        sum(r["method"] == "POST" and r["path"].endswith("/cancel") for r in batch_server.requests)
        == 1
    )


# the key ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PROVIDERS)
def test_the_key_is_in_headers_only_never_in_an_uploaded_file_or_an_error(batch_server, kind):
    client = client_for(kind, batch_server)
    asyncio.run(client.submit(lines_for(client, 3), JOB))
    assert batch_server.received and all(KEY.encode() not in raw for raw in batch_server.received)
    for upload in [*batch_server.uploads.values(), *batch_server.uploads_out.values()]:
        assert KEY.encode() not in upload.content
    leaky = client.encode("leak", {**bodies(1)[0], "user": KEY})
    with pytest.raises(LLMConfigError, match="holds the API key") as refused:
        asyncio.run(client.submit([leaky], JOB))
    assert KEY not in str(refused.value)
    batch_server.fail("r-0", status=400, message=f"a line naming {KEY}")
    ref = asyncio.run(client.submit(lines_for(client, 1), JOB))
    (failed,) = asyncio.run(collect(client, ref)).values()
    assert KEY not in json.dumps(failed.body) and "***" in failed.body["error"]["message"]
    batch_server.script({"status": 400, "error": f"bad key {KEY} in your request"})
    with pytest.raises(LLMRequestError) as caught:
        asyncio.run(client.status(BatchRef(kind, "b", 0.0, 1)))
    assert KEY not in str(caught.value) and "***" in str(caught.value)
    assert KEY not in repr(client)


def test_anthropic_results_on_another_host_do_not_get_the_key():
    from starfish.llm.transport import Request, Response

    class Elsewhere:
        def __init__(self) -> None:
            self.sent: list[Request] = []

        async def send(self, request: Request) -> Response:
            self.sent.append(request)
            batch = {
                "id": "b",
                "processing_status": "ended",
                "request_counts": {"succeeded": 1},
                "results_url": "https://evil.example/results",
            }
            return Response(200, {}, json.dumps(batch))

    transport = Elsewhere()
    client = AnthropicBatchClient(KEY, "https://api.anthropic.com", transport=transport)
    with pytest.raises(LLMRequestError, match="another host"):
        asyncio.run(collect(client, BatchRef("anthropic", "b", 0.0, 1)))
    assert all("evil" not in r.url for r in transport.sent)


def test_custom_ids_are_checked_before_anything_is_sent(batch_server):
    for kind in PROVIDERS:
        client = client_for(kind, batch_server)
        for bad in ("", "has space", "x" * 65, "semi;colon"):
            with pytest.raises(LLMConfigError, match="custom_id"):
                client.encode(bad, bodies(1)[0])
        client.encode("A-z_0" + "9" * 59, bodies(1)[0])
    assert batch_server.requests == []


@pytest.mark.parametrize("kind", PROVIDERS)
def test_split_by_the_clients_limits_and_submit_refuses_too_much(batch_server, kind):
    client = client_for(kind, batch_server, max_requests=3)
    lines = lines_for(client, 7)
    groups = client.split(lines)
    assert [len(g) for g in groups] == [3, 3, 1]
    assert [line for g in groups for line in g] == lines
    with pytest.raises(LLMConfigError, match="split"):
        asyncio.run(client.submit(lines, JOB))
    refs = [asyncio.run(client.submit(g, JOB)) for g in groups]
    assert [r.requests for r in refs] == [3, 3, 1] and batch_server.lines_per_batch == [3, 3, 1]
