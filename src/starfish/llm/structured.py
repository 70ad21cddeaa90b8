"""StructuredLLM: a prompt template and an output schema in, validated records out.

One `run()` is one logical call: it renders the prompt, asks the server for structured
output in the best mode the endpoint accepts, parses and validates the records and re-asks
with the error when they do not fit. Under it every HTTP request passes the endpoint's
limiter, is retried on 429/5xx/timeouts inside the layer, and is counted; inside a job each
response is cached in the job database before it is returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from starfish._backoff import backoff
from starfish._numbers import is_int, is_positive
from starfish.llm.cost import cost_usd, price_for, usage_tokens
from starfish.llm.errors import (
    MAX_MESSAGE,
    LLMAuthError,
    LLMConfigError,
    LLMOutputError,
    LLMRateLimitError,
    LLMRequestError,
    LLMTransientError,
    LLMUnreachableError,
    scrub,
)
from starfish.llm.transport import Transport

STRUCTURED_OUTPUT = ("auto", "json_schema", "json_object", "prompt")
"""What `structured_output=` accepts: `auto` walks the ladder below from its top."""
RUNGS = ("json_schema", "json_object_schema", "json_object", "prompt")
"""How the schema is asked for, best first. `json_object_schema` is `json_object` carrying the
schema (llama.cpp, llama-cpp-python and vLLM constrain the output to it by grammar); a server
whose answer names the structured-output request moves the endpoint one rung down."""
_CHOICES = {
    "auto": RUNGS,
    "json_schema": RUNGS[:1],
    "json_object": RUNGS[1:3],
    "prompt": RUNGS[3:],
}
DEFAULT_COMPLETION_ESTIMATE = 512
"""Tokens reserved for the answer when `max_tokens` is not set."""
MAX_RATE_LIMITED = 50
"""429s in a row for one request before the layer gives up (with `retry_after`)."""
RETRY_BASE_DELAY = 0.25
RETRY_MAX_DELAY = 20.0
FIRST_CONTACT_WAIT = 10.0
"""Seconds the first contact with an endpoint (`GET /models`) may take before the progress
line says the server is not answering."""
FIRST_CONTACT_GIVE_UP = 50.0
"""Seconds without any answer to the first contact before the endpoint counts as unreachable
(the job fails within a minute, with that reason, instead of waiting in silence)."""
REASK = (
    "Your previous answer could not be used: {error}. "
    "Answer again with only the JSON, matching the schema."
)
_RESERVED = ("model", "messages", "stream", "response_format")
_NAMES_FORMAT = re.compile(r"response_format|json_schema|json_object|schema", re.IGNORECASE)
"""An error about the structured-output request names one of these (llama-cpp-python answers
`json_schema` with a 500 that names it); any other error must not change the mode."""
_BAD_KEY = re.compile(
    r"api[ _-]?key|unauthori[sz]ed|authenticat|invalid[ _-]?(?:token|credential)|"
    r"incorrect[ _-]?key|no connected db",
    re.IGNORECASE,
)
"""A 4xx whose message says the key is wrong ("No connected db." is LiteLLM's answer to a key
that is not its master key when it has no key database)."""


@dataclass
class LLMResponse:
    """What `run()` returns. `usage` and `cost` count every request this call sent (re-asks
    and retries included; a cache hit sent none); `cost` is None when the price is unknown;
    `mode` is how the schema was asked for (json_schema, json_object or prompt)."""

    data: list[dict[str, Any]]
    raw: Any
    usage: dict[str, int] = field(default_factory=dict)
    cost: float | None = None
    cached: bool = False
    mode: str | None = None


class _Unsupported(Exception):
    """The server refused the structured-output rung of the request."""


class _ModeChanged(Exception):
    """Another call moved the endpoint to another rung while this one waited to send."""


_UNSUPPORTED = "starfish_unsupported_mode"
"""Cached in place of an answer when the server refused the request's rung."""


def mode_of(rung: str | None) -> str | None:
    """The user's word for a rung: json_object with or without the schema is json_object."""
    return "json_object" if rung == "json_object_schema" else rung


def _server_message(data: Any) -> str:
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err.get("code") or err)
        if err:
            return str(err)
        if data.get("detail"):  # FastAPI servers (llama-cpp-python, vLLM) answer this way
            return str(data["detail"])
    return str(data)


def _is_quota(data: Any) -> bool:
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        return "insufficient_quota" in (str(err.get("code")), str(err.get("type")))
    return False


class StructuredLLM:
    """A model call with a Jinja2 prompt and validated structured output; see docs/llm.md."""

    count_as: str | None = None
    """A count its requests are added to besides `requests` (the judge's, the embeddings')."""

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
        structured_output: str = "auto",
        api_key_env: str | None = None,
        transport: Transport | None = None,
        batch: bool = False,
        batch_size: int | None = None,
        batch_poll_s: float | None = None,
    ) -> None:
        from starfish.llm.endpoint import endpoint_for
        from starfish.llm.prompt import Prompt
        from starfish.llm.providers import resolve
        from starfish.llm.schema import OutputSchema

        for name, value in (("rpm", rpm), ("tpm", tpm), ("max_in_flight", max_in_flight)):
            if value is not None and not is_positive(value):
                raise LLMConfigError(f"{name} must be a positive number or None, not {value!r}")
        for name, value in (("reasks", reasks), ("max_retries", max_retries)):
            if not is_int(value) or value < 0:
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
        if structured_output not in _CHOICES:
            raise LLMConfigError(
                f"structured_output must be one of {', '.join(map(repr, STRUCTURED_OUTPUT))}, "
                f"not {structured_output!r}"
            )
        if structured_output != "auto" and output_schema is None:
            raise LLMConfigError(
                f"structured_output={structured_output!r} needs an output_schema: without one "
                "the answer is kept as text."
            )
        _check_batch(model_name, base_url, batch, batch_size, batch_poll_s, cache)
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
        if api_key_env is not None:
            if api_key is not None:
                raise LLMConfigError("give api_key= or api_key_env=, not both")
            api_key = os.environ.get(api_key_env) or None
            if api_key is None:
                raise LLMConfigError(
                    f"api_key_env={api_key_env!r}: the environment variable {api_key_env} is "
                    "not set; set it to the server's key."
                )

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
            "structured_output": structured_output,
            "api_key_env": api_key_env,
            "batch": bool(batch),
            "batch_size": batch_size,
            "batch_poll_s": batch_poll_s,
        }
        self.model_name = model_name
        self.model_kwargs = kwargs
        self.cache = bool(cache)
        self.reasks = reasks
        self.max_retries = max_retries
        self.request_timeout = float(request_timeout)
        self.structured_output = structured_output
        self.batch = bool(batch)
        self.batch_size = batch_size
        self.batch_poll_s = batch_poll_s
        self._explicit_base_url = base_url
        self.option_names: dict[str, str] = {
            "max_tokens": "max_tokens in model_kwargs",
            "structured_output": "structured_output={!r}",
        }
        """How messages name the settings: `starfish generate` swaps in its flags."""
        self._target = resolve(model_name, base_url, api_key)
        self.base_url = self._target.base_url
        self.provider = self._target.family
        # For telemetry: the table row, unless `base_url=` sends the calls somewhere else.
        self._family = "other" if base_url else self._target.family
        self._prompt = Prompt(prompt)
        self._schema = OutputSchema(output_schema) if output_schema is not None else None
        self._rungs = _CHOICES[structured_output]
        self._price = price_for(model_name, self._target.family, price)
        self._url = self.base_url + "/chat/completions"
        self._headers = {"Content-Type": "application/json"}
        if self._target.api_key:
            self._headers["Authorization"] = f"Bearer {self._target.api_key}"
        # Shared with every StructuredLLM naming the same server, model and key; `transport`
        # (a test's in-process fake) is not part of the settings a job stores.
        self._endpoint = endpoint_for(
            self.base_url,
            self._target.model,
            self._target.api_key,
            rpm,
            tpm,
            max_in_flight,
            transport,
        )
        self._limiter = self._endpoint.limiter
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

    def _rung(self) -> str | None:
        """The best rung of this object's choice that the endpoint has not refused."""
        if self._schema is None:
            return None
        refused = self._endpoint.refused
        for rung in self._rungs:
            if rung not in refused:
                return rung
        return None

    async def run(self, **variables: Any) -> LLMResponse:
        """Render the prompt with `variables`, call the model, return validated records."""
        from starfish.data_factory.context import current_call

        messages = [{"role": "user", "content": self._prompt.render(variables)}]
        call = current_call()
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        cost: float | None = 0.0 if self._price is not None else None
        reasks_left = self.reasks
        cached = True
        last_refusal = ""
        while True:
            rung = self._rung()
            if rung is None and self._schema is not None:
                words = self.option_names["structured_output"]
                raise LLMRequestError(
                    f"the server at {self.base_url} refused "
                    f"{words.format(self.structured_output)}; last answer: {last_refusal}. "
                    f"Use {words.format('auto')} (or {words.format('prompt')})."
                )
            body = self._body(messages, rung)
            try:
                data, hit, spent = await self._send(body, call, rung)
            except _ModeChanged:
                continue
            except _Unsupported as exc:
                last_refusal = str(exc)
                if self.structured_output == "auto" and rung == RUNGS[-1]:
                    raise LLMRequestError(
                        f"the server at {self.base_url} rejected the request in every "
                        f"structured-output mode; last answer: {exc}"
                    ) from None
                continue  # _send marked the rung refused
            cached = cached and hit
            usage["prompt_tokens"] += spent[0]
            usage["completion_tokens"] += spent[1]
            if cost is not None and spent[2] is not None:
                cost += spent[2]
            content, finish, refusal = self._choice(data)
            if finish == "length":
                raise LLMOutputError(self._cut_message(data))
            if refusal:
                raise LLMOutputError(f"the model refused: {self._scrub(refusal)}")
            if self._schema is None:
                if not content:
                    raise LLMOutputError("the answer is empty (no content)")
                records = [{"text": content}]
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
                if not self.batch:  # the batch lane counts a re-ask once, when it is sent
                    await self._count(call, {"reasks": 1})
                messages = [
                    *messages,
                    {"role": "assistant", "content": content or ""},
                    {"role": "user", "content": REASK.format(error=exc)},
                ]
        return LLMResponse(records, data, usage, cost, cached, mode_of(rung))

    def _cut_message(self, data: dict[str, Any]) -> str:
        """Which limit cut the answer: `max_tokens` when the answer used all of it, else the
        model's context (prompt plus answer filled it)."""
        knob = self.option_names["max_tokens"]
        limit = self.model_kwargs.get("max_tokens") or self.model_kwargs.get(
            "max_completion_tokens"
        )
        usage = data.get("usage")
        pt, ct = usage_tokens(usage, "prompt_tokens"), usage_tokens(usage, "completion_tokens")
        spent = f" ({pt} prompt + {ct} answer tokens)" if pt is not None and ct is not None else ""
        if limit is not None and (ct is None or ct >= int(limit)):
            return (
                f"the answer was cut off at max_tokens={limit}{spent}: raise {knob} or ask "
                "for less."
            )
        if limit is not None:
            return (
                f"the answer was cut off by the model's context length{spent}, before "
                f"max_tokens={limit}: use a shorter prompt, ask for less, or give the server "
                "a longer context."
            )
        return (
            f"the answer was cut off{spent}, by the server's default max_tokens or the model's "
            f"context length: set {knob}, ask for less, or give the server a longer context."
        )

    def _body(self, messages: list[dict[str, Any]], rung: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self._target.model}
        schema = self._schema
        if rung is None or schema is None:
            body["messages"] = messages
        elif rung == "json_schema":
            body["messages"] = messages
            body["response_format"] = schema.response_format()
        else:
            system = {"role": "system", "content": schema.instructions()}
            body["messages"] = [system, *messages]
            if rung == "json_object_schema":
                body["response_format"] = {"type": "json_object", "schema": schema.json_schema}
            elif rung == "json_object":
                body["response_format"] = {"type": "json_object"}
        body.update(self.model_kwargs)
        return body

    def _choice(self, data: Any) -> tuple[str | None, str | None, str | None]:
        """(content, finish_reason, refusal) of the first choice."""
        try:
            choice = data["choices"][0]
            message = choice["message"]
            content, refusal = message.get("content"), message.get("refusal")
            finish = choice.get("finish_reason")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise LLMRequestError(
                f"the server at {self.base_url} answered 200 without choices[0].message"
            ) from None
        if content is not None and not isinstance(content, str):
            raise LLMRequestError(
                f"the server at {self.base_url} answered 200 with a message content that is "
                f"not text ({type(content).__name__})"
            )
        return content, finish, str(refusal) if refusal else None

    # one request, with the limiter, retries, cache and counts ----------------------------
    async def _send(
        self, body: dict[str, Any], call: Any, rung: str | None = None
    ) -> tuple[Any, bool, tuple[Any, ...]]:
        from starfish.llm.cache import cache_key
        from starfish.llm.transport import (
            BodyTooLarge,
            ConnectFailed,
            Request,
            TooManyOpenFiles,
            TransportFailed,
        )

        payload = json.dumps(body, separators=(",", ":")).encode()
        key = None
        if self.batch:
            self._check_batch_call(call)
        if call is not None and self.cache and call.job.llm_cache:
            digest = hashlib.sha256(payload).digest()
            key = cache_key(
                self.base_url, payload, call.index, call.attempt, call.occurrence(digest)
            )
            kept = call.cached(key)
            hit = json.loads(kept) if kept is not None else None
            if hit is not None:
                replay = False
                if self.batch:
                    self._raise_batch_failure(hit)
                    # an answer this job's batches brought: counted as a batch request already
                    replay = self._lane(call.job).owns(key)
                unsupported = isinstance(hit, dict) and _UNSUPPORTED in hit
                if unsupported:
                    self._refuse(rung)  # before any await, as below
                if not replay:
                    await self._count(call, {"cache_hits": 1})
                if unsupported:
                    raise _Unsupported(hit[_UNSUPPORTED])
                return hit, True, (0, 0, 0.0 if self._price is not None else None)

        estimate = self._estimate(body)
        if self.batch and key is not None:
            raise await self._defer_to_batch(call, key, body, rung, estimate)
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
            if rung is not None and self._rung() != rung:
                limiter.release(ticket)  # another call learned a better rung while we waited
                raise _ModeChanged
            reserved = 0.0
            job = None
            try:
                contacted = self._endpoint.contacted
                if not contacted:
                    await self._first_contact()
                job = self._job_of(call)
                if job is not None and job.budget_usd is not None and self._price is not None:
                    from starfish.llm.budget import estimate_usd, reserve

                    prompt = estimate - self._completion_estimate
                    most = cost_usd(self._price, prompt, self._completion_estimate) or 0.0
                    reserved = await reserve(job, estimate_usd(job, most), clock)
                if reserved or not contacted:  # it waited: a pause may have begun meanwhile
                    await limiter.recheck(clock)
            except BaseException:
                limiter.release(ticket)
                if reserved:
                    from starfish.llm.budget import release as give_back

                    give_back(job, reserved)
                raise
            # Whatever happens below, the reservation is given back exactly once (`finally`),
            # before any backoff: a call waiting to retry holds no slot.
            release: dict[str, Any] = {}
            retry: tuple[str, dict[str, Any]] | None = None
            paid: float | None = None
            try:
                answer = await self._endpoint.transport.send(
                    Request("POST", self._url, self._headers, payload, self.request_timeout)
                )
                status, headers, data, text = (
                    answer.status,
                    answer.headers,
                    answer.data(),
                    answer.text,
                )
                release = {"headers": headers, "status": status}
                if status == 200 and isinstance(data, dict):
                    pt = usage_tokens(data.get("usage"), "prompt_tokens")
                    ct = usage_tokens(data.get("usage"), "completion_tokens")
                    release["used_tokens"] = pt + ct if pt is not None and ct is not None else None
                    release["completion_tokens"] = ct
                    if reserved:  # what it cost, for a budget held job-wide (budget.release)
                        paid = cost_usd(self._price, pt or 0, ct or 0)
                elif status == 429:
                    release["used_tokens"] = 0
            except TooManyOpenFiles:
                # Ours, not the server's: never "unreachable", never a sign the server is down.
                retry = ("too many open files (raise `ulimit -n` or lower max_concurrency)", {})
            except ConnectFailed as exc:
                if not limiter.answered:
                    message = (
                        f"cannot reach the model server at {self.base_url} ({exc}): check "
                        "base_url (or the provider's *_BASE_URL variable) and that the server "
                        "is running."
                    )
                    self._endpoint.mark_unreachable(message)
                    raise LLMUnreachableError(message) from None
                retry = (f"connection failed ({exc})", {})
            except TransportFailed as exc:
                limiter.answered = True  # it accepted the connection: not a reason to go alone
                retry = (f"no answer ({exc})", {"requests": 1})
            except BodyTooLarge as exc:
                await self._count(call, {"requests": 1})
                raise LLMRequestError(f"the server at {self.base_url} {exc}") from None
            except asyncio.CancelledError:
                # The request went out and the server may answer it (and bill it): count it.
                self._count_now(call, {"requests": 1})
                raise
            finally:
                limiter.release(ticket, **release)
                if reserved:
                    from starfish.llm.budget import release as give_back

                    give_back(self._job_of(call), reserved, paid)
            if retry is not None:
                failures += 1
                await self._backoff(call, failures, *retry)
                continue
            self._endpoint.reached()
            if status == 200 and not isinstance(data, dict):
                await self._count(call, {"requests": 1})
                raise LLMRequestError(
                    f"the server at {self.base_url} answered 200 with a body that is not a "
                    f"JSON object: {self._scrub(str(data), 200)}"
                )
            if status == 200:
                pt = usage_tokens(data.get("usage"), "prompt_tokens") or 0
                ct = release.get("completion_tokens") or 0
                cost = cost_usd(self._price, pt, ct)
                counts: dict[str, Any] = {
                    "requests": 1,
                    "prompt_tokens": pt,
                    "completion_tokens": ct,
                }
                if rung is not None:
                    counts[f"answers_{mode_of(rung)}"] = 1
                if cost is not None:
                    counts["cost_usd"] = cost
                await self._count(call, counts, key, text, cost)
                return data, False, (pt, ct, cost)
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
            auth = status in (401, 403) or (status < 500 and bool(_BAD_KEY.search(message)))
            if (
                rung is not None
                and "response_format" in body
                and not auth
                and status not in (408, 429)
                and _NAMES_FORMAT.search(message)
            ):
                self._refuse(rung)  # before any await: calls waiting to send see it
                # Kept like an answer: a re-run in a new process falls back without asking.
                await self._count(call, {"requests": 1}, key, {_UNSUPPORTED: message})
                raise _Unsupported(message)
            await self._count(call, {"requests": 1})
            if auth or status == 429:
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

    # the batch lane (batch/lane.py) ----------------------------------------------------------
    def _check_batch_call(self, call: Any) -> None:
        """Where a batch call can run: in a job that outlives the process, in its driver."""
        where = None
        if call is None:
            where = "outside a @data_factory job (a batch must outlive the process)"
        elif call.effects is not None:
            where = "in a Ray worker: run batch jobs with the local executor"
        elif call.job.db_path is None:
            where = "in a job with storage='in_memory' (a batch must outlive the process)"
        elif not call.job.llm_cache:
            where = "in a job with llm_cache=False (answers come back through the cache)"
        if where is not None:
            raise LLMConfigError(f"StructuredLLM(batch=True) cannot run {where}.")

    def _raise_batch_failure(self, hit: Any) -> None:
        """A line that failed inside its batch: this attempt fails the way the online request
        would have (a refused key stops the job; anything else follows the job's rules)."""
        from starfish.llm.batch.lane import FAILED

        if not (isinstance(hit, dict) and FAILED in hit):
            return
        error = hit[FAILED] if isinstance(hit[FAILED], dict) else {}
        message = self._scrub(str(error.get("message") or error.get("code") or "no reason"))
        status = error.get("status")
        if status in (401, 403):
            raise LLMAuthError(
                f"the batch API at {self.base_url} refused the API key (HTTP {status}): {message}"
            )
        raise LLMRequestError(f"the request failed inside its batch: {message}")

    async def _defer_to_batch(
        self, call: Any, key: str, body: dict[str, Any], rung: str | None, estimate: int
    ) -> BaseException:
        """Hand the request to the job's batch lane; the input waits for its answer."""
        from starfish.data_factory.deferred import Deferred

        lane = self._lane(call.job)
        prompt = estimate - self._completion_estimate
        usd = cost_usd(self._price, prompt, self._completion_estimate)
        new = lane.request(key, call.index, call.attempt, body, mode_of(rung), (usd or 0.0) / 2)
        if new and len(body["messages"]) > 1:
            await self._count(call, {"reasks": 1})
        return Deferred(lane, "waiting for a batch")

    def _lane(self, job: Any) -> Any:
        from starfish.llm.batch.lane import BatchLane

        lane = job.lanes.get(self._endpoint)
        if lane is None:
            poll = os.environ.get("STARFISH_BATCH_POLL_S") or self.batch_poll_s or 30.0
            price = self._price
            lane = job.lanes[self._endpoint] = BatchLane(
                job,
                self._batch_client(),
                size=self.batch_size,
                poll_s=float(poll),
                cost=lambda pt, ct: cost_usd(price, pt, ct),
                family=self._family,
                # stored with each batch, for `jobs delete` to cancel it (never the key)
                describe={
                    "provider": self.provider,
                    "model": self.model_name,
                    "base_url": self.base_url,
                    "api_key_env": self._init["api_key_env"],
                },
            )
        return lane

    def _batch_client(self) -> Any:
        transport = self._endpoint.transport
        key = self._target.api_key
        if self.provider == "anthropic":
            from starfish.llm.batch import AnthropicBatchClient

            return AnthropicBatchClient(key, self._explicit_base_url, transport=transport)
        from starfish.llm.batch import OpenAIBatchClient

        return OpenAIBatchClient(self.base_url, key, transport=transport)

    def _estimate(self, body: dict[str, Any]) -> int:
        """Tokens the request may use, for the limiter and the budget: a quarter of the
        prompt's characters and the answer's allowance (the embeddings client counts its
        input instead)."""
        chars = sum(len(str(m.get("content") or "")) for m in body["messages"])
        return math.ceil(chars / 4) + self._completion_estimate

    async def _first_contact(self) -> None:
        """Before the first request to an endpoint (which may take minutes to generate),
        check within seconds that something answers there at all."""
        from starfish.data_factory.progress import set_notice
        from starfish.llm.transport import ConnectFailed, Request, TransportFailed

        probe = Request("GET", self.base_url + "/models", self._headers, None, FIRST_CONTACT_WAIT)
        started = time.monotonic()
        waited = 0.0
        try:
            while True:
                try:
                    await self._endpoint.transport.send(probe)  # any HTTP status: it is there
                except ConnectFailed:
                    return  # the request itself says so, with the usual message
                except TransportFailed:
                    waited = time.monotonic() - started
                else:
                    self._endpoint.contacted = True
                    return
                if waited >= FIRST_CONTACT_GIVE_UP:
                    message = (
                        f"the server at {self.base_url} accepted the connection but sent no "
                        f"answer in {waited:.0f} s: check that it is the model server and "
                        "that it is not stuck."
                    )
                    self._endpoint.mark_unreachable(message)
                    raise LLMUnreachableError(message)
                set_notice(f"waiting for {self.base_url} (no answer for {waited:.0f} s)")
        finally:
            if waited:
                set_notice(None)

    def _refuse(self, rung: str | None) -> None:
        """The server refused `rung`: this process asks the endpoint with a lower one."""
        if rung is not None:
            self._endpoint.refused.add(rung)

    async def _backoff(self, call: Any, failures: int, what: str, counts: dict[str, Any]) -> None:
        if failures > self.max_retries:
            if counts:
                await self._count(call, counts)
            raise LLMTransientError(
                f"{self.base_url}: {what}, after {self.max_retries} retries",
                retry_after=RETRY_MAX_DELAY,
            )
        await self._count(call, {**counts, "retries": 1})
        await asyncio.sleep(backoff(failures, RETRY_BASE_DELAY, RETRY_MAX_DELAY))

    def _check_reachable(self) -> None:
        known = self._endpoint.unreachable()
        if known is not None:
            raise LLMUnreachableError(known)

    def _scrub(self, text: str, limit: int = MAX_MESSAGE) -> str:
        return scrub(text, self._target.api_key, limit)

    def _job_of(self, call: Any) -> Any:
        if call is not None:
            return call.job
        from starfish.data_factory.context import current_job

        return current_job()

    def _tagged(self, counts: dict[str, Any]) -> dict[str, Any]:
        if self.count_as is not None and counts.get("requests"):
            return {**counts, self.count_as: counts["requests"]}
        return counts

    def _add(self, counts: dict[str, Any]) -> None:
        """Add `counts` to this object's own totals."""
        for name, value in counts.items():
            self.counts[name] = self.counts.get(name, 0) + value

    async def _count(
        self,
        call: Any,
        counts: dict[str, Any],
        key: str | None = None,
        response: Any = None,
        cost: float | None = None,
    ) -> None:
        """Add `counts` to this object's and the job's; keep the response under `key` (and
        what it cost) with them. Returns once the job has stored them: an answer is never used
        before it is kept (in a Ray worker they go back with the call's outcome)."""
        from starfish.llm.cache import as_text

        counts = self._tagged(counts)
        self._add(counts)
        if call is not None:
            answer = None
            if key is not None:
                answer = (key, as_text(response), call.index, call.attempt, cost)
            await call.record(counts, self._family, answer)
            return
        job = self._job_of(None)
        if job is not None:
            await job.record(counts, self._family)

    def _count_now(self, call: Any, counts: dict[str, Any]) -> None:
        """`_count` without awaiting: for a call being cancelled (its task cannot wait); a
        failing storage is reported by the job's own writer, not here."""
        counts = self._tagged(counts)
        self._add(counts)
        owner = call if call is not None else self._job_of(None)
        if owner is not None:
            with contextlib.suppress(Exception):
                owner.record_now(counts, self._family)


BATCH_PROVIDERS = ("openai", "groq", "together", "anthropic")
"""Providers with a batch API at half price (and any `base_url=` server implementing OpenAI's
Files and Batches endpoints)."""


def _check_batch(
    model_name: str,
    base_url: str | None,
    batch: bool,
    size: int | None,
    poll_s: float | None,
    cache: bool,
) -> None:
    if not batch:
        if size is not None or poll_s is not None:
            raise LLMConfigError("batch_size= and batch_poll_s= need batch=True")
        return
    family = model_name.split("/", 1)[0] if "/" in model_name else ""
    if base_url is None and family not in BATCH_PROVIDERS:
        raise LLMConfigError(
            f"batch=True is for providers with a batch API: "
            f"{', '.join(p + '/' for p in BATCH_PROVIDERS)} or a base_url= server that "
            f"implements OpenAI's Files and Batches endpoints; not {model_name!r}."
        )
    if not cache:
        raise LLMConfigError("batch=True needs cache=True: batch answers come back through it")
    if size is not None and (not is_int(size) or size < 1):
        raise LLMConfigError(f"batch_size must be an int >= 1, not {size!r}")
    if poll_s is not None and not is_positive(poll_s):
        raise LLMConfigError(f"batch_poll_s must be a positive number, not {poll_s!r}")


def _restore(init: dict[str, Any]) -> StructuredLLM:
    return StructuredLLM(**init)
