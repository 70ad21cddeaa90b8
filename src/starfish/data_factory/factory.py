"""`@data_factory`: the decorated object that runs an async function as a resumable job.

Importing this module is cheap on purpose (`import starfish` stays fast): asyncio, SQLite,
rich and cloudpickle are imported when a job runs, not when a function is decorated.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from starfish.data_factory.call_spec import _FuncRef  # noqa: F401 - see below
from starfish.errors import OptionsError, ResumeError

# Jobs stored before call_spec.py existed pickled their function as this module's `_FuncRef`:
# the name stays importable here so that they still resume.

if TYPE_CHECKING:
    from starfish.data_factory.inputs import InputSpec, RowStream
    from starfish.data_factory.job import JobResult
    from starfish.data_factory.options import Options
    from starfish.data_factory.state import JobState
    from starfish.data_factory.storage import Storage

__all__ = ["DataFactory", "data_factory", "resume_from_checkpoint", "resume_stored_job"]

_T = TypeVar("_T")


def _run_sync(make: Callable[[], Coroutine[Any, Any, _T]], factory: DataFactory) -> _T:
    """Run a job to the end; a Ctrl-C that ended a stored job carries its resume line."""
    from starfish.data_factory.running import run_sync

    factory._started = None
    try:
        result: _T = run_sync(make)
    except KeyboardInterrupt as error:
        if factory._started is not None:
            from starfish.data_factory.interrupted import mark

            mark(error, *factory._started)
        raise
    return result


class DataFactory:
    """An async function wrapped as a data factory; see `data_factory`."""

    def __init__(self, func: Callable[..., Any], options: Options | dict[str, Any]) -> None:
        from starfish.data_factory.inputs import check_async
        from starfish.data_factory.options import Options
        from starfish.data_factory.state import JobState

        check_async(func)
        self.func = func
        self._options = options if isinstance(options, Options) else Options.create(options)
        if self._options.executor != "local":
            from starfish.data_factory.executors import check_portable

            check_portable(self._options.executor, func)
        self.job_id: str | None = None
        self.state = JobState(
            self._options.initial_state_values, stored_as_json=self._options.storage == "local"
        )
        self._inputs: InputSpec | None = None
        self._storage: Storage | None = None
        self._started: tuple[str, str] | None = None  # (job id, storage kind) of this run
        functools.update_wrapper(self, func, updated=())

    def __repr__(self) -> str:
        return f"<DataFactory {getattr(self.func, '__qualname__', self.func)!r}>"

    def _repr_html_(self) -> str:
        """In a notebook: the last job's status, progress, counts and cost."""
        from starfish._notebook import factory_html

        return factory_html(self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Calling the factory calls the function itself, once."""
        return self.func(*args, **kwargs)

    @property
    def options(self) -> dict[str, Any]:
        return self._options.to_dict()

    def with_options(self, **overrides: Any) -> DataFactory:
        """A copy with some decorator options changed, validated like the decorator's."""
        return DataFactory(self.func, self._options.replace(**overrides))

    # running --------------------------------------------------------------------------
    def run(self, **kwargs: Any) -> list[dict[str, Any]]:
        """Run one input per zipped list position; return the completed records in input order."""
        inputs = self._build_inputs(kwargs)
        return _run_sync(lambda: self._execute(self._options, inputs, "normal"), self)

    async def run_async(self, **kwargs: Any) -> list[dict[str, Any]]:
        """`run` for callers already inside an event loop."""
        inputs = self._build_inputs(kwargs)
        return await self._execute(self._options, inputs, "normal")

    def dry_run(self, **kwargs: Any) -> list[dict[str, Any]]:
        """Run the first input only, in a throwaway in-memory store: nothing is written."""
        from starfish.data_factory.inputs import InputSpec
        from starfish.data_factory.storage.memory import MemoryStorage

        full = self._build_inputs(kwargs)
        first = InputSpec(full.names, tuple(c[:1] for c in full.lists), full.scalars)
        return _run_sync(
            lambda: self._execute(
                self._options, first, "dry_run", storage=MemoryStorage(), remember=False
            ),
            self,
        )

    def resume(self, **overrides: Any) -> list[dict[str, Any]]:
        """Continue the last job of this process, running only inputs not yet completed."""
        if self.job_id is None or self._inputs is None or self._storage is None:
            raise ResumeError(
                "no job to resume in this process: run() first, or use "
                "data_factory.resume_from_checkpoint(job_id)."
            )
        return self._resume(self.job_id, self._inputs, self._storage, overrides)

    def run_rows(self, rows: RowStream) -> None:
        """Run over a `RowStream` (the rows of an input file, see `inputs.stream_inputs`): the
        rows stream into storage and the records stay there, so memory stays flat."""
        _run_sync(lambda: self._execute(self._options, rows, "normal", collect=False), self)

    def _resume(
        self,
        job_id: str,
        inputs: InputSpec,
        storage: Storage,
        overrides: dict[str, Any],
        collect: bool = True,
    ) -> list[dict[str, Any]]:
        """Run the inputs of a stored job that are not completed; self then holds that job."""
        if "storage" in overrides:
            raise OptionsError(
                "storage cannot change on resume: the job lives where it was stored."
            )
        options = self._options.replace(**overrides) if overrides else self._options
        return _run_sync(
            lambda: self._execute(
                options,
                inputs,
                "resume_from_checkpoint",
                storage=storage,
                resume_id=job_id,
                collect=collect,
            ),
            self,
        )

    def _build_inputs(self, kwargs: dict[str, Any]) -> InputSpec:
        from starfish.data_factory.inputs import build_inputs

        return build_inputs(self.func, kwargs)

    async def _execute(
        self,
        options: Options,
        inputs: InputSpec | RowStream,
        run_mode: str,
        storage: Storage | None = None,
        resume_id: str | None = None,
        remember: bool = True,
        collect: bool = True,
    ) -> list[dict[str, Any]]:
        from starfish.data_factory.job import execute

        def started(job_id: str, state: JobState, store: Storage, stored: InputSpec) -> None:
            self.job_id, self.state, self._inputs, self._storage = job_id, state, stored, store
            self._started = (job_id, store.kind)

        result: JobResult = await execute(
            self.func,
            options,
            inputs,  # type: ignore[arg-type]  # execute takes a RowStream too; its hint says not
            run_mode,
            storage=storage,
            resume_id=resume_id,
            on_start=started if remember else None,
            collect=collect,
        )
        return result.records

    # reading the last job ---------------------------------------------------------------
    def _last(self) -> tuple[Storage, str]:
        if self.job_id is None or self._storage is None:
            raise RuntimeError("no job has run yet: call run() first.")
        return self._storage, self.job_id

    def get_output_data(self, filter: str = "completed") -> list[dict[str, Any]]:
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
        inputs = self._inputs
        assert inputs is not None
        return [inputs.kwargs(i) for i in self.get_index_dead_queue()]

    def export(
        self, path: str | Path, filter: str = "completed", with_quality: bool = False
    ) -> int:
        """Write the last job's records to `path` (.jsonl/.csv/.parquet), streamed from storage;
        `with_quality`: with the `quality.*` columns that starfish.quality hooks stored."""
        from starfish.io import write_records

        storage, job_id = self._last()
        if with_quality:
            from starfish.data_factory.context import RECORD_ANNOTATIONS
            from starfish.errors import OptionsError

            if not RECORD_ANNOTATIONS:
                raise OptionsError("with_quality=True: no starfish.quality hook ran here")
            return write_records(path, RECORD_ANNOTATIONS[0](job_id, filter))
        return write_records(path, storage.iter_records(job_id, filter))


@overload
def data_factory(func: Callable[..., Any], /, **options: Any) -> DataFactory: ...
@overload
def data_factory(
    func: None = None, /, **options: Any
) -> Callable[[Callable[..., Any]], DataFactory]: ...
def data_factory(
    func: Callable[..., Any] | None = None, /, **options: Any
) -> DataFactory | Callable[[Callable[..., Any]], DataFactory]:
    """Decorate an async function: `@data_factory(max_concurrency=10)` or bare `@data_factory`.

    Options are validated here, so a bad value fails where it is written, not mid-job.
    """
    from starfish.data_factory.options import Options

    opts = Options.create(options)
    if func is not None:
        return DataFactory(func, opts)
    return lambda f: DataFactory(f, opts)


def resume_from_checkpoint(
    job_id: str, *, reload: bool = False, **overrides: Any
) -> list[dict[str, Any]]:
    """Continue any stored job, from this or another process; returns all its completed records.

    The job runs the function stored when it started. `reload=True` imports it afresh from
    where the run imported it (module, or source file), so a fixed function or hook can
    rescue the inputs the old one killed.
    """
    return resume_stored_job(job_id, reload=reload, collect=True, overrides=overrides)


def resume_stored_job(
    job_id: str, *, reload: bool, collect: bool, overrides: dict[str, Any]
) -> list[dict[str, Any]]:
    """`resume_from_checkpoint`; with `collect=False` (the CLI) the records stay in storage."""
    from starfish.data_factory.storage import locate_job

    if job_id is None:  # `gen.job_id` in a process that has not run `gen`
        raise ResumeError(
            "resume_from_checkpoint(None): no job id. In a new process `gen.job_id` is None; "
            "use the id printed when the job started, `starfish jobs list`, or "
            "starfish.jobs.latest('gen').job_id."
        )
    storage, full_id = locate_job(job_id)
    if storage.kind == "in_memory":
        if reload:
            raise ResumeError(
                f"job {job_id} is in memory: it resumes with the function this process has; "
                "reload applies to local jobs."
            )
        func, inputs, options = storage.load_spec(full_id)
    else:
        from starfish.data_factory import call_spec
        from starfish.data_factory.inputs import inputs_from_payload

        payload = call_spec.load(storage.load_spec(full_id), full_id, reload=reload)
        func, options = payload["func"], payload["options"]
        inputs = inputs_from_payload(payload["inputs"], storage, full_id)
    return DataFactory(func, options)._resume(full_id, inputs, storage, overrides, collect)


data_factory.resume_from_checkpoint = resume_from_checkpoint  # type: ignore[attr-defined]
