"""An in-process `Transport` for tests of the model layer's logic: no socket, no server.

`FakeTransport(reply)` answers each POST with `reply(body) -> Response` (by default a valid
answer for whatever schema the request asks for, the same one the loopback server gives) and
every GET (the first contact) with 200; it keeps every request it was sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starfish.llm.transport import Request, Response
from tests.openai_server import count_tokens, default_reply, prompt_tokens


def completion(
    content: str | None, finish_reason: str = "stop", usage: Any = None, **message: Any
) -> Response:
    """A chat completion with this content, as a server would send it."""
    answer = {
        "choices": [
            {
                "message": {"role": "assistant", "content": content, **message},
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage
        if usage is not None
        else {"prompt_tokens": 10, "completion_tokens": count_tokens(content or "")},
    }
    return Response(200, {}, json.dumps(answer))


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, headers or {}, json.dumps({"error": {"message": message}}))


def answer(body: dict[str, Any]) -> Response:
    content = default_reply(body)
    usage = {
        "prompt_tokens": prompt_tokens(body["messages"]),
        "completion_tokens": count_tokens(content),
    }
    return completion(content, usage=usage)


class FakeTransport:
    def __init__(self, reply: Callable[[dict[str, Any]], Response] = answer) -> None:
        self.reply = reply
        self.requests: list[Request] = []
        self.script: list[Response] = []  # answers for the next requests, before `reply`

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.body) for r in self.requests if r.body is not None]

    async def send(self, request: Request) -> Response:
        if request.method == "GET":
            return Response(200, {}, '{"data": []}')
        self.requests.append(request)
        if self.script:
            return self.script.pop(0)
        assert request.body is not None
        return self.reply(json.loads(request.body))
