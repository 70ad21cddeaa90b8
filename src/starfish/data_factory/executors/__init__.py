"""Executors: where the user's function is called. The driver keeps gates, rules and storage.

`local` (the default) calls it on the job's own event loop. Another executor (a cluster)
implements the same small interface: `call` returns an awaitable of the function's result for
one input, and cancelling that awaitable must stop the call (the driver's watchdog keeps the
deadline).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starfish.data_factory.context import JobContext
from starfish.data_factory.executors.local import LocalExecutor

AnswersFor = Callable[[list[tuple[int, int]]], dict[tuple[int, int], Any]]


class Executor(Protocol):
    async def start(self) -> None:
        """Before the first call (connect, start workers)."""

    def call(self, index: int, attempt: int, kwargs: dict[str, Any]) -> Awaitable[Any]:
        """The function's result for one input (it may raise what the function raised)."""
        ...

    async def close(self) -> None:
        """After the last call, however the job ended."""


def make_executor(
    name: str,
    func: Callable[..., Any],
    *,
    timeout: float | None,
    concurrency: int,
    job: JobContext | None = None,
    answers_for: AnswersFor | None = None,
) -> Executor:
    """The executor for an `executor=` option value (Ray is imported only for `ray`).

    An executor that runs calls in other processes hands each call the model answers storage
    kept for its input and attempt (`answers_for`) and gives what the call did back to the
    job (`job`: its counts, and its writer for the answers), with the outcome."""
    if name == "ray":
        from starfish.data_factory.executors.ray import RayExecutor

        return RayExecutor(func, timeout, concurrency, job=job, answers_for=answers_for)
    return LocalExecutor(func)


def check_portable(name: str, func: Callable[..., Any]) -> None:
    """An executor that runs calls in other processes needs a function cloudpickle can ship."""
    if name == "local":
        return
    import cloudpickle

    from starfish.errors import OptionsError

    try:
        cloudpickle.dumps(func)
    except Exception as exc:
        fname = getattr(func, "__qualname__", repr(func))
        raise OptionsError(
            f"executor={name!r} sends {fname} to other processes, but it cannot be pickled "
            f"({type(exc).__name__}: {exc}); keep what it uses (clients, locks, open files) "
            "out of its closure, e.g. create them inside the function."
        ) from None


__all__ = ["Executor", "LocalExecutor", "make_executor"]
