"""Usage -> US dollars, from a small bundled price table or the user's `price=`.

Prices are USD per million prompt / completion tokens, as published by the providers in
2025; pass `price=` to be exact. A model not in the table has an unknown cost (`None`), never
a made-up zero; local servers (Ollama) cost nothing.
"""

from __future__ import annotations

import math
from typing import Any

from starfish._numbers import is_number

PRICES: dict[str, tuple[float, float]] = {
    "openai/gpt-4o-mini": (0.15, 0.60),
    "openai/gpt-4o": (2.50, 10.00),
    "openai/gpt-4.1": (2.00, 8.00),
    "openai/gpt-4.1-mini": (0.40, 1.60),
    "openai/gpt-4.1-nano": (0.10, 0.40),
    "openai/o3-mini": (1.10, 4.40),
    "openai/o4-mini": (1.10, 4.40),
    "deepseek/deepseek-chat": (0.27, 1.10),
    "deepseek/deepseek-reasoner": (0.55, 2.19),
    "anthropic/claude-3-5-haiku-latest": (0.80, 4.00),
    "anthropic/claude-sonnet-4-0": (3.00, 15.00),
    "gemini/gemini-2.0-flash": (0.10, 0.40),
    "gemini/gemini-2.5-flash": (0.30, 2.50),
    "groq/llama-3.1-8b-instant": (0.05, 0.08),
}

FREE_FAMILIES = ("ollama",)


def price_for(
    model_name: str, family: str, price: tuple[float, float] | None
) -> tuple[float, float] | None:
    """The (input, output) USD per million tokens for a model, or None when unknown."""
    if price is not None:
        return (float(price[0]), float(price[1]))
    if family in FREE_FAMILIES:
        return (0.0, 0.0)
    return PRICES.get(model_name)


def cost_usd(
    price: tuple[float, float] | None, prompt_tokens: int, completion_tokens: int
) -> float | None:
    if price is None:
        return None
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000


def usage_tokens(usage: Any, name: str) -> int | None:
    """A usage count the server gave, or None when it gave none or nonsense (never negative)."""
    value = usage.get(name) if isinstance(usage, dict) else None
    if not is_number(value) or not math.isfinite(value) or value < 0:
        return None
    return int(value)
