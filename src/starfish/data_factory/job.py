"""One job from start to end: store it, run it, store the outcome, report it, return records.

Whatever ends the job (all inputs done, target reached, a rule's stop, Ctrl-C), the storage is
flushed, the job row finalised and exactly one telemetry event sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starfish.data_factory import call_spec
from starfish.data_factory.context import JOB, JobContext
from starfish.data_factory.executors import make_executor
from starfish.data_factory.failures import most_common_cause
from starfish.data_factory.gates import Gate, RateLimit
from starfish.data_factory.inputs import InputSpec, RowStream, function_name
from starfish.data_factory.options import Options, hook_list
from starfish.data_factory.rules import Budget, CircuitBreaker, default_rules
from starfish.data_factory.runner import Runner
from starfish.data_factory.state import JobState
from starfish.data_factory.storage import Storage, open_storage
from starfish.data_factory.storage.base import COUNT_KEYS, LOADING
from starfish.errors import JobStopped, OutputError, ResumeError, StorageError

logger = logging.getLogger("starfish")

_INVERT = bytes([1, 0]) + bytes(254)


@dataclass
class JobResult:
    """How a job run ended; `records` are what `run` returns."""

    job_id: str
    status: str
    stop_reason: str | None
    counts: dict[str, int]
    records: list[dict[str, Any]] = field(default_factory=list)


OnStart = Callable[[str, JobState, Storage, InputSpec], None]


def new_job_id() -> str:
    return os.urandom(16).hex()


def _storage_reason(error: BaseException) -> str:
    """The stored stop reason: `storage: database or disk is full`."""
    return f"storage: {getattr(error, 'reason', None) or error}"


def make_gates(options: Options) -> list[Gate]:
    """The gates of a job beyond concurrency (the worker pool), in the order they are passed."""
    gates: list[Gate] = []
    if options.rate_limit is not None:
        gates.append(RateLimit.parse(options.rate_limit))
    return gates


async def execute(
    func: Callable[..., Any],
    options: Options,
    inputs: InputSpec,
    run_mode: str,
    *,
    storage: Storage | None = None,
    resume_id: str | None = None,
    on_start: OnStart | None = None,
    collect: bool = True,
) -> JobResult:
    """Run `inputs` through `func` as a new job, or continue job `resume_id`.

    With `collect=False` the records stay in storage and the result holds none: a job over a
    large file (the CLI) keeps none of them in memory.

    `on_start` hears the job id and state as soon as the job is stored, before any call. The
    job is leased for the whole run: a resume of a job another process is running is refused
    here, before anything is read or called.
    """
    if storage is None:
        storage = open_storage(options.storage)
    job_id = resume_id or new_job_id()
    lease = storage.acquire_lease(job_id)
    try:
        return await _execute(
            func, options, inputs, run_mode, storage, job_id, resume_id, on_start, collect
        )
    finally:
        lease.release()


async def _execute(
    func: Callable[..., Any],
    options: Options,
    inputs: InputSpec,
    run_mode: str,
    storage: Storage,
    job_id: str,
    resume_id: str | None,
    on_start: OnStart | None,
    collect: bool,
) -> JobResult:
    config = options.public_config()
    name = function_name(func)
    if isinstance(inputs, RowStream) and storage.kind != "local":
        inputs = inputs.materialize()  # no database to stream the rows into
    n = inputs.num_inputs
    started = time.monotonic()

    as_json = options.storage == "local"  # a dry run of a local job checks its state too
    if resume_id is None:
        state = JobState(options.initial_state_values, stored_as_json=as_json)
        spec: Any = (
            call_spec.dump(func, inputs, options.to_dict())
            if storage.kind == "local"
            else (func, inputs, options)
        )
        storage.create_job(
            {
                "job_id": job_id,
                "name": name,
                "status": "running",
                "run_mode": run_mode,
                "storage": storage.kind,
                "num_inputs": n,
                # a file's rows stream in after this row: marked until they all are
                "stop_reason": LOADING if isinstance(inputs, RowStream) else None,
                "config": config,
                "counts": None,
                "error_summary": None,
                "state": state.to_dict(),
                "created_at": time.time(),
            },
            spec,
        )
        if isinstance(inputs, RowStream):  # the rows of a file go into storage, one per input
            inputs = inputs.store(storage, job_id)
            n = inputs.num_inputs
        pending = iter(range(n))
        base = dict.fromkeys(COUNT_KEYS, 0)
        base_kept = 0
        base_errors: dict[str, int] = {}
        dead: set[int] = set()
        attempts_before: dict[int, int] = {}
        previous_time = 0.0
    else:
        row = storage.get_job(job_id) or {}
        if row.get("status") == "running" and row.get("stop_reason") == LOADING:
            rows = storage.live_input_rows(job_id) if hasattr(storage, "live_input_rows") else 0
            raise ResumeError(
                f"job {job_id} was stopped while its input file was loading ({rows:,} rows "
                "stored): it never started, and the rest of the file is not in storage. Run the "
                f"command again (starfish run TARGET --input FILE); `starfish jobs delete "
                f"{job_id}` removes the rows this one stored."
            )
        progress = storage.load_progress(job_id, n)
        state = JobState(
            progress.state if progress.state is not None else options.initial_state_values,
            stored_as_json=as_json,
        )
        storage.start_resume(job_id, run_mode, config)
        pending = itertools.compress(range(n), progress.completed.translate(_INVERT))
        dead = progress.dead
        attempts_before = progress.attempts
        base = {
            "completed": progress.num_completed,
            **progress.failed_counts,
            "dead": len(dead),
        }
        base_kept = progress.num_completed - progress.num_empty
        base_errors = progress.error_summary
        previous_time = row.get("execution_time") or 0.0

    if on_start is not None:
        on_start(job_id, state, storage, inputs)
    if options.show_progress and run_mode != "dry_run":
        _announce(job_id, name, n, storage.kind, resumed=resume_id is not None)

    writer = storage.open_writer(job_id, options.batch_size)
    # The model layer finds the job (cache, counts) here; the workers' tasks (and the progress
    # timer) copy this context.
    job_context = JobContext(job_id, getattr(storage, "path", None))
    if resume_id is not None:
        job_context.llm_before = storage.llm_counts(job_id) or {}
    budget = Budget(options.budget_usd, job_context.spent_usd) if options.budget_usd else None
    job_context.budget_usd = options.budget_usd or None
    job_context.llm_cache = options.llm_cache
    job_context.writer = writer
    job_context.storage = storage
    target = options.target_count
    runner = Runner(
        executor=make_executor(
            options.executor,
            func,
            timeout=options.timeout,
            concurrency=options.max_concurrency,
            job=job_context,
            answers_for=storage.cached_answers if options.llm_cache else None,
        ),
        name=name,
        inputs=inputs,
        pending=pending,
        writer=writer,
        state=state,
        concurrency=options.max_concurrency,
        timeout=options.timeout,
        gates=make_gates(options),
        rules=lambda counts: default_rules(
            counts=counts,
            dead_queue_threshold=options.dead_queue_threshold,
            job_run_stop_threshold=options.job_run_stop_threshold,
            target_remaining=max(target - base_kept, 0) if target else None,
            budget=budget,
            stop_threshold=options.stop_threshold,
            stop_window=options.stop_window,
        ),
        on_complete=hook_list(options.on_record_complete),
        on_error=hook_list(options.on_record_error),
        keep_records=collect and base_kept == 0,
        previously_dead=dead,
        attempts_before=attempts_before,
    )
    # A failed write stops the job at once: no new call starts (the writer stores no more).
    writer.on_failure = lambda error: runner.stop("failed", _storage_reason(error))
    job_token = JOB.set(job_context)
    reporter = None
    if options.show_progress and run_mode != "dry_run":
        from starfish.data_factory.progress import ProgressReporter

        reporter = ProgressReporter(runner, name, n, before=base)
        reporter.start()

    _import_report_while_calls_wait()
    interruption: BaseException | None = None
    try:
        await runner.run()
    except BaseException as exc:
        interruption = exc
    finally:
        if reporter is not None:
            reporter.stop()
        JOB.reset(job_token)

    run_time = time.monotonic() - started
    storage_failure: StorageError | None = None
    try:
        writer.close()
    except StorageError as exc:
        storage_failure = exc
    counts = {k: base[k] + runner.counts[k] for k in base}
    counts["dead"] -= runner.revived
    errors = dict(base_errors)
    for k, v in runner.error_summary.items():
        errors[k] = errors.get(k, 0) + v
    if storage_failure is not None:
        # Outcomes of the failed transaction are not stored: the counts are what is on disk.
        status, reason = "failed", _storage_reason(storage_failure)
        with contextlib.suppress(StorageError):  # unreadable too: the runner's counts
            counts, errors = storage.live_counts(job_id)
    elif interruption is not None:
        is_cancel = isinstance(interruption, (asyncio.CancelledError, KeyboardInterrupt))
        status = "interrupted"
        if not is_cancel:
            reason = f"error: {type(interruption).__name__}"
        elif "SIGTERM" in interruption.args:  # see running.py
            reason = "terminated (SIGTERM)"
        else:
            reason = "interrupted"
    elif runner.status in ("stopped", "failed", "interrupted"):
        status, reason = runner.status, runner.stop_reason or runner.status
    elif counts["completed"] == 0:
        status, reason = "failed", "no input completed"
        why = _most_common_cause(storage, job_id, errors)
        if why:
            reason += f"; most common error: {why}"
    else:
        status, reason = "completed", runner.stop_reason or "all inputs done"
    try:
        storage.finish_job(
            job_id,
            {
                "status": status,
                "stop_reason": reason,
                "counts": counts,
                "error_summary": errors,
                "finished_at": time.time(),
                "execution_time": previous_time + run_time,
            },
        )
    except StorageError as exc:
        storage_failure = storage_failure or exc
    finally:
        from starfish.data_factory.report import send_job_event

        send_job_event(
            job_id=job_id,
            run_mode=run_mode,
            num_inputs=n,
            config=options.to_dict(),
            counts=runner.counts,
            error_summary=runner.error_summary,
            execution_time=run_time,
            target_reached=counts["completed"] >= (options.target_count or n),
            context=job_context,
        )
    breaker = next((r for r in runner.rules if isinstance(r, CircuitBreaker)), None)
    stopped = breaker is not None and breaker.tripped is not None and status == "stopped"
    if interruption is not None:
        if reason == "terminated (SIGTERM)":  # an uncaught SystemExit prints nothing itself
            logger.warning("starfish: job %s %s; %s", job_id, reason, _resume_hint(job_id))
        raise interruption  # a KeyboardInterrupt gets its one line in factory.py
    if storage_failure is not None:
        raise StorageError(
            f"job {job_id} stopped, {counts['completed']} completed inputs stored: "
            f"{storage_failure}, then continue it with: starfish jobs resume {job_id}"
        ) from storage_failure
    if runner.fatal_error is not None:
        logger.warning("starfish: job %s %s: %s", job_id, status, reason)
        raise runner.fatal_error
    if counts["completed"] == 0 and not stopped:
        raise OutputError(
            f"job {job_id} ({name}) finished without one completed input: {reason}; its "
            "failed records stay readable with get_output_data(filter='failed')."
        )
    if status != "completed" and not stopped:  # budget_usd: the records are returned
        logger.warning("starfish: job %s %s: %s", job_id, status, reason)
    result = JobResult(job_id, status, reason, counts)
    if collect:
        if runner.records is not None:
            out = result.records
            for kept in runner.records:
                if isinstance(kept, dict):
                    out.append(kept)
                elif kept:
                    out.extend(kept)
        else:
            result.records = list(storage.iter_records(job_id, "completed"))
    if stopped:
        raise JobStopped(
            f"job {job_id} ({name}) stopped: {reason}. {counts['completed']} inputs "
            f"completed (their records are on this exception's .records and stored); fix "
            f"the cause, then {_resume_hint(job_id)}",
            job_id=job_id,
            reason=reason,
            counts=counts,
            records=result.records,
        )
    return result


_REPORT = "starfish.data_factory.report"


def _import_report_while_calls_wait() -> None:
    """Import the end-of-job report (telemetry) once the workers have started their first
    calls, rather than after the last one: the first job of a process pays that import, and
    an I/O-bound job then pays it while its calls wait.

    Two callbacks ahead: the workers' first steps are scheduled after this one, so the outer
    callback runs before them and queues the import behind them. A failed import is left to
    the job's end, which imports it again and handles the error there.
    """
    if _REPORT in sys.modules:
        return

    def load() -> None:
        with contextlib.suppress(Exception):
            importlib.import_module(_REPORT)

    loop = asyncio.get_running_loop()
    loop.call_soon(loop.call_soon, load)


def _resume_hint(job_id: str) -> str:
    return f"continue it with: starfish jobs resume {job_id}"


def _announce(job_id: str, name: str, n: int, kind: str, *, resumed: bool) -> None:
    """One line on stderr as a job starts: the id a killed script needs to resume it."""
    what = "resumed" if resumed else "started"
    if kind == "local":
        then = f"if it stops, {_resume_hint(job_id)}"
    else:
        then = "in memory: only this process can resume it"
    line = f"job {job_id} {what} ({name}, {n} inputs); {then}"
    if logger.hasHandlers():
        logger.info(line)
    else:  # logging not set up: the line still reaches the user, like progress does
        print(f"starfish: {line}", file=sys.stderr, flush=True)


def _most_common_cause(storage: Storage, job_id: str, errors: dict[str, int]) -> str | None:
    """The job's most common error with a message sample read from its failure records."""
    try:
        return most_common_cause(errors, storage.iter_records(job_id, "failed"))
    except StorageError:
        return next(iter(sorted(errors, key=errors.__getitem__, reverse=True)), None)
