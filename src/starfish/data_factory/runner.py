"""The run loop: take an input, pass every gate, call under the deadline, release the gates,
record the outcome, apply the rules.

`max_concurrency` worker coroutines share one `WorkQueue` (a fixed pool: a million inputs
cost no more memory than ten, and a worker is a concurrency permit, so that gate costs no
await). Other gates (`gates.py`) are awaited in order before each call; the deadline is kept by
one `Watchdog` timer for all calls; the call itself goes through the job's executor; each
outcome is stored and then shown to the rules (`rules.py`), which retry, dead-letter or stop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any

from starfish.data_factory.context import CALL
from starfish.data_factory.deferred import Deferred, Dispatcher
from starfish.data_factory.executors import Executor
from starfish.data_factory.gates import Gate
from starfish.data_factory.inputs import InputSpec
from starfish.data_factory.rules import ALL, DEAD, Outcome, Retry, Rule, Stop, TargetCount
from starfish.data_factory.state import JobState
from starfish.data_factory.storage.base import COUNT_KEYS, JobWriter
from starfish.data_factory.watchdog import Watchdog
from starfish.data_factory.workqueue import WorkQueue
from starfish.errors import HookError

logger = logging.getLogger("starfish")

Hook = Callable[..., Any]
VERDICTS = (None, "filtered", "duplicate")


def _describe(out: Any) -> str:
    if isinstance(out, list):
        bad = next(r for r in out if not isinstance(r, dict))
        return f"a list holding {type(bad).__name__}"
    return type(out).__name__


def _cancel_requested() -> bool:
    """Whether this task really was cancelled (Python 3.11+ counts cancel requests).

    Without the count (3.10), the runner's own flags alone tell the job's cancellations from a
    `CancelledError` that the function raised by itself.
    """
    cancelling = getattr(asyncio.current_task(), "cancelling", None)
    return cancelling is not None and cancelling() > 0


class _Clock:
    """The deadline of one worker's current call, which the model layer pauses while the call
    waits in a rate limiter: waiting for a turn is not the call overrunning."""

    __slots__ = ("_slot", "_watchdog")

    def __init__(self, watchdog: Watchdog, slot: int) -> None:
        self._watchdog = watchdog
        self._slot = slot

    def pause(self) -> None:
        self._watchdog.pause(self._slot)

    def resume(self) -> None:
        self._watchdog.resume(self._slot)


class Runner:
    """Runs the pending inputs of one job and tracks what happened to each."""

    def __init__(
        self,
        *,
        executor: Executor,
        name: str,
        inputs: InputSpec,
        pending: Iterator[int],
        writer: JobWriter,
        state: JobState,
        concurrency: int,
        timeout: float | None,
        gates: list[Gate],
        rules: Callable[[dict[str, int]], list[Rule]],
        on_complete: list[Hook],
        on_error: list[Hook],
        keep_records: bool,
        previously_dead: set[int] | None = None,
        attempts_before: dict[int, int] | None = None,
    ) -> None:
        self.executor = executor
        self.name = name
        self.inputs = inputs
        self.writer = writer
        self.state = state
        self.concurrency = concurrency
        self.timeout = timeout
        self.gates = gates
        self.on_complete = on_complete
        self.on_error = on_error
        # Hooks that keep something per kept record (starfish.quality's dedupe index) hear
        # what came of the records their call saw: `hook.settle(records, outcome, state)`.
        self._settlers = [s for s in (getattr(h, "settle", None) for h in on_complete) if s]
        self.previously_dead = previously_dead or set()
        # Attempt numbers go on across runs (stored and in the call context, which the model
        # layer keys its cache by), so a resume asks again instead of replaying a cached
        # failure; the rules count this run's attempts, so a dead input gets fresh ones.
        self._before = attempts_before or {}
        self.counts = dict.fromkeys(COUNT_KEYS, 0)
        self.rules = rules(self.counts)
        self._target = next((r for r in self.rules if isinstance(r, TargetCount)), None)
        self._rules_for = {s: [r for r in self.rules if s in r.sees] for s in ALL}
        # a completion shown to no rule and no gate needs no Outcome: the common case
        self._bare_completions = not (self._rules_for["completed"] or gates)
        # The records `run()` returns, by input, when this run is the whole job: handing back
        # the objects already in hand beats reading them back from storage.
        self.records: list[dict[str, Any] | list[Any] | None] | None = (
            [None] * inputs.num_inputs if keep_records else None
        )

        # what this run did
        self.revived = 0  # previously dead inputs that completed in this run
        self.error_summary: dict[str, int] = {}
        self.status = "completed"
        self.stop_reason: str | None = None
        self.fatal_error: BaseException | None = None  # the error that stopped a failed job

        self._pending = pending
        self._queue: WorkQueue | None = None
        self._watchdog: Watchdog | None = None
        self._attempts: dict[int, int] = {}
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        # deferred inputs: each dispatcher they wait on, and one task listening to it
        self.waiting: set[int] = set()
        self._dispatchers: dict[int, tuple[Dispatcher, asyncio.Task[None]]] = {}
        # what the model layer keys its cache by (context.py): one list per worker
        self._calls: list[list[Any]] = [[None] * 5 for _ in range(concurrency)]
        self._state_version = state.version

    @property
    def target_reached(self) -> bool:
        return self._target is not None and self._target.reached

    @property
    def done(self) -> int:
        return self.counts["completed"] + self.counts["dead"]

    # the job ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Run until every input is done or dead, or a rule stops the job."""
        loop = asyncio.get_running_loop()
        self._queue = WorkQueue(self._pending, loop)
        if self._target is not None and self._target.reached:
            self._stop("completed", "target_count already reached")
            return
        if self.timeout is not None:
            self._watchdog = Watchdog(loop, self.timeout, self.concurrency)
        await self.executor.start()
        self._tasks = [loop.create_task(self._worker(wid)) for wid in range(self.concurrency)]
        if self._watchdog is not None:
            for wid, task in enumerate(self._tasks):
                self._watchdog.watch(wid, task)
                self._calls[wid][3] = _Clock(self._watchdog, wid)
        try:
            await asyncio.wait(self._tasks)
        except BaseException:
            self._stop("interrupted", "interrupted")
            await asyncio.wait(self._tasks)
            raise
        finally:
            for dispatcher, listener in self._dispatchers.values():
                listener.cancel()
                close = getattr(dispatcher, "close", None)
                if close is not None:
                    close()
            if self._watchdog is not None:
                self._watchdog.close()
            self._save_state()
            await self.executor.close()
        for task in self._tasks:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error  # a bug in the runner or storage, not the user's function
        if not self._stopping:
            self.stop_reason = "all inputs done"

    def stop(self, status: str, reason: str) -> None:
        """End the job now: no new call starts, calls in flight are cancelled."""
        self._stop(status, reason)

    def _stop(self, status: str, reason: str) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.status = status
        self.stop_reason = reason
        if self._queue is not None:
            self._queue.close()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()

    async def _worker(self, wid: int) -> None:
        queue = self._queue
        assert queue is not None
        attempt = self._gated if self.gates else self._attempt
        CALL.set(self._calls[wid])  # once per worker, in its own task's context
        while True:
            index = queue.take()
            if index is None:
                if queue.stalled:
                    self._flush_dispatchers()
                await queue.wait()
                if queue.finished:
                    return
                continue
            try:
                await attempt(index, wid)
            finally:
                queue.done()

    # one input ---------------------------------------------------------------------------------
    async def _gated(self, index: int, wid: int) -> Outcome | None:
        for gate in self.gates:
            await gate.acquire(index)
        outcome = None
        try:
            outcome = await self._attempt(index, wid)
        finally:
            for gate in self.gates:
                gate.release(index, outcome)
        return outcome

    async def _attempt(self, index: int, wid: int) -> Outcome | None:
        """Call the function for one input, store what came of it, apply the rules."""
        tries = self._attempts.pop(index, 0) + 1  # in this run: what the rules count
        attempt = tries + self._before.get(index, 0) if self._before else tries
        call = self._calls[wid]
        call[0], call[1], call[2] = index, attempt, None
        records: list[Any] = []
        error: BaseException | None = None
        watchdog = self._watchdog
        if watchdog is not None:
            watchdog.arm(wid)
        try:
            out = await self.executor.call(index, attempt, self.inputs.kwargs(index))
            records = self._normalize(out)
        except asyncio.CancelledError as exc:
            error = self._not_ours(exc, wid)
        except Deferred as deferred:
            if watchdog is not None:
                watchdog.disarm(wid)
            if not self._stopping:
                self._defer(index, tries, attempt, deferred.dispatcher)
            return None
        except Exception as exc:
            error = exc
        if watchdog is not None and watchdog.disarm(wid) and error is None:
            error = self._overrun_error(index, watchdog.ran(wid))
        verdict = None
        settle = self._settlers if error is None else None
        if error is None and self.on_complete:
            try:
                verdict = await self._run_complete_hooks(records)
            except Exception as exc:
                error = exc
        if self._stopping:
            if settle:
                self._settle(records, "stopped")
            return None
        if error is None:
            if settle:  # before the outcome is stored: what a hook keeps is never behind it
                self._settle(records, verdict or "completed")
            try:
                if verdict is None:
                    self.writer.input_done(index, "completed", attempt, records)
                else:
                    self.writer.attempt(index, attempt, verdict, records, None)
            except Exception as exc:  # records the storage cannot encode (not JSON, cyclic)
                error = exc
                if settle:
                    self._settle(records, "failed")
        elif settle:
            self._settle(records, "failed")
        if error is not None:
            await self._failed(index, attempt, error)
            if self._stopping:
                return None
            outcome = Outcome(index, tries, "failed", error)
        elif verdict is None:
            self.counts["completed"] += 1
            if self.records is not None:  # a lone record is kept without its list: 1M × 72 B
                self.records[index] = records[0] if len(records) == 1 else records
            if index in self.previously_dead:
                self.revived += 1
            if self._bare_completions:
                self._save_state()
                return None
            outcome = Outcome(index, tries, "completed", None, len(records))
        else:
            self.counts[verdict] += 1
            outcome = Outcome(index, tries, verdict, None, len(records))
        self._save_state()
        self._apply_rules(outcome)
        return outcome

    def _not_ours(self, exc: asyncio.CancelledError, wid: int) -> BaseException:
        """A cancellation of the call: a timeout, the job's own (re-raised), or the function's."""
        if self._watchdog is not None and self._watchdog.expired(wid):
            return self._timeout_error()
        if self._stopping or _cancel_requested():
            raise exc
        return exc  # raised by the function itself (a leaked cancel scope): a failed attempt

    def _timeout_error(self) -> TimeoutError:
        return TimeoutError(f"{self.name} took longer than task_runner_timeout={self.timeout}s")

    def _overrun_error(self, index: int, ran: float) -> TimeoutError:
        """A call that ran past its deadline and returned anyway: it could not be stopped in
        time (it blocked the loop, or ignored the cancellation), so its result is discarded."""
        over = ran - (self.timeout or 0.0)
        logger.warning(
            "starfish: input %d ran %.1f s, %.1f s past task_runner_timeout=%ss, and did not "
            "stop when it was due; stored as a TimeoutError",
            index,
            ran,
            over,
            self.timeout,
        )
        return TimeoutError(
            f"{self.name} ran {ran:.1f} s for input {index}, {over:.1f} s past "
            f"task_runner_timeout={self.timeout}s, without stopping when it was due (it blocks "
            "the event loop, e.g. time.sleep, or ignores cancellation); its result is discarded"
        )

    def _normalize(self, out: Any) -> list[Any]:
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

    async def _run_complete_hooks(self, records: list[Any]) -> str | None:
        verdict = None
        for hook in self.on_complete:
            result = hook(records, self.state)
            if inspect.isawaitable(result):
                result = await result
            if result == "duplicate":
                verdict = "duplicate"
                break  # nothing after it can change that: a duplicate is never judged
            elif result == "filtered" and verdict is None:
                verdict = "filtered"
            elif result not in VERDICTS:
                name = getattr(hook, "__qualname__", repr(hook))
                raise HookError(
                    f"on_record_complete hook {name} returned {result!r}; a hook "
                    "returns None (keep the records), 'filtered' or 'duplicate'."
                )
        if self._watchdog is not None:
            self._watchdog.touch()  # a hook that blocked the loop: the calls behind it waited
        return verdict

    def _settle(self, records: list[Any], outcome: str) -> None:
        for settle in self._settlers:
            settle(records, outcome, self.state)

    # recording the outcome -------------------------------------------------------------------
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
        if self.on_error and self._watchdog is not None:
            self._watchdog.touch()

    def _apply_rules(self, outcome: Outcome) -> None:
        decision = None
        for rule in self._rules_for[outcome.status]:
            said = rule.decide(outcome)
            if said is None:
                continue
            if isinstance(said, Stop):
                if said.status in ("failed", "interrupted"):
                    self.fatal_error = outcome.error
                self._stop(said.status, said.reason)
                return
            if decision is None:
                decision = said
        index = outcome.index
        if isinstance(decision, Retry):
            assert self._queue is not None
            self._attempts[index] = outcome.attempt
            self._queue.retry_later(index, decision.delay)
        elif decision is DEAD:
            attempts = outcome.attempt + self._before.get(index, 0)
            self.writer.input_done(index, "dead", attempts, None)
            if index not in self.previously_dead:
                self.counts["dead"] += 1

    # deferred inputs ---------------------------------------------------------------------------
    def _defer(self, index: int, tries: int, attempt: int, dispatcher: Dispatcher) -> None:
        """The input waits on `dispatcher`; it runs again with the same attempt number."""
        assert self._queue is not None
        self.writer.input_done(index, "waiting", attempt, None)
        self._attempts[index] = tries - 1
        self.waiting.add(index)
        self._queue.hold()
        dispatcher.defer(index, attempt)
        if id(dispatcher) not in self._dispatchers:
            loop = asyncio.get_running_loop()
            listener = loop.create_task(self._listen(dispatcher))
            self._dispatchers[id(dispatcher)] = (dispatcher, listener)

    def _flush_dispatchers(self) -> None:
        """Every input left waits: dispatchers that gather work send what they have."""
        for dispatcher, _ in self._dispatchers.values():
            flush = getattr(dispatcher, "flush", None)
            if flush is not None:
                flush()

    async def _listen(self, dispatcher: Dispatcher) -> None:
        """Send the inputs the dispatcher says are ready back to the queue."""
        assert self._queue is not None
        try:
            while True:
                for index in await dispatcher.wait_ready():
                    if index in self.waiting:
                        self.waiting.discard(index)
                        self._queue.come_back(index)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # its inputs would wait forever: the job stops
            status = getattr(exc, "stop_status", None)
            if isinstance(status, str):
                self._stop(status, str(exc))
            else:
                self._stop("failed", f"dispatcher {type(dispatcher).__name__} failed: {exc!r}")

    def _save_state(self) -> None:
        if self.state.version != self._state_version:
            self._state_version = self.state.version
            self.writer.set_state(self.state)
