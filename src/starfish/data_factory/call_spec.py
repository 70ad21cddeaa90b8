"""The call spec: what a resume in another process needs to run a stored job again.

A job stores its function, its inputs and its options once, when it starts. The function is
stored two ways:

- by *value* (cloudpickle) when it is not importable by name: a `file.py:function` TARGET, a
  function of `__main__`. A resume runs that code, the code the job started with;
- by *reference* (`module:qualname`) when it is importable: a resume imports it again.

and, in both cases, with its *origin*: the module, the qualname, the source file when it was
loaded from a path, and the `sys.path` entry it was imported from. A resume puts that entry
back on `sys.path` first, so a target whose file imports a sibling module (`from helpers
import fmt`) loads from any working directory, and `reload=True` imports the function afresh
from its origin, so a fixed function can rescue the inputs the old one killed.

The outer pickle holds only built-in types (the origin, and the function and the rest as
bytes), so it always loads: the origin is read before anything that may need it.

Importing this module is cheap: pickle, cloudpickle and importlib are imported when used.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starfish.errors import ResumeError

__all__ = ["SPEC_VERSION", "dump", "load", "origin"]

logger = logging.getLogger("starfish")

SPEC_VERSION = 2


class _FuncRef:
    """A function stored as `module:qualname` and imported again on resume."""

    def __init__(self, module: str, qualname: str) -> None:
        self.module = module
        self.qualname = qualname

    def resolve(self) -> Callable[..., Any]:
        import importlib

        func: Callable[..., Any] = _attribute(importlib.import_module(self.module), self.qualname)
        return func


def _attribute(module: Any, qualname: str) -> Any:
    """`module.qualname`, unwrapped to the plain function when it is a `@data_factory`."""
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj.func if _is_factory(obj) else obj


class _FileRef:
    """A function of a source file (a `file.py:function` TARGET) stored by reference: a resume
    executes the file again and takes the function from it. Used instead of the value when the
    value would carry an API key from the file's globals into the database."""

    def __init__(self, where: dict[str, Any]) -> None:
        self.where = where

    def resolve(self) -> Callable[..., Any]:
        obj = _import_origin(self.where, "")
        func: Callable[..., Any] = obj.func if _is_factory(obj) else obj
        return func


def _pickled_by_value(module: str) -> bool:
    """Registered with `cloudpickle.register_pickle_by_value` (the CLI does so for a file
    TARGET): importable here only by a path trick, so a reference would not resolve elsewhere."""
    try:
        import cloudpickle
    except ImportError:
        return False
    registered = cloudpickle.list_registry_pickle_by_value()
    return any(module == name or module.startswith(name + ".") for name in registered)


def _func_ref(func: Callable[..., Any]) -> _FuncRef | None:
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname or _pickled_by_value(module):
        return None
    try:
        ref = _FuncRef(module, qualname)
        return ref if ref.resolve() is func else None
    except Exception:
        return None


def origin(func: Callable[..., Any]) -> dict[str, Any] | None:
    """Where `func` was imported from: module, qualname, source file (for a module loaded
    from a path, which cannot be imported by name) and the `sys.path` entry it lives under."""
    module_name = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", "")
    module = sys.modules.get(module_name or "")
    source = getattr(module, "__file__", None)
    if not module_name or not source or not qualname or "<" in qualname:
        return None
    path = Path(source).resolve()
    root = path.parent.parent if path.name == "__init__.py" else path.parent
    for _ in range(module_name.count(".")):
        root = root.parent
    by_path = module_name == "__main__" or _pickled_by_value(module_name)
    return {
        "module": module_name,
        "qualname": qualname,
        "file": str(path) if by_path else None,
        "sys_path": str(root),
    }


def dump(func: Callable[..., Any], inputs: Any, opts: dict[str, Any]) -> bytes | None:
    """Pickle the function, inputs and options once per job; by reference when importable."""
    import pickle

    try:
        import cloudpickle

        dumps: Callable[..., bytes] = cloudpickle.dumps
    except ImportError:
        dumps = pickle.dumps
    from starfish.data_factory import secrets

    ref = _func_ref(func)
    where = origin(func)
    try:
        func_blob = (
            pickle.dumps(ref, protocol=pickle.HIGHEST_PROTOCOL)
            if ref is not None
            else dumps(func, protocol=pickle.HIGHEST_PROTOCOL)
        )
        rest = dumps(
            {"inputs": inputs.to_payload(), "options": opts}, protocol=pickle.HIGHEST_PROTOCOL
        )
    except Exception as exc:
        logger.warning(
            "starfish: the job's function or inputs cannot be pickled (%r); it can be resumed "
            "only in this process.",
            exc,
        )
        return None
    keys = secrets.known()
    if ref is None and secrets.find(func_blob, keys) is not None:
        if where is not None and where["file"] is not None and where["module"] != "__main__":
            # a file TARGET: stored by reference, the file is executed again on resume
            func_blob = pickle.dumps(_FileRef(where), protocol=pickle.HIGHEST_PROTOCOL)
        else:
            _refuse(func, secrets.where(func, keys), secrets.find(func_blob, keys))
    found = secrets.find(rest, keys)
    if found is not None:
        _refuse(func, _where_in_rest(inputs, opts, keys), found)
    outer = {"version": SPEC_VERSION, "origin": where, "func": func_blob, "rest": rest}
    return pickle.dumps(outer, protocol=pickle.HIGHEST_PROTOCOL)


def _where_in_rest(inputs: Any, opts: dict[str, Any], keys: set[str]) -> str | None:
    """The input column, scalar or option (a hook and its global) that holds a key."""
    from starfish.data_factory import secrets

    payload = inputs.to_payload()
    for name, value in payload.get("scalars", {}).items():
        if secrets.holds(value, keys):
            return f"the input {name!r} passed to run()"
    for name, column in zip(payload.get("names", ()), payload.get("lists", ()), strict=False):
        if secrets.holds(column, keys):
            return f"the input column {name!r} passed to run()"
    for option, value in opts.items():
        hooks = value if isinstance(value, list) else [value]
        for hook in hooks:
            if callable(hook) and secrets.holds(hook, keys):
                inside = secrets.where(hook, keys)
                return f"{inside}, through the option {option}" if inside else f"{option}"
        if not callable(value) and secrets.holds(value, keys):
            return f"the option {option}"
    return None


def _refuse(func: Callable[..., Any], where: str | None, found: str | None) -> None:
    from starfish.data_factory import secrets
    from starfish.errors import SecretError

    name = getattr(func, "__qualname__", repr(func))
    what = secrets.shown(found or "")
    raise SecretError(
        f"job {name} not started: {where or 'its function, inputs or options'} holds an API "
        f"key ({what}), and a job stores its function and inputs in the database for resume. "
        "Keep keys out of them: read the key inside the function (os.environ[...]), or let "
        "StructuredLLM read it from its environment variable (e.g. OPENAI_API_KEY); or move "
        f"{name} into an importable module, which is stored by name."
    )


def load(blob: bytes | None, job_id: str, reload: bool = False) -> dict[str, Any]:
    """The stored `func`, `inputs` payload and `options` of a job; with `reload`, the function
    is imported afresh from its recorded origin instead of the stored one."""
    import pickle

    if blob is None:
        raise ResumeError(
            f"job {job_id} stored no call spec (its function or inputs could not be pickled); "
            "resume it in the process that ran it with gen.resume()."
        )
    try:
        outer = pickle.loads(blob)
        if not isinstance(outer, dict) or "func" not in outer:
            raise ValueError("not a call spec")
    except Exception as exc:
        raise ResumeError(f"cannot load job {job_id} for resume: {exc!r}") from exc
    if outer.get("version", 1) < 2:  # jobs stored before origins were recorded
        if reload:
            raise ResumeError(
                f"job {job_id} was stored by an older Starfish without the target's origin; "
                "it cannot be reloaded, only resumed with its stored code."
            )
        return _resolved(outer, job_id)
    where = outer.get("origin")
    if where is not None:
        _put_on_sys_path(where["sys_path"])
    try:
        payload: dict[str, Any] = pickle.loads(outer["rest"])
    except Exception as exc:
        raise ResumeError(f"cannot load job {job_id} for resume: {exc!r}") from exc
    if reload:
        if where is None:
            raise ResumeError(
                f"job {job_id} has no recorded origin (its function was defined interactively "
                "or in a lambda); it cannot be reloaded, only resumed with its stored code."
            )
        fresh = _import_origin(where, job_id)
        payload["func"] = fresh.func if _is_factory(fresh) else fresh
        if _is_factory(fresh):  # a fix may be in a hook as well as in the function
            for hook in ("on_record_complete", "on_record_error"):
                payload["options"][hook] = fresh.options[hook]
        return payload
    try:
        payload["func"] = pickle.loads(outer["func"])
    except Exception as exc:
        raise ResumeError(
            f"cannot load job {job_id} for resume: {exc!r}; if its source moved or changed, "
            "`starfish jobs resume --reload` imports it afresh."
        ) from exc
    return _resolved(payload, job_id)


def _resolved(payload: dict[str, Any], job_id: str) -> dict[str, Any]:
    try:
        if isinstance(payload["func"], (_FuncRef, _FileRef)):
            payload["func"] = payload["func"].resolve()
    except Exception as exc:
        raise ResumeError(f"cannot load job {job_id} for resume: {exc!r}") from exc
    return payload


def _is_factory(obj: Any) -> bool:
    """A `@data_factory` object, known by its shape: this module sits below factory.py."""
    return callable(getattr(obj, "with_options", None)) and callable(getattr(obj, "func", None))


def _put_on_sys_path(entry: str) -> None:
    """Where the run imported the function from, first, as `python -m` or a script would."""
    if entry not in sys.path:
        sys.path.insert(0, entry)


def _import_origin(where: dict[str, Any], job_id: str) -> Any:
    """The object at the origin, imported now (a source file is executed again)."""
    import importlib
    import importlib.util

    qualname = where["qualname"]
    try:
        if where["file"] is None:
            module = importlib.import_module(where["module"])
        else:
            path = Path(where["file"])
            spec = importlib.util.spec_from_file_location(f"_starfish_reload_{path.stem}", path)
            if spec is None or spec.loader is None:
                raise ImportError(f"not a Python file: {path}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        obj: Any = module
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        source = where["file"] or where["module"]
        raise ResumeError(
            f"cannot reload {source}:{qualname} for job {job_id}: {type(exc).__name__}: {exc}"
        ) from exc
    return obj
