"""The exceptions users catch.

Every error Starfish raises on purpose derives from `StarfishError`; each also keeps the
built-in base it had before (`ValueError`, `KeyError`, `RuntimeError`), so code written
against those keeps working.
"""


class StarfishError(Exception):
    """Base of every error Starfish raises on purpose."""


class OptionsError(StarfishError, ValueError):
    """A `@data_factory` option (or another setting) is wrong; raised where it is written."""


class InputError(StarfishError, ValueError):
    """The inputs of a job are wrong; raised before the function is called once."""


class OutputError(StarfishError):
    """A job finished without one completed input; its records stay in storage."""


class JobNotFoundError(StarfishError, KeyError):
    """No stored job has this id (or the prefix matches several)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "job not found"


class ResumeError(StarfishError, RuntimeError):
    """A job cannot be resumed (no stored call spec, its function cannot be imported, ...)."""


class StorageError(StarfishError, RuntimeError):
    """The job storage cannot be read or written (disk full, read-only, corrupt database)."""
