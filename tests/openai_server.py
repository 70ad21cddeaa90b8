"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions API.

Tests and benchmarks point `StructuredLLM(base_url=...)` at it and assert on what it received.
It can be scripted (`script(...)`: the next requests get a 429, a 500, a slow reply, invalid
JSON, ...), refuses `response_format` types it is told not to support (400), and enforces its
own request and token buckets the way providers do (a per-minute limit spread over about one
second, answering 429 with `retry-after-ms` when exceeded).

Run it alone (for benchmarks, in its own process): `python tests/openai_server.py --latency
0.02 [--rpm N] [--tpm N] [--headers]`; it prints its base URL on the first line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import threading
import time
from collections import deque
from typing import Any

from aiohttp import web

from tests.loopback import LoopbackServer

SCHEMA_MARKER = "JSON schema:\n"
MODEL_ID = "loopback-model"  # the one model `GET /v1/models` lists


class Bucket:
    """A token bucket holding at most `burst` seconds of `per_minute / 60`."""

    def __init__(self, per_minute: float, burst: float = 1.0) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst)
        self.level = self.capacity
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, cost: float) -> float:
        """Take `cost` and return 0, or take nothing and return the seconds until it fits."""
        self._refill()
        if self.level + 1e-9 >= cost:
            self.level -= cost
            return 0.0
        return (cost - self.level) / self.rate

    def time_to_full(self) -> float:
        self._refill()
        return (self.capacity - self.level) / self.rate


def count_tokens(text: str) -> int:
    """The server's tokenizer: a quarter of the characters, rounded up (the client estimates
    the same way, so tests can check the token bucket exactly)."""
    return math.ceil(len(text) / 4)


def prompt_tokens(messages: list[dict]) -> int:
    return count_tokens("".join(str(m.get("content") or "") for m in messages))


def example_from_schema(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """A value that validates against a (simple) JSON schema."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return example_from_schema(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return example_from_schema(schema[key][0], defs)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next(k for k in kind if k != "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: example_from_schema(sub, defs) for name, sub in props.items()}
    if kind == "array":
        return [example_from_schema(schema.get("items", {}), defs)]
    return {"string": "text", "integer": 1, "number": 1.5, "boolean": True}.get(kind)


def schema_of(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema the client asked for: in `response_format`, or written in the prompt."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return fmt["json_schema"]["schema"]
    if fmt.get("type") == "json_object" and isinstance(fmt.get("schema"), dict):
        return fmt["schema"]  # llama.cpp's form: json_object constrained to a schema
    for message in body.get("messages", []):
        content = str(message.get("content") or "")
        if SCHEMA_MARKER in content:
            text = content.split(SCHEMA_MARKER, 1)[1]
            return json.JSONDecoder().raw_decode(text)[0]
    return None


def default_reply(body: dict[str, Any]) -> str:
    schema = schema_of(body)
    if schema is None:
        return "echo: " + str(body["messages"][-1].get("content"))
    return json.dumps(example_from_schema(schema))


EMBEDDING_DIMENSIONS = 256


def embedding_of(text: str) -> list[float]:
    """A deterministic vector: the hashed bag of the text's lower-cased words, normalised, so
    rewordings that share most words are close and unrelated texts are near orthogonal."""
    import hashlib
    import re

    vector = [0.0] * EMBEDDING_DIMENSIONS
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        slot = int.from_bytes(digest[:4], "little") % EMBEDDING_DIMENSIONS
        vector[slot] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


class OpenAIServer(LoopbackServer):
    """The server; `start()` runs it on a thread with its own event loop."""

    name = "loopback OpenAI server"
    backlog = 1024

    def __init__(
        self,
        *,
        latency: float = 0.0,
        rpm: float | None = None,
        tpm: float | None = None,
        limit_headers: bool = False,
        reject_formats: tuple[str, ...] = (),
        reply: Any = None,
        serial: bool = False,
        reject_status: int = 400,
    ) -> None:
        self.latency = latency
        self.requests_bucket = Bucket(rpm) if rpm else None
        self.tokens_bucket = Bucket(tpm) if tpm else None
        self.rpm, self.tpm = rpm, tpm
        self.limit_headers = limit_headers
        self.reject_formats = set(reject_formats)
        self.reject_status = reject_status  # llama-cpp-python refuses json_schema with a 500
        self.serial = serial  # answer one request at a time, queueing the rest (llama.cpp)
        self.queued = 0  # requests waiting for the one being answered (serial)
        self.peak_queued = 0
        self.abandoned = 0  # queued requests whose client left before their turn
        self._turn: asyncio.Lock | None = None
        self.reply = reply or default_reply
        self.requests: list[dict[str, Any]] = []  # every request received, in order
        self.bucket_rejections = 0  # 429s sent because a bucket was exceeded
        self.statuses: list[int] = []
        self.active = 0  # requests being answered now
        self.peak_active = 0
        self.answered_at: list[float] = []  # when each 200 was sent (monotonic)
        self._script: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *faults: dict[str, Any]) -> None:
        """Answer the next requests with these, in order. Keys: `status` (with `headers`,
        `error`), `delay` (seconds before answering), `content`, `finish_reason`,
        `usage` (dict), `drop` (close the connection without an answer)."""
        with self._lock:
            self._script.extend(faults)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r["body"] for r in self.requests]

    # serving -------------------------------------------------------------------------------
    def _limit_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, bucket, limit in (
            ("requests", self.requests_bucket, self.rpm),
            ("tokens", self.tokens_bucket, self.tpm),
        ):
            if bucket is None:
                continue
            headers[f"x-ratelimit-limit-{name}"] = str(int(limit))
            headers[f"x-ratelimit-remaining-{name}"] = str(int(bucket.level))
            headers[f"x-ratelimit-reset-{name}"] = f"{int(bucket.time_to_full() * 1000)}ms"
        return headers

    def _error(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> web.Response:
        self.statuses.append(status)
        body = {"error": {"message": message, "type": "error", "code": code}}
        return web.json_response(body, status=status, headers=headers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not self.serial:
            return await self._counted(request)
        if self._turn is None:
            self._turn = asyncio.Lock()
        waits = self._turn.locked()
        if waits:
            self.queued += 1
            self.peak_queued = max(self.peak_queued, self.queued)
        try:
            await self._turn.acquire()
        finally:
            if waits:
                self.queued -= 1
        try:
            transport = request.transport
            if transport is None or transport.is_closing():
                self.abandoned += 1  # as llama-cpp-python: a request nobody awaits is skipped
                return web.Response(status=499)
            return await self._counted(request)
        finally:
            self._turn.release()

    async def _counted(self, request: web.Request) -> web.StreamResponse:
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        try:
            return await self._answer(request)
        finally:
            self.active -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw)
        with self._lock:
            self.requests.append(
                {"body": body, "headers": dict(request.headers), "t": time.monotonic()}
            )
            fault = self._script.popleft() if self._script else {}
        if fault.get("delay"):
            await asyncio.sleep(fault["delay"])
        if fault.get("drop"):
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        if "raw_bytes" in fault:  # bytes exactly as given, with their own content type
            return web.Response(
                status=fault.get("raw_status", 200),
                body=fault["raw_bytes"],
                headers={"Content-Type": fault.get("content_type", "application/json")},
            )
        if "raw" in fault:  # a body exactly as given
            return web.Response(status=fault.get("raw_status", 200), text=fault["raw"])
        if "status" in fault:
            return self._error(
                fault["status"],
                fault.get("error", f"scripted {fault['status']}"),
                fault.get("headers"),
                fault.get("code"),
            )
        fmt = (body.get("response_format") or {}).get("type")
        if fmt == "json_object" and "schema" in body["response_format"]:
            fmt = "json_object_schema"
        if fmt in self.reject_formats or (
            fmt == "json_object_schema" and "json_object" in self.reject_formats
        ):
            return self._error(self.reject_status, f"response_format type {fmt!r} is not supported")
        p_tokens = prompt_tokens(body.get("messages", []))
        content = fault.get("content")
        if content is None:
            content = self.reply(body)
        c_tokens = count_tokens(content)
        with self._lock:
            wait = 0.0
            if self.requests_bucket is not None:
                wait = self.requests_bucket.take(1)
            if not wait and self.tokens_bucket is not None:
                wait = self.tokens_bucket.take(p_tokens + c_tokens)
                if wait and self.requests_bucket is not None:
                    self.requests_bucket.level += 1  # the request was not served
            if wait:
                self.bucket_rejections += 1
                headers = {"retry-after-ms": str(math.ceil(wait * 1000)), **self._limit_headers()}
                headers = (
                    headers if self.limit_headers else {"retry-after-ms": headers["retry-after-ms"]}
                )
            else:
                headers = self._limit_headers() if self.limit_headers else {}
        if wait:
            return self._error(429, "rate limit exceeded", headers, "rate_limit_exceeded")
        if self.latency:
            await asyncio.sleep(self.latency)
        usage = fault.get("usage") or {
            "prompt_tokens": p_tokens,
            "completion_tokens": c_tokens,
            "total_tokens": p_tokens + c_tokens,
        }
        answer = {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": fault.get("finish_reason", "stop"),
                }
            ],
            "usage": usage,
        }
        self.statuses.append(200)
        self.answered_at.append(time.monotonic())
        return web.json_response(answer, headers=headers)

    async def _embeddings(self, request: web.Request) -> web.Response:
        """`POST /v1/embeddings`: `embedding_of` each input; scripted faults apply too."""
        body = json.loads(await request.read())
        with self._lock:
            self.requests.append(
                {"body": body, "headers": dict(request.headers), "t": time.monotonic()}
            )
            fault = self._script.popleft() if self._script else {}
        if "status" in fault:
            return self._error(fault["status"], fault.get("error", f"scripted {fault['status']}"))
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        tokens = sum(count_tokens(t) for t in texts)
        self.statuses.append(200)
        return web.json_response(
            {
                "object": "list",
                "model": body.get("model"),
                "data": [
                    {"object": "embedding", "index": i, "embedding": embedding_of(t)}
                    for i, t in enumerate(texts)
                ],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL_ID, "object": "model"}]})

    # lifecycle -----------------------------------------------------------------------------
    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._handle)
        # Any path before /v1 too: tests put secrets in a base URL and check where they go.
        app.router.add_post(r"/{prefix:[\s\S]+}/v1/chat/completions", self._handle)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/embeddings", self._embeddings)
        return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--rpm", type=float, default=None)
    parser.add_argument("--tpm", type=float, default=None)
    parser.add_argument("--headers", action="store_true", help="send x-ratelimit-* headers")
    args = parser.parse_args()
    server = OpenAIServer(
        latency=args.latency, rpm=args.rpm, tpm=args.tpm, limit_headers=args.headers
    ).start(args.port)
    print(server.url, flush=True)
    try:
        for line in iter(input, "quit"):
            if line == "stats":
                ok = server.statuses.count(200)
                print(
                    json.dumps(
                        {
                            "requests": len(server.requests),
                            "ok": ok,
                            "rejected": server.bucket_rejections,
                        }
                    ),
                    flush=True,
                )
    except EOFError:
        pass
    server.stop()


if __name__ == "__main__":
    main()
