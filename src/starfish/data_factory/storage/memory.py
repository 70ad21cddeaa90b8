"""In-memory storage: no files at all; a job lives as long as the process.

Records are kept as the very objects the function returned (no copies, no JSON). Model answers
are cached for the process's lifetime, as local storage caches them in its file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from starfish.data_factory.storage.base import (
    COUNT_KEYS,
    LLM_COUNT_KEYS,
    JobWriter,
    Progress,
    Storage,
    check_filter,
)
from starfish.errors import ResumeError

if TYPE_CHECKING:
    from starfish.data_factory.effects import Answer
    from starfish.data_factory.state import JobState

__all__ = ["MEMORY", "MemoryStorage"]


class _MemJob:
    __slots__ = ("attempts", "batches", "llm", "meta", "outcomes", "seq", "spec", "state")

    def __init__(self, meta: dict[str, Any], spec: Any, seq: int) -> None:
        self.state: dict[str, Any] = dict(meta.pop("state", None) or {})
        self.meta = meta
        self.spec = spec
        self.seq = seq
        self.llm: dict[str, Any] = {}  # what its model calls did (LLM_COUNT_KEYS)
        self.batches: dict[str, dict[str, Any]] = {}  # the batch lane's submissions
        # index -> (status, attempts, records); a list, so input order is free
        self.outcomes: list[tuple[str, int, list[dict[str, Any]] | None] | None] = [None] * meta[
            "num_inputs"
        ]
        self.attempts: list[
            tuple[int, int, str, str | None, list[dict[str, Any]]]
        ] = []  # (index, attempt, status, error_type, records)

    def row(self) -> dict[str, Any]:
        return {**self.meta, "state": dict(self.state)}


class MemoryStorage(Storage):
    kind = "in_memory"

    def __init__(self) -> None:
        self._jobs: dict[str, _MemJob] = {}
        self._seq = 0
        self._live: set[str] = set()  # jobs running now, in this process
        self.answers: dict[str, str] = {}  # cache key -> model answer
        self.answers_by_call: dict[tuple[int, int], dict[str, str]] = {}  # (index, attempt)

    def _job(self, job_id: str) -> _MemJob:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise KeyError(job_id) from None

    def create_job(self, meta: dict[str, Any], spec: Any) -> None:
        self._seq += 1
        self._jobs[meta["job_id"]] = _MemJob(dict(meta), spec, self._seq)

    def start_resume(self, job_id: str, run_mode: str, config: dict[str, Any]) -> None:
        self._job(job_id).meta.update(
            status="running", stop_reason=None, run_mode=run_mode, config=config, finished_at=None
        )

    def acquire_lease(self, job_id: str) -> Any:
        if job_id in self._live:
            raise ResumeError(
                f"job {job_id} is running in this process already: wait for it to end, or "
                "stop it, before resuming it."
            )
        self._live.add(job_id)
        return _MemLease(self._live, job_id)

    def is_live(self, job_id: str) -> bool:
        return job_id in self._live

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        job = self._jobs.get(job_id)
        return None if job is None else job.row()

    def find_job_ids(self, prefix: str) -> list[str]:
        return [j for j in self._jobs if prefix and j.startswith(prefix)]

    def list_jobs(self) -> list[dict[str, Any]]:
        jobs = sorted(self._jobs.values(), key=lambda j: j.seq, reverse=True)
        return [j.row() for j in jobs]

    def load_spec(self, job_id: str) -> Any:
        return self._job(job_id).spec

    def load_progress(self, job_id: str, num_inputs: int) -> Progress:
        job = self._job(job_id)
        completed = bytearray(num_inputs)
        dead: set[int] = set()
        empty = 0
        for i, outcome in enumerate(job.outcomes):
            if outcome is not None:
                if outcome[0] == "completed":
                    completed[i] = 1
                    empty += not outcome[2]
                elif outcome[0] == "dead":
                    dead.add(i)
        counts, errors = self.live_counts(job_id)
        failed = {k: counts[k] for k in ("failed", "filtered", "duplicate")}
        last: dict[int, int] = {}
        for index, attempt, *_ in job.attempts:
            if not completed[index]:
                last[index] = max(last.get(index, 0), attempt)
        for index in dead:
            outcome = job.outcomes[index]
            assert outcome is not None
            last[index] = max(last.get(index, 0), outcome[1])
        return Progress(completed, dead, failed, errors, dict(job.state), empty, last)

    def live_counts(self, job_id: str) -> tuple[dict[str, int], dict[str, int]]:
        job = self._job(job_id)
        counts = dict.fromkeys(COUNT_KEYS, 0)
        for outcome in job.outcomes:
            if outcome is not None:
                counts[outcome[0]] = counts.get(outcome[0], 0) + 1  # `waiting` too
        errors: dict[str, int] = {}
        for _, _, status, error_type, _ in job.attempts:
            counts[status] += 1
            if status == "failed" and error_type is not None:  # always set for a failure
                errors[error_type] = errors.get(error_type, 0) + 1
        return counts, errors

    def open_writer(self, job_id: str, batch_size: int) -> JobWriter:
        return _MemWriter(self._job(job_id), self)

    def finish_job(self, job_id: str, fields: dict[str, Any]) -> None:
        self._job(job_id).meta.update(fields)

    def llm_counts(self, job_id: str) -> dict[str, Any] | None:
        counts = self._job(job_id).llm
        if not counts:
            return None
        return {k: counts.get(k, None if k == "cost_usd" else 0) for k in LLM_COUNT_KEYS}

    def batches(self, job_id: str) -> list[dict[str, Any]]:
        return [dict(row) for row in self._job(job_id).batches.values()]

    def cached_answer(self, key: str) -> str | None:
        return self.answers.get(key)

    def cached_answers(self, calls: Iterable[tuple[int, int]]) -> dict[tuple[int, int], Any]:
        by_call = self.answers_by_call
        return {call: dict(by_call[call]) for call in calls if call in by_call}

    def iter_records(self, job_id: str, filter: str = "completed") -> Iterator[dict[str, Any]]:
        check_filter(filter)
        job = self._job(job_id)
        if filter == "completed":
            for outcome in job.outcomes:
                if outcome is not None and outcome[0] == "completed":
                    yield from outcome[2] or ()
        else:
            for _, _, _, _, records in sorted(
                (a for a in job.attempts if a[2] == filter), key=lambda a: (a[0], a[1])
            ):
                yield from records

    def iter_outcomes(
        self, job_id: str, filter: str = "completed"
    ) -> Iterator[tuple[int, int, list[dict[str, Any]]]]:
        check_filter(filter)
        job = self._job(job_id)
        if filter == "completed":
            for i, outcome in enumerate(job.outcomes):
                if outcome is not None and outcome[0] == "completed":
                    yield i, outcome[1], outcome[2] or []
        else:
            chosen = sorted((a for a in job.attempts if a[2] == filter), key=lambda a: a[:2])
            for index, attempt, _, _, records in chosen:
                yield index, attempt, records

    def indices(self, job_id: str, filter: str = "completed") -> list[int]:
        check_filter(filter)
        job = self._job(job_id)
        if filter == "completed":
            return [i for i, o in enumerate(job.outcomes) if o is not None and o[0] == filter]
        return sorted({a[0] for a in job.attempts if a[2] == filter})

    def dead_queue(self, job_id: str) -> list[int]:
        job = self._job(job_id)
        return [i for i, o in enumerate(job.outcomes) if o is not None and o[0] == "dead"]

    def delete_job(self, job_id: str) -> None:
        self._job(job_id)
        del self._jobs[job_id]


class _MemLease:
    def __init__(self, live: set[str], job_id: str) -> None:
        self._live = live
        self._job_id = job_id

    def release(self) -> None:
        self._live.discard(self._job_id)


class _MemWriter(JobWriter):
    def __init__(self, job: _MemJob, storage: MemoryStorage) -> None:
        self._job = job
        self._storage = storage

    def input_done(
        self, index: int, status: str, attempts: int, records: list[dict[str, Any]] | None
    ) -> None:
        self._job.outcomes[index] = (status, attempts, records)

    def attempt(
        self,
        index: int,
        attempt: int,
        status: str,
        records: list[dict[str, Any]],
        error_type: str | None,
    ) -> None:
        self._job.attempts.append((index, attempt, status, error_type, records))

    def set_state(self, state: JobState) -> None:
        self._job.state.update(state.take_changes())

    def keep(self, answers: list[Answer], counts: dict[str, Any]) -> None:
        storage = self._storage
        for key, text, index, attempt, _ in answers:
            storage.answers[key] = text
            storage.answers_by_call.setdefault((index, attempt), {})[key] = text
        total = self._job.llm
        for name, value in counts.items():
            total[name] = total.get(name, 0) + value

    def keep_batches(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self._job.batches[row["submission"]] = dict(row)

    async def committed(self) -> None:
        """Stored already: `keep` stores at once."""

    def close(self) -> None:
        """Nothing to flush: every outcome is stored the moment it is handed over."""


MEMORY = MemoryStorage()
"""The process-wide in-memory store: `resume` works only within this process."""
