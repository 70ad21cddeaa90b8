"""Where jobs are kept: `local` (SQLite in the app data dir) or `in_memory`."""

from __future__ import annotations

from starfish.data_factory.storage.base import FILTERS, JobWriter, Progress, Storage
from starfish.errors import JobNotFoundError


def open_storage(kind: str) -> Storage:
    """The storage for a decorator's `storage=` value."""
    if kind == "in_memory":
        from starfish.data_factory.storage.memory import MEMORY

        return MEMORY
    from starfish.data_factory.storage.sqlite import SqliteStorage

    return SqliteStorage.default()


__all__ = [
    "FILTERS",
    "JobNotFoundError",
    "JobWriter",
    "Progress",
    "Storage",
    "locate_job",
    "open_storage",
]


def locate_job(job_id: str) -> tuple[Storage, str]:
    """Find a job by id or unique id prefix: in-memory jobs of this process first, then local."""
    from starfish.data_factory.storage.memory import MEMORY
    from starfish.data_factory.storage.sqlite import SqliteStorage

    if not isinstance(job_id, str) or not job_id:
        raise JobNotFoundError(f"not a job id: {job_id!r}")
    local = SqliteStorage.default()
    for storage in (MEMORY, local):
        if storage.get_job(job_id) is not None:
            return storage, job_id
    matches = [(s, j) for s in (MEMORY, local) for j in s.find_job_ids(job_id)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise JobNotFoundError(
            f"job id prefix {job_id!r} is ambiguous: it matches "
            f"{', '.join(j for _, j in matches[:5])}; give more characters."
        )
    raise JobNotFoundError(
        f"no job with id {job_id!r} in {local.path}; `starfish jobs list` shows stored jobs."
    )
