"""One job from start to end: store it, run it, store the outcome, report it, return records.

Whatever ends the job (all inputs done, target reached, circuit breaker, Ctrl-C), the
storage is flushed, the job row finalised and exactly one telemetry event sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any

from starfish.data_factory.inputs import InputSpec, function_name
from starfish.data_factory.runner import Runner
from starfish.data_factory.state import JobState
from starfish.data_factory.storage import Storage, open_storage
from starfish.data_factory.storage.base import COUNT_KEYS
from starfish.errors import OutputError, StorageError

if TYPE_CHECKING:
    from starfish.data_factory.factory import DataFactory

logger = logging.getLogger("starfish")

_INVERT = bytes([1, 0]) + bytes(254)


def _storage_reason(error: BaseException) -> str:
    """The stored stop reason: `storage: database or disk is full`."""
    return f"storage: {getattr(error, 'reason', None) or error}"


async def execute(
    factory: DataFactory,
    inputs: InputSpec,
    run_mode: str,
    *,
    storage: Storage | None = None,
    resume_id: str | None = None,
) -> list[dict]:
    """Run `inputs` through `factory.func` as a new job, or continue job `resume_id`.

    The job is leased for the whole run: a resume of a job another process is running is
    refused here, before anything is read or called.
    """
    from starfish.data_factory.factory import _new_job_id

    if storage is None:
        storage = open_storage(factory._options["storage"])
    job_id = resume_id or _new_job_id()
    lease = storage.acquire_lease(job_id)
    try:
        return await _execute(factory, inputs, run_mode, storage, job_id, resume_id)
    finally:
        lease.release()


async def _execute(
    factory: DataFactory,
    inputs: InputSpec,
    run_mode: str,
    storage: Storage,
    job_id: str,
    resume_id: str | None,
) -> list[dict]:
    from starfish.data_factory.factory import _call_spec, public_config

    opts = factory._options
    config = public_config(opts)
    name = function_name(factory.func)
    n = inputs.num_inputs
    started = time.monotonic()

    as_json = opts["storage"] == "local"  # a dry run of a local job checks its state too
    if resume_id is None:
        state = JobState(opts["initial_state_values"], stored_as_json=as_json)
        spec: Any = (
            _call_spec(factory.func, inputs, opts) if storage.kind == "local" else (factory, inputs)
        )
        storage.create_job(
            {
                "job_id": job_id,
                "name": name,
                "status": "running",
                "run_mode": run_mode,
                "storage": storage.kind,
                "num_inputs": n,
                "config": config,
                "counts": None,
                "error_summary": None,
                "state": state.to_dict(),
                "created_at": time.time(),
            },
            spec,
        )
        pending = iter(range(n))
        base = dict.fromkeys(COUNT_KEYS, 0)
        base_errors: dict[str, int] = {}
        dead: set[int] = set()
        previous_time = 0.0
    else:
        row = storage.get_job(job_id) or {}
        progress = storage.load_progress(job_id, n)
        state = JobState(
            progress.state if progress.state is not None else opts["initial_state_values"],
            stored_as_json=as_json,
        )
        storage.start_resume(job_id, run_mode, config)
        pending = itertools.compress(range(n), progress.completed.translate(_INVERT))
        dead = progress.dead
        base = {
            "completed": progress.num_completed,
            **progress.failed_counts,
            "dead": len(dead),
        }
        base_errors = progress.error_summary
        previous_time = row.get("execution_time") or 0.0

    if run_mode != "dry_run":
        factory.job_id = job_id
        factory.state = state
        factory._inputs = inputs
        factory._storage = storage

    writer = storage.open_writer(job_id, opts["batch_size"])
    runner = Runner(
        func=factory.func,
        inputs=inputs,
        pending=pending,
        writer=writer,
        state=state,
        options=opts,
        base_completed=base["completed"],
        previously_dead=dead,
    )
    # A failed write stops the job at once: no new call starts (the writer stores no more).
    writer.on_failure = lambda error: runner._stop("failed", _storage_reason(error))
    reporter = None
    if opts["show_progress"] and run_mode != "dry_run":
        from starfish.data_factory.progress import ProgressReporter

        reporter = ProgressReporter(runner, name, n, already_done=base["completed"])
        reporter.start()

    interruption: BaseException | None = None
    try:
        await runner.run()
    except BaseException as exc:
        interruption = exc
    finally:
        if reporter is not None:
            reporter.stop()

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
        reason = "interrupted" if is_cancel else f"error: {type(interruption).__name__}"
    elif runner.status == "stopped":
        status, reason = "stopped", runner.stop_reason
    elif counts["completed"] == 0:
        status, reason = "failed", "no input completed"
    else:
        status, reason = "completed", runner.stop_reason
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
            config=opts,
            counts=runner.counts,
            error_summary=runner.error_summary,
            execution_time=run_time,
            target_reached=runner.target_reached,
        )
    if status != "completed" and storage_failure is None:
        logger.warning("starfish: job %s %s: %s", job_id, status, reason)
    if interruption is not None:
        raise interruption
    if storage_failure is not None:
        raise StorageError(
            f"job {job_id} stopped, {counts['completed']} completed inputs stored: "
            f"{storage_failure}, then continue it with: starfish jobs resume {job_id}"
        ) from storage_failure
    if counts["completed"] == 0:
        raise OutputError(
            f"job {job_id} ({name}) finished without one completed input "
            f"({counts['failed']} failed attempts, errors: {errors or 'none'}); "
            "its records stay readable with get_output_data(filter=...)."
        )
    if runner.records is not None:
        out: list[dict] = []
        for kept in runner.records:
            if isinstance(kept, dict):
                out.append(kept)
            elif kept:
                out.extend(kept)
        return out
    return list(storage.iter_records(job_id, "completed"))
