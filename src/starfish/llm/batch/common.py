"""What the batch clients of every provider share: the reference to a batch, its status, one
result line, and the interface (`BatchClient`).

A `BatchRef` is what the job stores as soon as the provider returns it (plain strings and
numbers: `as_dict` / `from_dict`). States are normalised to five words so the job needs no
provider knowledge: `running` (keep polling), `ended` (every line has a result), `expired`
(ended by the provider's window: the lines without a result never ran and go in a later
batch), `failed` (the provider rejected the whole batch: `reason` says why) and `cancelled`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from starfish.llm.errors import LLMConfigError, LLMTransientError

__all__ = [
    "CUSTOM_ID",
    "BatchClient",
    "BatchRef",
    "BatchResult",
    "BatchState",
    "BatchStatus",
    "SubmitUncertain",
    "check_custom_id",
    "check_lines",
]

CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
"""What a request line's `custom_id` may be (Anthropic's rule; OpenAI's is looser)."""

BatchState = Literal["running", "ended", "expired", "failed", "cancelled"]


@dataclass(frozen=True)
class BatchRef:
    """A batch at a provider: enough to poll it, read its results and cancel it."""

    provider: str  # "openai" (any server with OpenAI's Batch API) or "anthropic"
    batch_id: str
    created_at: float  # seconds since the epoch, as the provider reports it
    requests: int  # lines in the batch
    input_file_id: str | None = None  # OpenAI: the uploaded file

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchRef:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class BatchStatus:
    """A batch as the provider reports it now. The counts are those the provider gives while
    it runs (Anthropic counts every line as `processing` until the end)."""

    state: BatchState
    provider_status: str  # the provider's own word (in_progress, finalizing, canceling, ...)
    total: int
    succeeded: int
    failed: int
    unfinished: int  # expired or cancelled before they ran (0 while running)
    reason: str | None = None  # why the provider rejected the batch (state "failed")
    ended_at: float | None = None

    @property
    def done(self) -> bool:
        """No more change will come: results can be read (none for `failed`)."""
        return self.state != "running"


@dataclass(frozen=True)
class BatchResult:
    """One request line's outcome.

    `ok`: `body` is a chat completion (`choices[0].message.content`, `finish_reason`,
    `usage.prompt_tokens` / `completion_tokens`), the shape the online path parses.
    Not ok: `body` is `{"error": {"message", "type", "code", "status"}}` (`status` the HTTP
    status the line got, or None), and `unfinished` says whether the line never ran (the batch
    expired or was cancelled first: submit it again, it was not an attempt) or failed (an
    attempt that follows the job's rules: retried, dead, or fatal for a 401/403).
    A line of the batch with no result at all is unfinished too.
    """

    custom_id: str
    ok: bool
    body: dict[str, Any]
    unfinished: bool = False


class SubmitUncertain(LLMTransientError):
    """The request creating the batch got no answer: the batch may exist. Find it with
    `find(...)` before submitting the lines again (they would be paid twice)."""

    def __init__(self, message: str, *, created_after: float) -> None:
        super().__init__(message)
        self.created_after = created_after


def check_custom_id(custom_id: str) -> None:
    if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
        raise LLMConfigError(
            f"custom_id {custom_id!r} must match {CUSTOM_ID.pattern} (1 to 64 letters, "
            "digits, '_' or '-')"
        )


def check_lines(
    lines: Sequence[bytes], max_requests: int, max_bytes: int, key: str | None, overhead: int = 0
) -> None:
    """Lines one batch can carry: some, within the limits, none holding the API key (keys go
    in headers only; a line with one would store it at the provider)."""
    if not lines:
        raise LLMConfigError("a batch needs at least one request line")
    size = overhead + sum(len(line) + 1 for line in lines)
    if len(lines) > max_requests or size > max_bytes:
        raise LLMConfigError(
            f"{len(lines):,} lines of {size:,} bytes: over the batch limit ({max_requests:,} "
            f"lines, {max_bytes:,} bytes); cut them with split()"
        )
    if key:
        needle = key.encode()
        if any(needle in line for line in lines):
            raise LLMConfigError("a request line holds the API key: keys go in headers only")


class BatchClient(Protocol):
    """One provider's batch API over the model layer's transport."""

    provider: str
    max_requests: int  # lines a batch may hold
    max_bytes: int  # bytes its file (OpenAI) or request (Anthropic) may hold

    def encode(self, custom_id: str, body: Mapping[str, Any]) -> bytes:
        """One request line from a chat-completions body (without the newline)."""
        ...

    def split(self, lines: Sequence[bytes]) -> list[Sequence[bytes]]:
        """`lines` cut into batches under this provider's limits."""
        ...

    async def submit(self, lines: Sequence[bytes], metadata: Mapping[str, str]) -> BatchRef:
        """Create one batch of these lines (from `encode`, within the limits)."""
        ...

    async def status(self, ref: BatchRef) -> BatchStatus: ...

    def results(self, ref: BatchRef) -> AsyncIterator[BatchResult]:
        """The result of each line that has one, as chat-completions bodies."""
        ...

    async def cancel(self, ref: BatchRef) -> BatchStatus: ...

    async def find(
        self,
        key: str,
        value: str,
        *,
        created_after: float | None = None,
        requests: int | None = None,
    ) -> list[BatchRef]:
        """The provider's batches that belong to a job (see each client for how)."""
        ...
