"""The pure parts of the batch lane: cutting lines under the providers' limits, the hand-built
multipart upload, and the chat-completions <-> Anthropic Messages translation."""

from __future__ import annotations

import json
from email.parser import BytesParser
from email.policy import HTTP

import pytest
from hypothesis import given
from hypothesis import strategies as st

from starfish.llm.batch import split_lines
from starfish.llm.batch.anthropic import MAX_BYTES as ANTHROPIC_BYTES
from starfish.llm.batch.anthropic import MAX_REQUESTS as ANTHROPIC_REQUESTS
from starfish.llm.batch.anthropic import AnthropicBatchClient
from starfish.llm.batch.multipart import multipart
from starfish.llm.batch.openai import MAX_BYTES as OPENAI_BYTES
from starfish.llm.batch.openai import MAX_REQUESTS as OPENAI_REQUESTS
from starfish.llm.batch.openai import OpenAIBatchClient
from starfish.llm.batch.translate import chat_completion, messages_params
from starfish.llm.errors import LLMConfigError

SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}


def test_the_provider_limits():
    assert (OPENAI_REQUESTS, OPENAI_BYTES) == (50_000, 200 * 1024 * 1024)
    assert (ANTHROPIC_REQUESTS, ANTHROPIC_BYTES) == (100_000, 256 * 1024 * 1024)
    openai = OpenAIBatchClient("http://127.0.0.1:9/v1", None, max_requests=10**9)
    assert openai.max_requests == 50_000  # a batch_size above the limit is the limit
    assert AnthropicBatchClient(None, "http://127.0.0.1:9").max_bytes == ANTHROPIC_BYTES


def test_split_by_count_and_by_bytes_in_order():
    lines = [b"x" * 9 for _ in range(10)]  # 10 bytes each with the separator
    assert [len(g) for g in split_lines(lines, 4, 10_000)] == [4, 4, 2]
    assert [len(g) for g in split_lines(lines, 100, 35)] == [3, 3, 3, 1]
    assert [len(g) for g in split_lines(lines, 100, 35, overhead=15)] == [2, 2, 2, 2, 2]
    assert [len(g) for g in split_lines(lines, 100, 100)] == [10]  # exactly at the limit
    assert split_lines([], 5, 100) == []
    with pytest.raises(LLMConfigError, match="line 1 is 50 bytes"):
        split_lines([b"a", b"b" * 50], 5, 40)


@given(
    st.lists(st.integers(0, 60), max_size=60),
    st.integers(1, 8),
    st.integers(62, 300),
    st.integers(0, 1),
)
def test_split_keeps_every_line_once_and_every_group_within_the_limits(
    sizes, max_requests, max_bytes, overhead
):
    lines = [bytes([65 + i % 26]) * size for i, size in enumerate(sizes)]
    groups = split_lines(lines, max_requests, max_bytes, overhead)
    assert [line for group in groups for line in group] == lines
    for i, group in enumerate(groups):
        assert 1 <= len(group) <= max_requests
        assert overhead + sum(len(x) + 1 for x in group) <= max_bytes
        if i + 1 < len(groups):  # greedy: the next line would not have fitted
            nxt = groups[i + 1][0]
            full = len(group) == max_requests
            assert full or overhead + sum(len(x) + 1 for x in group) + len(nxt) + 1 > max_bytes


def test_multipart_reads_back_with_a_standard_parser():
    lines = [b'{"a":1}', b'{"b":"\\r\\n--"}']
    body, content_type = multipart({"purpose": "batch"}, "file", 'in "x".jsonl', lines)
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    parts = {p.get_param("name", header="content-disposition"): p for p in message.iter_parts()}
    assert not message.defects and set(parts) == {"purpose", "file"}
    assert parts["purpose"].get_payload(decode=True) == b"batch"
    assert parts["file"].get_payload(decode=True) == b'{"a":1}\n{"b":"\\r\\n--"}\n'
    assert parts["file"].get_filename() == "in %22x%22.jsonl"


def test_chat_body_to_messages_params():
    body = {
        "model": "claude-haiku",
        "messages": [
            {"role": "system", "content": "You write questions."},
            {"role": "user", "content": [{"type": "text", "text": "About owls."}]},
            {"role": "user", "content": "Two of them."},
        ],
        "temperature": 0.3,
        "stop": "END",
        "stream": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "my records!", "schema": SCHEMA, "strict": True},
        },
    }
    params = messages_params(body)
    assert params["system"] == "You write questions."
    assert params["messages"] == [{"role": "user", "content": "About owls.\n\nTwo of them."}]
    assert params["max_tokens"] == 1024 and params["temperature"] == 0.3
    assert params["stop_sequences"] == ["END"] and "stream" not in params
    assert params["tools"][0]["name"] == "my_records_"
    assert params["tools"][0]["input_schema"] == SCHEMA
    assert params["tool_choice"] == {"type": "tool", "name": "my_records_"}
    assert messages_params({**body, "max_tokens": 77}, 5)["max_tokens"] == 77
    assert messages_params({**body, "max_completion_tokens": 9})["max_tokens"] == 9


def test_json_object_rungs_and_non_object_schemas_ask_in_the_prompt():
    messages = [
        {"role": "system", "content": "Answer with JSON matching this JSON schema:\n{}"},
        {"role": "user", "content": "hi"},
    ]
    bare = messages_params(
        {"model": "m", "messages": messages, "response_format": {"type": "json_object"}}
    )
    assert "tools" not in bare and bare["system"].startswith("Answer with JSON")
    listed = {"type": "array", "items": {"type": "string"}}
    fmt = {"type": "json_schema", "json_schema": {"name": "r", "schema": listed}}
    arrays = messages_params({"model": "m", "messages": messages[1:], "response_format": fmt})
    assert "tools" not in arrays and json.dumps(listed) in arrays["system"]
    carried = {"type": "json_object", "schema": SCHEMA}
    with_schema = messages_params({"model": "m", "messages": messages, "response_format": carried})
    assert with_schema["tools"][0]["input_schema"] == SCHEMA


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "seed": 1}, "seed"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "role 'tool'"),
        ({"model": "m", "messages": [{"role": "system", "content": "x"}]}, "user message"),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "image_url",
        ),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max"),
        ({"messages": []}, "model"),
    ],
)
def test_what_the_messages_api_cannot_ask_is_refused_before_upload(body, error):
    with pytest.raises(LLMConfigError, match=error):
        messages_params(body)


def test_messages_answers_become_chat_completions():
    tool = {
        "id": "msg_1",
        "model": "claude-haiku",
        "content": [{"type": "tool_use", "id": "t", "name": "records", "input": {"q": "why?"}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 7},
    }
    answer = chat_completion(tool)
    assert json.loads(answer["choices"][0]["message"]["content"]) == {"q": "why?"}
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"] == {"prompt_tokens": 15, "completion_tokens": 7, "total_tokens": 22}
    text = {
        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 1, "output_tokens": 2},
    }
    cut = chat_completion(text)
    assert cut["choices"][0]["message"]["content"] == "ab"
    assert cut["choices"][0]["finish_reason"] == "length"
    refused = chat_completion({"content": [], "stop_reason": "refusal"})
    assert refused["choices"][0]["message"]["refusal"]
