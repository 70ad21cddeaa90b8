"""The provider side of the batch lane: half-price batch APIs behind one small interface.

`OpenAIBatchClient` (OpenAI's Files and Batches endpoints, and the servers that copy them) and
`AnthropicBatchClient` (Message Batches) both offer `encode`, `split`, `submit`, `status`,
`results`, `cancel` and `find` (`BatchClient`), over the model layer's transport. Request
lines are chat-completions bodies and results come back as chat completions, so the rest of
the model layer builds and parses one shape.
"""

from __future__ import annotations

from starfish.llm.batch.anthropic import AnthropicBatchClient
from starfish.llm.batch.common import (
    CUSTOM_ID,
    BatchClient,
    BatchRef,
    BatchResult,
    BatchState,
    BatchStatus,
    SubmitUncertain,
)
from starfish.llm.batch.openai import OpenAIBatchClient
from starfish.llm.batch.split import split_lines

__all__ = [
    "CUSTOM_ID",
    "AnthropicBatchClient",
    "BatchClient",
    "BatchRef",
    "BatchResult",
    "BatchState",
    "BatchStatus",
    "OpenAIBatchClient",
    "SubmitUncertain",
    "split_lines",
]


def _conforms(openai: OpenAIBatchClient, anthropic: AnthropicBatchClient) -> list[BatchClient]:
    """Never called: here mypy checks that both clients offer the shared interface."""
    return [openai, anthropic]
