"""The Ray executor: calls run on Ray async actors; the driver keeps gates, rules and storage.

Every call the runner makes becomes an item `(index, attempt, kwargs)`. Items handed over
within `FLUSH_DELAY` go out together, split into one batch per actor: a Ray
call costs about 0.7 ms, so unbatched calls cap a job at about 1,400 calls/s, while batches of
50 keep 2,000 x 10 ms sleeps at concurrency 100 within 1.5x of ideal. Each actor runs its batch's
items concurrently on its own loop and streams one outcome per item back as it finishes (a Ray
streaming generator; outcomes finished in the same turn of its loop travel together), never raising.

The driver's watchdog keeps the per-call deadline (the runner awaits each item's future and
cancels it when late); the actor applies the same timeout to the item so a late call does not
run on, and a batch whose items were all abandoned is cancelled with `ray.cancel`. Ray's own
task and actor retries are off, so every attempt is one the runner recorded; an actor that dies
(killed, node lost) is replaced and its items in flight are sent again, so the job goes on.

Model calls stay part of the job: each item carries the answers storage kept for its input
and attempt (read by the driver when the batch is sent), the actor runs the call in a job and
call context of its own (`context.py`), and what the call's model requests did (`effects.py`:
answers to keep, counts) comes back with its outcome, to the job's counts and writer. A re-run
of a finished job therefore sends no request, and the stored counts are those of the local
executor.

Each result is pickled on its own in the actor: one that cannot be (a lock, a client) fails
its input only, not the whole stream of its batch. Errors from Ray itself are stored as one
clean line (no colour codes, process ids or addresses). The function is shipped with the keys
its objects hold (`secrets.WORKER_REDUCERS`: a `StructuredLLM`'s `api_key=`), which the call
spec never stores. `ray.init` installs its own SIGTERM handler (exit 15); the one the job had
is put back, so SIGTERM stops the job as with the local executor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starfish.data_factory.context import JobContext

__all__ = ["MAX_BATCH", "RayExecutor"]

logger = logging.getLogger("starfish")

MAX_BATCH = 256
"""Items per Ray call at most: big enough to amortise the call, small enough to spread."""

FLUSH_DELAY = 0.003
"""Seconds the driver gathers items before it sends them, unless enough wait already (half of
every actor's share of the calls in flight). Results come back in dribs, and sending each
drib at once made batches of 2-3 items: 2,000 x 10 ms sleeps at concurrency 100 took 7x ideal
here; gathering made batches of 25-50 (2.5x ideal on a loaded machine, bench/bench_ray.py)."""
COALESCE = 0.0
"""Seconds an actor waits, once an item of a batch finished, for others that finish with it:
they stream back together. 0 still waits one turn of the actor's loop, which gathers the calls
that end together; waiting longer made fewer, later answers (1 ms: 2.2x ideal, 5 ms: 2.7x)."""

_LOST = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError")


Outcome = tuple[int, bool, Any, Any]
"""What an actor sends back per item: (position in its batch, ok, result or error, effects)."""


class _Item:
    __slots__ = ("attempt", "future", "index", "kwargs")

    def __init__(
        self, index: int, attempt: int, kwargs: dict[str, Any], future: asyncio.Future[Any]
    ) -> None:
        self.index = index
        self.attempt = attempt
        self.kwargs = kwargs
        self.future = future


class _RemoteError(Exception):
    """An exception from a worker that could not be pickled back; it keeps the type's name."""


def _rebuild(type_name: str, message: str) -> BaseException:
    remote: type[_RemoteError] = type(type_name, (_RemoteError,), {})
    return remote(message)


class _Worker:
    """A Ray async actor holding the job's function; runs batches of items concurrently."""

    def __init__(
        self, func_blob: bytes, timeout: float | None, job: dict[str, Any], grants: Any = None
    ) -> None:
        import cloudpickle

        from starfish.data_factory.context import JobContext

        self.func = cloudpickle.loads(func_blob)
        self.timeout = timeout
        # The job as the model layer sees it here: no writer (effects go back with outcomes),
        # and the job's limits and budget held for every worker (`shared`, ray_grants.py).
        self.job = JobContext(job["job_id"], None)
        self.job.budget_usd = job.get("budget_usd")
        self.job.llm_cache = job.get("llm_cache", True)
        if grants is not None:
            from starfish.data_factory.executors.ray_grants import join

            self.job.shared = join(grants)

    async def run(
        self, items: list[tuple[int, int, dict[str, Any], dict[str, str] | None]]
    ) -> AsyncIterator[list[Outcome]]:
        """Outcomes stream back as they finish, as `(position, ok, value)`: one slow item must
        not hold the others of its batch past their deadlines.

        The items of a batch start together, so one timer serves them all (not a
        `wait_for` task per item), and each finished item lands in one list that the loop
        drains: no per-item bookkeeping in `asyncio.wait`.
        """
        from starfish.data_factory.context import JOB

        loop = asyncio.get_running_loop()
        finished: list[Outcome] = []
        expired: list[bool] = []
        ready = asyncio.Event()
        JOB.set(self.job)  # the tasks below copy it
        tasks = [
            loop.create_task(self._one(pos, item, finished, expired, ready))
            for pos, item in enumerate(items)
        ]
        timer = None
        if self.timeout is not None:
            timer = loop.call_later(self.timeout, _expire, tasks, expired)
        sent = 0
        try:
            while sent < len(tasks):
                await ready.wait()
                if len(finished) < len(tasks):  # calls that end together go back together
                    await asyncio.sleep(COALESCE)
                ready.clear()
                chunk, finished[:] = finished[:], []
                sent += len(chunk)
                yield chunk
        finally:
            if timer is not None:
                timer.cancel()
            for task in tasks:
                task.cancel()

    async def _one(
        self,
        pos: int,
        item: tuple[int, int, dict[str, Any], dict[str, str] | None],
        finished: list[Outcome],
        expired: list[bool],
        ready: asyncio.Event,
    ) -> None:
        from starfish.data_factory.context import CALL
        from starfish.data_factory.effects import Effects

        index, attempt, kwargs, answers = item
        effects = Effects(answers or {})
        CALL.set([index, attempt, None, None, effects])  # this task's own context
        value: Any
        try:
            ok, value = True, _dumps(await self.func(**kwargs))
        except asyncio.CancelledError as exc:
            if expired:
                ok, value = False, TimeoutError(f"took longer than {self.timeout}s")
            else:
                task = asyncio.current_task()
                # Python 3.10 cannot tell (no `Task.cancelling`): there, treat it as the batch's.
                if sys.version_info < (3, 11) or (task is not None and task.cancelling()):
                    raise  # the batch itself was cancelled
                ok, value = False, _portable(exc)  # raised by the function itself
        except Exception as exc:
            ok, value = False, _portable(exc)
        finished.append((pos, ok, value, effects.shipped() if effects else None))
        ready.set()

    async def ready(self) -> int:
        """Answered once the actor's loop runs: the first call pays no start-up."""
        return os.getpid()


def _dumps(value: Any) -> bytes:
    """The result, pickled here so that one that cannot be fails its own input only."""
    import cloudpickle

    try:
        data: bytes = cloudpickle.dumps(value)
    except Exception as exc:
        raise TypeError(
            f"the function's result cannot be sent back from a Ray worker "
            f"({type(exc).__name__}: {_one_line(str(exc))}); return JSON-like records"
        ) from None
    return data


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_PLACE = re.compile(r"\s*\((?:[a-z_]+=[^,()]*,?\s*)+\)|\b(?:pid|ip|node_id|actor_id|worker_id)=\S+")
_ADDRESS = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")


def _one_line(text: str) -> str:
    """A message as stored: no colour codes, process ids or addresses, one line."""
    text = _ADDRESS.sub("<address>", _PLACE.sub("", _ANSI.sub("", text)))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("ray::", "Traceback", "File "))]
    return (lines[-1] if lines else "")[:500]


def _clean(exc: BaseException) -> BaseException:
    """An error of Ray itself (a failed batch) as one clean line, named after its cause."""
    cause = getattr(exc, "cause", None)
    base = cause if isinstance(cause, BaseException) else exc
    return _rebuild(type(base).__name__, f"Ray: {_one_line(str(base)) or type(base).__name__}")


def _ship(func: Callable[..., Any]) -> bytes:
    """The function pickled for the workers, with the keys its objects keep out of the call
    spec (their `WORKER_REDUCERS`): it travels to the actors and is never stored."""
    import io

    import cloudpickle

    from starfish.data_factory.secrets import WORKER_REDUCERS

    reducers = dict(WORKER_REDUCERS)
    if not reducers:
        blob: bytes = cloudpickle.dumps(func)
        return blob

    class _Shipper(cloudpickle.CloudPickler):  # type: ignore[misc]  # untyped base
        def reducer_override(self, obj: Any) -> Any:
            reduce = reducers.get(type(obj))
            if reduce is not None:
                return reduce(obj)
            return super().reducer_override(obj)

    buffer = io.BytesIO()
    _Shipper(buffer).dump(func)
    return buffer.getvalue()


def _expire(tasks: list[asyncio.Task[None]], expired: list[bool]) -> None:
    expired.append(True)
    for task in tasks:
        task.cancel()  # the finished ones ignore it


def _portable(exc: BaseException) -> Any:
    import cloudpickle

    try:
        cloudpickle.loads(cloudpickle.dumps(exc))
        return exc
    except Exception:
        return (type(exc).__name__, str(exc))


def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return  # timed out or cancelled on the driver meanwhile
    if ok:
        import pickle

        try:
            result = pickle.loads(value)
        except Exception as exc:
            future.set_exception(
                _rebuild(
                    "TypeError",
                    f"the function's result cannot be loaded from a Ray worker "
                    f"({type(exc).__name__}: {_one_line(str(exc))})",
                )
            )
            return
        future.set_result(result)
    elif isinstance(value, tuple):
        future.set_exception(_rebuild(*value))
    else:
        future.set_exception(value)


class RayExecutor:
    def __init__(
        self,
        func: Callable[..., Any],
        timeout: float | None,
        concurrency: int,
        *,
        job: JobContext | None = None,
        answers_for: Callable[[list[tuple[int, int]]], dict[tuple[int, int], Any]] | None = None,
    ) -> None:
        self.func = func
        self.job = job
        self.answers_for = answers_for
        self.timeout = timeout
        self.concurrency = concurrency
        self.startup_seconds = 0.0
        self._ray: Any = None
        self._owns_ray = False
        self._actor_class: Any = None
        self._actors: list[Any] = []
        self._load: dict[int, int] = {}  # actor slot -> items in flight
        self._queue: list[_Item] = []
        self._flush_scheduled = False
        self._flush_handle: asyncio.TimerHandle | None = None
        self._enough = MAX_BATCH
        self._collectors: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._blob = b""
        self._grants: Any = None  # the job's coordinator actor (ray_grants.py)

    async def start(self) -> None:
        started = time.monotonic()
        import ray as ray_module  # present: Options checked it at decoration

        ray: Any = ray_module  # Ray's API is only partly typed
        self._ray = ray
        self._loop = asyncio.get_running_loop()
        self._blob = _ship(self.func)
        if not ray.is_initialized():
            # RAY_ADDRESS (read by ray.init) joins an existing cluster; otherwise a local
            # instance is started for this job and stopped with it.
            main = threading.current_thread() is threading.main_thread()
            handler = signal.getsignal(signal.SIGTERM) if main else None
            ray.init(include_dashboard=False, logging_level=logging.WARNING)
            self._owns_ray = True
            if handler is not None and signal.getsignal(signal.SIGTERM) is not handler:
                signal.signal(signal.SIGTERM, handler)  # Ray's exits 15, mid-write
        from starfish.data_factory.context import current_job
        from starfish.data_factory.executors.ray_grants import start_coordinator

        self._grants = start_coordinator(ray, self.job or current_job(), self.concurrency)
        self._actor_class = ray.remote(max_restarts=0, max_task_retries=0, num_cpus=1)(_Worker)
        cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
        for slot in range(max(1, min(cpus, self.concurrency))):
            self._actors.append(self._spawn())
            self._load[slot] = 0
        # Half of every actor's share of the calls in flight makes a batch worth sending now.
        self._enough = min(MAX_BATCH, max(8, self.concurrency // (2 * len(self._actors))))
        self._enough *= len(self._actors)
        # Wait until every actor is up: its start-up (seconds) must not eat the first calls'
        # task_runner_timeout, which the driver counts from the hand-over.
        await asyncio.gather(
            *(actor.ready.remote() for actor in self._actors), self._grants.pauses.remote()
        )
        self.startup_seconds = time.monotonic() - started
        logger.info(
            "starfish: %d Ray workers ready in %.2f s", len(self._actors), self.startup_seconds
        )

    def _spawn(self) -> Any:
        job = self.job
        about = (
            {"job_id": job.job_id, "budget_usd": job.budget_usd, "llm_cache": job.llm_cache}
            if job is not None
            else {"job_id": "", "llm_cache": False}
        )
        return self._actor_class.remote(self._blob, self.timeout, about, self._grants)

    def call(self, index: int, attempt: int, kwargs: dict[str, Any]) -> asyncio.Future[Any]:
        assert self._loop is not None
        future = self._loop.create_future()
        self._queue.append(_Item(index, attempt, kwargs, future))
        if len(self._queue) >= self._enough:
            self._flush()  # batches big enough for every actor: waiting would only add latency
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._flush_handle = self._loop.call_later(FLUSH_DELAY, self._flush)
        return future

    def _flush(self) -> None:
        """Send every item handed over since the last flush, one batch per actor."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._flush_scheduled = False
        items = [item for item in self._queue if not item.future.done()]
        self._queue = []
        while items:
            # Fill the least-loaded actor first: every Ray call costs a round trip (about
            # 4.5 ms here), so fewer, fuller batches beat an even split of each flush.
            slot = min(self._load, key=self._load.__getitem__)
            batch, items = items[:MAX_BATCH], items[MAX_BATCH:]
            self._send(slot, batch)

    def _send(self, slot: int, batch: list[_Item]) -> None:
        assert self._loop is not None
        answers: dict[tuple[int, int], Any] = {}
        if self.answers_for is not None:
            answers = self.answers_for([(i.index, i.attempt) for i in batch])
        ref = self._actors[slot].run.remote(
            [(i.index, i.attempt, i.kwargs, answers.get((i.index, i.attempt))) for i in batch]
        )
        self._load[slot] += len(batch)
        task = self._loop.create_task(self._collect(slot, ref, batch))
        self._collectors.add(task)
        task.add_done_callback(self._collectors.discard)
        left = [len(batch)]

        def abandoned(_: asyncio.Future[Any]) -> None:
            left[0] -= 1
            if left[0] == 0 and all(i.future.cancelled() for i in batch):
                try:
                    self._ray.cancel(ref)  # every caller gave up: stop the batch on the actor
                except Exception as exc:  # finished or gone meanwhile
                    logger.debug("starfish: ray.cancel: %r", exc)

        for item in batch:
            item.future.add_done_callback(abandoned)

    async def _collect(self, slot: int, stream: Any, batch: list[_Item]) -> None:
        actor = self._actors[slot]
        answered = 0
        try:
            async for ref in stream:
                outcomes = await ref
                answered += len(outcomes)
                self._load[slot] -= len(outcomes)
                for pos, ok, value, effects in outcomes:
                    if effects is not None:
                        self._effects(effects)  # before the outcome: stored with or before it
                    _resolve(batch[pos].future, ok, value)
        except Exception as exc:
            self._load[slot] -= len(batch) - answered
            if type(exc).__name__ in _LOST or isinstance(exc, self._ray.exceptions.RayActorError):
                self._replace(slot, actor, batch)
                return
            error = _clean(exc)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)

    def _effects(self, effects: Any) -> None:
        """What a call's model requests did, to the job's counts and writer (even when the
        driver gave up on the call meanwhile: its requests were made, its answers paid)."""
        job = self.job
        if job is None:
            return
        job.absorb(effects.counts, effects.families)
        job.store(effects)

    def _replace(self, slot: int, dead: Any, batch: list[_Item]) -> None:
        """A lost actor: start another in its slot and send its items in flight again."""
        if self._actors[slot] is dead:
            logger.warning("starfish: a Ray worker was lost; starting another, resending items")
            self._actors[slot] = self._spawn()
        again = [item for item in batch if not item.future.done()]
        if again:
            assert self._loop is not None
            self._queue.extend(again)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)

    async def close(self) -> None:
        for task in list(self._collectors):
            task.cancel()
        if self._collectors:
            await asyncio.gather(*self._collectors, return_exceptions=True)
        ray = self._ray
        if ray is None:
            return
        for actor in self._actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception as exc:  # already gone
                logger.debug("starfish: ray.kill: %r", exc)
        self._actors = []
        if self._grants is not None:
            try:
                ray.kill(self._grants, no_restart=True)
            except Exception as exc:  # already gone
                logger.debug("starfish: ray.kill: %r", exc)
            self._grants = None
        if self._owns_ray:
            ray.shutdown()
