"""The one line a Ctrl-C leaves when it ends a script in the middle of a job.

`run` re-raises the `KeyboardInterrupt` on purpose: a Python caller (a notebook, a script with
its own `except KeyboardInterrupt`) must see it. Uncaught, Python would print a traceback of
the event loop's internals, where the user needs the job id and the resume command. So the
exception is given that line as its message, and a `sys.excepthook` prints only that line for
it, leaving every other exception to the hook that was there. The exception stays exactly a
`KeyboardInterrupt`, so the interpreter still ends the way an uncaught Ctrl-C does (by SIGINT,
exit status 130 in a shell).
"""

from __future__ import annotations

import sys
from types import TracebackType

__all__ = ["line_of", "mark"]

_MARK = "_starfish_job_line"


def mark(error: KeyboardInterrupt, job_id: str, storage_kind: str) -> None:
    """Give `error` the job's resume line and make an uncaught one print just that line."""
    if getattr(error, _MARK, None) is not None:  # a nested run already said it
        return
    if storage_kind == "local":
        then = f"continue it with: starfish jobs resume {job_id}"
    else:
        then = "it was in memory, so only this process could have resumed it"
    line = f"job {job_id} interrupted, its progress stored; {then}"
    error.args = (line,)
    setattr(error, _MARK, line)
    if not isinstance(sys.excepthook, _OneLine):
        sys.excepthook = _OneLine(sys.excepthook)


def line_of(error: BaseException) -> str | None:
    """The resume line `mark` gave this interrupt, if it ended a stored job."""
    line = getattr(error, _MARK, None)
    return line if isinstance(line, str) else None


class _OneLine:
    """`sys.excepthook` that prints a marked interrupt as its line, anything else as before."""

    def __init__(self, previous: object) -> None:
        self.previous = previous

    def __call__(
        self, kind: type[BaseException], error: BaseException, tb: TracebackType | None
    ) -> None:
        line = getattr(error, _MARK, None)
        if line is not None:
            print(f"starfish: {line}", file=sys.stderr, flush=True)
            return
        previous = self.previous if callable(self.previous) else sys.__excepthook__
        previous(kind, error, tb)
