"""Records and column values as the JSON text the database holds, and back.

Encoding checks what SQLite would refuse per input, so that no record can fail a batch commit
(and with it every input of the batch); decoding uses the C scanner directly, for text we wrote
ourselves has no surrounding whitespace.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from starfish.data_factory._json import dumps

__all__ = [
    "MAX_TEXT",
    "check_text",
    "dumps",
    "encode",
    "encode_failure",
    "json_column",
    "loads",
    "scan",
]

logger = logging.getLogger("starfish")

MAX_TEXT = 1_000_000_000
"""SQLite's default SQLITE_MAX_LENGTH in bytes: a longer value fails the whole transaction."""

scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
"""The C scanner (`scan(text, 0)[0]` is the value), for loops that cannot afford a call more.
Set by `JSONDecoder.__init__` but absent from typeshed's stubs."""


def encode(records: list[dict[str, Any]]) -> str:
    """One input's records as JSON text that SQLite will take, or an error for that input only.

    A lone surrogate (half an emoji from a model) is valid in a Python str but not in UTF-8,
    and a value over SQLite's length limit is refused whole. `isascii` is O(1), so ASCII
    records of a sane size pay two cheap calls.
    """
    data = dumps(records)
    if not data.isascii() or len(data) > MAX_TEXT:
        check_text(data)
    return data


def check_text(data: str) -> None:
    size = len(data.encode("utf-8"))  # raises UnicodeEncodeError for a lone surrogate
    if size > MAX_TEXT:
        raise ValueError(
            f"records of {size:,} bytes as JSON are over SQLite's limit of {MAX_TEXT:,}"
        )


def encode_failure(records: list[dict[str, Any]]) -> str:
    """A failure's own record must always be storable: escape what UTF-8 cannot hold."""
    try:
        return encode(records)
    except ValueError:  # UnicodeEncodeError included: an error message quoting bad output
        cut = [{k: v[:100_000] if isinstance(v, str) else v for k, v in r.items()} for r in records]
        return json.dumps(cut, ensure_ascii=True, default=repr)


def json_column(value: Any) -> str | None:
    """A job column's JSON text, or NULL (with a warning) for a value JSON cannot hold."""
    try:
        return dumps(value)
    except Exception as exc:  # e.g. a state value that is not JSON-serialisable
        logger.warning("starfish: not stored, not JSON-serialisable: %r", exc)
        return None


def loads(text: str) -> Any:
    """Parse JSON we wrote ourselves (no surrounding whitespace) with the C scanner directly."""
    return scan(text, 0)[0]
