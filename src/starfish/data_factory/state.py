"""Shared state of a job: seeded from `initial_state_values`, stored with the job.

Hooks run on the event loop thread, one at a time between awaits, so plain dict access is
safe without locks. `version` lets storage skip re-serialising state that did not change.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any


class JobState:
    """A small dict-like store that hooks read and update."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self._data: dict[str, Any] = copy.deepcopy(dict(values)) if values else {}
        self.version = 0

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self._data[key] = value
        self.version += 1

    def update(self, values: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if values:
            self._data.update(values)
        if kwargs:
            self._data.update(kwargs)
        self.version += 1

    def to_dict(self) -> dict[str, Any]:
        """A shallow copy, so callers cannot change the state by accident."""
        return dict(self._data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"JobState({self._data!r})"
