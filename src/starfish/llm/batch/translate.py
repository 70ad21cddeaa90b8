"""Chat-completions bodies to Anthropic Messages API params, and Anthropic answers back to
chat completions, so the model layer builds and parses one shape for every provider.

Structured output: a body asking for a JSON schema (`response_format` json_schema, or
json_object carrying a schema) becomes one forced tool whose `input_schema` is that schema
(`tool_choice: {"type": "tool"}`): the model must answer with input matching it, and its
input comes back as the message content, JSON text. A bare json_object is dropped: on that
rung the prompt already asks for JSON (a system message carrying the schema). A schema that
is not an object (tools need one) is asked for in the system prompt instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from starfish.llm.errors import LLMConfigError

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "ERROR_STATUS",
    "chat_completion",
    "messages_params",
]

DEFAULT_MAX_TOKENS = 1024
"""`max_tokens` of a request that sets none: the Messages API requires it."""
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
"""The HTTP status of each Anthropic error type, for the job's rules (401/403: fatal)."""
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}
_PASSED = ("temperature", "top_p", "top_k")
_IGNORED = {"stream": (False, None), "n": (1, None)}
"""Keys dropped when they hold these values (they ask for what a batch does anyway)."""
_TOOL_NAME = re.compile(r"[^a-zA-Z0-9_-]")


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise LLMConfigError(f"{where}: a {kind!r} part cannot go in an Anthropic batch")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise LLMConfigError(f"{where}: content must be text, not {type(content).__name__}")


def _schema(fmt: Any) -> tuple[str, dict[str, Any]] | None:
    """(name, schema) that `response_format` asks for, if any."""
    if not isinstance(fmt, Mapping):
        return None
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("json_schema"), Mapping):
        spec = fmt["json_schema"]
        if isinstance(spec.get("schema"), Mapping):
            return str(spec.get("name") or "records"), dict(spec["schema"])
    if fmt.get("type") == "json_object" and isinstance(fmt.get("schema"), Mapping):
        return "records", dict(fmt["schema"])
    return None


def messages_params(
    body: Mapping[str, Any], default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> dict[str, Any]:
    """The Messages API params asking what this chat-completions body asks. Anything with no
    Anthropic equivalent is an error here, before any upload, not a failed line later."""
    if not isinstance(body.get("model"), str) or not isinstance(body.get("messages"), list):
        raise LLMConfigError("a chat-completions body needs `model` and a list of `messages`")
    max_tokens = next(
        (body[k] for k in ("max_tokens", "max_completion_tokens") if body.get(k) is not None),
        default_max_tokens,
    )
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise LLMConfigError(f"max_tokens must be a positive integer, not {max_tokens!r}")
    params: dict[str, Any] = {"model": body["model"], "max_tokens": max_tokens}
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(body["messages"]):
        role = message.get("role") if isinstance(message, Mapping) else None
        content = _text(
            message.get("content") if isinstance(message, Mapping) else None, f"messages[{i}]"
        )
        if role in ("system", "developer"):
            system.append(content)
        elif role in ("user", "assistant"):
            if messages and messages[-1]["role"] == role:
                messages[-1]["content"] += "\n\n" + content
            else:
                messages.append({"role": role, "content": content})
        else:
            raise LLMConfigError(f"messages[{i}]: role {role!r} cannot go in an Anthropic batch")
    if not messages:
        raise LLMConfigError("an Anthropic request needs at least one user message")
    wanted = _schema(body.get("response_format"))
    if wanted is not None and wanted[1].get("type") == "object":
        name = _TOOL_NAME.sub("_", wanted[0])[:64] or "records"
        params["tools"] = [
            {
                "name": name,
                "description": "Give the answer as this tool's input.",
                "input_schema": wanted[1],
            }
        ]
        params["tool_choice"] = {"type": "tool", "name": name}
    elif wanted is not None:
        system.append("Answer with only JSON matching this JSON schema:\n" + json.dumps(wanted[1]))
    if system:
        params["system"] = "\n\n".join(system)
    params["messages"] = messages
    for key in _PASSED:
        if key in body:
            params[key] = body[key]
    stop = body.get("stop")
    if stop:
        params["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("user"):
        params["metadata"] = {"user_id": str(body["user"])}
    known = {"model", "messages", "max_tokens", "max_completion_tokens", "response_format"}
    known |= {*_PASSED, "stop", "user"}
    unknown = sorted(
        k for k in body if k not in known and body[k] not in _IGNORED.get(k, (object(),))
    )
    if unknown:
        raise LLMConfigError(
            f"{', '.join(unknown)}: no equivalent in Anthropic's Messages API (batch)"
        )
    return params


def chat_completion(message: Mapping[str, Any]) -> dict[str, Any]:
    """A Messages API answer as a chat completion: the forced tool's input (JSON text) or the
    text blocks as the content, the stop reason as `finish_reason`, the tokens as `usage`."""
    blocks = [b for b in message.get("content") or [] if isinstance(b, Mapping)]
    tool = next((b for b in blocks if b.get("type") == "tool_use"), None)
    if tool is not None:
        content = json.dumps(tool.get("input"))
    else:
        content = "".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")
    stop = message.get("stop_reason")
    reply: dict[str, Any] = {"role": "assistant", "content": content}
    if stop == "refusal":
        reply["refusal"] = content or "refused"
    usage = message.get("usage") if isinstance(message.get("usage"), Mapping) else {}
    assert isinstance(usage, Mapping)
    prompt = sum(
        int(usage.get(k) or 0)
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    completion = int(usage.get("output_tokens") or 0)
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "model": message.get("model"),
        "choices": [
            {"index": 0, "message": reply, "finish_reason": _FINISH.get(str(stop), "stop")}
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
