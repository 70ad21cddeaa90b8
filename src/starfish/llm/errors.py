"""What the model layer raises on purpose, with hints the scheduler can honour.

`fatal = True`: no retry of any input can succeed (bad key, no quota, unknown provider, a
server that cannot be reached); the job should stop at once with this reason.
`retry_after`: seconds the caller should wait before trying the input again, when known.
`retried = True`: this layer already retried it; the scheduler does not retry the input again.
"""

from __future__ import annotations

from starfish.errors import OptionsError, StarfishError

MAX_MESSAGE = 500
"""Characters of a server's error message kept in errors (after the key is scrubbed)."""


def scrub(text: str, key: str | None, limit: int = MAX_MESSAGE) -> str:
    """`text` without the key, cut to `limit` characters; the key is removed before the cut,
    and a piece of it (8 characters or more) left at the cut is removed too."""
    if key:
        text = text.replace(key, "***")
    if len(text) > limit:
        text = text[:limit]
        if key:
            for n in range(min(len(key) - 1, len(text)), 7, -1):
                if text.endswith(key[:n]):
                    return text[:-n] + "***"
    return text


class LLMError(StarfishError):
    """Base of the model layer's errors."""

    fatal: bool = False
    retry_after: float | None = None

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        if retry_after is not None:
            self.retry_after = retry_after


class LLMConfigError(LLMError, OptionsError):
    """The model setup is wrong (unknown provider, missing key, bad schema); raised when the
    `StructuredLLM` is built, before any request."""

    fatal = True


class PromptError(LLMError, ValueError):
    """The prompt cannot be rendered (a variable is missing); raised before the request."""


class LLMAuthError(LLMError):
    """The server refused the key (401/403) or the account has no quota left."""

    fatal = True


class LLMUnreachableError(LLMError):
    """Nothing answers at the base URL (connection refused, DNS failure)."""

    fatal = True


class LLMRequestError(LLMError):
    """The server rejected the request (a 4xx other than 401/403/429)."""


class LLMTransientError(LLMError):
    """5xx answers, timeouts or dropped connections went on after every retry of the layer.

    `retried = True`: the job does not retry the input again (a server answering 500 forever
    gets `max_retries + 1` requests for an input, not that many per attempt); the input is
    dead with this reason, and a resume gives it fresh attempts."""

    retried = True


class LLMRateLimitError(LLMError):
    """429 answers went on after every retry of the layer."""


class LLMServerPauseError(LLMRateLimitError):
    """The server asked for a pause longer than `MAX_SERVER_PAUSE` (retry-after, or a reset
    with nothing remaining): the job ends `interrupted` rather than hold a process for an hour,
    and resumes later."""

    fatal = True
    stop_status = "interrupted"


class LLMOutputError(LLMError):
    """The answer is unusable: invalid JSON or records failing the schema after every re-ask,
    or cut off at `max_tokens` (`finish_reason == "length"`)."""
