"""The model layer: StructuredLLM and what it raises. See docs/llm.md."""

from typing import Any

from starfish.data_factory.secrets import KNOWN_SECRETS, WORKER_REDUCERS
from starfish.llm.errors import (
    LLMAuthError,
    LLMConfigError,
    LLMError,
    LLMOutputError,
    LLMRateLimitError,
    LLMRequestError,
    LLMTransientError,
    LLMUnreachableError,
    PromptError,
)
from starfish.llm.structured import LLMResponse, StructuredLLM


def _known_keys() -> set[str]:
    from starfish.llm.providers import known_keys

    return known_keys()


def _with_key(llm: StructuredLLM) -> tuple[Any, ...]:
    from starfish.llm.structured import _restore

    return (_restore, ({**llm._init, "api_key": llm._target.api_key},))


KNOWN_SECRETS.append(_known_keys)  # a job refuses to store these in its call spec
WORKER_REDUCERS[StructuredLLM] = _with_key  # Ray workers get the key; the database never does

__all__ = [
    "LLMAuthError",
    "LLMConfigError",
    "LLMError",
    "LLMOutputError",
    "LLMRateLimitError",
    "LLMRequestError",
    "LLMResponse",
    "LLMTransientError",
    "LLMUnreachableError",
    "PromptError",
    "StructuredLLM",
]
