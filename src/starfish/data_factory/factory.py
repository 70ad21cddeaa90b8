"""`@data_factory`: the decorated object that runs an async function as a resumable job.

Importing this module is cheap on purpose (`import starfish` stays fast): asyncio, SQLite,
rich and cloudpickle are imported when a job runs, not when a function is decorated.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from starfish.data_factory.call_spec import _FuncRef  # noqa: F401 - see below
from starfish.errors import OptionsError, ResumeError

# Jobs stored before call_spec.py existed pickled their function as this module's `_FuncRef`:
# the name stays importable here so that they still resume.

logger = logging.getLogger("starfish")

DEFAULT_OPTIONS: dict[str, Any] = {
    "storage": "local",
    "batch_size": 1,
    "target_count": 0,
    "dead_queue_threshold": 3,
    "max_concurrency": 10,
    "initial_state_values": None,
    "on_record_complete": None,
    "on_record_error": None,
    "show_progress": True,
    "task_runner_timeout": 60,
    "job_run_stop_threshold": 3,
}
_HOOK_OPTIONS = ("on_record_complete", "on_record_error")
STORAGES = ("local", "in_memory")


# options --------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(name: str, value: Any, minimum: int, meaning: str) -> None:
    if not _is_int(value) or value < minimum:
        raise OptionsError(f"{name} must be an integer >= {minimum} ({meaning}), got {value!r}.")


def _check_hooks(name: str, value: Any) -> None:
    if value is None or callable(value):
        return
    if isinstance(value, (list, tuple)) and all(callable(h) for h in value):
        return
    raise OptionsError(
        f"{name} must be a callable or a list of callables taking (output, state) "
        f"or (error, state), got {value!r}."
    )


def validate_options(options: dict[str, Any]) -> dict[str, Any]:
    """Check every decorator option; a bad one is a `ValueError` naming it and the fix."""
    unknown = set(options) - set(DEFAULT_OPTIONS)
    if unknown:
        raise OptionsError(
            f"unknown data_factory option(s): {', '.join(sorted(unknown))}; "
            f"valid options are {', '.join(DEFAULT_OPTIONS)}."
        )
    opts = {**DEFAULT_OPTIONS, **options}
    if opts["storage"] not in STORAGES:
        raise OptionsError(f"storage must be 'local' or 'in_memory', got {opts['storage']!r}.")
    _check_int("batch_size", opts["batch_size"], 1, "finished inputs per storage transaction")
    _check_int("target_count", opts["target_count"], 0, "0 means one per input")
    _check_int("dead_queue_threshold", opts["dead_queue_threshold"], 1, "attempts per input")
    _check_int("max_concurrency", opts["max_concurrency"], 1, "calls running at once")
    _check_int(
        "job_run_stop_threshold",
        opts["job_run_stop_threshold"],
        0,
        "consecutive failed inputs before the job stops; 0 disables the circuit breaker",
    )
    timeout = opts["task_runner_timeout"]
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
    ):
        raise OptionsError(
            f"task_runner_timeout must be a number of seconds > 0, or None for no limit, "
            f"got {timeout!r}."
        )
    init = opts["initial_state_values"]
    if init is not None and not isinstance(init, dict):
        raise OptionsError(f"initial_state_values must be a dict or None, got {init!r}.")
    if not isinstance(opts["show_progress"], bool):
        raise OptionsError(f"show_progress must be True or False, got {opts['show_progress']!r}.")
    for name in _HOOK_OPTIONS:
        _check_hooks(name, opts[name])
    return opts


def public_config(opts: dict[str, Any]) -> dict[str, Any]:
    """The options as stored and shown: JSON-safe, hooks by name."""
    config = {k: v for k, v in opts.items() if k not in _HOOK_OPTIONS}
    for name in _HOOK_OPTIONS:
        hooks = opts[name]
        if hooks is None:
            config[name] = []
        else:
            hooks = [hooks] if callable(hooks) else list(hooks)
            config[name] = [getattr(h, "__qualname__", repr(h)) for h in hooks]
    return config


# the call spec: what a resume in another process needs (see call_spec.py) --------------
def _call_spec(func: Callable[..., Any], inputs: Any, opts: dict[str, Any]) -> bytes | None:
    from starfish.data_factory import call_spec

    return call_spec.dump(func, inputs, opts)


# running --------------------------------------------------------------------------------
def _run_sync(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine to the end; in a thread with its own loop when one is running here."""
    import asyncio

    try:
        running = asyncio.get_running_loop() is not None
    except RuntimeError:
        running = False
    if not running:
        return asyncio.run(make())
    import threading

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(make())
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="starfish-job")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _preload(func: Callable[..., Any], storage: str) -> None:
    """Import what a run needs when a function is decorated, not inside the first `run`.

    `import starfish` stays light; the cost moves to decoration time, before any job is timed.
    """
    from starfish.data_factory import (
        job,  # noqa: F401 - asyncio, the runner, storage base
        report,  # noqa: F401 - and telemetry with it
    )

    if storage == "local":
        from starfish.data_factory.storage import sqlite  # noqa: F401

        qualname = getattr(func, "__qualname__", "")
        if getattr(func, "__module__", None) == "__main__" or "<" in qualname:
            import cloudpickle  # noqa: F401 - such functions are stored by value


def _new_job_id() -> str:
    return os.urandom(16).hex()


class DataFactory:
    """An async function wrapped as a data factory; see `data_factory`."""

    def __init__(self, func: Callable[..., Any], options: dict[str, Any]) -> None:
        from starfish.data_factory.inputs import check_async
        from starfish.data_factory.state import JobState

        check_async(func)
        self.func = func
        self._options = validate_options(options)
        _preload(func, self._options["storage"])
        self.job_id: str | None = None
        self.state = JobState(self._options["initial_state_values"])
        self._inputs: Any = None
        self._storage: Any = None
        functools.update_wrapper(self, func, updated=())

    def __repr__(self) -> str:
        return f"<DataFactory {getattr(self.func, '__qualname__', self.func)!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Calling the factory calls the function itself, once."""
        return self.func(*args, **kwargs)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self._options)

    def with_options(self, **overrides: Any) -> DataFactory:
        """A copy with some decorator options changed, validated like the decorator's."""
        return DataFactory(self.func, {**self._options, **overrides})

    # running --------------------------------------------------------------------------
    def run(self, **kwargs: Any) -> list[dict]:
        """Run one input per zipped list position; return the completed records in input order."""
        inputs = self._build_inputs(kwargs)
        return _run_sync(lambda: self._execute(inputs, "normal"))

    async def run_async(self, **kwargs: Any) -> list[dict]:
        """`run` for callers already inside an event loop."""
        inputs = self._build_inputs(kwargs)
        return await self._execute(inputs, "normal")

    def dry_run(self, **kwargs: Any) -> list[dict]:
        """Run the first input only, in a throwaway in-memory store: nothing is written."""
        from starfish.data_factory.inputs import InputSpec
        from starfish.data_factory.storage.memory import MemoryStorage

        full = self._build_inputs(kwargs)
        first = InputSpec(full.names, tuple(c[:1] for c in full.lists), full.scalars)
        return _run_sync(lambda: self._execute(first, "dry_run", storage=MemoryStorage()))

    def resume(self, **overrides: Any) -> list[dict]:
        """Continue the last job of this process, running only inputs not yet completed."""
        if self.job_id is None or self._inputs is None:
            raise ResumeError(
                "no job to resume in this process: run() first, or use "
                "data_factory.resume_from_checkpoint(job_id)."
            )
        return self._resume(self.job_id, self._inputs, self._storage, overrides)

    def _run_rows(self, rows: Any) -> None:
        """Run over a `RowStream` (the rows of an input file, see `inputs.stream_inputs`): the
        rows stream into storage and the records stay there, so memory stays flat."""
        _run_sync(lambda: self._execute(rows, "normal", collect=False))

    def _resume(
        self,
        job_id: str,
        inputs: Any,
        storage: Any,
        overrides: dict[str, Any],
        collect: bool = True,
    ) -> Any:
        """Run the inputs of a stored job that are not completed; self then holds that job."""
        if "storage" in overrides:
            raise OptionsError(
                "storage cannot change on resume: the job lives where it was stored."
            )
        target = self.with_options(**overrides) if overrides else self
        result = _run_sync(
            lambda: target._execute(
                inputs, "resume_from_checkpoint", storage=storage, resume_id=job_id, collect=collect
            )
        )
        self.job_id, self._inputs, self._storage, self.state = job_id, inputs, storage, target.state
        return result

    def _build_inputs(self, kwargs: dict[str, Any]) -> Any:
        from starfish.data_factory.inputs import build_inputs

        return build_inputs(self.func, kwargs)

    async def _execute(
        self,
        inputs: Any,
        run_mode: str,
        storage: Any = None,
        resume_id: str | None = None,
        collect: bool = True,
    ) -> list[dict]:
        from starfish.data_factory.job import execute

        return await execute(
            self, inputs, run_mode, storage=storage, resume_id=resume_id, collect=collect
        )

    # reading the last job ---------------------------------------------------------------
    def _last(self) -> tuple[Any, str]:
        if self.job_id is None or self._storage is None:
            raise RuntimeError("no job has run yet: call run() first.")
        return self._storage, self.job_id

    def get_output_data(self, filter: str = "completed") -> list[dict]:
        """Records of the last job with the given status, in input order."""
        storage, job_id = self._last()
        return list(storage.iter_records(job_id, filter))

    def get_index(self, filter: str = "completed") -> list[int]:
        """Input indices that produced a record with the given status."""
        storage, job_id = self._last()
        return storage.indices(job_id, filter)

    def get_index_dead_queue(self) -> list[int]:
        storage, job_id = self._last()
        return storage.dead_queue(job_id)

    def get_input_data_in_dead_queue(self) -> list[dict[str, Any]]:
        """The keyword arguments of every input in the dead-letter queue."""
        return [self._inputs.kwargs(i) for i in self.get_index_dead_queue()]

    def export(self, path: str | Path, filter: str = "completed") -> int:
        """Write the last job's records to `path` (.jsonl/.csv/.parquet), streamed from storage."""
        from starfish.io import write_records

        storage, job_id = self._last()
        return write_records(path, storage.iter_records(job_id, filter))


def data_factory(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Decorate an async function: `@data_factory(max_concurrency=10)` or bare `@data_factory`.

    Options are validated here, so a bad value fails where it is written, not mid-job.
    """
    if func is not None:
        return DataFactory(func, options)
    validate_options(options)
    return lambda f: DataFactory(f, options)


def resume_from_checkpoint(job_id: str, *, reload: bool = False, **overrides: Any) -> list[dict]:
    """Continue any stored job, from this or another process; returns all its completed records.

    The job runs the function stored when it started. `reload=True` imports it afresh from
    where the run imported it (module, or source file), so a fixed function or hook can
    rescue the inputs the old one killed.
    """
    return resume_stored_job(job_id, reload=reload, collect=True, overrides=overrides)


def resume_stored_job(
    job_id: str, *, reload: bool, collect: bool, overrides: dict[str, Any]
) -> list[dict]:
    """`resume_from_checkpoint`; with `collect=False` (the CLI) the records stay in storage."""
    from starfish.data_factory.storage import locate_job

    storage, full_id = locate_job(job_id)
    if storage.kind == "in_memory":
        if reload:
            raise ResumeError(
                f"job {job_id} is in memory: it resumes with the function this process has; "
                "reload applies to local jobs."
            )
        factory, inputs = storage.load_spec(full_id)
    else:
        from starfish.data_factory import call_spec
        from starfish.data_factory.inputs import inputs_from_payload

        payload = call_spec.load(storage.load_spec(full_id), full_id, reload=reload)
        factory = DataFactory(payload["func"], payload["options"])
        inputs = inputs_from_payload(payload["inputs"], storage, full_id)
    return factory._resume(full_id, inputs, storage, overrides, collect)


data_factory.resume_from_checkpoint = resume_from_checkpoint  # type: ignore[attr-defined]
