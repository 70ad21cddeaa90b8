"""One model server, model and key, as this process knows it: an `Endpoint`.

Everything learned about an endpoint lives here, once per process, shared by every
`StructuredLLM` that names it: its limiter (rate limits, in-flight cap, learned concurrency),
the structured-output rungs it refused, whether it can be reached, whether it has answered at
all, and the transport its requests go through. The key itself is not kept, only its hash.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field

from starfish.llm.limits import Bucket, Limiter
from starfish.llm.transport import AiohttpTransport, Transport

__all__ = ["Endpoint", "endpoint_for", "reset_endpoints"]

UNREACHABLE_MEMORY = 10.0
"""Seconds a failed first connection is remembered: the calls of a job that start together
get the same error instead of each trying again."""


@dataclass(eq=False)
class Endpoint:
    base_url: str
    model: str
    key_hash: str
    transport: Transport
    limiter: Limiter = field(default_factory=Limiter)
    refused: set[str] = field(default_factory=set)  # structured-output rungs refused
    contacted: bool = False  # has anything answered there at all (first contact)?
    _unreachable: tuple[float, str] | None = None

    def mark_unreachable(self, message: str) -> None:
        self._unreachable = (time.monotonic() + UNREACHABLE_MEMORY, message)

    def unreachable(self) -> str | None:
        """Why the endpoint cannot be reached, while that is fresh; else None."""
        known = self._unreachable
        if known is None:
            return None
        if known[0] > time.monotonic():
            return known[1]
        self._unreachable = None
        return None

    def reached(self) -> None:
        self._unreachable = None

    def tighten(self, rpm: float | None, tpm: float | None, max_in_flight: int | None) -> None:
        """Explicit limits of one more `StructuredLLM` naming this endpoint: the first one's
        are kept and later ones may only tighten them."""
        limiter = self.limiter
        if rpm and (limiter.user_rpm is None or rpm < limiter.user_rpm):
            limiter.user_rpm = rpm
            limiter.requests = Bucket(rpm)
        if tpm and (limiter.user_tpm is None or tpm < limiter.user_tpm):
            limiter.user_tpm = tpm
            limiter.tokens = Bucket(tpm)
        if max_in_flight and (
            limiter.max_in_flight is None or max_in_flight < limiter.max_in_flight
        ):
            limiter.max_in_flight = max_in_flight
            limiter.cap = max_in_flight


_endpoints: dict[tuple[str, str, str, int], Endpoint] = {}
_lock = threading.Lock()
_DEFAULT = AiohttpTransport()


def endpoint_for(
    base_url: str,
    model: str,
    api_key: str | None,
    rpm: float | None = None,
    tpm: float | None = None,
    max_in_flight: int | None = None,
    transport: Transport | None = None,
) -> Endpoint:
    """The process-wide endpoint of this base URL, model and key (built on first use); a
    `transport` given here (a test's fake) makes an endpoint of its own."""
    key_hash = hashlib.sha256((api_key or "").encode()).hexdigest()[:16]
    chosen = transport if transport is not None else _DEFAULT
    key = (base_url, model, key_hash, id(chosen))
    with _lock:
        endpoint = _endpoints.get(key)
        if endpoint is None:
            limiter = Limiter(rpm, tpm, max_in_flight)
            limiter.key = f"{base_url} {model} {key_hash}"  # the job's grants know it so
            endpoint = _endpoints[key] = Endpoint(base_url, model, key_hash, chosen, limiter)
            return endpoint
    endpoint.tighten(rpm, tpm, max_in_flight)
    return endpoint


def reset_endpoints() -> None:
    """Forget every endpoint (tests; a process that changed its keys)."""
    with _lock:
        _endpoints.clear()
