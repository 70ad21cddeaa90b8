"""The one retry delay: the job's rules and the model layer wait alike between attempts.
Imports nothing of starfish's."""

from __future__ import annotations

import random

__all__ = ["backoff"]


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds before retry number `attempt` (1 for the first): `base` doubled per attempt up
    to `cap`, with jitter of ±50 %, so that calls that failed together do not retry together."""
    return min(cap, base * 2.0 ** (attempt - 1)) * (0.5 + random.random())
