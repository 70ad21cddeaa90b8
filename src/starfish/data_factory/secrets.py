"""API keys: kept out of what a job stores, handed to the workers that need them.

A job stores its call spec (function, inputs, options) in the database so that any process can
resume it. A function pickled by value carries the globals it uses, so a key held in a global
of the job's module would land in the database file. `find` looks for keys in such bytes:
values equal to a key the model layer knows of (registered in `KNOWN_SECRETS`, which the
factory reads without importing the model layer) and strings shaped like a provider's key
(`sk-...`, `gsk_...`, ...). `where` names the global, closure variable or input that holds one,
for the error that refuses to store it.

`WORKER_REDUCERS` is the other direction: how to pickle an object *with* its key for an
executor's workers (Ray), whose pickles travel to the workers and are never stored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["KEY_PREFIXES", "KNOWN_SECRETS", "WORKER_REDUCERS", "find", "known", "looks_like_key"]

KEY_PREFIXES = ("sk-", "gsk_", "AIza", "hf_", "xai-", "pplx-", "r8_", "nvapi-", "tgp_v1_")
"""How providers' keys begin (`sk-` covers OpenAI, Anthropic's `sk-ant-`, OpenRouter's
`sk-or-`, DeepSeek)."""

_ALT = "|".join(re.escape(p) for p in KEY_PREFIXES)
_CANDIDATE = re.compile(("(?:" + _ALT + r")[A-Za-z0-9_\-]{20,}").encode())
# In text, a key is a whole token: not preceded by a character a key may hold ("task-..." or
# "x-sk-..." hold no "sk-" key), with a digit in the tail ("sk-learn-and-pandas-tutorial" is
# a topic, not a key).
_KEY = re.compile(
    r"(?<![A-Za-z0-9_\-])(?:" + _ALT + r")(?=[A-Za-z0-9_\-]*[0-9])[A-Za-z0-9_\-]{20,}"
)
_MIN_SECRET = 8  # a shorter registered "key" would match everywhere

KNOWN_SECRETS: list[Callable[[], Iterable[str]]] = []
"""Sources of the keys in use (the model layer's: its providers' key variables and every
`api_key=` given), registered when it is imported: the factory never imports it."""

WORKER_REDUCERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}
"""type -> `__reduce__` that keeps the key, used only to ship a job's function to its workers
(the ordinary pickle, which the call spec uses, leaves keys out)."""


def known() -> set[str]:
    """Every key registered now (long enough to be told from ordinary text)."""
    out: set[str] = set()
    for source in KNOWN_SECRETS:
        out.update(s for s in source() if isinstance(s, str) and len(s) >= _MIN_SECRET)
    return out


def looks_like_key(text: str, secrets: set[str]) -> bool:
    return any(s in text for s in secrets) or _KEY.search(text) is not None


def find(blob: bytes, secrets: set[str] | None = None) -> str | None:
    """A key inside the pickle `blob` (the string that holds it), or None.

    A byte search first (C speed, so a million stored inputs cost milliseconds); only a hit is
    checked string by string.
    """
    secrets = known() if secrets is None else secrets
    hit = any(s.encode() in blob for s in secrets) or _CANDIDATE.search(blob) is not None
    if not hit:
        return None
    import pickletools

    try:
        for _, arg, _ in pickletools.genops(blob):
            if isinstance(arg, str) and looks_like_key(arg, secrets):
                return arg
            if isinstance(arg, bytes) and len(arg) >= _MIN_SECRET:  # a nested pickle
                inner = find(arg, secrets) if arg[:1] == b"\x80" else None
                if inner is not None:
                    return inner
    except Exception:  # not a pickle we can walk: the byte search decides
        return next(iter(s for s in secrets if s.encode() in blob), "a key")
    return None


def shown(key: str) -> str:
    """Enough of a key to recognise it, never enough to use it."""
    for prefix in sorted(KEY_PREFIXES, key=len, reverse=True):
        if key.startswith(prefix):
            return prefix + "..."
    return "a key given to the model layer"


def holds(value: Any, secrets: set[str]) -> bool:
    """Whether pickling `value` (as the call spec would) stores a key."""
    import cloudpickle

    if isinstance(value, str):
        return looks_like_key(value, secrets)
    try:
        blob = cloudpickle.dumps(value)
    except Exception:
        return False
    return find(blob, secrets) is not None


def where(func: Any, secrets: set[str]) -> str | None:
    """What in `func` holds a key: a global it uses, a variable it closes over, a default, a
    constant of its code; None when none of them does alone."""
    code = getattr(func, "__code__", None)
    if code is None:
        call = getattr(type(func), "__call__", None)  # noqa: B004 - an async __call__
        return where(call, secrets) if call is not None and call is not func else None
    name = getattr(func, "__qualname__", "the function")
    for const in _constants(code):
        if isinstance(const, str) and looks_like_key(const, secrets):
            return f"a string constant in the code of {name}"
    scope = getattr(func, "__globals__", {})
    module = scope.get("__name__", "its module")
    for global_name in _names(code):
        if global_name in scope and holds(scope[global_name], secrets):
            return f"the global {global_name!r} of {module} (used by {name})"
    for var, cell in zip(code.co_freevars, getattr(func, "__closure__", None) or (), strict=False):
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if holds(value, secrets):
            return f"the variable {var!r} that {name} closes over"
    for value in (*(getattr(func, "__defaults__", None) or ()),):
        if holds(value, secrets):
            return f"a default argument of {name}"
    for var, value in (getattr(func, "__kwdefaults__", None) or {}).items():
        if holds(value, secrets):
            return f"the default of {var!r} of {name}"
    return None


def _constants(code: Any) -> Iterable[Any]:
    for const in code.co_consts:
        if hasattr(const, "co_consts"):
            yield from _constants(const)
        else:
            yield const


def _names(code: Any) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names.extend(_names(const))
    return list(dict.fromkeys(names))
