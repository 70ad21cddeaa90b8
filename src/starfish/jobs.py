"""Stored jobs from Python: list, load, read, resume and delete them.

Local jobs live in the SQLite database under the app data dir; in-memory jobs of this
process are found too. Reading records streams from storage in input order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from starfish.data_factory.storage import JobNotFoundError, Storage, locate_job
from starfish.data_factory.storage.base import COUNT_KEYS
from starfish.errors import StarfishError

__all__ = [
    "JobInfo",
    "JobNotFoundError",
    "LiveBatchesError",
    "count_records",
    "delete_job",
    "iter_dead",
    "iter_records",
    "latest",
    "list_jobs",
    "load_job",
    "resume_job",
]


@dataclass
class JobInfo:
    """One stored job as `starfish jobs show` prints it.

    `status` is the stored one, except that a job stored as `running` whose process is gone
    (killed, or its storage failed so badly that not even the final row could be written)
    reads as `abandoned`: nothing runs it, and `resume` continues it.
    """

    job_id: str
    name: str
    status: str
    stop_reason: str | None
    run_mode: str
    num_inputs: int
    counts: dict[str, int]
    config: dict[str, Any]
    created_at: float
    finished_at: float | None
    execution_time: float | None
    dead_queue: list[int] = field(default_factory=list)
    storage: str = "local"
    error_summary: dict[str, int] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    llm: dict[str, Any] | None = None  # the model layer's counts, when it was used
    made_with: dict[str, Any] | None = None  # a `starfish generate` job's model settings
    waiting: int = 0  # inputs deferred (waiting for an answer from outside), to run again
    batches: list[dict[str, Any]] = field(default_factory=list)  # see `batch_summary`

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_arrow(self, filter: str = "completed", *, with_quality: bool = False) -> Any:
        """The records as a `pyarrow.Table`, built from streamed record batches; `filter` as
        in export (`dead`: one row per dead input), `with_quality`: the quality.* columns."""
        from starfish.arrow import to_arrow

        return to_arrow(self.job_id, filter, with_quality)

    def to_pandas(self, filter: str = "completed", *, with_quality: bool = False) -> Any:
        """The records as a `pandas.DataFrame` (`starfish-datagen[pandas]`)."""
        from starfish.arrow import to_pandas

        return to_pandas(self.job_id, filter, with_quality)

    def to_dataset(self, filter: str = "completed", *, with_quality: bool = False) -> Any:
        """The records as a Hugging Face `datasets.Dataset` (`starfish-datagen[hf]`)."""
        from starfish.arrow import to_dataset

        return to_dataset(self.job_id, filter, with_quality)

    def _repr_html_(self) -> str:
        """In a notebook: status, progress, counts and cost instead of the dataclass repr."""
        from starfish._notebook import job_html

        return job_html(self)


class LiveBatchesError(StarfishError, RuntimeError):
    """`delete_job` of a job whose live provider batches could not be cancelled: the job is
    kept, for deleting it would forget the batches while the provider runs (and bills) them."""


def _llm_counts(storage: Storage, job_id: str) -> dict[str, Any] | None:
    return storage.llm_counts(job_id)


def batch_summary(row: dict[str, Any]) -> dict[str, Any]:
    """One batch the job submitted (`StructuredLLM(batch=True)`), from its stored row: the
    provider's id and status word, the request counts, when it was created and ended. Not the
    request lines, nor the base URL."""
    status = row.get("status") or {}
    return {
        "batch_id": (row.get("ref") or {}).get("batch_id"),
        "provider": row.get("provider"),
        "model": row.get("model"),
        "state": row.get("state"),
        "provider_status": status.get("provider_status"),
        "requests": len(row.get("lines") or []),
        "succeeded": int(status.get("succeeded") or 0),
        "failed": int(status.get("failed") or 0),
        "unfinished": int(status.get("unfinished") or 0),
        "reason": status.get("reason"),
        "created_at": row.get("created_at"),
        "ended_at": row.get("ended_at"),
    }


MADE_WITH = (
    "model_name",
    "base_url",
    "prompt",
    "output_schema",
    "structured_output",
    "model_kwargs",
)


def _made_with(storage: Storage, job_id: str) -> dict[str, Any] | None:
    """How a `starfish generate` job was made (model, base URL, prompt template, schema, mode),
    from its stored call spec; None for any other job. Never a key: the settings hold none."""
    import pickle

    try:
        outer = pickle.loads(storage.load_spec(job_id))
        where = outer.get("origin") or {}
        if (where.get("module"), where.get("qualname")) != ("starfish.llm.generate", "generate"):
            return None
        llm = pickle.loads(outer["rest"])["inputs"]["scalars"]["llm"]
    except Exception:  # no spec, an older one, or not a generate job
        return None
    settings = llm.get("settings", llm)
    return {k: settings[k] for k in MADE_WITH if settings.get(k) not in (None, {}, "auto")}


def _settled(storage: Storage, rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """Each overview row with the status to show: a job stored `running` that no process
    holds is `abandoned`. Those are read again first (one query for all), for a job may have
    finished, and let go of its lease, since the first read."""
    gone = {
        r["job_id"] for r in rows if r["status"] == "running" and not storage.is_live(r["job_id"])
    }
    again = {r["job_id"]: r for r in storage.job_overviews(sorted(gone))} if gone else {}
    settled = []
    for row in rows:
        if row["job_id"] in gone:
            row = again.get(row["job_id"], row)  # kept when deleted meanwhile
            settled.append((row, "abandoned" if row["status"] == "running" else row["status"]))
        else:
            settled.append((row, row["status"]))
    return settled


def _info(storage: Storage, row: dict[str, Any], status: str, with_llm: bool = False) -> JobInfo:
    """A job as shown, from its overview row (see `Storage.job_overviews`)."""
    job_id = row["job_id"]
    counts, errors = row.get("live_counts") or (row["counts"], row.get("error_summary"))
    return JobInfo(
        job_id=job_id,
        name=row["name"],
        status=status,
        stop_reason=row.get("stop_reason"),
        run_mode=row["run_mode"],
        num_inputs=row["num_inputs"],
        counts={k: int(counts.get(k, 0)) for k in COUNT_KEYS},
        config=row.get("config") or {},
        created_at=row["created_at"],
        finished_at=row.get("finished_at"),
        execution_time=row.get("execution_time"),
        dead_queue=row["dead_queue"],
        storage=storage.kind,
        error_summary=dict(errors or {}),
        state=row.get("state") or {},
        llm=_llm_counts(storage, job_id) if with_llm else None,
        made_with=_made_with(storage, job_id) if with_llm and row["name"] == "generate" else None,
        waiting=int(counts.get("waiting", 0))
        if row.get("live_counts") or not with_llm
        else int(storage.live_counts(job_id)[0].get("waiting", 0)),
        batches=[batch_summary(r) for r in storage.batches(job_id)] if with_llm else [],
    )


def list_jobs() -> list[JobInfo]:
    """Every stored job (local, then this process's in-memory ones by time), newest first."""
    from starfish.data_factory.storage.memory import MEMORY
    from starfish.data_factory.storage.sqlite import SqliteStorage

    local = SqliteStorage.default()
    try:
        infos = [
            _info(s, row, status)
            for s in (local, MEMORY)
            for row, status in _settled(s, s.job_overviews())
        ]
    finally:
        local.close()
    infos.sort(key=lambda info: info.created_at, reverse=True)
    return infos


def load_job(job_id: str) -> JobInfo:
    """The job with this id (or unique id prefix); `JobNotFoundError` if there is none."""
    storage, full_id = locate_job(job_id)
    rows = storage.job_overviews([full_id])
    if not rows:  # deleted since it was found
        raise JobNotFoundError(f"no job with id {job_id!r}")
    [(row, status)] = _settled(storage, rows)
    return _info(storage, row, status, with_llm=True)


def iter_records(job_id: str, filter: str = "completed") -> Iterator[dict[str, Any]]:
    """Stream a job's records with the given status, in input order, in constant memory."""
    storage, full_id = locate_job(job_id)
    return storage.iter_records(full_id, filter)


def iter_dead(job_id: str) -> Iterator[dict[str, Any]]:
    """One record per input in the dead-letter queue, in input order: its `index`, its last
    failure (`attempt`, `error_type`, `error`; absent when its attempts were filtered or
    duplicate, not failed) and, when the job's stored inputs can be read, its `input`."""
    storage, full_id = locate_job(job_id)
    dead = storage.dead_queue(full_id)
    if not dead:
        return
    inputs = _stored_inputs(storage, full_id)
    failures = storage.iter_records(full_id, "failed")  # ordered by index, then attempt
    failure = next(failures, None)
    for index in dead:
        record: dict[str, Any] = {"index": index}
        while failure is not None and failure.get("index", -1) <= index:
            if failure.get("index") == index:
                record.update(failure)  # the later attempt wins
            failure = next(failures, None)
        if inputs is not None:
            record["input"] = inputs.kwargs(index)
        yield record


def _stored_inputs(storage: Storage, job_id: str) -> Any:
    """The job's inputs as its call spec stored them, or None when they cannot be read."""
    from starfish.errors import StarfishError

    spec = storage.load_spec(job_id)
    if storage.kind == "in_memory":
        return spec[1] if isinstance(spec, tuple) else None
    from starfish.data_factory import call_spec
    from starfish.data_factory.inputs import inputs_from_payload

    try:
        payload = call_spec.load(spec, job_id)
        return inputs_from_payload(payload["inputs"], storage, job_id)
    except StarfishError:
        return None


def count_records(job_id: str) -> int:
    """How many completed records a job has, without reading them."""
    storage, full_id = locate_job(job_id)
    return storage.count_records(full_id)


def delete_job(job_id: str, *, keep_batches: bool = False) -> list[str]:
    """Delete a job, its inputs, its records, its batches and what other layers stored about
    it (`JOB_DELETED`); `ResumeError` while a process runs it. Batches still running at a
    provider are cancelled first (`LiveBatchesError`, the job kept, when one cannot be);
    `keep_batches=True` leaves them running. Returns a line per thing done to them."""
    from starfish.errors import ResumeError

    storage, full_id = locate_job(job_id)
    if storage.is_live(full_id):  # its writer would go on storing rows of a deleted job
        raise ResumeError(
            f"job {full_id} is running now: stop it (Ctrl-C) or wait for it to end, then delete it."
        )
    notes = _cancel_batches(storage, full_id, keep_batches)
    storage.delete_job(full_id)
    # The rows other layers keep about the job go too. The quality layer registers its
    # deleter when imported; a `starfish jobs delete` process has not imported it yet.
    import starfish.quality  # noqa: F401
    from starfish.data_factory.context import JOB_DELETED

    for forget in JOB_DELETED:
        forget(getattr(storage, "path", None), full_id)
    return notes


def _cancel_batches(storage: Storage, job_id: str, keep: bool) -> list[str]:
    from starfish.llm.batch.cancel import cancel_live, live

    rows = live(storage.batches(job_id))
    if not rows:
        return []
    if keep:
        ids = ", ".join(str((r.get("ref") or {}).get("batch_id") or "unconfirmed") for r in rows)
        return [f"left {len(rows)} live batch{'es' if len(rows) > 1 else ''} running ({ids})"]
    done = cancel_live(rows)
    if done.problems:
        first = "; ".join(done.notes() + done.problems)
        raise LiveBatchesError(
            f"job {job_id} kept: {first}. Fix that and delete it again, or delete it with "
            "--keep-batches (keep_batches=True) to leave the batches running, and billed."
        )
    return done.notes()


def latest(name: str | None = None) -> JobInfo:
    """The newest stored job, or the newest of the function called `name` (`qa`, or the
    `__qualname__` of a nested one): how a new process finds the job a killed script left."""
    for info in list_jobs():
        if name is None or info.name == name:
            return info
    stored = sorted({info.name for info in list_jobs()})
    raise JobNotFoundError(
        f"no stored job of a function named {name!r}; stored names: {', '.join(stored) or 'none'}"
        if name is not None
        else "no jobs stored yet"
    )


def resume_job(job_id: str, *, reload: bool = False, **overrides: Any) -> list[dict[str, Any]]:
    """Continue a stored job (see `data_factory.resume_from_checkpoint`)."""
    from starfish.data_factory.factory import resume_from_checkpoint

    return resume_from_checkpoint(job_id, reload=reload, **overrides)


def run_resume(job_id: str, *, reload: bool = False, **overrides: Any) -> None:
    """`resume_job` that leaves the records in storage (the CLI: memory stays flat)."""
    from starfish.data_factory.factory import resume_stored_job

    resume_stored_job(job_id, reload=reload, collect=False, overrides=overrides)
