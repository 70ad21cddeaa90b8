"""Turn `run(**kwargs)` into indexed inputs: lists are zipped, everything else broadcast.

Inputs are never copied per index: `kwargs(i)` builds a small dict that points into the
caller's lists, so a million inputs cost the caller's lists and nothing more.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from starfish.errors import InputError


class InputSpec:
    """The job's inputs as column lists plus broadcast scalars."""

    __slots__ = ("_pairs", "lists", "names", "num_inputs", "scalars")

    def __init__(self, names: tuple[str, ...], lists: tuple[list, ...], scalars: dict[str, Any]):
        self.names = names
        self.lists = lists
        self.scalars = scalars
        self.num_inputs = len(lists[0]) if lists else 1
        self._pairs = tuple(zip(names, lists, strict=True))

    def kwargs(self, index: int) -> dict[str, Any]:
        """The keyword arguments of input `index`."""
        kw = self.scalars.copy()
        for name, column in self._pairs:
            kw[name] = column[index]
        return kw

    def to_payload(self) -> dict[str, Any]:
        return {"names": self.names, "lists": self.lists, "scalars": self.scalars}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> InputSpec:
        return cls(tuple(payload["names"]), tuple(payload["lists"]), dict(payload["scalars"]))


def is_async_callable(func: Any) -> bool:
    """True for `async def` functions, partials of them and objects with an async `__call__`."""
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004 - we want the method, not callable()
    return call is not None and inspect.iscoroutinefunction(call)


def function_name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


def check_async(func: Any) -> None:
    """A data factory awaits its function: anything else is an `InputError` at decoration."""
    if not callable(func) or not is_async_callable(func):
        name = getattr(func, "__qualname__", None) or repr(func)
        if inspect.isasyncgenfunction(func):
            raise InputError(
                f"{name} is an async generator (it uses `yield`): a data factory awaits one "
                "result per input, so `return` the list of records instead of yielding them."
            )
        raise InputError(f"{name} is not an async function: define it with `async def`.")


def build_inputs(func: Callable[..., Any], kwargs: dict[str, Any]) -> InputSpec:
    """Check `kwargs` against `func`'s signature and zip them; raise `InputError` if wrong."""
    name = function_name(func)
    if not kwargs:
        raise InputError(
            f"no inputs for {name}: pass keyword arguments, lists to zip or scalars to broadcast."
        )
    _check_signature(func, name, kwargs)
    names = tuple(k for k, v in kwargs.items() if isinstance(v, list))
    lists = tuple(kwargs[k] for k in names)
    scalars = {k: v for k, v in kwargs.items() if not isinstance(v, list)}
    if lists:
        lengths = {k: len(v) for k, v in zip(names, lists, strict=True)}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{k}={n}" for k, n in lengths.items())
            raise InputError(
                f"lists passed to {name} have unequal lengths ({shown}): lists are zipped, so "
                "give them one length, or pass a scalar to use the same value for every input."
            )
        if not lists[0]:
            raise InputError(
                f"no inputs for {name}: the lists passed are empty; pass at least one value."
            )
    return InputSpec(names, lists, scalars)


def _check_signature(func: Callable[..., Any], name: str, kwargs: dict[str, Any]) -> None:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    keyword_ok = {
        n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    if not accepts_any:
        unknown = [k for k in kwargs if k not in keyword_ok]
        if unknown:
            raise InputError(
                f"{name} does not take {', '.join(map(repr, unknown))}; "
                f"its parameters are {', '.join(sorted(keyword_ok)) or 'none'}."
            )
    missing = [
        n
        for n, p in params.items()
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and n not in kwargs
    ]
    if missing:
        raise InputError(
            f"{name} is missing required parameter(s): {', '.join(missing)}; pass each as a "
            "list (one value per input) or a scalar (the same value for every input)."
        )
