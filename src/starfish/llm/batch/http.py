"""The requests of the batch clients: sent through the model layer's transport, retried with
backoff on 429, 5xx and lost answers, and turned into the model layer's errors with the key
scrubbed from every message.

A request that creates something (a batch) is not blindly repeated after a lost answer or a
5xx (the provider may have created it): the caller's `recover` looks for it first.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starfish._backoff import backoff
from starfish.llm.batch.common import SubmitUncertain
from starfish.llm.errors import (
    MAX_MESSAGE,
    LLMAuthError,
    LLMRateLimitError,
    LLMRequestError,
    LLMTransientError,
    LLMUnreachableError,
    scrub,
)
from starfish.llm.transport import (
    AiohttpTransport,
    BodyTooLarge,
    ConnectFailed,
    Request,
    Response,
    TooManyOpenFiles,
    Transport,
    TransportFailed,
)

__all__ = ["BatchHTTP"]

MAX_FILE = 1 << 30
"""Bytes a batch endpoint's answer may hold: a results file of 50,000 lines is 50-75 MB, far
over the 16 MB a chat completion may be (`transport.MAX_BODY`)."""
_RETRIED = frozenset({408, 425, 429, 500, 502, 503, 504, 529})
"""Statuses worth another try (529: Anthropic's "overloaded")."""


def _message(data: Any) -> str:
    """The human part of an error body: OpenAI's `error.message`, Anthropic's
    `error.message` inside `{"type": "error", "error": {...}}`."""
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err.get("type") or err)
        if err:
            return str(err)
    return str(data)


def _hinted_wait(headers: Mapping[str, str]) -> float:
    """Seconds the server asked to wait (`retry-after-ms`, `retry-after`), or 0."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return max(0.0, float(lowered[name]) * scale)
        except (KeyError, ValueError):
            continue
    return 0.0


class BatchHTTP:
    """One provider account's batch endpoints: the headers carrying the key, the retries."""

    def __init__(
        self,
        headers: Mapping[str, str],
        key: str | None,
        transport: Transport | None = None,
        *,
        max_retries: int = 8,
        retry_base: float = 1.0,
        retry_cap: float = 60.0,
        timeout: float = 600.0,
    ) -> None:
        self.headers = dict(headers)
        self.key = key
        self.transport: Transport = transport if transport is not None else AiohttpTransport()
        self.max_retries = max_retries
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.timeout = timeout

    def scrub(self, text: str, limit: int = MAX_MESSAGE) -> str:
        return scrub(text, self.key, limit)

    async def json(
        self,
        method: str,
        url: str,
        payload: Any = None,
        *,
        recover: Callable[[], Awaitable[Any]] | None = None,
    ) -> Any:
        """The JSON answer to a request with a JSON body (or none)."""
        body = None if payload is None else json.dumps(payload).encode()
        return await self.send(method, url, body, "application/json", recover=recover)

    async def send(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        content_type: str | None = None,
        *,
        recover: Callable[[], Awaitable[Any]] | None = None,
        parse: bool = True,
        once: bool = False,
    ) -> Any:
        """The answer to one request: parsed JSON (or the `Response` when not `parse`), after
        the retries. With `recover`, a lost answer or a 5xx may mean the request was carried
        out: `recover()` is asked before each new try, and what it finds is the answer. With
        `once` (a create nothing can look up), a lost answer raises `SubmitUncertain`."""
        headers = dict(self.headers)
        if content_type is not None and body is not None:
            headers["Content-Type"] = content_type
        request = Request(method, url, headers, body, self.timeout, MAX_FILE)
        failures = limited = 0
        started = time.time() - 60  # the provider's clock may be a little behind
        while True:
            what: str
            wait = 0.0
            uncertain = False  # the request may have been carried out
            try:
                answer: Response = await self.transport.send(request)
            except (TransportFailed, ConnectFailed, TooManyOpenFiles) as exc:
                what = f"no answer ({self.scrub(str(exc)) or type(exc).__name__})"
                uncertain = isinstance(exc, TransportFailed)
                if uncertain and once:
                    raise SubmitUncertain(
                        f"{self._where(url)} sent no answer ({exc or type(exc).__name__}): the "
                        "batch may exist; find it before submitting again",
                        created_after=started,
                    ) from None
                failures += 1
                if isinstance(exc, ConnectFailed) and failures > self.max_retries:
                    raise LLMUnreachableError(
                        f"cannot reach {self._where(url)}: {self.scrub(str(exc))}"
                    ) from None
            except BodyTooLarge as exc:
                raise LLMRequestError(f"{self._where(url)} {self.scrub(str(exc))}") from None
            else:
                status = answer.status
                if 200 <= status < 300:
                    if not parse:
                        return answer
                    data = answer.data()
                    if not isinstance(data, dict):
                        raise LLMRequestError(
                            f"{self._where(url)} answered {status} with a body that is not a "
                            f"JSON object: {self.scrub(str(data), 200)}"
                        )
                    return data
                data = answer.data()
                message = self.scrub(_message(data))
                quota = "insufficient_quota" in answer.text
                if status in (401, 403) or (status == 429 and quota):
                    what = "has no quota left" if quota else "refused the API key"
                    raise LLMAuthError(f"{self._where(url)} {what} (HTTP {status}): {message}")
                if status not in _RETRIED:
                    raise LLMRequestError(f"{self._where(url)} answered HTTP {status}: {message}")
                what = f"HTTP {status}: {message}"
                wait = _hinted_wait(answer.headers)
                if status == 429:
                    limited += 1
                else:
                    failures += 1
                    uncertain = status >= 500
            if failures + limited > self.max_retries:
                error = LLMRateLimitError if failures == 0 else LLMTransientError
                raise error(
                    f"{self._where(url)}: {what}, after {self.max_retries} retries",
                    retry_after=self.retry_cap,
                )
            attempt = failures + limited
            await asyncio.sleep(
                min(self.retry_cap, max(wait, backoff(attempt, self.retry_base, self.retry_cap)))
            )
            if recover is not None and uncertain:
                found = await recover()
                if found is not None:
                    return found

    @staticmethod
    def _where(url: str) -> str:
        """The endpoint named in errors: scheme, host and path, never a query string."""
        return url.split("?", 1)[0]
