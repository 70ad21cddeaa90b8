"""Running a job from synchronous code: our own event loop, signals, and notebooks.

`asyncio.run` would do, except for what happens when the process is told to stop. Here
Ctrl-C (SIGINT) and SIGTERM (`docker stop`, Kubernetes) both cancel only the job's main task,
so the job stops its workers itself, flushes storage and stores `interrupted`; then Ctrl-C
raises `KeyboardInterrupt` and SIGTERM `JobTerminated` (exit 143). Cancelling only the main
task matters: `asyncio.run` cancels every task at once, and a worker cancelled from outside the
job could not tell that from a `CancelledError` leaked by the user's HTTP client.

Where a loop is already running in this thread (Jupyter), the job runs on a loop of its own in
a thread; interrupting the cell cancels that job the same way before `run` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from starfish.errors import JobTerminated

__all__ = ["run_sync"]

Make = Callable[[], Coroutine[Any, Any, Any]]


def run_sync(make: Make) -> Any:
    """Run the coroutine `make()` to the end and return its result."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run(make, in_main_thread=threading.current_thread() is threading.main_thread())
    return _run_in_thread(make)


def _signals_to_handle() -> list[signal.Signals]:
    """Only signals nobody else handles: a program's own handlers are left alone."""
    wanted = []
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        wanted.append(signal.SIGINT)
    if hasattr(signal, "SIGTERM") and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        wanted.append(signal.SIGTERM)
    return wanted


def _run(make: Make, *, in_main_thread: bool, started: Callable[..., None] | None = None) -> Any:
    loop = asyncio.new_event_loop()
    received: list[signal.Signals] = []
    handled: list[signal.Signals] = []
    try:
        task = loop.create_task(make())

        def on_signal(sig: signal.Signals) -> None:
            if received and sig == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for the flush
            received.append(sig)
            task.cancel(sig.name)

        if in_main_thread:
            for sig in _signals_to_handle():
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, on_signal, sig)
                    handled.append(sig)
        if started is not None:
            started(loop, task)
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            if signal.SIGTERM in received:
                raise JobTerminated from None
            if received:
                raise KeyboardInterrupt from None
            raise
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        _close(loop)


def _close(loop: asyncio.AbstractEventLoop) -> None:
    try:
        left = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in left:
            t.cancel()
        if left:
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


def _run_in_thread(make: Make) -> Any:
    """For a caller whose thread already runs a loop: the job runs on its own loop in a thread.

    Interrupting the caller (Ctrl-C on a notebook cell) cancels the job and waits until it is
    stored `interrupted`: returning earlier would leave the thread calling the function.
    """
    box: dict[str, Any] = {}
    ready = threading.Event()

    def started(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        box["loop"], box["task"] = loop, task
        ready.set()

    def target() -> None:
        try:
            box["value"] = _run(make, in_main_thread=False, started=started)
        except BaseException as exc:
            box["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=target, name="starfish-job", daemon=True)
    thread.start()
    try:
        thread.join()
    except BaseException:
        ready.wait()
        loop, task = box.get("loop"), box.get("task")
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(task.cancel, "SIGINT")
        thread.join()
        raise
    if "error" in box:
        raise box["error"]
    return box["value"]
