"""What counts as a number in an option, a limit or a server's answer, checked one way
everywhere: a bool is an int to Python, but never a count or a limit to a user.
Imports nothing of starfish's."""

from __future__ import annotations

from typing import TypeGuard

__all__ = ["is_int", "is_number", "is_positive"]


def is_int(value: object) -> TypeGuard[int]:
    """An int, not a bool (the exact type first: this runs on hot paths)."""
    return type(value) is int or (isinstance(value, int) and not isinstance(value, bool))


def is_number(value: object) -> TypeGuard[int | float]:
    """An int or a float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_positive(value: object) -> bool:
    """A number above 0 (NaN is not)."""
    return is_number(value) and value > 0
