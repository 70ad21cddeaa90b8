"""The model layer's logic through an in-process transport (no sockets): the rungs of
structured output, re-asks, refusals, cut answers and what the endpoint remembers."""

from __future__ import annotations

import asyncio

import pytest

from starfish import StructuredLLM
from starfish.llm import LLMOutputError, LLMRequestError, LLMTransientError
from tests.llm.fake_transport import FakeTransport, completion, error

QA = [{"name": "question", "type": "str"}, {"name": "answer", "type": "str"}]


def make(transport, **kwargs):
    kwargs.setdefault("output_schema", QA)
    return StructuredLLM(
        "m", prompt="About {{topic}}.", base_url="http://fake/v1", transport=transport, **kwargs
    )


def kinds(transport):
    return [(b.get("response_format") or {}).get("type", "none") for b in transport.bodies]


def test_the_fake_gets_the_request_a_server_would():
    fake = FakeTransport()
    resp = asyncio.run(make(fake, model_kwargs={"temperature": 0.3}).run(topic="tides"))
    assert resp.data == [{"question": "text", "answer": "text"}] and resp.mode == "json_schema"
    [request] = fake.requests
    assert request.method == "POST" and request.url == "http://fake/v1/chat/completions"
    assert fake.bodies[0]["temperature"] == 0.3


def test_the_endpoint_remembers_a_refused_rung_for_every_structured_llm_naming_it():
    fake = FakeTransport()
    fake.script.append(error(500, "Input should be 'text' or 'json_object' (response_format)"))
    asyncio.run(make(fake).run(topic="a"))
    asyncio.run(make(fake).run(topic="b"))  # another object, the same endpoint
    assert kinds(fake) == ["json_schema", "json_object", "json_object"]
    assert "schema" in fake.bodies[2]["response_format"]


def test_an_empty_answer_without_a_schema_and_a_refusal_are_output_errors():
    fake = FakeTransport()
    fake.script += [completion(""), completion(None, refusal="no")]
    llm = make(fake, output_schema=None)
    with pytest.raises(LLMOutputError, match="empty"):
        asyncio.run(llm.run(topic="a"))
    with pytest.raises(LLMOutputError, match="refused: no"):
        asyncio.run(llm.run(topic="b"))


def test_invalid_records_are_re_asked_then_fail_with_the_last_error():
    fake = FakeTransport()
    fake.script += [completion('{"records": [{"question": 1}]}')] * 2
    with pytest.raises(LLMOutputError, match="after 1 re-ask"):
        asyncio.run(make(fake).run(topic="a"))
    assert "answer" in fake.bodies[1]["messages"][-1]["content"]  # the error went back


def test_a_5xx_is_retried_max_retries_times_then_marked_retried(monkeypatch):
    from starfish.llm import structured

    monkeypatch.setattr(structured, "RETRY_BASE_DELAY", 0.001)
    fake = FakeTransport(lambda body: error(503, "overloaded"))
    with pytest.raises(LLMTransientError) as caught:
        asyncio.run(make(fake, max_retries=2).run(topic="a"))
    assert len(fake.requests) == 3 and caught.value.retried is True


def test_a_400_about_the_prompt_fails_that_call_only():
    fake = FakeTransport()
    fake.script.append(error(400, "maximum context length exceeded"))
    with pytest.raises(LLMRequestError, match="maximum context length"):
        asyncio.run(make(fake).run(topic="a"))
    asyncio.run(make(fake).run(topic="b"))
    assert kinds(fake) == ["json_schema", "json_schema"]
