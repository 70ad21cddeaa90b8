"""Cutting request lines into batches under a provider's limits: a pure function, so the job
can plan its batches (and tests can check the cut) without any server."""

from __future__ import annotations

from collections.abc import Sequence

from starfish.llm.errors import LLMConfigError

__all__ = ["split_lines"]


def split_lines(
    lines: Sequence[bytes], max_requests: int, max_bytes: int, overhead: int = 0
) -> list[Sequence[bytes]]:
    """Consecutive groups of `lines`, in order, each with at most `max_requests` lines and at
    most `max_bytes` bytes, counting one separator byte per line (a newline in a file, a comma
    in a JSON list) and `overhead` bytes per group (what wraps the lines). A line that cannot
    fit even alone is an error: no batch could carry it."""
    if max_requests < 1 or max_bytes <= overhead:
        raise ValueError("max_requests must be >= 1 and max_bytes larger than the overhead")
    groups: list[Sequence[bytes]] = []
    start, size = 0, overhead
    for i, line in enumerate(lines):
        cost = len(line) + 1
        if overhead + cost > max_bytes:
            raise LLMConfigError(
                f"request line {i} is {len(line):,} bytes: over the provider's batch limit of "
                f"{max_bytes:,} bytes on its own"
            )
        if i - start >= max_requests or size + cost > max_bytes:
            groups.append(lines[start:i])
            start, size = i, overhead
        size += cost
    if start < len(lines):
        groups.append(lines[start:])
    return groups
