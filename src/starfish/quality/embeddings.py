"""`Embeddings`: the model and threshold of `Dedupe(semantic=...)`."""

from __future__ import annotations

from typing import Any

from starfish.errors import OptionsError

__all__ = ["Embeddings"]

BATCH = 64
"""Texts per `/embeddings` request."""


class Embeddings:
    """Cosine similarity of embeddings from an OpenAI-compatible `/embeddings` endpoint, called
    through the model layer (its limits, cache, counts and `budget_usd`); two records at
    `threshold` or above say the same thing."""

    def __init__(
        self,
        model: str,
        *,
        threshold: float = 0.92,
        base_url: str | None = None,
        api_key_env: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        price: tuple[float, float] | None = None,
    ) -> None:
        from starfish.llm.embeddings import EmbeddingsClient
        from starfish.llm.errors import LLMConfigError

        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise OptionsError(f"Embeddings(threshold={threshold!r}): a number from 0.5 to 1.0")
        if not 0.5 <= threshold <= 1.0:
            raise OptionsError(
                f"Embeddings(threshold={threshold!r}): a cosine similarity from 0.5 to 1.0 "
                "(0.92 catches rewordings of one sentence)"
            )
        self.model = model
        self.threshold = float(threshold)
        try:
            self.client = EmbeddingsClient(
                model,
                base_url=base_url,
                api_key_env=api_key_env,
                model_kwargs=model_kwargs,
                price=price,
            )
        except LLMConfigError as exc:
            raise OptionsError(f"Embeddings: {exc}") from None

    def __repr__(self) -> str:
        return f"Embeddings({self.model!r}, threshold={self.threshold:g})"

    async def vectors(self, texts: list[str]) -> list[Any]:
        """Unit vectors (numpy float32), one per text."""
        import numpy as np

        out: list[Any] = []
        for start in range(0, len(texts), BATCH):
            for v in await self.client.embed(texts[start : start + BATCH]):
                a = np.asarray(v, dtype=np.float32)
                norm = float(np.linalg.norm(a))
                out.append(a / norm if norm else a)
        return out
