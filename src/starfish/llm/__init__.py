"""The model layer: StructuredLLM and what it raises. See docs/llm.md."""

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
