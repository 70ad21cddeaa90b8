"""StructuredLLM against the loopback server: what it sends, what it returns, how it fails."""

from __future__ import annotations

import asyncio
import json

import pydantic
import pytest

from starfish import StructuredLLM
from starfish.llm import (
    LLMAuthError,
    LLMConfigError,
    LLMOutputError,
    LLMRequestError,
    LLMTransientError,
    LLMUnreachableError,
    PromptError,
)
from tests.llm.conftest import KEY

QA = [{"name": "question", "type": "str"}, {"name": "answer", "type": "str"}]


def make_llm(server, **kwargs):
    kwargs.setdefault("output_schema", QA)
    kwargs.setdefault("prompt", "Write {{n}} pairs about {{topic}}.")
    return StructuredLLM("test-model", base_url=server.url, **kwargs)


def test_run_sends_the_rendered_prompt_and_json_schema_and_returns_validated_records(server):
    llm = make_llm(server, model_kwargs={"temperature": 0.7, "max_tokens": 64}, price=(1.0, 2.0))
    resp = asyncio.run(llm.run(n=3, topic="tides"))
    assert resp.data == [{"question": "text", "answer": "text"}]
    assert resp.cached is False
    [body] = server.bodies
    assert body["model"] == "test-model"
    assert body["messages"] == [{"role": "user", "content": "Write 3 pairs about tides."}]
    assert body["temperature"] == 0.7 and body["max_tokens"] == 64
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    record = fmt["json_schema"]["schema"]["properties"]["records"]["items"]
    assert record["required"] == ["question", "answer"]
    usage = resp.raw["usage"]
    assert resp.usage == {
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
    }
    expected = (usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0) / 1e6
    assert resp.cost == pytest.approx(expected)


def test_provider_prefix_picks_base_url_model_and_key_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    llm = StructuredLLM("openai/gpt-4o-mini", prompt="hi {{x}}", output_schema=QA)
    resp = asyncio.run(llm.run(x=1))
    [request] = server.requests
    assert request["body"]["model"] == "gpt-4o-mini"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    assert resp.cost is not None and resp.cost > 0  # gpt-4o-mini is in the price table
    assert KEY not in repr(llm)


def test_unknown_price_is_none_not_zero(server):
    resp = asyncio.run(make_llm(server).run(n=1, topic="x"))
    assert resp.cost is None


def test_no_schema_returns_the_text_and_sends_no_response_format(server):
    llm = make_llm(server, output_schema=None, prompt="Say {{word}}")
    resp = asyncio.run(llm.run(word="hello"))
    assert resp.data == [{"text": "echo: Say hello"}]
    assert "response_format" not in server.bodies[0]


def test_a_pydantic_model_is_a_schema(server):
    class Pair(pydantic.BaseModel):
        question: str
        score: int

    resp = asyncio.run(make_llm(server, output_schema=Pair).run(n=1, topic="x"))
    assert resp.data == [{"question": "text", "score": 1}]


def test_nested_list_form(server):
    schema = [
        {"name": "title", "type": "str"},
        {"name": "tags", "type": "list", "properties": [{"name": "tag", "type": "str"}]},
        {"name": "meta", "type": "dict", "properties": [{"name": "n", "type": "int"}]},
        {"name": "note", "type": "str", "required": False},
    ]
    resp = asyncio.run(make_llm(server, output_schema=schema).run(n=1, topic="x"))
    assert resp.data == [
        {"title": "text", "tags": [{"tag": "text"}], "meta": {"n": 1}, "note": "text"}
    ]


def test_a_missing_prompt_variable_is_named_before_any_request(server):
    llm = make_llm(server)
    with pytest.raises(PromptError, match="topic") as info:
        asyncio.run(llm.run(n=3))
    assert "topic=..." in str(info.value)
    assert server.requests == []


def test_setup_errors_are_clear_and_raised_at_construction(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(LLMConfigError, match="OPENAI_API_KEY"):
        StructuredLLM("openai/gpt-4o-mini", prompt="x")
    with pytest.raises(LLMConfigError, match=r"unknown provider.*base_url=") as info:
        StructuredLLM("nope/model", prompt="x")
    assert info.value.fatal is True
    with pytest.raises(LLMConfigError, match="messages"):
        StructuredLLM("m", prompt="x", base_url="http://127.0.0.1:9", model_kwargs={"messages": 1})
    with pytest.raises(LLMConfigError, match="type 'text'"):
        StructuredLLM(
            "m",
            prompt="x",
            base_url="http://127.0.0.1:9",
            output_schema=[{"name": "a", "type": "text"}],
        )
    with pytest.raises(LLMConfigError, match="rpm"):
        StructuredLLM("m", prompt="x", base_url="http://127.0.0.1:9", rpm=0)
    with pytest.raises(LLMConfigError, match="price"):
        StructuredLLM("m", prompt="x", base_url="http://127.0.0.1:9", price=(1,))
    # local providers need no key
    assert StructuredLLM("ollama/llama3", prompt="x").base_url == "http://localhost:11434/v1"


def test_structured_mode_falls_back_on_400_and_is_remembered_per_endpoint(make_server):
    server = make_server(reject_formats=("json_schema",))
    llm = make_llm(server)
    assert asyncio.run(llm.run(n=1, topic="a")).data == [{"question": "text", "answer": "text"}]
    asyncio.run(llm.run(n=1, topic="b"))
    kinds = [(b.get("response_format") or {}).get("type") for b in server.bodies]
    assert kinds == ["json_schema", "json_object", "json_object"]
    system = server.bodies[1]["messages"][0]
    assert system["role"] == "system" and "JSON schema" in system["content"]


def test_schema_in_prompt_when_no_response_format_is_accepted(make_server):
    server = make_server(reject_formats=("json_schema", "json_object"))
    resp = asyncio.run(make_llm(server).run(n=1, topic="a"))
    assert resp.data == [{"question": "text", "answer": "text"}]
    assert "response_format" not in server.bodies[-1]
    assert len(server.bodies) == 4  # json_schema, json_object with the schema, without, none


@pytest.mark.parametrize(
    "content",
    [
        '```json\n{"records": [{"question": "q", "answer": "a"}]}\n```',
        'Sure! Here you go: [{"question": "q", "answer": "a"}] Hope it helps.',
        '{"question": "q", "answer": "a"}',
        '{"pairs": [{"question": "q", "answer": "a"}]}',
    ],
)
def test_tolerant_parsing(server, content):
    server.script({"content": content})
    resp = asyncio.run(make_llm(server).run(n=1, topic="x"))
    assert resp.data == [{"question": "q", "answer": "a"}]
    assert len(server.requests) == 1


def test_invalid_json_is_re_asked_with_the_error_on_a_copy_of_the_messages(server):
    server.script({"content": "this is not json"})
    resp = asyncio.run(make_llm(server).run(n=1, topic="x"))
    assert resp.data == [{"question": "text", "answer": "text"}]
    first, second = server.bodies
    assert len(first["messages"]) == 1  # the original conversation was not changed
    assert second["messages"][:2] == [
        first["messages"][0],
        {"role": "assistant", "content": "this is not json"},
    ]
    assert "not valid JSON" in second["messages"][2]["content"]


def test_usage_is_summed_over_re_asks(server):
    server.script({"content": "nope", "usage": {"prompt_tokens": 10, "completion_tokens": 3}})
    server.script({"usage": {"prompt_tokens": 20, "completion_tokens": 7}})
    resp = asyncio.run(make_llm(server).run(n=1, topic="x"))
    assert resp.usage == {"prompt_tokens": 30, "completion_tokens": 10}


def test_a_validation_error_is_sent_back_and_reasks_are_bounded(server):
    bad = json.dumps({"records": [{"question": "q", "answer": 5}]})
    server.script({"content": bad}, {"content": bad})
    with pytest.raises(LLMOutputError, match="after 1 re-ask") as info:
        asyncio.run(make_llm(server).run(n=1, topic="x"))
    assert "answer" in str(info.value)
    assert len(server.requests) == 2
    assert (
        "record 0.answer: Input should be a valid string"
        in server.bodies[1]["messages"][-1]["content"]
    )


def test_reasks_zero_fails_on_the_first_bad_answer(server):
    server.script({"content": "[1, 2]"})
    with pytest.raises(LLMOutputError, match="after 0 re-ask"):
        asyncio.run(make_llm(server, reasks=0).run(n=1, topic="y"))
    assert len(server.requests) == 1


def test_finish_reason_length_is_a_failure_that_says_so(server):
    server.script({"finish_reason": "length"})
    with pytest.raises(LLMOutputError, match=r"length.*max_tokens=32"):
        asyncio.run(make_llm(server, model_kwargs={"max_tokens": 32}).run(n=1, topic="x"))
    assert len(server.requests) == 1


def test_5xx_and_dropped_connections_are_retried_and_counted(server):
    server.script({"status": 500}, {"status": 503}, {"drop": True})
    llm = make_llm(server)
    resp = asyncio.run(llm.run(n=1, topic="x"))
    assert resp.data == [{"question": "text", "answer": "text"}]
    assert len(server.requests) == 4
    assert llm.counts["retries"] == 3 and llm.counts["requests"] == 4


def test_a_slow_reply_times_out_and_is_retried(server):
    server.script({"delay": 2.0})
    llm = make_llm(server, request_timeout=0.3)
    resp = asyncio.run(llm.run(n=1, topic="x"))
    assert resp.data and len(server.requests) == 2


def test_5xx_that_never_ends_raises_a_retryable_error(server):
    server.script(*[{"status": 500}] * 3)
    with pytest.raises(LLMTransientError, match="after 2 retries") as info:
        asyncio.run(make_llm(server, max_retries=2).run(n=1, topic="x"))
    assert info.value.fatal is False and info.value.retry_after > 0
    assert len(server.requests) == 3


def test_401_is_fatal_and_the_key_never_shows(server):
    server.script({"status": 401, "error": f"Incorrect API key provided: {KEY}"})
    llm = make_llm(server, api_key=KEY)
    with pytest.raises(LLMAuthError) as info:
        asyncio.run(llm.run(n=1, topic="x"))
    assert info.value.fatal is True
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    assert len(server.requests) == 1


def test_insufficient_quota_is_fatal_not_retried(server):
    server.script({"status": 429, "code": "insufficient_quota", "error": "You exceeded quota"})
    with pytest.raises(LLMAuthError, match="no quota") as info:
        asyncio.run(make_llm(server).run(n=1, topic="x"))
    assert info.value.fatal and len(server.requests) == 1


def test_other_4xx_is_a_request_error(server):
    server.script({"status": 404, "error": "model not found"})
    with pytest.raises(LLMRequestError, match=r"404.*model not found"):
        asyncio.run(make_llm(server, output_schema=None, prompt="x").run())


def test_an_unreachable_base_is_one_fatal_error_for_every_concurrent_call():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    llm = StructuredLLM("m", prompt="x", base_url=f"http://127.0.0.1:{port}/v1")

    async def many():
        return await asyncio.gather(*(llm.run() for _ in range(20)), return_exceptions=True)

    results = asyncio.run(many())
    assert all(isinstance(r, LLMUnreachableError) for r in results)
    assert all(r.fatal for r in results)
    assert f"127.0.0.1:{port}" in str(results[0]) and "base_url" in str(results[0])
    assert llm.counts.get("retries", 0) == 0  # one failed connection, no retry storm


def test_a_structured_llm_pickles_without_its_key(server):
    import pickle

    llm = make_llm(server, api_key=KEY)
    blob = pickle.dumps(llm)
    assert KEY.encode() not in blob
    again = pickle.loads(blob)
    assert asyncio.run(again.run(n=1, topic="x")).data
