"""Shared state of a job: seeded from `initial_state_values`, stored with the job.

Hooks run on the event loop thread, one at a time between awaits, so plain dict access is
safe without locks.

State is stored as JSON, one row per key, and only the keys changed since the last commit are
written (in the same transaction as the records whose hooks changed them): saving costs what
changed, not the size of the state. So each value is encoded when it is set, which is also
where a value that is not JSON is refused, naming the key, rather than at every later save.
A value is stored whole when its key is set: keep one key per fact (`seen:<question>`), not
one ever-growing dict under a single key.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

from starfish.data_factory._json import dumps
from starfish.errors import OptionsError

__all__ = ["JobState", "check_initial_state", "encode_value"]


def encode_value(key: Any, value: Any, where: str = "state") -> str:
    """`value` as stored JSON text; `OptionsError` naming `where[key]` and the fix if it is not."""
    if not isinstance(key, str):
        raise OptionsError(
            f"{where} keys must be strings (state is stored as JSON), got {key!r}; "
            f"use str({key!r}) as the key."
        )
    try:
        text = dumps(value)
        if not text.isascii():
            text.encode("utf-8")
    except UnicodeEncodeError:
        raise OptionsError(
            f"{where}[{key!r}] holds text that is not valid Unicode (a lone surrogate such as "
            "half an emoji), which cannot be stored; clean the text before storing it."
        ) from None
    except (TypeError, ValueError) as exc:
        kind = type(value).__name__
        raise OptionsError(
            f"{where}[{key!r}] is a {kind}, which is not JSON ({exc}); state is stored as JSON, "
            "so use dicts, lists, strings, numbers, booleans or None (a list or dict instead "
            "of a set, a string instead of an object)."
        ) from None
    return text


def check_initial_state(values: Mapping[str, Any]) -> None:
    """Refuse non-JSON `initial_state_values` where the decorator is written."""
    for key, value in values.items():
        encode_value(key, value, "initial_state_values")


class JobState:
    """A small dict-like store that hooks read and update.

    `stored_as_json=False` (in-memory jobs) skips the encoding: such state is never written
    anywhere, so it may hold any value and costs nothing to set.
    """

    def __init__(
        self, values: Mapping[str, Any] | None = None, *, stored_as_json: bool = True
    ) -> None:
        self._data: dict[str, Any] = copy.deepcopy(dict(values)) if values else {}
        self._json = stored_as_json
        self._changed: dict[str, Any] = {}  # key -> value set since the last take
        self._texts: dict[str, str] = {}  # key -> its JSON text, encoded when it was set
        self.version = 0

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        if self._json:
            self._texts[key] = encode_value(key, value)
        self._data[key] = value
        self._changed[key] = value
        self.version += 1

    def update(self, values: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        items = {**(values or {}), **kwargs}
        if self._json:  # all or none
            self._texts.update({key: encode_value(key, value) for key, value in items.items()})
        self._data.update(items)
        self._changed.update(items)
        self.version += 1

    def take_changes(self) -> dict[str, Any]:
        """The keys set since the last take, with their values: what storage keeps next."""
        changed, self._changed, self._texts = self._changed, {}, {}
        return changed

    def take_json_changes(self) -> dict[str, str]:
        """The keys set since the last take, as JSON text: what storage writes next."""
        changed, texts = self._changed, self._texts
        self._changed, self._texts = {}, {}
        return {k: texts[k] if k in texts else encode_value(k, v) for k, v in changed.items()}

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
