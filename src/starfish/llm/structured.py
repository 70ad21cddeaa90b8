"""StructuredLLM: a prompt template and an output schema in, validated records out.

One `run()` is one logical call: it renders the prompt, asks the server for structured
output in the best mode the endpoint accepts, parses and validates the records and re-asks
with the error when they do not fit. Under it every HTTP request passes the endpoint's
limiter, is retried on 429/5xx/timeouts inside the layer, and is counted; inside a job each
response is cached in the job database before it is returned.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

from starfish.llm.errors import (
    LLMAuthError,
    LLMConfigError,
    LLMOutputError,
    LLMRateLimitError,
    LLMRequestError,
    LLMTransientError,
    LLMUnreachableError,
)

MODES = ("json_schema", "json_object", "prompt")
"""Structured-output modes, best first; a 400 for one moves the endpoint to the next."""
DEFAULT_COMPLETION_ESTIMATE = 512
"""Tokens reserved for the answer when `max_tokens` is not set."""
MAX_RATE_LIMITED = 50
"""429s in a row for one request before the layer gives up (with `retry_after`)."""
RETRY_BASE_DELAY = 0.25
RETRY_MAX_DELAY = 20.0
UNREACHABLE_MEMORY = 10.0
"""Seconds a failed first connection to a base URL is remembered: the calls of a job that
start together get the same error instead of each trying again."""
REASK = (
    "Your previous answer could not be used: {error}. "
    "Answer again with only the JSON, matching the schema."
)
_RESERVED = ("model", "messages", "stream", "response_format")

_modes: dict[tuple[str, str], str] = {}
_unreachable: dict[str, tuple[float, str]] = {}


@dataclass
class LLMResponse:
    """What `run()` returns. `usage` and `cost` count every request this call sent (re-asks
    and retries included; a cache hit sent none); `cost` is None when the price is unknown."""

    data: list[dict[str, Any]]
    raw: Any
    usage: dict[str, int] = field(default_factory=dict)
    cost: float | None = None
    cached: bool = False


class _Unsupported(Exception):
    """The server answered 400 to the structured-output mode."""


class _ModeChanged(Exception):
    """Another call moved the endpoint to another mode while this one waited to send."""


_UNSUPPORTED = "starfish_unsupported_mode"
"""Cached in place of an answer when the server refused the request's mode (400)."""


def _advance(endpoint: tuple[str, str], mode: str | None) -> None:
    """The server refused `mode`: the endpoint uses the next one from now on (never back)."""
    if mode is None or mode == MODES[-1]:
        return
    i = MODES.index(mode)
    if MODES.index(_modes.get(endpoint, MODES[0])) <= i:
        _modes[endpoint] = MODES[i + 1]


def _server_message(data: Any) -> str:
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err.get("code") or err)[:500]
        if err:
            return str(err)[:500]
    return str(data)[:200]


def _is_quota(data: Any) -> bool:
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        return "insufficient_quota" in (str(err.get("code")), str(err.get("type")))
    return False


class StructuredLLM:
    """A model call with a Jinja2 prompt and validated structured output; see docs/llm.md."""

    def __init__(
        self,
        model_name: str,
        prompt: str,
        output_schema: Any = None,
        model_kwargs: dict[str, Any] | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        max_in_flight: int | None = None,
        cache: bool = True,
        price: tuple[float, float] | None = None,
        reasks: int = 1,
        max_retries: int = 5,
        request_timeout: float = 120.0,
    ) -> None:
        from starfish.llm.cost import price_for
        from starfish.llm.limits import limiter_for
        from starfish.llm.prompt import Prompt
        from starfish.llm.providers import resolve
        from starfish.llm.schema import OutputSchema

        for name, value in (("rpm", rpm), ("tpm", tpm), ("max_in_flight", max_in_flight)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0
            ):
                raise LLMConfigError(f"{name} must be a positive number or None, not {value!r}")
        for name, value in (("reasks", reasks), ("max_retries", max_retries)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise LLMConfigError(f"{name} must be an int >= 0, not {value!r}")
        if price is not None and (
            not isinstance(price, (tuple, list))
            or len(price) != 2
            or not all(isinstance(p, (int, float)) and p >= 0 for p in price)
        ):
            raise LLMConfigError(
                "price must be (usd_per_million_input_tokens, usd_per_million_output_tokens), "
                f"not {price!r}"
            )
        kwargs = dict(model_kwargs or {})
        bad = [k for k in kwargs if k in _RESERVED]
        if bad:
            raise LLMConfigError(
                f"model_kwargs cannot set {', '.join(bad)}: StructuredLLM sets "
                f"{'it' if len(bad) == 1 else 'them'} itself."
            )
        try:
            json.dumps(kwargs)
        except (TypeError, ValueError) as exc:
            raise LLMConfigError(f"model_kwargs must be JSON values: {exc}") from None

        self._init = {
            "model_name": model_name,
            "prompt": prompt,
            "output_schema": output_schema,
            "model_kwargs": kwargs,
            "base_url": base_url,
            "rpm": rpm,
            "tpm": tpm,
            "max_in_flight": max_in_flight,
            "cache": cache,
            "price": price,
            "reasks": reasks,
            "max_retries": max_retries,
            "request_timeout": request_timeout,
        }
        self.model_name = model_name
        self.model_kwargs = kwargs
        self.cache = bool(cache)
        self.reasks = reasks
        self.max_retries = max_retries
        self.request_timeout = float(request_timeout)
        self._target = resolve(model_name, base_url, api_key)
        self.base_url = self._target.base_url
        self.provider = self._target.family
        # For telemetry: the table row, unless `base_url=` sends the calls somewhere else.
        self._family = "other" if base_url else self._target.family
        self._prompt = Prompt(prompt)
        self._schema = OutputSchema(output_schema) if output_schema is not None else None
        self._price = price_for(model_name, self._target.family, price)
        self._url = self.base_url + "/chat/completions"
        self._headers = {"Content-Type": "application/json"}
        if self._target.api_key:
            self._headers["Authorization"] = f"Bearer {self._target.api_key}"
        self._limiter = limiter_for(
            self.base_url, self._target.model, self._target.api_key, rpm, tpm, max_in_flight
        )
        completion = kwargs.get("max_tokens") or kwargs.get("max_completion_tokens")
        self._completion_estimate = int(completion or DEFAULT_COMPLETION_ESTIMATE)
        self.counts: dict[str, Any] = {}  # this object's totals, in or out of jobs

    def __repr__(self) -> str:
        return f"StructuredLLM({self.model_name!r}, base_url={self.base_url!r})"

    def __copy__(self) -> StructuredLLM:
        return self  # settings only, and a shared limiter: a copy would be the same object

    def __deepcopy__(self, memo: dict[int, Any]) -> StructuredLLM:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled into a job's stored call spec: never the key. A resumed job takes the key
        # from the environment again.
        return (_restore, (self._init,))

    # the call ------------------------------------------------------------------------------
    @property
    def variables(self) -> frozenset[str]:
        """The names the prompt uses: `run` needs a value for each."""
        return frozenset(self._prompt.variables)

    async def run(self, **variables: Any) -> LLMResponse:
        """Render the prompt with `variables`, call the model, return validated records."""
        from starfish.data_factory.context import current_call

        messages = [{"role": "user", "content": self._prompt.render(variables)}]
        call = current_call()
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        cost: float | None = 0.0 if self._price is not None else None
        endpoint = (self.base_url, self._target.model)
        reasks_left = self.reasks
        cached = True
        while True:
            mode = _modes.get(endpoint, MODES[0]) if self._schema is not None else None
            body = self._body(messages, mode)
            try:
                data, hit, spent = await self._send(body, call, mode)
            except _ModeChanged:
                continue
            except _Unsupported as exc:
                assert mode is not None
                if mode == MODES[-1]:
                    raise LLMRequestError(
                        f"the server at {self.base_url} rejected the request (HTTP 400) in "
                        f"every structured-output mode; last answer: {exc}"
                    ) from None
                continue  # _send moved the endpoint to the next mode
            cached = cached and hit
            usage["prompt_tokens"] += spent[0]
            usage["completion_tokens"] += spent[1]
            if cost is not None and spent[2] is not None:
                cost += spent[2]
            content, finish = self._choice(data)
            if finish == "length":
                raise LLMOutputError(
                    "the answer was cut off at the token limit (finish_reason 'length', "
                    f"max_tokens={self.model_kwargs.get('max_tokens', 'server default')}): "
                    "raise max_tokens in model_kwargs or ask for less."
                )
            if self._schema is None:
                records = [{"text": content or ""}]
                break
            try:
                records = self._schema.parse(content)
                break
            except ValueError as exc:
                if reasks_left <= 0:
                    raise LLMOutputError(
                        f"the answer does not match output_schema after {self.reasks} "
                        f"re-ask(s): {exc}"
                    ) from None
                reasks_left -= 1
                await self._count(call, {"reasks": 1})
                messages = [
                    *messages,
                    {"role": "assistant", "content": content or ""},
                    {"role": "user", "content": REASK.format(error=exc)},
                ]
        return LLMResponse(records, data, usage, cost, cached)

    def _body(self, messages: list[dict[str, Any]], mode: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self._target.model}
        if mode is None or self._schema is None:
            body["messages"] = messages
        elif mode == "json_schema":
            body["messages"] = messages
            body["response_format"] = self._schema.response_format()
        else:
            system = {"role": "system", "content": self._schema.instructions()}
            body["messages"] = [system, *messages]
            if mode == "json_object":
                body["response_format"] = {"type": "json_object"}
        body.update(self.model_kwargs)
        return body

    def _choice(self, data: Any) -> tuple[str | None, str | None]:
        try:
            choice = data["choices"][0]
            return choice["message"].get("content"), choice.get("finish_reason")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise LLMRequestError(
                f"the server at {self.base_url} answered 200 without choices[0].message"
            ) from None

    # one request, with the limiter, retries, cache and counts ----------------------------
    async def _send(
        self, body: dict[str, Any], call: Any, mode: str | None = None
    ) -> tuple[Any, bool, tuple[Any, ...]]:
        from starfish.llm.cache import cache_key, store_for
        from starfish.llm.cost import cost_usd
        from starfish.llm.transport import ConnectFailed, TransportFailed, post_json

        payload = json.dumps(body, separators=(",", ":")).encode()
        endpoint = (self.base_url, self._target.model)
        key = None
        if call is not None and self.cache and call.job.db_path is not None:
            digest = hashlib.sha256(payload).digest()
            key = cache_key(
                self.base_url, payload, call.index, call.attempt, call.occurrence(digest)
            )
            hit = store_for(call.job.db_path).get(key)
            if hit is not None:
                unsupported = isinstance(hit, dict) and _UNSUPPORTED in hit
                if unsupported:
                    _advance(endpoint, mode)  # before any await, as below
                await self._count(call, {"cache_hits": 1})
                if unsupported:
                    raise _Unsupported(hit[_UNSUPPORTED])
                return hit, True, (0, 0, 0.0 if self._price is not None else None)

        chars = sum(len(str(m.get("content") or "")) for m in body["messages"])
        estimate = math.ceil(chars / 4) + self._completion_estimate
        limiter = self._limiter
        failures = limited = 0
        while True:
            self._check_reachable()
            clock = call.clock if call is not None else None
            if clock is not None:  # a turn in the limiter is not the call overrunning
                clock.pause()
            try:
                ticket = await limiter.acquire(estimate)
            finally:
                if clock is not None:
                    clock.resume()
            if mode is not None and _modes.get(endpoint, mode) != mode:
                limiter.release(ticket)  # another call learned a better mode while we waited
                raise _ModeChanged
            try:
                status, headers, data, raw = await post_json(
                    self._url, self._headers, payload, self.request_timeout
                )
            except ConnectFailed as exc:
                limiter.release(ticket)
                if not limiter.answered:
                    message = (
                        f"cannot reach the model server at {self.base_url} ({exc}): check "
                        "base_url (or the provider's *_BASE_URL variable) and that the server "
                        "is running."
                    )
                    _unreachable[self.base_url] = (time.monotonic() + UNREACHABLE_MEMORY, message)
                    raise LLMUnreachableError(message) from None
                failures += 1
                await self._backoff(call, failures, f"connection failed ({exc})", {})
                continue
            except TransportFailed as exc:
                limiter.answered = True  # it accepted the connection: not a reason to go alone
                limiter.release(ticket)
                failures += 1
                await self._backoff(call, failures, f"no answer ({exc})", {"requests": 1})
                continue
            except BaseException:
                limiter.release(ticket)
                raise
            _unreachable.pop(self.base_url, None)
            if status == 200 and not isinstance(data, dict):
                limiter.release(ticket, headers=headers, status=status)
                await self._count(call, {"requests": 1})
                raise LLMRequestError(
                    f"the server at {self.base_url} answered 200 with a body that is not a "
                    f"JSON object: {self._scrub(str(data)[:200])}"
                )
            if status == 200:
                usage = data.get("usage")
                pt = int((usage or {}).get("prompt_tokens") or 0)
                ct = int((usage or {}).get("completion_tokens") or 0)
                used = pt + ct if usage else None
                limiter.release(ticket, used_tokens=used, headers=headers, status=200)
                cost = cost_usd(self._price, pt, ct)
                counts: dict[str, Any] = {
                    "requests": 1,
                    "prompt_tokens": pt,
                    "completion_tokens": ct,
                }
                if cost is not None:
                    counts["cost_usd"] = cost
                await self._count(call, counts, key, raw)
                return data, False, (pt, ct, cost)
            limiter.release(
                ticket, used_tokens=0 if status == 429 else None, headers=headers, status=status
            )
            message = self._scrub(_server_message(data))
            if status == 429 and not _is_quota(data):
                await self._count(call, {"requests": 1, "rate_limited": 1})
                limited += 1
                if limited >= MAX_RATE_LIMITED:
                    raise LLMRateLimitError(
                        f"{self.base_url} answered 429 {limited} times in a row: {message}",
                        retry_after=max(limiter.paused_until - time.monotonic(), 1.0),
                    )
                continue
            if status == 400 and "response_format" in body:
                _advance(endpoint, mode)  # before any await: calls waiting to send see it
                # Kept like an answer: a re-run in a new process falls back without asking.
                await self._count(call, {"requests": 1}, key, {_UNSUPPORTED: message})
                raise _Unsupported(message)
            await self._count(call, {"requests": 1})
            if status in (401, 403) or status == 429:
                what = "has no quota left" if status == 429 else "refused the API key"
                raise LLMAuthError(
                    f"the server at {self.base_url} {what} (HTTP {status}): {message}"
                )
            if status >= 500 or status == 408:
                failures += 1
                await self._backoff(call, failures, f"HTTP {status}: {message}", {})
                continue
            raise LLMRequestError(
                f"the server at {self.base_url} answered HTTP {status}: {message}"
            )

    async def _backoff(self, call: Any, failures: int, what: str, counts: dict[str, Any]) -> None:
        if failures > self.max_retries:
            if counts:
                await self._count(call, counts)
            raise LLMTransientError(
                f"{self.base_url}: {what}, after {self.max_retries} retries",
                retry_after=RETRY_MAX_DELAY,
            )
        await self._count(call, {**counts, "retries": 1})
        delay = min(RETRY_MAX_DELAY, RETRY_BASE_DELAY * 2 ** (failures - 1))
        await asyncio.sleep(delay * (0.5 + random.random()))

    def _check_reachable(self) -> None:
        known = _unreachable.get(self.base_url)
        if known is not None:
            if known[0] > time.monotonic():
                raise LLMUnreachableError(known[1])
            _unreachable.pop(self.base_url, None)

    def _scrub(self, text: str) -> str:
        key = self._target.api_key
        return text.replace(key, "***") if key else text

    async def _count(
        self, call: Any, counts: dict[str, Any], key: str | None = None, response: Any = None
    ) -> None:
        """Add to this object's, the job's (memory) and the stored job's counts; keep the
        response under `key`, in the same transaction, before it is returned."""
        for name, value in counts.items():
            self.counts[name] = self.counts.get(name, 0) + value
        job = call.job if call is not None else None
        if job is None:
            from starfish.data_factory.context import current_job

            job = current_job()
            if job is None:
                return
        for name, value in counts.items():
            job.llm[name] = job.llm.get(name, 0) + value
        calls = counts.get("requests", 0) + counts.get("cache_hits", 0)
        if calls:
            job.llm_families[self._family] = job.llm_families.get(self._family, 0) + calls
        if job.db_path is not None:
            from starfish.llm.cache import store_for

            await store_for(job.db_path).save_soon(job.job_id, counts, key, response)


def _restore(init: dict[str, Any]) -> StructuredLLM:
    return StructuredLLM(**init)
