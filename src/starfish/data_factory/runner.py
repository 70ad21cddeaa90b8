"""The scheduler: a fixed pool of workers pulling input indices, with stop rules.

`max_concurrency` worker coroutines share one iterator of pending indices (never a task per
input, so a million inputs cost no more memory than ten). Retries are re-enqueued after an
exponential backoff with jitter by `loop.call_later`, not by a sleeping task. Idle workers
wait on a future that is resolved when work appears or the job ends: no polling.

Timeouts: every call shares one `task_runner_timeout`, so instead of a timer per call
(`asyncio.timeout` costs a third of the per-input overhead) each worker writes its call's
deadline into a slot and a single watchdog timer, armed for the earliest deadline, cancels
the workers whose calls overran. The worker turns that cancellation into `TimeoutError`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from starfish.data_factory.context import CALL
from starfish.data_factory.inputs import InputSpec, function_name
from starfish.data_factory.state import JobState
from starfish.data_factory.storage.base import COUNT_KEYS, JobWriter

logger = logging.getLogger("starfish")

RETRY_BASE_DELAY = 0.02
"""Seconds before the first retry; doubled per attempt, with jitter of ±50 %."""
RETRY_MAX_DELAY = 2.0

Hook = Callable[..., Any]


def _describe(out: Any) -> str:
    if isinstance(out, list):
        bad = next(r for r in out if not isinstance(r, dict))
        return f"a list holding {type(bad).__name__}"
    return type(out).__name__


def _as_hook_list(hooks: Hook | list[Hook] | tuple[Hook, ...] | None) -> list[Hook]:
    if hooks is None:
        return []
    if callable(hooks):
        return [hooks]
    return list(hooks)


class Runner:
    """Runs the pending inputs of one job and tracks what happened to each."""

    def __init__(
        self,
        *,
        func: Callable[..., Any],
        inputs: InputSpec,
        pending: Iterator[int],
        writer: JobWriter,
        state: JobState,
        options: dict[str, Any],
        base_completed: int = 0,
        previously_dead: set[int] | None = None,
    ) -> None:
        self.func = func
        self.name = function_name(func)
        self.inputs = inputs
        self.writer = writer
        self.state = state
        self.max_concurrency: int = options["max_concurrency"]
        self.timeout: float | None = options["task_runner_timeout"] or None
        self.dead_threshold: int = options["dead_queue_threshold"]
        self.stop_threshold: int = options["job_run_stop_threshold"]
        target = options["target_count"]
        self.target_remaining = max(target - base_completed, 0) if target else 0
        self.target_mode = bool(target)
        self.on_complete = _as_hook_list(options.get("on_record_complete"))
        self.on_error = _as_hook_list(options.get("on_record_error"))
        self.previously_dead = previously_dead or set()
        # The records `run()` returns, by input, when this run is the whole job: handing back
        # the objects already in hand beats reading them back from storage.
        self.records: list[dict | list | None] | None = (
            [None] * inputs.num_inputs if base_completed == 0 else None
        )

        # what this run did
        self.counts = dict.fromkeys(COUNT_KEYS, 0)
        self.revived = 0  # previously dead inputs that completed in this run
        self.error_summary: dict[str, int] = {}
        self.status = "completed"
        self.stop_reason: str | None = None
        self.target_reached = False

        self._pending = pending
        self._ready: deque[int] = deque()
        self._attempts: dict[int, int] = {}
        self._retry_handles: dict[int, asyncio.TimerHandle] = {}
        self._streak: set[int] = set()
        self._busy = 0
        self._stopping = False
        self._waiter: asyncio.Future | None = None
        self._tasks: list[asyncio.Task] = []
        self._deadlines: list[float | None] = [None] * self.max_concurrency
        self._timed_out = [False] * self.max_concurrency
        self._calls: list[list] = [[None, None, None] for _ in range(self.max_concurrency)]
        self._watchdog: asyncio.TimerHandle | None = None
        self._state_version = state.version
        self._loop: asyncio.AbstractEventLoop | None = None

    # public ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Run until every input is done or dead, the target is reached, or a stop rule fires."""
        self._loop = asyncio.get_running_loop()
        if self.target_mode and self.target_remaining == 0:
            self._stop("completed", "target_count already reached")
            self.target_reached = True
            return
        self._tasks = [
            self._loop.create_task(self._worker(wid)) for wid in range(self.max_concurrency)
        ]
        try:
            await asyncio.wait(self._tasks)
        except BaseException:
            self._stop("interrupted", "interrupted")
            await asyncio.wait(self._tasks)
            raise
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
            self._save_state()
        for task in self._tasks:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # a bug in the runner or storage, not the user's function
        if not self._stopping:
            self.stop_reason = "all inputs done"

    @property
    def done(self) -> int:
        return self.counts["completed"] + self.counts["dead"]

    # scheduling ----------------------------------------------------------------------------
    def _next_index(self) -> int | None:
        if self._stopping:
            return None
        if self._ready:
            return self._ready.popleft()
        return next(self._pending, None)

    async def _worker(self, wid: int) -> None:
        CALL.set(self._calls[wid])  # once per worker, in its own task's context
        while True:
            index = self._next_index()
            if index is None:
                if self._stopping or (self._busy == 0 and not self._retry_handles):
                    self._wake()
                    return
                waiter = self._waiter
                if waiter is None or waiter.done():
                    waiter = self._waiter = self._loop.create_future()
                await waiter
                continue
            self._busy += 1
            try:
                await self._attempt(index, wid)
            finally:
                self._busy -= 1

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _retry_later(self, index: int, attempts: int) -> None:
        self._attempts[index] = attempts
        delay = min(RETRY_MAX_DELAY, RETRY_BASE_DELAY * 2 ** (attempts - 1))
        delay *= 0.5 + random.random()
        self._retry_handles[index] = self._loop.call_later(delay, self._retry_ready, index)

    def _retry_ready(self, index: int) -> None:
        del self._retry_handles[index]
        if not self._stopping:
            self._ready.append(index)
        self._wake()

    def _watchdog_fire(self) -> None:
        self._watchdog = None
        now = self._loop.time()
        deadlines = self._deadlines
        earliest = None
        for wid, deadline in enumerate(deadlines):
            if deadline is None:
                continue
            if deadline <= now:
                deadlines[wid] = None
                self._timed_out[wid] = True
                self._tasks[wid].cancel()
            elif earliest is None or deadline < earliest:
                earliest = deadline
        if earliest is not None:
            self._watchdog = self._loop.call_at(earliest, self._watchdog_fire)

    def _stop(self, status: str, reason: str) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.status = status
        self.stop_reason = reason
        for handle in self._retry_handles.values():
            handle.cancel()
        self._retry_handles.clear()
        current = asyncio.current_task() if self._loop is not None else None
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._wake()

    # one attempt ---------------------------------------------------------------------------
    async def _attempt(self, index: int, wid: int) -> None:
        attempt = self._attempts.pop(index, 0) + 1
        kwargs = self.inputs.kwargs(index)
        error: BaseException | None = None
        records: list = []
        verdict: str | None = None
        if self.timeout is not None:
            deadline = self._loop.time() + self.timeout
            self._deadlines[wid] = deadline
            if self._watchdog is None:
                self._watchdog = self._loop.call_at(deadline, self._watchdog_fire)
        call = self._calls[wid]  # what the model layer keys its cache by (context.py)
        call[0], call[1], call[2] = index, attempt, None
        try:
            out = await self.func(**kwargs)
            self._deadlines[wid] = None
            records = self._normalize(out)
        except asyncio.CancelledError:
            self._deadlines[wid] = None
            if not self._timed_out[wid]:
                raise
            error = TimeoutError(
                f"{self.name} took longer than task_runner_timeout={self.timeout}s"
            )
        except Exception as exc:
            self._deadlines[wid] = None
            error = exc
        if self._timed_out[wid]:
            self._timed_out[wid] = False
            uncancel = getattr(self._tasks[wid], "uncancel", None)
            if uncancel is not None:
                uncancel()
            if error is None:
                error = TimeoutError(
                    f"{self.name} took longer than task_runner_timeout={self.timeout}s"
                )
        if error is None and self.on_complete:
            try:
                verdict = await self._run_complete_hooks(records)
            except Exception as exc:
                error = exc
        if self._stopping:
            return
        if error is not None:
            await self._failed(index, attempt, error)
            return
        self._streak.clear()
        if verdict is None:
            try:
                self.writer.input_done(index, "completed", attempt, records)
            except Exception as exc:  # records the storage cannot encode (not JSON, cyclic)
                await self._failed(index, attempt, exc)
                return
            self.counts["completed"] += 1
            if self.records is not None:  # a lone record is kept without its list: 1M × 72 B
                self.records[index] = records[0] if len(records) == 1 else records
            if index in self.previously_dead:
                self.revived += 1
            self._save_state()
            if self.target_mode and self.counts["completed"] >= self.target_remaining:
                self.target_reached = True
                self._stop("completed", "target_count reached")
            return
        try:
            self.writer.attempt(index, attempt, verdict, records, None)
        except Exception as exc:
            await self._failed(index, attempt, exc)
            return
        self.counts[verdict] += 1
        self._save_state()
        self._again_or_dead(index, attempt)

    def _normalize(self, out: Any) -> list:
        if type(out) is list:
            for record in out:
                if not isinstance(record, dict):
                    break
            else:
                return out
        elif isinstance(out, dict):
            return [out]
        elif isinstance(out, list) and all(isinstance(r, dict) for r in out):
            return out
        raise TypeError(f"{self.name} must return a list of dicts or a dict, not {_describe(out)}")

    async def _run_complete_hooks(self, records: list) -> str | None:
        verdict = None
        for hook in self.on_complete:
            result = hook(records, self.state)
            if inspect.isawaitable(result):
                result = await result
            if result == "duplicate":
                verdict = "duplicate"
            elif result == "filtered" and verdict is None:
                verdict = "filtered"
        return verdict

    async def _failed(self, index: int, attempt: int, error: BaseException) -> None:
        error_type = type(error).__name__
        self.counts["failed"] += 1
        self.error_summary[error_type] = self.error_summary.get(error_type, 0) + 1
        failure = {
            "index": index,
            "attempt": attempt,
            "error_type": error_type,
            "error": str(error),
        }
        self.writer.attempt(index, attempt, "failed", [failure], error_type)
        for hook in self.on_error:
            try:
                result = hook(error, self.state)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                logger.warning("on_record_error hook %r raised %r", hook, exc)
        if self._stopping:
            return
        self._save_state()
        self._streak.add(index)
        if self.stop_threshold and len(self._streak) >= self.stop_threshold:
            reason = (
                f"circuit breaker: {len(self._streak)} inputs failed in a row "
                f"(last error {error_type}); job_run_stop_threshold={self.stop_threshold}"
            )
            logger.warning("starfish: job stopped by %s", reason)
            self._stop("stopped", reason)
            return
        self._again_or_dead(index, attempt)

    def _again_or_dead(self, index: int, attempt: int) -> None:
        if attempt < self.dead_threshold:
            self._retry_later(index, attempt)
            return
        self.writer.input_done(index, "dead", attempt, None)
        if index not in self.previously_dead:
            self.counts["dead"] += 1

    def _save_state(self) -> None:
        if self.state.version != self._state_version:
            self._state_version = self.state.version
            self.writer.set_state(self.state.to_dict())
