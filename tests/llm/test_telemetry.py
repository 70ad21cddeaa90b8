"""A job that calls a model reports counts and a provider family in its telemetry event, and
nothing else about the model: the job runs in a real process against the loopback OpenAI
server and the loopback PostHog receiver."""

from __future__ import annotations

import textwrap

from starfish.data_factory.report import llm_family
from tests.openai_server import count_tokens, prompt_tokens
from tests.posthog_receiver import PostHogReceiver
from tests.telemetry.conftest import run_py

SECRET_KEY = "Sx-sk-llm-telemetry-0123456789"

JOB = textwrap.dedent(
    """
    import sys
    from starfish import StructuredLLM, data_factory

    local = StructuredLLM("vllm/Sx-model-secret", prompt="Say {{topic}}.", api_key={key!r})
    other = StructuredLLM("custom/Sx-other-model", prompt="Again {{topic}}.",
                          base_url=sys.argv[1], api_key={key!r})

    @data_factory(show_progress=False, max_concurrency=4)
    async def gen(topic):
        await local.run(topic=topic)
        await local.run(topic=topic + "!")
        return (await other.run(topic=topic)).data

    gen.run(topic=["a", "bb", "ccc"])
    """
).format(key=SECRET_KEY)


def _run(server_url: str) -> None:
    code = JOB.replace("sys.argv[1]", repr(server_url))
    proc = run_py(code, env={"VLLM_BASE_URL": server_url})
    assert proc.returncode == 0, proc.stderr


def test_a_model_job_reports_its_calls_tokens_and_family(
    receiver: PostHogReceiver, make_server
) -> None:
    server = make_server()
    _run(server.url)
    (event,) = receiver.wait_for_events(1)
    served = server.requests
    assert len(served) == 9  # 3 inputs x (2 vllm calls + 1 other)
    props = event["properties"]
    assert props["llm_summary"] == {
        "requests": 9,
        "cache_hits": 0,
        "prompt_tokens": sum(prompt_tokens(r["body"]["messages"]) for r in served),
        "completion_tokens": sum(
            count_tokens("echo: " + r["body"]["messages"][-1]["content"]) for r in served
        ),
        "batch_requests": 0,
    }
    assert props["llm_provider"] == "vllm"  # 6 of the 9 calls; the other 3 went to base_url=

    # The same job again on the same inputs: all from the cache, nothing sent to the model.
    _run(server.url)
    events = receiver.wait_for_events(2)
    again = next(e for e in events if e["properties"]["job_id"] != props["job_id"])
    assert len(server.requests) == 9
    assert again["properties"]["llm_summary"] == {
        "requests": 0,
        "cache_hits": 9,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "batch_requests": 0,
    }
    assert again["properties"]["llm_provider"] == "vllm"

    wire = b"".join(receiver.raw_bodies)
    for secret in (SECRET_KEY, "Sx-model-secret", "Sx-other-model", server.url, "Say "):
        assert secret.encode() not in wire
    assert all(r["headers"]["Authorization"] == f"Bearer {SECRET_KEY}" for r in served)


def test_a_job_without_a_model_sends_no_llm_fields(receiver: PostHogReceiver) -> None:
    code = (
        "from starfish import data_factory\n"
        "@data_factory(show_progress=False)\n"
        "async def gen(i):\n"
        "    return [{'i': i}]\n"
        "gen.run(i=[1, 2])\n"
    )
    proc = run_py(code)
    assert proc.returncode == 0, proc.stderr
    (event,) = receiver.wait_for_events(1)
    assert "llm_summary" not in event["properties"]
    assert "llm_provider" not in event["properties"]


def test_the_family_of_a_run_that_used_several_is_the_one_with_most_calls() -> None:
    assert llm_family({"other": 3, "vllm": 1}) == "other"
    assert llm_family({"other": 2, "vllm": 2}) == "vllm"  # a tie: the table's order, other last
    assert llm_family({"anthropic": 5, "openai": 5, "groq": 1}) == "openai"
    assert llm_family({"openai": 0, "ollama": 1}) == "ollama"
    assert llm_family({}) is None


BATCH_JOB = textwrap.dedent(
    """
    from starfish import StructuredLLM, data_factory

    llm = StructuredLLM("Sx-batch-model", prompt="Say {{{{topic}}}}.", base_url={url!r},
                        api_key={key!r}, batch=True)

    @data_factory(show_progress=False, max_concurrency=4)
    async def gen(topic):
        return (await llm.run(topic=topic)).data

    gen.run(topic=["a", "bb", "ccc"])
    """
)


def test_a_batch_job_reports_its_batch_requests_as_a_count_only(
    receiver: PostHogReceiver,
) -> None:
    from tests.batch_server import BatchServer

    server = BatchServer(key=SECRET_KEY).start()
    try:
        code = BATCH_JOB.format(url=server.url, key=SECRET_KEY)
        proc = run_py(code, env={"STARFISH_BATCH_POLL_S": "0.05"})
        assert proc.returncode == 0, proc.stderr
        (event,) = receiver.wait_for_events(1)
        [batch_id] = server.batches
    finally:
        server.stop()
    summary = event["properties"]["llm_summary"]
    assert summary["requests"] == 3 and summary["batch_requests"] == 3
    assert event["properties"]["llm_provider"] == "other"
    wire = b"".join(receiver.raw_bodies)
    for secret in (SECRET_KEY, "Sx-batch-model", server.url, batch_id, "Say "):
        assert secret.encode() not in wire
