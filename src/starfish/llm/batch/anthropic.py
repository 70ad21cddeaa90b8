"""Anthropic's Message Batches API: create a batch of Messages API requests
(`POST /v1/messages/batches`), poll it, read its `results_url`, cancel it, and find a job's
batches again; headers `x-api-key` and `anthropic-version: 2023-06-01`.

Request lines are chat-completions bodies translated by `translate.messages_params` (system
messages to `system`, `max_tokens` defaulting to 1024, a JSON schema asked by a forced tool);
results come back as chat completions (`translate.chat_completion`).

Anthropic keeps no metadata on a batch, so `find` cannot match a job's name: it picks the
batches created after a time with a given number of requests (the job records both before it
submits), and the job checks the custom_ids of their results against its own. For the same
reason a create whose answer was lost is not sent again: `SubmitUncertain` tells the job to
find it first.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from starfish.llm.batch.base import BatchAPI
from starfish.llm.batch.common import (
    BatchRef,
    BatchResult,
    BatchState,
    BatchStatus,
    check_custom_id,
    check_lines,
)
from starfish.llm.batch.http import BatchHTTP
from starfish.llm.batch.split import split_lines
from starfish.llm.batch.translate import (
    DEFAULT_MAX_TOKENS,
    ERROR_STATUS,
    chat_completion,
    messages_params,
)
from starfish.llm.errors import LLMConfigError, LLMRequestError
from starfish.llm.transport import Response, Transport

__all__ = ["AnthropicBatchClient"]

BASE_URL = "https://api.anthropic.com"
VERSION = "2023-06-01"
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
_WRAP = len(b'{"requests":[]}')
"""Bytes of the create request around its lines (a comma after each but the last)."""
_LIST_PAGE = 100
_FRACTION = re.compile(r"(\.\d{6})\d+")


class AnthropicBatchClient(BatchAPI):
    """Anthropic's Message Batches under `base_url` (default `ANTHROPIC_BASE_URL`, else
    https://api.anthropic.com; a trailing `/v1` is dropped)."""

    provider = "anthropic"

    def __init__(
        self,
        api_key: str | None,
        base_url: str | None = None,
        *,
        transport: Transport | None = None,
        max_requests: int = MAX_REQUESTS,
        max_bytes: int = MAX_BYTES,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        max_retries: int = 8,
        retry_base: float = 1.0,
        retry_cap: float = 60.0,
    ) -> None:
        base = (base_url or os.environ.get("ANTHROPIC_BASE_URL") or BASE_URL).rstrip("/")
        self.base_url = base.removesuffix("/v1")
        self.max_requests = min(max_requests, MAX_REQUESTS)
        self.max_bytes = min(max_bytes, MAX_BYTES)
        self.default_max_tokens = default_max_tokens
        self._key = api_key
        headers = {"anthropic-version": VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        self._http = BatchHTTP(
            headers,
            api_key,
            transport,
            max_retries=max_retries,
            retry_base=retry_base,
            retry_cap=retry_cap,
        )

    def __repr__(self) -> str:  # never the key
        return f"AnthropicBatchClient({self.base_url!r})"

    @property
    def _batches(self) -> str:
        return f"{self.base_url}/v1/messages/batches"

    def encode(self, custom_id: str, body: Mapping[str, Any]) -> bytes:
        check_custom_id(custom_id)
        params = messages_params(body, self.default_max_tokens)
        return json.dumps(
            {"custom_id": custom_id, "params": params}, separators=(",", ":")
        ).encode()

    def split(self, lines: Sequence[bytes]) -> list[Sequence[bytes]]:
        """`lines` cut into create requests under this client's limits."""
        return split_lines(lines, self.max_requests, self.max_bytes, _WRAP)

    async def submit(self, lines: Sequence[bytes], metadata: Mapping[str, str]) -> BatchRef:
        """Create one batch of these lines. `metadata` is not sent: Message Batches have none
        (see `find`)."""
        check_lines(lines, self.max_requests, self.max_bytes, self._key, _WRAP)
        body = b'{"requests":[' + b",".join(lines) + b"]}"
        created = await self._http.send("POST", self._batches, body, "application/json", once=True)
        return self._ref(created)

    async def results(self, ref: BatchRef) -> AsyncIterator[BatchResult]:
        """Each line's result from `results_url` (there once the batch has ended): answers as
        chat completions, `errored` lines as failed, `expired` and `canceled` ones as
        unfinished. Nothing while the batch runs."""
        batch = await self._batch(ref)
        url = batch.get("results_url")
        if batch.get("processing_status") != "ended" or not url:
            return
        if _origin(str(url)) != _origin(self.base_url):
            raise LLMRequestError(
                f"{self._batches}: the results of {ref.batch_id} are at another host "
                f"({_origin(str(url))}); the API key is not sent there"
            )
        answer: Response = await self._http.send("GET", str(url), parse=False)
        for raw in answer.text.splitlines():
            result = _result(raw)
            if result is not None:
                yield self._scrubbed(result)

    async def find(
        self,
        key: str,
        value: str,
        *,
        created_after: float | None = None,
        requests: int | None = None,
    ) -> list[BatchRef]:
        """The batches (newest first) created at or after `created_after` holding `requests`
        lines: Anthropic keeps no metadata, so `key` and `value` cannot be matched and at
        least one of the two hints is required."""
        if created_after is None and requests is None:
            raise LLMConfigError(
                "Anthropic batches carry no metadata: find() needs created_after= or requests="
            )
        found: list[BatchRef] = []
        after: str | None = None
        while True:
            query = f"?limit={_LIST_PAGE}" + (f"&after_id={after}" if after else "")
            page = await self._http.json("GET", self._batches + query)
            batches = [b for b in page.get("data") or [] if isinstance(b, dict)]
            for batch in batches:
                ref = self._ref(batch)
                if created_after is not None and ref.created_at < created_after:
                    return found  # newest first: the rest are older still
                if requests is None or ref.requests == requests:
                    found.append(ref)
            if not batches or not page.get("has_more"):
                return found
            after = str(page.get("last_id") or batches[-1]["id"])

    # ----------------------------------------------------------------------------------------
    def _ref(self, batch: Mapping[str, Any]) -> BatchRef:
        counts = batch.get("request_counts") or {}
        return BatchRef(
            provider=self.provider,
            batch_id=str(batch["id"]),
            created_at=_timestamp(batch.get("created_at")) or 0.0,
            requests=sum(int(v or 0) for v in counts.values()),
        )

    def _status(self, batch: Mapping[str, Any]) -> BatchStatus:
        raw = str(batch.get("processing_status"))
        counts = {k: int(v or 0) for k, v in (batch.get("request_counts") or {}).items()}
        unfinished = counts.get("expired", 0) + counts.get("canceled", 0)
        state: BatchState
        if raw in ("in_progress", "canceling"):
            state = "running"
        elif raw != "ended":
            raise LLMRequestError(f"{self._batches}: unknown processing_status {raw!r}")
        elif counts.get("expired", 0):
            state = "expired"
        elif batch.get("cancel_initiated_at"):
            state = "cancelled"
        else:
            state = "ended"
        return BatchStatus(
            state=state,
            provider_status=raw,
            total=sum(counts.values()),
            succeeded=counts.get("succeeded", 0),
            failed=counts.get("errored", 0),
            unfinished=unfinished,
            ended_at=_timestamp(batch.get("ended_at")),
        )


def _timestamp(value: Any) -> float | None:
    """Seconds since the epoch of an RFC 3339 time (Python 3.10 reads neither `Z` nor more
    than six digits of fraction)."""
    if not isinstance(value, str) or not value:
        return None
    text = _FRACTION.sub(r"\1", value.replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _result(raw: str) -> BatchResult | None:
    """One line of the results file; None for a line that cannot be read (it counts as
    unfinished: the job submits it again)."""
    try:
        line = json.loads(raw)
        custom_id, result = str(line["custom_id"]), line["result"]
        kind = result["type"]
    except (ValueError, KeyError, TypeError):
        return None
    if kind == "succeeded" and isinstance(result.get("message"), dict):
        return BatchResult(custom_id, True, chat_completion(result["message"]))
    if kind == "errored":
        outer = result.get("error")
        outer = outer if isinstance(outer, dict) else {}
        inner = outer.get("error")
        inner = inner if isinstance(inner, dict) else outer
        error_type = str(inner.get("type") or "api_error")
        error = {
            "message": str(inner.get("message") or error_type),
            "type": error_type,
            "code": None,
            "status": ERROR_STATUS.get(error_type),
        }
        return BatchResult(custom_id, False, {"error": error})
    message = f"the batch {'expired' if kind == 'expired' else 'was cancelled'} first"
    error = {"message": message, "type": kind, "code": f"batch_{kind}", "status": None}
    return BatchResult(custom_id, False, {"error": error}, unfinished=True)
