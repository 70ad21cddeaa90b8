"""Turn `run(**kwargs)` into indexed inputs: lists are zipped, everything else broadcast.

Inputs are never copied per index: `kwargs(i)` builds a small dict that points into the
caller's lists, so a million inputs cost the caller's lists and nothing more.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from starfish.errors import InputError

__all__ = [
    "InputSpec",
    "RowStream",
    "build_inputs",
    "check_async",
    "function_name",
    "inputs_from_payload",
    "is_async_callable",
    "stream_inputs",
]


class InputSpec:
    """The job's inputs as column lists plus broadcast scalars."""

    __slots__ = ("_pairs", "lists", "names", "num_inputs", "scalars")

    def __init__(
        self, names: tuple[str, ...], lists: tuple[list[Any], ...], scalars: dict[str, Any]
    ):
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


class RowStream:
    """Inputs that arrive as rows of a file, too many to hold: streamed into storage, one row
    per input, when the job is created (then read back as `StoredRows`), never kept in memory.

    `rows` yields pairs of a row and its own JSON text or None (see `io.read_row_texts`), and
    is consumed once; every row has the keys `names`. `as_json` says that every value came
    from JSON or CSV, so storing a row as JSON text gives back the very same values.
    """

    __slots__ = ("as_json", "names", "num_inputs", "rows", "scalars")

    def __init__(
        self,
        names: tuple[str, ...],
        rows: Iterable[tuple[dict[str, Any], str | None]],
        scalars: dict[str, Any],
        as_json: bool,
    ) -> None:
        self.names = names
        self.rows = rows
        self.scalars = scalars
        self.as_json = as_json
        self.num_inputs = 0  # known once stored

    def to_payload(self) -> dict[str, Any]:
        return {"names": self.names, "scalars": self.scalars, "stored_rows": True}

    def materialize(self) -> InputSpec:
        """The rows as column lists, for storage that is not a database (`in_memory`)."""
        lists: tuple[list[Any], ...] = tuple([] for _ in self.names)
        for row, _ in self.rows:
            for column, name in zip(lists, self.names, strict=True):
                column.append(row[name])
        if not lists or not lists[0]:
            raise InputError("no inputs: the input file has no rows.")
        return InputSpec(self.names, lists, self.scalars)

    def store(self, storage: Any, job_id: str) -> Any:
        """Stream the rows into `storage` as the inputs of the new job `job_id`; return the
        reader of the stored rows. If anything stops it, the job is deleted again: it has
        not started, and a half-loaded job is nothing to resume."""
        try:
            count = storage.store_input_rows(job_id, self.rows, self.as_json)
            if count == 0:
                raise InputError("no inputs: the input file has no rows.")
        except BaseException:
            storage.delete_job(job_id)
            raise
        self.num_inputs = count
        return storage.input_rows(job_id, self.names, self.scalars, count)


def stream_inputs(
    func: Callable[..., Any],
    names: tuple[str, ...],
    rows: Iterable[tuple[dict[str, Any], str | None]],
    scalars: dict[str, Any],
    as_json: bool = False,
    text_source: str | None = None,
) -> RowStream:
    """Check the row keys `names` and `scalars` against `func`'s signature, like
    `build_inputs`, and wrap the rows to be streamed into storage.

    `text_source` names a file whose values are all text (CSV): a column whose parameter is
    annotated `int`, `float` or `bool` (or that or None) is converted to it as the rows
    stream, and a value that does not convert is an `InputError` naming the file, the row,
    the column and the type, raised while the job is created, before any call."""
    name = function_name(func)
    clash = sorted(set(names) & set(scalars))
    if clash:
        raise InputError(f"{clash[0]!r} is given both as a column and as a scalar; give it once.")
    _check_signature(func, name, {**dict.fromkeys(names), **scalars})
    if text_source is not None:
        converters = text_converters(func, names)
        if converters:
            rows = _converted(rows, converters, text_source)
    return RowStream(tuple(names), rows, dict(scalars), as_json)


_TRUE = frozenset({"true", "1", "yes", "y", "t", "on"})
_FALSE = frozenset({"false", "0", "no", "n", "f", "off"})


def _to_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(text)


def _to_int(text: str) -> int:
    return int(text.strip())


def _to_float(text: str) -> float:
    return float(text.strip())


_CONVERTERS: dict[Any, tuple[str, Callable[[str], Any]]] = {
    bool: ("bool", _to_bool),
    int: ("int", _to_int),
    float: ("float", _to_float),
}
_BY_NAME = {"bool": bool, "int": int, "float": float}


def text_converters(
    func: Callable[..., Any], names: Iterable[str]
) -> dict[str, tuple[str, Callable[[str], Any], bool]]:
    """For each of `names` whose parameter of `func` is annotated int, float or bool (or
    `X | None`): (the type's name, the converter, whether an empty value means None)."""
    import typing

    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return {}
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # an annotation that does not resolve: read the plain ones below
        hints = {}
    out: dict[str, tuple[str, Callable[[str], Any], bool]] = {}
    for name in names:
        param = params.get(name)
        if param is None:
            continue
        annotation = hints.get(name, param.annotation)
        optional = False
        if isinstance(annotation, str):  # unresolved: `int`, `int | None`, `Optional[int]`
            text = annotation.replace(" ", "")
            optional = text.endswith("|None") or text.startswith("Optional[")
            text = text.removesuffix("|None").removeprefix("Optional[").removesuffix("]")
            annotation = _BY_NAME.get(text)
        else:
            args = typing.get_args(annotation)
            if type(None) in args and len(args) == 2:
                optional = True
                annotation = next(a for a in args if a is not type(None))
        found = _CONVERTERS.get(annotation)
        if found is not None:
            out[name] = (found[0], found[1], optional)
    return out


def _converted(
    rows: Iterable[tuple[dict[str, Any], str | None]],
    converters: dict[str, tuple[str, Callable[[str], Any], bool]],
    source: str,
) -> Iterator[tuple[dict[str, Any], str | None]]:
    for n, (row, _) in enumerate(rows, start=1):
        for column, (type_name, convert, optional) in converters.items():
            value = row.get(column)
            if not isinstance(value, str):
                continue
            if optional and not value.strip():
                row[column] = None
                continue
            try:
                row[column] = convert(value)
            except ValueError:
                raise InputError(
                    f"{source}: row {n}, column {column!r}: {value!r} is not {_article(type_name)} "
                    f"{type_name}, which the parameter {column}: {type_name} needs; fix the value "
                    "or annotate the parameter `str` to take the text as it is."
                ) from None
        yield row, None  # the row changed: its text is made again


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def inputs_from_payload(payload: dict[str, Any], storage: Any, job_id: str) -> Any:
    """The inputs of a stored job, as its call spec describes them."""
    if not payload.get("stored_rows"):
        return InputSpec.from_payload(payload)
    num_inputs = (storage.get_job(job_id) or {}).get("num_inputs", 0)
    return storage.input_rows(job_id, tuple(payload["names"]), dict(payload["scalars"]), num_inputs)


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
