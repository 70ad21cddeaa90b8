"""A real HTTP server on 127.0.0.1 that speaks OpenAI's Files and Batches API and Anthropic's
Message Batches API, as their references and official SDKs define them.

Each request line is answered with the same deterministic chat completion the loopback chat
server gives (`tests/openai_server.py`: JSON matching the schema the request asks for, else
an echo); Anthropic lines get a Messages API answer (a forced tool gets a `tool_use` block
with input matching its schema).

Scriptable, for the batch lane's fault cases:
- `hold = True`: new batches stay in progress until `release(id)`, `finish(id, n)` (answer the
  first n lines and keep going), `expire(id)` (end it; unfinished lines are expired);
- `fail(*custom_ids, status=, message=)`: those lines fail (error file / `errored` result);
- `reject(message, code=)`: the next OpenAI batch ends `failed` with that error (Anthropic
  has no failed state: its create answers 400 instead);
- `script({"status": 429, "headers": {...}}, {"status": 503, "match": "POST /v1/batches"},
  {"drop": True}, {"drop_after": True})`: the next requests (matching `match`, a
  "METHOD /path" prefix, if given) get that answer instead (`drop_after`: carried out, but
  the connection closes before the answer);
- counts: `uploads` (each file with its bytes), `batches` (each with its lines), `requests`
  (method, path, headers of every request), `received` (the raw bodies of uploads and
  Anthropic creates).

Without `hold`, a batch finishes when it is first retrieved or listed after its creation
(OpenAI: created `validating`; Anthropic: created `in_progress`).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from aiohttp import web

from tests.loopback import LoopbackServer
from tests.openai_server import count_tokens, default_reply, example_from_schema, prompt_tokens

CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
OPENAI_MAX_REQUESTS = 50_000
ANTHROPIC_MAX_REQUESTS = 100_000
ANTHROPIC_VERSION = "2023-06-01"
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
CANCELLED_MESSAGE = "This request could not be executed before the batch was cancelled."
_FINAL = ("completed", "ended", "failed", "expired", "cancelled")
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


def chat_completion(body: dict[str, Any], reply: Callable[[dict[str, Any]], str], n: int) -> Any:
    """The answer the loopback chat server would give to this chat-completions body."""
    content = reply(body)
    p_tokens = prompt_tokens(body.get("messages", []))
    c_tokens = count_tokens(content)
    return {
        "id": f"chatcmpl-batch-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": p_tokens,
            "completion_tokens": c_tokens,
            "total_tokens": p_tokens + c_tokens,
        },
    }


def anthropic_message(
    params: dict[str, Any], reply: Callable[[dict[str, Any]], str], n: int
) -> Any:
    """A Messages API answer: a `tool_use` block when a tool is forced, else text (the chat
    server's answer to the same messages, the system prompt first)."""
    system = params.get("system")
    if isinstance(system, list):
        system = "".join(block.get("text", "") for block in system)
    messages = [{"role": "system", "content": system}] if system else []
    for message in params["messages"]:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(block.get("text", "") for block in content)
        messages.append({"role": message.get("role"), "content": content})
    choice = params.get("tool_choice") or {}
    tools = {tool["name"]: tool for tool in params.get("tools", [])}
    in_tokens = prompt_tokens(messages)
    if choice.get("type") == "tool" and choice.get("name") in tools:
        tool = tools[choice["name"]]
        value = example_from_schema(tool["input_schema"])
        block: dict[str, Any] = {
            "type": "tool_use",
            "id": f"toolu_{n}",
            "name": tool["name"],
            "input": value,
        }
        out_tokens, stop = count_tokens(json.dumps(value)), "tool_use"
    else:
        text = reply({"model": params.get("model"), "messages": messages})
        block = {"type": "text", "text": text}
        out_tokens, stop = count_tokens(text), "end_turn"
    return {
        "id": f"msg_batch_{n}",
        "type": "message",
        "role": "assistant",
        "model": params.get("model"),
        "content": [block],
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": in_tokens, "output_tokens": out_tokens},
    }


@dataclass
class Upload:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass
class Batch:
    """One batch of either kind; `done` holds the answered lines by custom_id."""

    id: str
    kind: str  # "openai" or "anthropic"
    lines: list[tuple[str, Any]]  # (custom_id, body or params) in request order
    created_at: float
    metadata: dict[str, str] | None = None
    input_file_id: str | None = None
    endpoint: str = "/v1/chat/completions"
    completion_window: str = "24h"
    status: str = "validating"
    held: bool = False
    done: dict[str, tuple[bool, Any]] = field(default_factory=dict)
    unfinished: str | None = None  # "expired" or "cancelled": why the rest never ran
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    stamps: dict[str, float] = field(default_factory=dict)

    @property
    def custom_ids(self) -> list[str]:
        return [cid for cid, _ in self.lines]


class BatchServer(LoopbackServer):
    """The server; `start()` runs it on a thread with its own event loop."""

    name = "loopback batch server"

    def __init__(
        self,
        *,
        key: str | None = None,
        hold: bool = False,
        reply: Callable[[dict[str, Any]], str] = default_reply,
        max_requests: int | None = None,
    ) -> None:
        self.key = key  # when set, requests without it are answered 401
        self.hold = hold
        self.reply = reply
        self.max_requests = max_requests  # a per-batch limit lower than the provider's
        self.uploads: dict[str, Upload] = {}  # the files clients uploaded
        self.uploads_out: dict[str, Upload] = {}  # output and error files this server wrote
        self.batches: dict[str, Batch] = {}
        self.requests: list[dict[str, Any]] = []  # {"method", "path", "headers"}
        self.received: list[bytes] = []  # every upload and Anthropic create body, raw
        self._failing: dict[str, tuple[int, str]] = {}
        self._rejects: deque[tuple[str, str]] = deque()
        self._script: deque[dict[str, Any]] = deque()
        self._ids = 0
        self._lock = threading.RLock()
        super().__init__()

    # addresses -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """OpenAI's base URL (`openai.OpenAI(base_url=...)`)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        """Anthropic's base URL (`anthropic.Anthropic(base_url=...)` adds `/v1/...`)."""
        return f"http://127.0.0.1:{self.port}"

    # scripting -----------------------------------------------------------------------------
    def script(self, *faults: dict[str, Any]) -> None:
        """Answer the next requests with these, in order. Keys: `status` (with `headers`,
        `error`), `drop` (close the connection without an answer), `drop_after` (carry the
        request out, then close the connection before the answer is read), `match` (only a request
        whose "METHOD /path" starts with this takes the fault)."""
        with self._lock:
            self._script.extend(faults)

    def fail(self, *custom_ids: str, status: int = 400, message: str = "scripted failure") -> None:
        """These lines fail when they are answered, in any batch."""
        with self._lock:
            for cid in custom_ids:
                self._failing[cid] = (status, message)

    def reject(self, message: str, code: str = "invalid_request") -> None:
        """The next OpenAI batch created ends `failed` with this error (Anthropic: the next
        create is answered 400 with this message)."""
        with self._lock:
            self._rejects.append((message, code))

    def release(self, batch_id: str | None = None) -> None:
        """Let a held batch (or every one) finish at its next retrieval."""
        with self._lock:
            for batch in self._chosen(batch_id):
                batch.held = False

    def finish(self, batch_id: str, count: int) -> None:
        """Answer the first `count` lines of a held batch now; it stays in progress."""
        with self._lock:
            batch = self.batches[batch_id]
            self._start(batch)
            for cid, body in batch.lines[:count]:
                self._answer_line(batch, cid, body)

    def expire(self, batch_id: str) -> None:
        """End the batch as its completion window would: answered lines are kept, the rest
        expire."""
        with self._lock:
            batch = self.batches[batch_id]
            self._start(batch)
            self._end(batch, "expired")

    # counts ----------------------------------------------------------------------------------
    @property
    def lines_per_batch(self) -> list[int]:
        with self._lock:
            return [len(batch.lines) for batch in self.batches.values()]

    def created(self, kind: str) -> list[Batch]:
        with self._lock:
            return [batch for batch in self.batches.values() if batch.kind == kind]

    # state -----------------------------------------------------------------------------------
    def _new_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}{self._ids:06d}"

    def _chosen(self, batch_id: str | None) -> list[Batch]:
        if batch_id is None:
            return list(self.batches.values())
        return [self.batches[batch_id]]

    def _start(self, batch: Batch) -> None:
        if batch.kind == "openai" and batch.status == "validating":
            batch.status = "in_progress"
            batch.stamps["in_progress_at"] = time.time()

    def _answer_line(self, batch: Batch, cid: str, body: Any) -> None:
        if cid in batch.done:
            return
        n = len(batch.done) + 1
        failing = self._failing.get(cid)
        if failing is not None:
            batch.done[cid] = (False, failing)
            return
        if batch.kind == "openai":
            batch.done[cid] = (True, chat_completion(body, self.reply, n))
            return
        params = body
        missing = [k for k in ("model", "max_tokens", "messages") if k not in params]
        if missing:
            batch.done[cid] = (False, (400, f"{missing[0]}: Field required"))
        else:
            batch.done[cid] = (True, anthropic_message(params, self.reply, n))

    def _advance(self, batch: Batch) -> None:
        """What time does to a batch between two looks at it."""
        if batch.status in _FINAL:
            return
        if batch.status in ("cancelling", "canceling"):
            self._end(batch, "cancelled")
            return
        if batch.kind == "openai" and batch.status == "validating":
            if batch.errors is not None:
                batch.status = "failed"
                batch.stamps["failed_at"] = time.time()
                return
            self._start(batch)
        if batch.held:
            return
        for cid, body in batch.lines:
            self._answer_line(batch, cid, body)
        self._end(batch, None)

    def _end(self, batch: Batch, why: str | None) -> None:
        now = time.time()
        batch.unfinished = why
        if batch.kind == "anthropic":
            batch.status = "ended"
            batch.stamps["ended_at"] = now
            return
        batch.stamps["finalizing_at"] = now
        out: list[bytes] = []
        err: list[bytes] = []
        for n, (cid, _) in enumerate(batch.lines):
            line_id = f"batch_req_{batch.id}_{n}"
            answered = batch.done.get(cid)
            if answered is not None and answered[0]:
                response = {"status_code": 200, "request_id": f"req_{n}", "body": answered[1]}
                out.append(self._jsonl(line_id, cid, response, None))
            elif answered is not None:
                status, message = answered[1]
                error = {"message": message, "type": "invalid_request_error", "param": None}
                response = {
                    "status_code": status,
                    "request_id": f"req_{n}",
                    "body": {"error": {**error, "code": None}},
                }
                err.append(self._jsonl(line_id, cid, response, None))
            else:
                code = "batch_expired" if why == "expired" else "batch_cancelled"
                message = EXPIRED_MESSAGE if why == "expired" else CANCELLED_MESSAGE
                err.append(self._jsonl(line_id, cid, None, {"code": code, "message": message}))
        if out:
            batch.output_file_id = self._store(f"{batch.id}_output.jsonl", out)
        if err:
            batch.error_file_id = self._store(f"{batch.id}_error.jsonl", err)
        batch.status = why or "completed"
        batch.stamps[f"{batch.status}_at"] = now

    @staticmethod
    def _jsonl(line_id: str, cid: str, response: Any, error: Any) -> bytes:
        line = {"id": line_id, "custom_id": cid, "response": response, "error": error}
        return json.dumps(line).encode()

    def _store(self, name: str, lines: list[bytes]) -> str:
        file_id = self._new_id("file-")
        content = b"\n".join(lines) + b"\n"
        self.uploads_out[file_id] = Upload(file_id, name, "batch_output", content, int(time.time()))
        return file_id

    # OpenAI objects ------------------------------------------------------------------------
    def _openai_json(self, batch: Batch) -> dict[str, Any]:
        failed = sum(1 for ok, _ in batch.done.values() if not ok)
        counts = {"total": len(batch.lines), "completed": len(batch.done) - failed}
        counts["failed"] = failed
        if batch.status == "validating":
            counts = {"total": 0, "completed": 0, "failed": 0}
        stamp = batch.stamps.get
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "errors": None if batch.errors is None else {"object": "list", "data": batch.errors},
            "input_file_id": batch.input_file_id,
            "completion_window": batch.completion_window,
            "status": batch.status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": int(batch.created_at),
            "in_progress_at": _int(stamp("in_progress_at")),
            "expires_at": int(batch.created_at) + 86_400,
            "finalizing_at": _int(stamp("finalizing_at")),
            "completed_at": _int(stamp("completed_at")),
            "failed_at": _int(stamp("failed_at")),
            "expired_at": _int(stamp("expired_at")),
            "cancelling_at": _int(stamp("cancelling_at")),
            "cancelled_at": _int(stamp("cancelled_at")),
            "request_counts": counts,
            "metadata": batch.metadata,
        }

    def _anthropic_json(self, batch: Batch) -> dict[str, Any]:
        ended = batch.status == "ended"
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if ended:
            for cid in batch.custom_ids:
                answered = batch.done.get(cid)
                if answered is None:
                    counts["expired" if batch.unfinished == "expired" else "canceled"] += 1
                else:
                    counts["succeeded" if answered[0] else "errored"] += 1
        else:
            counts["processing"] = len(batch.lines)
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": batch.status,
            "request_counts": counts,
            "created_at": rfc3339(batch.created_at),
            "expires_at": rfc3339(batch.created_at + 86_400),
            "ended_at": rfc3339(batch.stamps.get("ended_at")),
            "cancel_initiated_at": rfc3339(batch.stamps.get("cancel_initiated_at")),
            "archived_at": None,
            "results_url": f"{self.root}/v1/messages/batches/{batch.id}/results" if ended else None,
        }

    # serving ---------------------------------------------------------------------------------
    def _fault(self, request: web.Request) -> dict[str, Any] | None:
        where = f"{request.method} {request.path}"
        with self._lock:
            self.requests.append(
                {"method": request.method, "path": request.path, "headers": dict(request.headers)}
            )
            for fault in self._script:
                if where.startswith(fault.get("match", "")):
                    self._script.remove(fault)
                    return fault
        return None

    @staticmethod
    def _openai_error(
        status: int, message: str, headers: dict[str, str] | None = None, code: str | None = None
    ) -> web.Response:
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
        return web.json_response({"error": error}, status=status, headers=headers)

    @staticmethod
    def _anthropic_error(
        status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": None}
        return web.json_response(body, status=status, headers=headers)

    @web.middleware
    async def _gate(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        """Scripted faults and the keys, before any handler."""
        anthropic = request.path.startswith("/v1/messages/")
        error = self._anthropic_error if anthropic else self._openai_error
        fault = self._fault(request)
        if fault is not None and not fault.get("drop_after"):
            if fault.get("drop"):
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=500)
            status = int(fault["status"])
            return error(status, fault.get("error", f"scripted {status}"), fault.get("headers"))
        if anthropic:
            # The key in x-api-key (the API reference), or as a bearer token (anthropic>=2).
            given = request.headers.get("x-api-key") or request.headers.get("Authorization")
            if self.key is not None and given not in (self.key, f"Bearer {self.key}"):
                return error(401, "invalid x-api-key")
            if not request.headers.get("anthropic-version"):
                return error(400, "anthropic-version: header is required")
        elif self.key is not None and request.headers.get("Authorization") != f"Bearer {self.key}":
            return error(401, "Incorrect API key provided")
        response: web.StreamResponse = await handler(request)
        if fault is not None and fault.get("drop_after"):  # done, but the answer is lost
            assert request.transport is not None
            request.transport.close()
        return response

    async def _upload(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.received.append(raw)
        form = _form(request.headers.get("Content-Type", ""), raw)
        if form is None or "purpose" not in form or "file" not in form:
            return self._openai_error(400, "a multipart form with `file` and `purpose` is required")
        purpose, (filename, content) = form["purpose"][1], form["file"]
        with self._lock:
            file_id = self._new_id("file-")
            self.uploads[file_id] = Upload(
                file_id, filename or "upload", purpose.decode(), content, int(time.time())
            )
            return web.json_response(self.uploads[file_id].as_json())

    def _file(self, file_id: str) -> Upload | None:
        return self.uploads.get(file_id) or self.uploads_out.get(file_id)

    async def _file_info(self, request: web.Request) -> web.Response:
        found = self._file(request.match_info["file_id"])
        if found is None:
            return self._openai_error(404, "No such File object")
        return web.json_response(found.as_json())

    async def _file_content(self, request: web.Request) -> web.Response:
        found = self._file(request.match_info["file_id"])
        if found is None:
            return self._openai_error(404, "No such File object")
        return web.Response(body=found.content, content_type="application/octet-stream")

    async def _create_openai(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self._openai_error(400, "the body is not JSON")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if name not in body:
                return self._openai_error(400, f"Missing required parameter: '{name}'.")
        if body["endpoint"] != "/v1/chat/completions":
            return self._openai_error(400, "this server batches /v1/chat/completions only")
        if body["completion_window"] != "24h":
            return self._openai_error(400, "completion_window must be '24h'")
        metadata = body.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, dict)
            or len(metadata) > 16
            or any(
                len(k) > 64 or not isinstance(v, str) or len(v) > 512 for k, v in metadata.items()
            )
        ):
            return self._openai_error(400, "metadata: at most 16 string pairs (64/512 chars)")
        with self._lock:
            upload = self.uploads.get(body["input_file_id"])
            if upload is None:
                return self._openai_error(404, "No such File object")
            if upload.purpose != "batch":
                return self._openai_error(400, "the input file's purpose must be 'batch'")
            lines, errors = self._parse_input(upload.content, body["endpoint"])
            if self._rejects:
                message, code = self._rejects.popleft()
                errors = [{"code": code, "message": message, "param": None, "line": None}]
            batch = Batch(
                self._new_id("batch_"),
                "openai",
                lines,
                time.time(),
                metadata=metadata,
                input_file_id=upload.id,
                held=self.hold,
                errors=errors or None,
            )
            self.batches[batch.id] = batch
            return web.json_response(self._openai_json(batch))

    def _parse_input(self, content: bytes, endpoint: str) -> tuple[list[tuple[str, Any]], Any]:
        """The lines of an input file, and the errors that make OpenAI fail the batch."""
        lines: list[tuple[str, Any]] = []
        seen: set[str] = set()
        errors: list[dict[str, Any]] = []
        models: set[Any] = set()
        for number, raw in enumerate(content.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                cid, url, body = line["custom_id"], line["url"], line["body"]
                method = line["method"]
            except (ValueError, KeyError, TypeError):
                errors.append(_line_error("invalid_json_line", "not a valid request line", number))
                continue
            if method != "POST" or url != endpoint:
                errors.append(_line_error("invalid_url", f"url must be {endpoint}", number))
            elif cid in seen:
                errors.append(_line_error("duplicate_custom_id", "duplicate custom_id", number))
            seen.add(cid)
            models.add(body.get("model"))
            lines.append((cid, body))
        if len(models) > 1:
            errors.append(_line_error("mismatched_model", "one model per file", None))
        limit = min(OPENAI_MAX_REQUESTS, self.max_requests or OPENAI_MAX_REQUESTS)
        if len(lines) > limit:
            errors.append(_line_error("too_many_requests", f"over {limit} requests", None))
        if not lines and not errors:
            errors.append(_line_error("empty_file", "the input file is empty", None))
        return lines, errors

    async def _retrieve_openai(self, request: web.Request) -> web.Response:
        with self._lock:
            batch = self.batches.get(request.match_info["batch_id"])
            if batch is None or batch.kind != "openai":
                return self._openai_error(404, "No batch found")
            self._advance(batch)
            return web.json_response(self._openai_json(batch))

    async def _list_openai(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", 20))
        if not 1 <= limit <= 100:
            return self._openai_error(400, "limit must be between 1 and 100")
        with self._lock:
            newest = [b for b in reversed(self.batches.values()) if b.kind == "openai"]
            after = request.query.get("after")
            if after is not None:
                ids = [b.id for b in newest]
                newest = newest[ids.index(after) + 1 :] if after in ids else []
            page = newest[:limit]
            for batch in page:
                self._advance(batch)
            data = [self._openai_json(b) for b in page]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": len(newest) > limit,
            }
        )

    async def _cancel_openai(self, request: web.Request) -> web.Response:
        with self._lock:
            batch = self.batches.get(request.match_info["batch_id"])
            if batch is None or batch.kind != "openai":
                return self._openai_error(404, "No batch found")
            if batch.status in ("validating", "in_progress", "finalizing"):
                batch.status = "cancelling"
                batch.stamps["cancelling_at"] = time.time()
            elif batch.status not in ("cancelling", "cancelled"):
                return self._openai_error(
                    400, f"Cannot cancel a batch with status '{batch.status}'."
                )
            return web.json_response(self._openai_json(batch))

    # Anthropic ------------------------------------------------------------------------------
    async def _create_anthropic(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.received.append(raw)
        try:
            body = json.loads(raw)
        except ValueError:
            return self._anthropic_error(400, "the body is not JSON")
        requests = body.get("requests") if isinstance(body, dict) else None
        extra = set(body) - {"requests"} if isinstance(body, dict) else set()
        if extra:
            return self._anthropic_error(400, f"{sorted(extra)[0]}: Extra inputs are not permitted")
        if not isinstance(requests, list) or not requests:
            return self._anthropic_error(400, "requests: a non-empty list is required")
        limit = min(ANTHROPIC_MAX_REQUESTS, self.max_requests or ANTHROPIC_MAX_REQUESTS)
        if len(requests) > limit:
            return self._anthropic_error(400, f"requests: at most {limit} requests")
        lines: list[tuple[str, Any]] = []
        seen: set[str] = set()
        for n, item in enumerate(requests):
            cid = item.get("custom_id") if isinstance(item, dict) else None
            if not isinstance(cid, str) or not CUSTOM_ID.match(cid):
                return self._anthropic_error(
                    400,
                    f"requests.{n}.custom_id: String should match pattern '{CUSTOM_ID.pattern}'",
                )
            if cid in seen:
                return self._anthropic_error(400, f"requests.{n}.custom_id: duplicate {cid!r}")
            if not isinstance(item.get("params"), dict):
                return self._anthropic_error(400, f"requests.{n}.params: Field required")
            seen.add(cid)
            lines.append((cid, item["params"]))
        with self._lock:
            if self._rejects:
                message, _ = self._rejects.popleft()
                return self._anthropic_error(400, message)
            batch = Batch(
                self._new_id("msgbatch_"),
                "anthropic",
                lines,
                time.time(),
                status="in_progress",
                held=self.hold,
            )
            self.batches[batch.id] = batch
            return web.json_response(self._anthropic_json(batch))

    def _anthropic_batch(self, request: web.Request) -> Batch | None:
        batch = self.batches.get(request.match_info["batch_id"])
        return batch if batch is not None and batch.kind == "anthropic" else None

    async def _retrieve_anthropic(self, request: web.Request) -> web.Response:
        with self._lock:
            batch = self._anthropic_batch(request)
            if batch is None:
                return self._anthropic_error(404, "message batch not found")
            self._advance(batch)
            return web.json_response(self._anthropic_json(batch))

    async def _list_anthropic(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", 20))
        if not 1 <= limit <= 1000:
            return self._anthropic_error(400, "limit must be between 1 and 1000")
        with self._lock:
            newest = [b for b in reversed(self.batches.values()) if b.kind == "anthropic"]
            ids = [b.id for b in newest]
            after, before = request.query.get("after_id"), request.query.get("before_id")
            if after is not None:
                newest = newest[ids.index(after) + 1 :] if after in ids else []
                more = len(newest) > limit
                page = newest[:limit]
            elif before is not None:
                newest = newest[: ids.index(before)] if before in ids else []
                more = len(newest) > limit
                page = newest[-limit:]
            else:
                more = len(newest) > limit
                page = newest[:limit]
            for batch in page:
                self._advance(batch)
            data = [self._anthropic_json(b) for b in page]
        return web.json_response(
            {
                "data": data,
                "has_more": more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def _cancel_anthropic(self, request: web.Request) -> web.Response:
        with self._lock:
            batch = self._anthropic_batch(request)
            if batch is None:
                return self._anthropic_error(404, "message batch not found")
            if batch.status == "in_progress":
                batch.status = "canceling"
                batch.stamps["cancel_initiated_at"] = time.time()
            return web.json_response(self._anthropic_json(batch))

    async def _results_anthropic(self, request: web.Request) -> web.Response:
        with self._lock:
            batch = self._anthropic_batch(request)
            if batch is None:
                return self._anthropic_error(404, "message batch not found")
            if batch.status != "ended":
                return self._anthropic_error(400, "the batch is still processing")
            out: list[bytes] = []
            for cid in batch.custom_ids:
                answered = batch.done.get(cid)
                result: dict[str, Any]
                if answered is None:
                    result = {"type": "expired" if batch.unfinished == "expired" else "canceled"}
                elif answered[0]:
                    result = {"type": "succeeded", "message": answered[1]}
                else:
                    status, message = answered[1]
                    kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
                    error = {"type": kind, "message": message}
                    result = {
                        "type": "errored",
                        "error": {"type": "error", "error": error, "request_id": None},
                    }
                out.append(json.dumps({"custom_id": cid, "result": result}).encode())
        return web.Response(body=b"\n".join(out) + b"\n", content_type="application/x-jsonl")

    # lifecycle -------------------------------------------------------------------------------
    def _app(self) -> web.Application:
        app = web.Application(client_max_size=300 * 1024 * 1024, middlewares=[self._gate])
        routes = app.router
        routes.add_post("/v1/files", self._upload)
        routes.add_get("/v1/files/{file_id}", self._file_info)
        routes.add_get("/v1/files/{file_id}/content", self._file_content)
        routes.add_post("/v1/batches", self._create_openai)
        routes.add_get("/v1/batches", self._list_openai)
        routes.add_get("/v1/batches/{batch_id}", self._retrieve_openai)
        routes.add_post("/v1/batches/{batch_id}/cancel", self._cancel_openai)
        routes.add_post("/v1/messages/batches", self._create_anthropic)
        routes.add_get("/v1/messages/batches", self._list_anthropic)
        routes.add_get("/v1/messages/batches/{batch_id}", self._retrieve_anthropic)
        routes.add_post("/v1/messages/batches/{batch_id}/cancel", self._cancel_anthropic)
        routes.add_get("/v1/messages/batches/{batch_id}/results", self._results_anthropic)
        return app


def _form(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]] | None:
    """The fields of a multipart/form-data body ({name: (filename, bytes)}), read by the
    standard library's MIME parser (strictly: a body it cannot read is None)."""
    if not content_type.startswith("multipart/form-data"):
        return None
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + raw)
    if not message.is_multipart() or message.defects:
        return None
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(payload, bytes):
            return None
        fields[name] = (part.get_filename(), payload)
    return fields


def _int(t: float | None) -> int | None:
    return None if t is None else int(t)


def _line_error(code: str, message: str, line: int | None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": line}


def main() -> None:
    """`python -m tests.batch_server`: the server in a process of its own (the benchmarks run it
    so, apart from the driver's GIL); prints its OpenAI base URL, then answers `stats` on stdin
    with the batches, uploads and lines it got, until stdin closes."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--key", default=None)
    args = parser.parse_args()
    server = BatchServer(key=args.key).start(args.port)
    print(server.url, flush=True)
    try:
        for line in iter(input, "quit"):
            if line == "stats":
                stats = {
                    "batches": len(server.batches),
                    "uploads": len(server.uploads),
                    "lines_per_batch": server.lines_per_batch,
                    "requests": len(server.requests),
                }
                print(json.dumps(stats), flush=True)
    except EOFError:
        pass
    server.stop()


if __name__ == "__main__":
    main()
