"""The exceptions users catch.

Every error Starfish raises on purpose derives from `StarfishError`; each also keeps the
built-in base it had before (`ValueError`, `KeyError`, `RuntimeError`), so code written
against those keeps working.
"""

from typing import Any

__all__ = [
    "HookError",
    "InputError",
    "JobNotFoundError",
    "JobStopped",
    "JobTerminated",
    "OptionsError",
    "OutputError",
    "ResumeError",
    "SecretError",
    "StarfishError",
    "StorageError",
]


class StarfishError(Exception):
    """Base of every error Starfish raises on purpose."""


class OptionsError(StarfishError, ValueError):
    """A `@data_factory` option (or another setting) is wrong; raised where it is written."""


class HookError(OptionsError):
    """A hook broke its contract (e.g. returned an unknown verdict); it stops the job."""

    fatal = True  # every input would hit it: retrying only wastes calls


class InputError(StarfishError, ValueError):
    """The inputs of a job are wrong; raised before the function is called once."""


class OutputError(StarfishError):
    """A job finished without one completed input; its records stay in storage."""


class JobStopped(OutputError):
    """The circuit breaker stopped a job whose calls mostly failed; raised after it is stored.

    An `OutputError`, so code that catches a job without output catches this too. It keeps
    what a caller needs to carry on: the `job_id` (to resume once the cause is fixed), the
    stop `reason` (the failure rate and the most common error with a message sample), the
    stored `counts`, and the `records` of the inputs that completed, in input order.
    """

    def __init__(
        self,
        message: str,
        *,
        job_id: str,
        reason: str,
        counts: dict[str, int],
        records: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.reason = reason
        self.counts = counts
        self.records: list[dict[str, Any]] = records if records is not None else []


class JobNotFoundError(StarfishError, KeyError):
    """No stored job has this id (or the prefix matches several)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "job not found"


class ResumeError(StarfishError, RuntimeError):
    """A job cannot be resumed (no stored call spec, its function cannot be imported, ...)."""


class SecretError(StarfishError, ValueError):
    """A job would store an API key (in its function's globals, its inputs or options): it is
    refused before anything is stored or called."""


class StorageError(StarfishError, RuntimeError):
    """The job storage cannot be read or written (disk full, read-only, corrupt database)."""

    reason: str | None = None
    """The cause alone (`database or disk is full`), for the stored stop reason."""


class JobTerminated(SystemExit):
    """SIGTERM arrived while a job ran: the job was flushed and stored `interrupted` first.

    A `SystemExit` with code 143, so an uncaught one ends the process the way SIGTERM's
    default would have (`docker stop` and Kubernetes read 143), after `finally` blocks ran.
    """

    def __init__(self, job_id: str | None = None) -> None:
        super().__init__(143)
        self.job_id = job_id
