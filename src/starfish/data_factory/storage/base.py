"""The storage interface: what the runner writes and what the getters and `jobs` read.

Per input only its outcome is stored (`completed` with its records, or `dead`), plus one row
per attempt that did not complete (`failed`, `filtered`, `duplicate`). The inputs passed to
`run()` are stored once per job as a blob (see `call_spec.py`); the rows of an input file, one
row per input (see `sqlite/input_rows.py`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starfish.data_factory.effects import Answer
    from starfish.data_factory.state import JobState

__all__ = [
    "COUNT_KEYS",
    "FILTERS",
    "LLM_COUNT_KEYS",
    "LOADING",
    "JobWriter",
    "Progress",
    "Storage",
    "check_filter",
]

FILTERS = ("completed", "failed", "filtered", "duplicate")
COUNT_KEYS = ("completed", "failed", "filtered", "duplicate", "dead")
LLM_COUNT_KEYS = (
    "requests",
    "cache_hits",
    "prompt_tokens",
    "completion_tokens",
    "rate_limited",
    "retries",
    "reasks",
    "cost_usd",
    "answers_json_schema",
    "answers_json_object",
    "answers_prompt",
    "judge_requests",
    "embedding_requests",
    "batch_requests",
)
"""What a job's model calls did, as stored per job (`cost_usd` is None while no price is
known; the others start at 0)."""
LOADING = "input file load incomplete"
"""The stop reason a job holds while the rows of its input file stream in, cleared in the
transaction that stores their count. A job killed meanwhile keeps it: `jobs show` reads
`abandoned (input file load incomplete)` and a resume says how to start again, instead of
running its 0 inputs and storing it `failed`."""


def check_filter(filter: str) -> str:
    if filter not in FILTERS:
        raise ValueError(f"filter must be one of {', '.join(FILTERS)}, got {filter!r}.")
    return filter


class Progress:
    """What a job has already done, as loaded for a resume."""

    __slots__ = (
        "attempts",
        "completed",
        "dead",
        "error_summary",
        "failed_counts",
        "num_completed",
        "num_empty",
        "state",
    )

    def __init__(
        self,
        completed: bytearray,
        dead: set[int],
        failed_counts: dict[str, int],
        error_summary: dict[str, int],
        state: dict[str, Any] | None,
        num_empty: int = 0,
        attempts: dict[int, int] | None = None,
    ) -> None:
        self.completed = completed  # 1 at index i when input i completed
        self.num_completed = completed.count(1)
        self.num_empty = num_empty  # completed with no records: not counted toward a target
        self.dead = dead
        self.failed_counts = failed_counts  # failed / filtered / duplicate attempts so far
        self.error_summary = error_summary
        self.state = state
        # the highest attempt number of every input that has not completed: a resume numbers
        # its attempts on from there (the model layer's cache key holds the attempt, so a
        # restart at 1 would replay the cached answers that failed)
        self.attempts = attempts or {}


class JobWriter(ABC):
    """Writes one job's outcomes; `close` returns once everything handed over is stored.

    A write that fails is never retried or skipped: the writer keeps the error as `failure`
    (a `StorageError`), calls `on_failure` with it so the job stops at once, stores nothing
    more, and `close` raises it.
    """

    failure: BaseException | None = None
    on_failure: Callable[[BaseException], None] | None = None

    @abstractmethod
    def input_done(
        self, index: int, status: str, attempts: int, records: list[dict[str, Any]] | None
    ) -> None:
        """`status` is `completed` (with records) or `dead` (records None)."""

    @abstractmethod
    def attempt(
        self,
        index: int,
        attempt: int,
        status: str,
        records: list[dict[str, Any]],
        error_type: str | None,
    ) -> None:
        """An attempt that did not complete: `failed`, `filtered` or `duplicate`."""

    @abstractmethod
    def set_state(self, state: JobState) -> None:
        """Take the keys of the job state set since the last call (`take_changes`) and store
        them with the next outcomes, in the same transaction."""

    @abstractmethod
    def keep(self, answers: list[Answer], counts: dict[str, Any]) -> None:
        """Model answers to cache and counts to add to the job's (see `effects.py`): stored
        with the next outcomes, in the same transaction, by the end of this loop turn."""

    @abstractmethod
    def keep_batches(self, rows: list[dict[str, Any]]) -> None:
        """Submissions of the batch lane (each a JSON object with its `submission` id), stored
        with the next commit, replacing those of the same id."""

    @abstractmethod
    async def committed(self) -> None:
        """Returns once everything handed over so far is stored (raises the writer's
        `failure` if it cannot be)."""

    @abstractmethod
    def close(self) -> None: ...


class Storage(ABC):
    kind: str

    @abstractmethod
    def create_job(self, meta: dict[str, Any], spec: Any) -> None:
        """Store a new job's row (status `running`) and its call spec, durably."""

    @abstractmethod
    def start_resume(self, job_id: str, run_mode: str, config: dict[str, Any]) -> None: ...

    @abstractmethod
    def acquire_lease(self, job_id: str) -> Any:
        """Mark the job live for as long as this process runs it (an object with `release()`);
        `ResumeError` if it is live already, so that no input runs twice."""

    @abstractmethod
    def is_live(self, job_id: str) -> bool:
        """A process is running this job now: a stored `running` job that is not live was
        killed mid-run (shown as `abandoned`)."""

    @abstractmethod
    def get_job(self, job_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def find_job_ids(self, prefix: str) -> list[str]: ...

    @abstractmethod
    def list_jobs(self) -> list[dict[str, Any]]:
        """Every job row, newest first."""

    @abstractmethod
    def llm_counts(self, job_id: str) -> dict[str, Any] | None:
        """The job's model-call counts (`LLM_COUNT_KEYS`), None if it made no model call."""

    @abstractmethod
    def batches(self, job_id: str) -> list[dict[str, Any]]:
        """What `JobWriter.keep_batches` stored for the job, oldest first."""

    @abstractmethod
    def cached_answer(self, key: str) -> str | None:
        """The model answer kept under cache key `key` (by any job), or None."""

    @abstractmethod
    def cached_answers(self, calls: Iterable[tuple[int, int]]) -> dict[tuple[int, int], Any]:
        """The answers kept for each (input index, attempt) of `calls` that has any, as
        {(index, attempt): {key: text}}: handed to calls that run elsewhere (Ray)."""

    def job_overviews(self, job_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """What `starfish jobs list` shows: every job row (or those of `job_ids`), newest
        first, each with its `dead_queue` and, when its stored counts are not final (status
        `running`, or none stored), `live_counts`: (counts, failures by type) from its rows."""
        if job_ids is None:
            rows = self.list_jobs()
        else:
            rows = [row for j in job_ids if (row := self.get_job(j)) is not None]
        for row in rows:
            row["dead_queue"] = self.dead_queue(row["job_id"])
            if row["status"] == "running" or row.get("counts") is None:
                row["live_counts"] = self.live_counts(row["job_id"])
        return rows

    @abstractmethod
    def load_spec(self, job_id: str) -> Any: ...

    @abstractmethod
    def load_progress(self, job_id: str, num_inputs: int) -> Progress: ...

    @abstractmethod
    def open_writer(self, job_id: str, batch_size: int) -> JobWriter: ...

    @abstractmethod
    def finish_job(self, job_id: str, fields: dict[str, Any]) -> None: ...

    @abstractmethod
    def iter_records(self, job_id: str, filter: str = "completed") -> Iterator[dict[str, Any]]: ...

    def iter_outcomes(
        self, job_id: str, filter: str = "completed"
    ) -> Iterator[tuple[int, int, list[dict[str, Any]]]]:
        """`(input index, attempt, records)` per stored outcome with that status, in the order
        of `iter_records`: what annotations kept beside the records (quality) are joined by."""
        raise NotImplementedError(f"{type(self).__name__} cannot list its outcomes")

    def count_records(self, job_id: str) -> int:
        """How many completed records the job has (an input may return several)."""
        return sum(1 for _ in self.iter_records(job_id, "completed"))

    @abstractmethod
    def indices(self, job_id: str, filter: str = "completed") -> list[int]: ...

    @abstractmethod
    def dead_queue(self, job_id: str) -> list[int]: ...

    @abstractmethod
    def live_counts(self, job_id: str) -> tuple[dict[str, int], dict[str, int]]:
        """Counts and error summary computed from the stored rows (for running jobs)."""

    @abstractmethod
    def delete_job(self, job_id: str) -> None: ...
