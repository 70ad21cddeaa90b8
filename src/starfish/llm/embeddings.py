"""Embeddings from an OpenAI-compatible `/embeddings` endpoint, through the model layer.

A request goes the way a chat request goes (`StructuredLLM._send`): the endpoint's limiter,
the job's `budget_usd`, the retries, the response cache keyed by input and attempt, and the
counts (`requests`, tokens, cost), with `embedding_requests` counted apart. Only the URL,
the body and the token estimate differ, so this is a small subclass rather than a second copy
of that machinery.
"""

from __future__ import annotations

import math
from typing import Any

from starfish.llm.errors import LLMRequestError
from starfish.llm.structured import StructuredLLM

__all__ = ["CountedApart", "EmbeddingsClient"]


class CountedApart(StructuredLLM):
    """A StructuredLLM whose requests are also counted under `count_as` (the judge's and the
    embeddings' requests are part of `requests`, and shown apart), stored without its key."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), self._settings()))  # never the key, as StructuredLLM

    def _settings(self) -> dict[str, Any]:
        return dict(self._init)


class EmbeddingsClient(CountedApart):
    """`await client.embed(texts)` -> one vector per text, in order."""

    count_as = "embedding_requests"

    def __init__(self, model_name: str, **settings: Any) -> None:
        super().__init__(model_name, prompt="(embeddings)", **settings)  # no prompt is sent
        self._url = self.base_url + "/embeddings"
        self._completion_estimate = 0  # an embedding has no answer tokens

    def __repr__(self) -> str:
        return f"EmbeddingsClient({self.model_name!r}, base_url={self.base_url!r})"

    def _settings(self) -> dict[str, Any]:
        return {k: v for k, v in self._init.items() if k not in ("prompt", "output_schema")}

    def _estimate(self, body: dict[str, Any]) -> int:
        return math.ceil(sum(len(t) for t in body["input"]) / 4)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        from starfish.data_factory.context import current_call

        if not texts:
            return []
        body = {"model": self._target.model, "input": list(texts), **self.model_kwargs}
        data, _, _ = await self._send(body, current_call())
        try:
            items = sorted(data["data"], key=lambda item: item.get("index", 0))
            vectors = [[float(x) for x in item["embedding"]] for item in items]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise LLMRequestError(
                f"the server at {self.base_url} answered /embeddings without data[].embedding"
            ) from None
        if len(vectors) != len(texts):
            raise LLMRequestError(
                f"the server at {self.base_url} answered {len(vectors)} embeddings for "
                f"{len(texts)} texts"
            )
        return vectors


def _restore(cls: type[CountedApart], init: dict[str, Any]) -> CountedApart:
    return cls(**init)
