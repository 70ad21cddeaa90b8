"""The model layer: StructuredLLM and what it raises. See docs/llm.md."""

from pathlib import Path
from typing import Any

from starfish.data_factory.context import STORED_COUNTS
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


def _stored_counts(path: Path, job_id: str) -> dict[str, Any] | None:
    from starfish.llm.cache import read_counts

    return read_counts(path, job_id)


STORED_COUNTS.append(_stored_counts)  # a resumed job's budget_usd counts its earlier runs

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
