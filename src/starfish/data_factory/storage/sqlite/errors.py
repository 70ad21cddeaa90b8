"""SQLite and OS errors of the database file as one-line `StorageError`s: the file, the cause,
and what to do about it, so a failed job never ends in a traceback from inside SQLite."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from starfish.errors import StorageError

__all__ = ["is_full", "reading", "storage_error"]


def _cause(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _fix(cause: str) -> str:
    text = cause.lower()
    if "full" in text or "no space" in text:
        return "free disk space"
    if "readonly" in text or "read-only" in text or "permission" in text:
        return "make the file and its directory writable"
    if "i/o error" in text:
        return "check the disk: free space, the file size limit (ulimit -f), the system log"
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return (
            "the file is damaged: move it aside (its jobs are then not listed) or set "
            "STARFISH_LOCAL_STORAGE_DIR to another directory"
        )
    return (
        "check that it is a readable database file in a writable directory, or set "
        "STARFISH_LOCAL_STORAGE_DIR to another directory"
    )


def storage_error(path: Path, exc: BaseException, action: str = "write") -> StorageError:
    """One line naming the file, the cause and the fix; `.reason` is the cause alone."""
    cause = " ".join(_cause(exc).split())
    error = StorageError(f"cannot {action} {path}: {cause}; {_fix(cause)}")
    error.reason = cause
    return error


def is_full(exc: BaseException) -> bool:
    return "full" in str(exc).lower() or (isinstance(exc, OSError) and exc.errno == 28)


class _HasPath(Protocol):
    path: Path


_S = TypeVar("_S", bound=_HasPath)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def reading(method: Callable[Concatenate[_S, _P], _R]) -> Callable[Concatenate[_S, _P], _R]:
    """SQLite errors of a read (a damaged page, a locked file) as one-line `StorageError`s
    naming the storage's `path`."""

    @functools.wraps(method)
    def wrapper(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc, "read") from None

    return wrapper
