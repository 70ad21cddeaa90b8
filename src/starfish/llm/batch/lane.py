"""The batch lane: a job's model requests sent through a provider's batch API, at half price.

A `StructuredLLM(batch=True)` call whose answer is not cached hands its request to the lane of
its job and endpoint and ends as `deferred` (`data_factory/deferred.py`): its input leaves the
worker and waits. The lane is that input's dispatcher. It submits the requests it gathered when
`batch_size` of them wait or when every input left in the job waits (`flush`), polls each
batch every `batch_poll_s`, writes each result to the job's cache (the answers with their
half-price cost and counts, one transaction), then lets the waiting inputs run again: their
calls replay the answers from the cache. A function that makes two calls one after the other
takes two rounds; a re-ask goes in the next round.

Durable: a submission is stored (its lines listed) before the batch is created and again with
its id as soon as the provider returns it; a lost answer to the create is found again by the
metadata each batch carries. A resumed job reads its submissions back, polls the live ones and
never submits a line that is in a live or finished batch. A line that failed inside a batch is
kept as a failure marker under its key: the call raises it and the job's rules retry it (a new
attempt, so a new line in a later batch), make it dead or, for a refused key, stop the job. An
expired batch keeps the answers it finished; the rest go in the next batch. A batch the provider
rejects stops the job with the provider's reason. `budget_usd` is checked before each
submission against an estimate: only the lines that fit are sent, then the job stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from starfish.data_factory.effects import Answer, Effects
from starfish.llm.batch.common import BatchClient, BatchRef, BatchResult, SubmitUncertain
from starfish.llm.budget import BudgetReached
from starfish.llm.cost import usage_tokens
from starfish.llm.errors import LLMError

__all__ = ["FAILED", "BatchLane", "BatchRejected"]

FAILED = "starfish_batch_error"
"""Kept under a line's key in place of an answer when the line failed inside its batch."""
JOB_KEY = "starfish_job"
"""The metadata key naming the job on every batch."""
SUBMISSION_KEY = "starfish_submission"
"""The metadata key naming the submission (one stored row) a batch was created for."""
DEFAULT_COMPLETION = 512


class BatchRejected(LLMError):
    """The provider rejected a whole batch (a file over its limit, a bad line): the job stops
    with the provider's reason."""

    fatal = True
    stop_status = "failed"


@dataclass
class _Line:
    """One request the lane knows about. `state`: pending (to submit), sent (in a live batch),
    done (its answer or failure is in the cache)."""

    custom_id: str
    index: int
    attempt: int
    data: bytes | None  # the encoded request line; None for one known from storage only
    estimate: float  # USD it may cost (the budget's reservation)
    mode: str | None  # how the schema was asked for: counted with its answer
    state: str = "pending"


class BatchLane:
    """One job's batch lane to one endpoint; the dispatcher its deferred inputs wait on."""

    def __init__(
        self,
        job: Any,
        client: BatchClient,
        *,
        size: int | None,
        poll_s: float,
        cost: Any,
        family: str,
        describe: dict[str, Any],
    ) -> None:
        self.job = job
        self.client = client
        self.size = min(size or client.max_requests, client.max_requests)
        self.poll_s = poll_s
        self._cost = cost  # (prompt_tokens, completion_tokens) -> online USD or None
        self._family = family
        self._describe = describe  # provider, base URL and model: stored with each batch
        self._lines: dict[str, _Line] = {}
        self._pending: dict[str, _Line] = {}  # the lines to submit (pending, with their data)
        self._asking: dict[int, set[str]] = {}  # keys requested by each input's current run
        self._waiting: dict[int, set[str]] = {}  # deferred inputs: the keys they wait for
        self._ready: list[int] = []
        self._ready_event = asyncio.Event()
        self._wake = asyncio.Event()
        self._flushing = False
        self._rows: dict[str, dict[str, Any]] = {}  # submission id -> stored row
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self.submitted = 0  # batches created in this run
        self._load()

    # the model layer's side -------------------------------------------------------------
    def request(
        self,
        custom_id: str,
        index: int,
        attempt: int,
        body: dict[str, Any],
        mode: str | None,
        estimate: float,
    ) -> bool:
        """The call of input `index` needs the answer to `body`, kept under `custom_id` (it is
        not in the cache: a line stored as done went unanswered, and is sent again). True
        the first time the lane hears of this request."""
        line = self._lines.get(custom_id)
        new = line is None
        if line is None:
            line = self._lines[custom_id] = _Line(custom_id, index, attempt, None, estimate, mode)
        if line.data is None:
            line.data = self.client.encode(custom_id, body)
            line.estimate, line.mode = estimate, mode
        if line.state != "sent":
            self._mark(line, "pending")
        self._asking.setdefault(index, set()).add(custom_id)
        self._start()
        if self._pending_count() >= self.size:
            self._wake.set()
        return new

    def owns(self, custom_id: str) -> bool:
        """Whether this job's batches answered `custom_id` (its replay is no cache hit)."""
        return custom_id in self._lines

    # the dispatcher's side --------------------------------------------------------------
    def defer(self, index: int, attempt: int) -> None:
        keys = self._asking.pop(index, set())
        if not keys or all(self._lines[k].state == "done" for k in keys):
            self._ready.append(index)  # answered meanwhile
            self._ready_event.set()
            return
        self._waiting[index] = keys

    async def wait_ready(self) -> Iterable[int]:
        while not self._ready:
            if self._error is not None:
                raise self._error
            self._ready_event.clear()
            await self._ready_event.wait()
        ready, self._ready = self._ready, []
        return ready

    def flush(self) -> None:
        """Every input left in the job waits: submit what is gathered now."""
        if self._pending_count():
            self._flushing = True
            self._wake.set()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    # the lane's own task ----------------------------------------------------------------
    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _pending_count(self) -> int:
        return len(self._pending)

    def _mark(self, line: _Line, state: str) -> None:
        """Set a line's state, keeping `_pending` (counted at every request: a scan of every
        line made 100,000 requests quadratic)."""
        line.state = state
        if state == "pending" and line.data is not None:
            self._pending[line.custom_id] = line
        else:
            self._pending.pop(line.custom_id, None)

    async def _run(self) -> None:
        try:
            await self._recover()
            while True:
                live = [r for r in self._rows.values() if r["state"] == "running"]
                if live:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.poll_s)
                else:
                    await self._wake.wait()
                self._wake.clear()
                if self._pending_count() and (self._flushing or self._pending_count() >= self.size):
                    self._flushing = False
                    await self._submit()
                await self._poll()
                self._show()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._error = exc
            self._ready_event.set()

    def _load(self) -> None:
        """Read back the submissions an earlier run of the job stored (a kill, a stop)."""
        storage = self.job.storage
        if storage is None:
            return
        for row in storage.batches(self.job.job_id):
            self._rows[row["submission"]] = row
            for custom_id, index, attempt in row["lines"]:
                line = self._lines.get(custom_id)
                if line is None:
                    line = self._lines[custom_id] = _Line(
                        custom_id, index, attempt, None, 0.0, row.get("mode")
                    )
                line.state = "sent" if row["state"] in ("running", "submitting") else "done"
        # A line answered in an expired batch was re-sent later: the newest row says.
        for row in self._rows.values():
            if row["state"] == "running":
                for custom_id, _, _ in row["lines"]:
                    self._lines[custom_id].state = "sent"

    async def _recover(self) -> None:
        """A submission stored without its batch's id (killed between the create and the
        store): found by its metadata, or its lines go in the next batch."""
        for row in list(self._rows.values()):
            if row["state"] != "submitting":
                continue
            found = await self.client.find(
                SUBMISSION_KEY,
                row["submission"],
                created_after=row["started_at"] - 60,
                requests=len(row["lines"]),
            )
            if found:
                await self._store_ref(row, found[0])
            else:  # never created: its lines go in the next batch
                row["state"] = "abandoned"
                for custom_id, _, _ in row["lines"]:
                    self._mark(self._lines[custom_id], "pending")
                await self._save([row])

    async def _submit(self) -> None:
        pending = list(self._pending.values())
        fitting = self._fitting(pending)
        if not fitting:
            return
        for chunk in self._chunks(fitting):
            row = {
                "submission": secrets.token_hex(8),
                **self._describe,
                "state": "submitting",
                "started_at": time.time(),
                "lines": [[ln.custom_id, ln.index, ln.attempt] for ln in chunk],
                "mode": chunk[0].mode,
                "status": None,
                "ref": None,
            }
            await self._save([row])  # listed before it exists: a kill finds it on resume
            self._rows[row["submission"]] = row
            for line in chunk:
                self._mark(line, "sent")
            metadata = {JOB_KEY: self.job.job_id, SUBMISSION_KEY: row["submission"]}
            data = [line.data for line in chunk if line.data is not None]
            try:
                ref = await self.client.submit(data, metadata)
            except SubmitUncertain as exc:
                found = await self.client.find(
                    SUBMISSION_KEY,
                    row["submission"],
                    created_after=exc.created_after,
                    requests=len(data),
                )
                ref = found[0] if found else await self.client.submit(data, metadata)
            await self._store_ref(row, ref)
            self.submitted += 1

    def _fitting(self, pending: list[_Line]) -> list[_Line]:
        """The pending lines `budget_usd` allows (all without a budget). None fit and no
        batch is live: the job stops with the budget's reason."""
        limit = self.job.budget_usd
        if limit is None:
            return pending
        live = sum(
            self._lines[c].estimate
            for r in self._rows.values()
            if r["state"] == "running"
            for c, _, _ in r["lines"]
        )
        room = limit - self.job.spent_usd() - live
        fitting: list[_Line] = []
        for line in pending:
            if line.estimate > room:
                break
            room -= line.estimate
            fitting.append(line)
        if not fitting and not live:
            raise BudgetReached(
                f"budget_usd={limit:g} reached: ${self.job.spent_usd():.4f} spent, and the next "
                f"batch request may cost ${pending[0].estimate:.6f}"
            )
        return fitting

    def _chunks(self, lines: list[_Line]) -> list[list[_Line]]:
        by_data = {id(line.data): line for line in lines}
        chunks: list[list[_Line]] = []
        for start in range(0, len(lines), self.size):
            part = lines[start : start + self.size]
            for piece in self.client.split([line.data for line in part if line.data]):
                chunks.append([by_data[id(data)] for data in piece])
        return chunks

    async def _store_ref(self, row: dict[str, Any], ref: BatchRef) -> None:
        row["ref"] = ref.as_dict()
        row["state"] = "running"
        row["created_at"] = ref.created_at
        await self._save([row])

    async def _save(self, rows: list[dict[str, Any]]) -> None:
        writer = self.job.writer
        writer.keep_batches([dict(r) for r in rows])
        await writer.committed()

    async def _poll(self) -> None:
        for row in [r for r in self._rows.values() if r["state"] == "running"]:
            ref = BatchRef.from_dict(row["ref"])
            status = await self.client.status(ref)
            row["status"] = {
                "provider_status": status.provider_status,
                "total": status.total,
                "succeeded": status.succeeded,
                "failed": status.failed,
                "unfinished": status.unfinished,
                "reason": status.reason,
            }
            if not status.done:
                await self._save([row])
                continue
            row["ended_at"] = status.ended_at or time.time()
            if status.state == "failed":
                row["state"] = "failed"
                await self._save([row])
                raise BatchRejected(
                    f"the provider rejected batch {ref.batch_id}: {status.reason or 'no reason'}"
                )
            await self._read(row, ref, status.state)

    async def _read(self, row: dict[str, Any], ref: BatchRef, state: str) -> None:
        """Keep every result of an ended batch, then let its inputs run again."""
        effects = Effects()
        async for result in self.client.results(ref):
            line = self._lines.get(result.custom_id)
            if line is None or line.state != "sent" or result.unfinished:
                continue  # unknown, a repeat, or never ran
            self._mark(line, "done")
            effects.add(*self._answer(line, result))
        again = False
        for custom_id, _, _ in row["lines"]:
            line = self._lines[custom_id]
            if line.state == "sent":  # expired or cancelled before it ran: in the next batch
                self._mark(line, "pending")
                again = True
        row["state"] = state
        self.job.absorb(effects.counts, effects.families)
        self.job.store(effects)
        self.job.writer.keep_batches([dict(row)])
        await self.job.writer.committed()
        for index, keys in list(self._waiting.items()):
            if all(self._lines[k].state == "done" for k in keys):
                del self._waiting[index]
                self._ready.append(index)
        if self._ready:
            self._ready_event.set()
        if again:
            self._wake.set()

    def _answer(self, line: _Line, result: BatchResult) -> tuple[dict[str, Any], str, Answer]:
        """What one result did (its counts, at half price), its family, and its cache row
        (keyed by the line's custom_id)."""
        counts: dict[str, Any] = {"requests": 1, "batch_requests": 1}
        cost = None
        if result.ok:
            usage = result.body.get("usage")
            pt = usage_tokens(usage, "prompt_tokens") or 0
            ct = usage_tokens(usage, "completion_tokens") or 0
            online = self._cost(pt, ct)
            cost = online / 2 if online is not None else None
            counts.update(prompt_tokens=pt, completion_tokens=ct)
            if cost is not None:
                counts["cost_usd"] = cost
            if line.mode is not None:
                counts[f"answers_{line.mode}"] = 1
            text = json.dumps(result.body, separators=(",", ":"))
        else:
            error = result.body.get("error") or {}
            text = json.dumps({FAILED: error}, separators=(",", ":"))
        return counts, self._family, (line.custom_id, text, line.index, line.attempt, cost)

    def _show(self) -> None:
        """`batch 2 running · 4,000/10,000 answered` on the progress line while any run."""
        from starfish.data_factory.progress import set_notice

        live = [r for r in self._rows.values() if r["state"] == "running"]
        if not live:
            set_notice(None)
            return
        total = sum(len(r["lines"]) for r in live)
        answered = sum(
            (r.get("status") or {}).get("succeeded", 0) + (r.get("status") or {}).get("failed", 0)
            for r in live
        )
        which = ", ".join(str(list(self._rows).index(r["submission"]) + 1) for r in live)
        word = "batch" if len(live) == 1 else "batches"
        set_notice(f"{word} {which} running · {answered:,}/{total:,} answered")
