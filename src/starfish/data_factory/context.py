"""What the call running now belongs to: its job, input index and attempt.

The model layer reads it to key its cache by input and attempt and to add its counts to the
job. The job part is set once per run (job.py); the call part once per worker, in the
worker's own task, and filled in by the runner before each call of the user's function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CALL", "JOB", "CallContext", "JobContext", "current_call", "current_job"]


@dataclass
class JobContext:
    job_id: str
    db_path: Path | None  # the job database (local storage); None for in-memory jobs
    llm: dict[str, Any] = field(default_factory=dict)  # counts the model layer adds
    llm_before: dict[str, Any] = field(default_factory=dict)  # ... in earlier runs of the job
    llm_families: dict[str, int] = field(default_factory=dict)  # calls per provider family
    # A one-line status the progress display shows while set (progress.set_notice): what a
    # call waits on that the user cannot see, e.g. a server that does not answer.
    notice: str | None = None
    budget_usd: float | None = None  # the job's budget_usd: model requests are gated by it
    reserved_usd: float = 0.0  # what the requests in flight may cost (the model layer's)
    llm_cache: bool = True  # the job's llm_cache option: False asks the model again
    # The job-wide grants of a worker process (data_factory/grants.py `GrantsClient`): the
    # budget and rate limits held for every worker; None in the driver and locally.
    shared: Any = None

    def spent_usd(self) -> float:
        """What the job's model calls have cost so far, over all its runs (unknown prices: 0)."""
        now = self.llm.get("cost_usd") or 0.0
        return float(now + (self.llm_before.get("cost_usd") or 0.0))


StoredCounts = Callable[[Path, str], "dict[str, Any] | None"]
STORED_COUNTS: list[StoredCounts] = []
"""Readers of a job's stored model-layer counts, registered by the model layer when it is
imported (the factory never imports it): a resumed job's budget counts earlier runs too."""


Annotated = Callable[[str, str], "Iterator[dict[str, Any]]"]
RECORD_ANNOTATIONS: list[Annotated] = []
"""Readers of a job's records with what quality hooks stored beside them, registered by
`starfish.quality` when it is imported: `export(..., with_quality=True)`."""


JobDeleted = Callable[["Path | None", str], None]
JOB_DELETED: list[JobDeleted] = []
"""Deleters of what another layer stored about a job in its database (`starfish.quality`'s
findings and index), registered by that layer when it is imported: `jobs.delete_job` calls
each with the database path (None: in memory) and the job id."""


def load_counts_before(job: JobContext) -> None:
    if job.db_path is None:
        return
    for read in STORED_COUNTS:
        job.llm_before.update(read(job.db_path, job.job_id) or {})


@dataclass(frozen=True)
class CallContext:
    job: JobContext
    index: int
    attempt: int
    seen: dict[Any, int]  # per attempt: how often each request was made (for the model layer)
    clock: Any = None  # pause()/resume() the call's task_runner_timeout (None: no timeout)

    def occurrence(self, key: Any) -> int:
        """0 for the first time this attempt makes request `key`, 1 for the second, ..."""
        n = self.seen.get(key, 0)
        self.seen[key] = n + 1
        return n


JOB: ContextVar[JobContext | None] = ContextVar("starfish_job", default=None)
CALL: ContextVar[list[Any] | None] = ContextVar("starfish_call", default=None)
"""`[index, attempt, seen, clock]` of the worker's current call: one list per worker, set once
in its task and overwritten per attempt (cheaper than a contextvar set per call); `seen` is
None until the model layer needs it, `clock` is the worker's deadline (None: no timeout)."""


def current_job() -> JobContext | None:
    return JOB.get()


def current_call() -> CallContext | None:
    """The job, input index and attempt of the call running now; None outside a job."""
    job = JOB.get()
    call = CALL.get()
    if job is None or call is None or call[0] is None:
        return None
    if call[2] is None:
        call[2] = {}
    return CallContext(job, call[0], call[1], call[2], call[3])
