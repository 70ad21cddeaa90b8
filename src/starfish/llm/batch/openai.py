"""OpenAI's Batch API (and any server implementing it: Groq, Together, a `base_url=`): upload
a JSONL file of request lines (`POST /files`, purpose `batch`), create the batch
(`POST /batches`, endpoint `/v1/chat/completions`, window `24h`, metadata naming the job),
poll it, read its output and error files, cancel it, and find a job's batches again.

Every batch also carries a random `starfish_submit` token in its metadata: a create whose
answer was lost (or was a 5xx) is looked up by it before it is sent again, so a flaky
connection cannot pay for a batch twice.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from starfish.llm.batch.base import BatchAPI
from starfish.llm.batch.common import (
    BatchRef,
    BatchResult,
    BatchState,
    BatchStatus,
    SubmitUncertain,
    check_custom_id,
    check_lines,
)
from starfish.llm.batch.http import BatchHTTP
from starfish.llm.batch.multipart import multipart
from starfish.llm.batch.split import split_lines
from starfish.llm.errors import LLMConfigError, LLMRequestError, LLMTransientError
from starfish.llm.transport import Response, Transport

__all__ = ["ENDPOINT", "OpenAIBatchClient"]

ENDPOINT = "/v1/chat/completions"
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
SUBMIT_TOKEN = "starfish_submit"
"""The metadata key of the token that identifies one `submit` call."""
_STATES: dict[str, BatchState] = {
    "validating": "running",
    "in_progress": "running",
    "finalizing": "running",
    "cancelling": "running",
    "completed": "ended",
    "expired": "expired",
    "failed": "failed",
    "cancelled": "cancelled",
}
_UNFINISHED_CODES = {"batch_expired", "batch_cancelled"}
"""Error-file codes of lines that never ran (OpenAI writes the unfinished lines of an
expired or cancelled batch to the error file with these)."""
_LIST_PAGE = 100


class OpenAIBatchClient(BatchAPI):
    """OpenAI's Files and Batches endpoints under `base_url` (which ends in `/v1`)."""

    provider = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        transport: Transport | None = None,
        max_requests: int = MAX_REQUESTS,
        max_bytes: int = MAX_BYTES,
        max_retries: int = 8,
        retry_base: float = 1.0,
        retry_cap: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_requests = min(max_requests, MAX_REQUESTS)
        self.max_bytes = min(max_bytes, MAX_BYTES)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._key = api_key
        self._http = BatchHTTP(
            headers,
            api_key,
            transport,
            max_retries=max_retries,
            retry_base=retry_base,
            retry_cap=retry_cap,
        )

    def __repr__(self) -> str:  # never the key
        return f"OpenAIBatchClient({self.base_url!r})"

    @property
    def _batches(self) -> str:
        return f"{self.base_url}/batches"

    def encode(self, custom_id: str, body: Mapping[str, Any]) -> bytes:
        check_custom_id(custom_id)
        line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
        return json.dumps(line, separators=(",", ":")).encode()

    def split(self, lines: Sequence[bytes]) -> list[Sequence[bytes]]:
        """`lines` cut into files under this client's limits (a newline after each line)."""
        return split_lines(lines, self.max_requests, self.max_bytes)

    async def submit(self, lines: Sequence[bytes], metadata: Mapping[str, str]) -> BatchRef:
        """Upload the lines as one file and create a batch of it. The key goes in the
        headers only: a line holding it is refused."""
        check_lines(lines, self.max_requests, self.max_bytes, self._key)
        token = secrets.token_hex(12)
        tags = {**_check_metadata(metadata), SUBMIT_TOKEN: token}
        body, content_type = multipart({"purpose": "batch"}, "file", "batch.jsonl", lines)
        uploaded = await self._http.send("POST", f"{self.base_url}/files", body, content_type)
        file_id = str(uploaded["id"])
        started = time.time()
        payload = {
            "input_file_id": file_id,
            "endpoint": ENDPOINT,
            "completion_window": "24h",
            "metadata": tags,
        }

        async def recover() -> dict[str, Any] | None:
            found = await self._listed(SUBMIT_TOKEN, token, started - 60)
            return found[0] if found else None

        try:
            created = await self._http.json("POST", self._batches, payload, recover=recover)
        except LLMTransientError as exc:
            found = await recover()
            if found is None:
                raise SubmitUncertain(
                    f"creating the batch went unanswered ({exc}); it may exist: find it by "
                    f"its metadata before submitting again",
                    created_after=started - 60,
                ) from None
            created = found
        return replace(self._ref(created), requests=len(lines))  # counts are 0 while validating

    async def results(self, ref: BatchRef) -> AsyncIterator[BatchResult]:
        """The lines of the output file (answers) and of the error file (failed lines, and the
        unfinished ones of an expired or cancelled batch). Lines absent from both never ran.
        Nothing while the batch runs, nothing for a rejected batch."""
        batch = await self._batch(ref)
        if self._status(batch).state in ("running", "failed"):
            return
        for file_id in (batch.get("output_file_id"), batch.get("error_file_id")):
            if not file_id:
                continue
            answer: Response = await self._http.send(
                "GET", f"{self.base_url}/files/{file_id}/content", parse=False
            )
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
        """The batches whose metadata has `key` = `value` (newest first), created after
        `created_after` when given (the listing stops there); `requests` is not needed: the
        metadata names the job exactly."""
        return [self._ref(b) for b in await self._listed(key, value, created_after)]

    # ----------------------------------------------------------------------------------------
    async def _listed(
        self, key: str, value: str, created_after: float | None
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            query = f"?limit={_LIST_PAGE}" + (f"&after={after}" if after else "")
            page = await self._http.json("GET", self._batches + query)
            batches = [b for b in page.get("data") or [] if isinstance(b, dict)]
            for batch in batches:
                if created_after is not None and _number(batch.get("created_at")) < created_after:
                    return found  # newest first: the rest are older still
                if (batch.get("metadata") or {}).get(key) == value:
                    found.append(batch)
            if not batches or not page.get("has_more"):
                return found
            after = str(batches[-1]["id"])

    def _ref(self, batch: Mapping[str, Any]) -> BatchRef:
        """The reference of a listed batch (`requests` is 0 while OpenAI validates it)."""
        counts = batch.get("request_counts") or {}
        return BatchRef(
            provider=self.provider,
            batch_id=str(batch["id"]),
            created_at=_number(batch.get("created_at")),
            requests=int(counts.get("total") or 0),
            input_file_id=batch.get("input_file_id"),
        )

    def _status(self, batch: Mapping[str, Any]) -> BatchStatus:
        raw = str(batch.get("status"))
        state = _STATES.get(raw)
        if state is None:
            raise LLMRequestError(f"{self.base_url}/batches: unknown batch status {raw!r}")
        counts = batch.get("request_counts") or {}
        total, done = int(counts.get("total") or 0), int(counts.get("completed") or 0)
        failed = int(counts.get("failed") or 0)
        reason = None
        if state == "failed":
            errors = (batch.get("errors") or {}).get("data") or []
            reason = "; ".join(_error_text(e) for e in errors if isinstance(e, dict))
            reason = self._http.scrub(reason or "the provider gave no reason")
        ended = next(
            (
                _number(batch[k])
                for k in ("completed_at", "expired_at", "failed_at", "cancelled_at")
                if batch.get(k)
            ),
            None,
        )
        return BatchStatus(
            state=state,
            provider_status=raw,
            total=total,
            succeeded=done,
            failed=failed,
            unfinished=max(0, total - done - failed) if state in ("expired", "cancelled") else 0,
            reason=reason,
            ended_at=ended,
        )


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _error_text(error: Mapping[str, Any]) -> str:
    text = f"{error.get('code') or 'error'}: {error.get('message') or ''}".strip()
    return f"{text} (line {error['line']})" if error.get("line") else text


def _result(raw: str) -> BatchResult | None:
    """One line of an output or error file; None for a line that cannot be read (it counts as
    unfinished: the job submits it again)."""
    try:
        line = json.loads(raw)
        custom_id = str(line["custom_id"])
    except (ValueError, KeyError, TypeError):
        return None
    response, error = line.get("response"), line.get("error")
    if isinstance(response, dict):
        status = int(response.get("status_code") or 0)
        body = response.get("body")
        if status == 200 and isinstance(body, dict):
            return BatchResult(custom_id, True, body)
        detail = body.get("error") if isinstance(body, dict) else None
        detail = detail if isinstance(detail, dict) else {"message": str(body)}
        return BatchResult(custom_id, False, {"error": {**detail, "status": status or None}})
    detail = error if isinstance(error, dict) else {"message": str(error)}
    unfinished = detail.get("code") in _UNFINISHED_CODES
    return BatchResult(custom_id, False, {"error": {**detail, "status": None}}, unfinished)


def _check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    tags = dict(metadata)
    if len(tags) > 15 or any(
        not isinstance(k, str) or not isinstance(v, str) or len(k) > 64 or len(v) > 512
        for k, v in tags.items()
    ):
        raise LLMConfigError(
            "batch metadata: at most 15 string pairs, keys up to 64 and values up to 512 "
            "characters (one more pair is starfish's own)"
        )
    if SUBMIT_TOKEN in tags:
        raise LLMConfigError(f"batch metadata: {SUBMIT_TOKEN!r} is starfish's own key")
    return tags
