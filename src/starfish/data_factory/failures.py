"""What went wrong, in one line: an error type with a short sample of its message.

A summary that says `ValueError` alone sends the user to the failed records; one that says
`LLMTransientError: HTTP 501 from the server` tells them. The sample is cut short, kept to one
line and stripped of anything that looks like a credential, because it is printed and stored
in the job's stop reason.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["MAX_SAMPLE", "cause", "most_common_cause", "sample"]

MAX_SAMPLE = 120
"""Characters of a message kept in a sample (an HTML error page can be megabytes)."""

_SECRETS = re.compile(
    r"(?i)"
    r"(\b(?:sk|pk|rk|xai|gsk|hf)[-_][A-Za-z0-9_\-]{8,})"  # provider keys: sk-..., hf_...
    r"|(\bbearer\s+)\S+"  # an Authorization header
    r"|(\b(?:api[_-]?key|key|token|secret|password)\s*[=:]\s*)[^\s&,;)\]}'\"]+"  # key=...
    r"|(//[^/\s:@]+:)[^/\s@]+@"  # user:password@ in a URL
)


def _mask(match: re.Match[str]) -> str:
    if match.group(1):
        return "***"
    if match.group(4):
        return match.group(4) + "***@"
    return (match.group(2) or match.group(3)) + "***"


def sample(message: object) -> str:
    """The first line of `message`, credentials masked, at most `MAX_SAMPLE` characters."""
    text = str(message).strip()
    line = " ".join(text.split("\n", 1)[0].split()) if text else ""
    line = _SECRETS.sub(_mask, line)
    if len(line) > MAX_SAMPLE:
        line = line[: MAX_SAMPLE - 1].rstrip() + "…"
    return line


def cause(error_type: str, message: object) -> str:
    """`LLMTransientError: HTTP 501 from the server`; the type alone when the message is empty."""
    text = sample(message)
    return f"{error_type}: {text}" if text else error_type


def most_common_cause(
    errors: Mapping[str, int], failed: Iterable[Mapping[str, Any]], scan: int = 10_000
) -> str | None:
    """`ValueError: bad row (4 of 6 failed attempts)` for a job's error counts by type.

    The message comes from the first of the job's stored failure records (`failed`, read
    lazily, at most `scan` of them) with the most common type; without one, the type alone.
    """
    if not errors:
        return None
    error_type, n = max(errors.items(), key=lambda item: item[1])
    message = next(
        (
            r.get("error", "")
            for r in itertools.islice(failed, scan)
            if r.get("error_type") == error_type
        ),
        "",
    )
    return f"{cause(error_type, message)} ({n} of {sum(errors.values())} failed attempts)"
