"""One job from start to end: store it, run it, store the outcome, report it, return records.

Whatever ends the job (all inputs done, target reached, circuit breaker, Ctrl-C), the
storage is flushed, the job row finalised and exactly one telemetry event sent.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any

from starfish.data_factory.context import JOB, JobContext
from starfish.data_factory.inputs import InputSpec, function_name
from starfish.data_factory.runner import Runner
from starfish.data_factory.state import JobState
from starfish.data_factory.storage import Storage, open_storage
from starfish.data_factory.storage.base import COUNT_KEYS
from starfish.errors import OutputError

if TYPE_CHECKING:
    from starfish.data_factory.factory import DataFactory

logger = logging.getLogger("starfish")

_INVERT = bytes([1, 0]) + bytes(254)


async def execute(
    factory: DataFactory,
    inputs: InputSpec,
    run_mode: str,
    *,
    storage: Storage | None = None,
    resume_id: str | None = None,
) -> list[dict]:
    """Run `inputs` through `factory.func` as a new job, or continue job `resume_id`."""
    from starfish.data_factory.factory import _call_spec, _new_job_id, public_config

    opts = factory._options
    if storage is None:
        storage = open_storage(opts["storage"])
    config = public_config(opts)
    name = function_name(factory.func)
    n = inputs.num_inputs
    started = time.monotonic()

    if resume_id is None:
        job_id = _new_job_id()
        state = JobState(opts["initial_state_values"])
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
        job_id = resume_id
        row = storage.get_job(job_id) or {}
        progress = storage.load_progress(job_id, n)
        state = JobState(
            progress.state if progress.state is not None else opts["initial_state_values"]
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
    # The workers' tasks (and the progress timer) copy this context: the model layer finds the
    # job (cache, counts) here.
    job_token = JOB.set(JobContext(job_id, getattr(storage, "path", None)))
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
        JOB.reset(job_token)

    run_time = time.monotonic() - started
    counts = {k: base[k] + runner.counts[k] for k in base}
    counts["dead"] -= runner.revived
    errors = dict(base_errors)
    for k, v in runner.error_summary.items():
        errors[k] = errors.get(k, 0) + v
    if interruption is not None:
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
        writer.close()
    finally:
        storage.finish_job(
            job_id,
            {
                "status": status,
                "stop_reason": reason,
                "counts": counts,
                "error_summary": errors,
                "state": state.to_dict(),
                "finished_at": time.time(),
                "execution_time": previous_time + run_time,
            },
        )
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
    if status != "completed":
        logger.warning("starfish: job %s %s: %s", job_id, status, reason)
    if interruption is not None:
        raise interruption
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
