"""The loopback OpenAI server is checked against the official `openai` SDK: if the SDK cannot
talk to the fake, the fake is wrong (and so would be every test that uses it)."""

from __future__ import annotations

import json

import openai
import pytest

from tests.llm.conftest import KEY

SCHEMA = {
    "type": "object",
    "properties": {"records": {"type": "array", "items": {"type": "object", "properties": {
        "q": {"type": "string"}}, "required": ["q"], "additionalProperties": False}}},
    "required": ["records"],
    "additionalProperties": False,
}  # fmt: skip


def client(server):
    return openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=10)


def test_the_sdk_reads_a_structured_answer_its_usage_and_the_limit_headers(make_server):
    server = make_server(rpm=600, limit_headers=True)
    raw = client(server).chat.completions.with_raw_response.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "r", "schema": SCHEMA, "strict": True},
        },
    )
    answer = raw.parse()
    assert json.loads(answer.choices[0].message.content) == {"records": [{"q": "text"}]}
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
    assert raw.headers["x-ratelimit-limit-requests"] == "600"
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"


def test_the_sdk_sees_json_object_with_a_schema_like_llama_cpp(server):
    answer = client(server).chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        response_format={"type": "json_object", "schema": SCHEMA},  # type: ignore[typeddict-unknown-key]
    )
    assert json.loads(answer.choices[0].message.content)["records"]


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"status": 429, "headers": {"retry-after-ms": "1500"}}, openai.RateLimitError),
        ({"status": 500}, openai.InternalServerError),
        ({"status": 401}, openai.AuthenticationError),
        ({"status": 400, "error": "bad response_format"}, openai.BadRequestError),
    ],
)
def test_the_sdk_raises_its_own_error_for_each_scripted_fault(server, fault, error):
    server.script(fault)
    with pytest.raises(error) as caught:
        client(server).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == fault["status"]
    if "error" in fault:
        assert caught.value.body["message"] == fault["error"]  # type: ignore[index]
    if fault["status"] == 429:
        assert caught.value.response.headers["retry-after-ms"] == "1500"


def test_the_sdk_sees_a_cut_answer_and_a_format_refusal(make_server):
    server = make_server(reject_formats=("json_schema",), reject_status=500)
    server.script({"finish_reason": "length"})
    answer = client(server).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}]
    )
    assert answer.choices[0].finish_reason == "length"
    with pytest.raises(openai.InternalServerError, match="response_format"):
        client(server).chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}},
        )


def test_the_sdk_is_answered_one_at_a_time_by_a_serial_server(make_server):
    import concurrent.futures

    server = make_server(serial=True, latency=0.05)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(
                lambda i: client(server).chat.completions.create(
                    model="m", messages=[{"role": "user", "content": str(i)}]
                ),
                range(4),
            )
        )
    assert [a.choices[0].message.content for a in answers] == [f"echo: {i}" for i in range(4)]
    assert server.peak_active == 1 and server.peak_queued >= 1
