"""Turn a `module:function` or `path/to/file.py:function` string into the object it names."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Any

from starfish.errors import OptionsError


class TargetError(OptionsError):
    """TARGET does not name an importable attribute; the message is one line for the user."""


def load_target(spec: str) -> Any:
    """Import what `spec` names and return that attribute.

    A file target is imported as a module named after the file (as `python file.py` would put
    its directory first on `sys.path`, so its sibling imports work), and registered with
    cloudpickle to be pickled by value: a job started from a file can then be resumed from any
    working directory.
    """
    source, sep, attr = spec.rpartition(":")
    if not sep or not source or not attr:
        raise TargetError(
            f"TARGET {spec!r} must look like module:function or path/to/file.py:function"
        )
    module = _load_file(source) if _is_path(source) else _load_module(source)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"{source} has no attribute {attr!r}") from None
    return obj


def _is_path(source: str) -> bool:
    return source.endswith(".py") or "/" in source or "\\" in source


def _load_module(name: str) -> Any:
    # `python -m starfish` puts the working directory first on sys.path; the installed
    # console script puts its own bin directory there instead. Do what `python -m` does, so
    # `starfish run mygen:gen` finds ./mygen.py either way.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise TargetError(f"cannot import module {name!r}: {e}") from None
    except Exception as e:
        raise TargetError(f"importing {name!r} failed: {type(e).__name__}: {e}") from None


def _load_file(source: str) -> Any:
    path = Path(source).expanduser().resolve()
    if not path.is_file():
        raise TargetError(f"no such file: {source}")
    name = path.stem if path.stem.isidentifier() else "_starfish_target"
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) != str(path):
        name = f"_starfish_target_{name}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot import {source}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise TargetError(f"importing {source} failed: {type(e).__name__}: {e}") from None
    _pickle_by_value(module)
    return module


def _pickle_by_value(module: Any) -> None:
    try:
        import cloudpickle
    except ImportError:
        return
    cloudpickle.register_pickle_by_value(module)


def describe(obj: Any) -> str:
    """What a TARGET that is not an async function is, and how to make it one: one phrase."""
    if inspect.isasyncgenfunction(obj):
        return (
            "an async generator (it uses `yield`), not an async function: a job awaits one "
            "result per input, so `return` the list of records instead of yielding them"
        )
    if inspect.isgeneratorfunction(obj):
        return "a generator (it uses `yield`): define it with `async def` and `return` the records"
    if inspect.isclass(obj):
        return f"a class ({obj.__name__}), not an async function or a @data_factory"
    if callable(obj):
        return "a function, not an async function: define it with `async def`"
    return f"a {type(obj).__name__}, not an async function or a @data_factory"
