"""The call spec: what another process needs to resume a job (function, inputs, options).

It is pickled once per job when the job starts. The function goes by reference
(`module:qualname`, imported again on resume) when it is importable, so that a resume runs the
code as it is then; otherwise by value with cloudpickle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starfish.data_factory.inputs import InputSpec, is_async_callable
from starfish.data_factory.options import Options
from starfish.errors import ResumeError

logger = logging.getLogger("starfish")


class _FuncRef:
    """A function stored as `module:qualname` and imported again on resume."""

    def __init__(self, module: str, qualname: str) -> None:
        self.module = module
        self.qualname = qualname

    def resolve(self) -> Callable[..., Any]:
        import importlib

        obj: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            obj = getattr(obj, part)
        return unwrap(obj)


def unwrap(obj: Any) -> Any:
    """The async function inside a `@data_factory` object (it exposes it as `__wrapped__`)."""
    if not is_async_callable(obj):
        return getattr(obj, "__wrapped__", obj)
    return obj


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


def dump(func: Callable[..., Any], inputs: InputSpec, options: Options) -> bytes | None:
    """Pickle the function, inputs and options once per job; by reference when importable."""
    import pickle

    payload = {"version": 1, "inputs": inputs.to_payload(), "options": options.to_dict()}
    ref = _func_ref(func)
    if ref is not None:
        try:
            return pickle.dumps({**payload, "func": ref}, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            pass
    try:
        import cloudpickle

        return cloudpickle.dumps({**payload, "func": func}, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        logger.warning(
            "starfish: the job's function or inputs cannot be pickled (%r); it can be resumed "
            "only in this process.",
            exc,
        )
        return None


def load(blob: bytes | None, job_id: str) -> tuple[Callable[..., Any], InputSpec, Options]:
    """The function, inputs and options of a stored job, or a `ResumeError` saying why not."""
    import pickle

    if blob is None:
        raise ResumeError(
            f"job {job_id} stored no call spec (its function or inputs could not be pickled); "
            "resume it in the process that ran it with gen.resume()."
        )
    try:
        payload = pickle.loads(blob)
        func = payload["func"]
        func = func.resolve() if isinstance(func, _FuncRef) else unwrap(func)
        options = Options.create(payload["options"])
        inputs = InputSpec.from_payload(payload["inputs"])
    except Exception as exc:
        raise ResumeError(f"cannot load job {job_id} for resume: {exc!r}") from exc
    return func, inputs, options
