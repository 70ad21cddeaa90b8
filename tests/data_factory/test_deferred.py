"""The deferred outcome: a call that waits for an answer from outside leaves its worker, is
not a failure, shows as waiting, and runs again (same attempt) when its dispatcher says so."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

from starfish import data_factory, jobs
from starfish.data_factory import Deferred
from starfish.data_factory.context import current_call


class Batch:
    """A dispatcher in the shape of a provider batch: it collects deferred inputs and, once
    `size` of them wait, "answers" them all at once."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.waiting: list[tuple[int, int]] = []
        self.answers: dict[int, str] = {}
        self.seen_waiting: list[int] = []  # what `jobs show` said while the batch was out
        self.job_id: str | None = None
        self._full = asyncio.Event()

    def defer(self, index: int, attempt: int) -> None:
        self.waiting.append((index, attempt))
        if len(self.waiting) >= self.size:
            self._full.set()

    async def wait_ready(self) -> list[int]:
        await self._full.wait()
        self._full.clear()
        await asyncio.sleep(0.2)  # the batch is "out": the writer has stored the waiting rows
        if self.job_id is not None:
            self.seen_waiting.append(jobs.load_job(self.job_id).waiting)
        ready = [index for index, _ in self.waiting]
        for index, attempt in self.waiting:
            self.answers[index] = f"answer {index} at attempt {attempt}"
        self.waiting.clear()
        return ready


def test_deferred_inputs_wait_without_failing_and_run_again_with_the_same_attempt():
    batch = Batch(size=20)
    attempts: dict[int, list[int]] = {}

    @data_factory(
        max_concurrency=4, show_progress=False, dead_queue_threshold=1, job_run_stop_threshold=1
    )
    async def gen(i: int):
        call = current_call()
        assert call is not None
        attempts.setdefault(i, []).append(call.attempt)
        if i not in batch.answers:
            batch.job_id = call.job.job_id
            raise Deferred(batch)
        return {"i": i, "answer": batch.answers[i]}

    records = gen.run(i=list(range(20)))
    # every input deferred once (4 workers freed at once each time), then ran again
    assert sorted(r["i"] for r in records) == list(range(20))
    assert all(a == [1, 1] for a in attempts.values())  # the same attempt: same cache keys
    assert all(r["answer"] == f"answer {r['i']} at attempt 1" for r in records)
    info = jobs.load_job(gen.job_id)
    assert info.status == "completed" and info.counts["completed"] == 20
    assert info.counts["failed"] == 0 and info.counts["dead"] == 0 and info.waiting == 0
    assert batch.seen_waiting == [20]  # shown as waiting while the batch was out


def test_a_job_stopped_while_inputs_wait_keeps_them_waiting_and_a_resume_runs_them(tmp_path):
    script = tmp_path / "waits.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, os
            from starfish import data_factory
            from starfish.data_factory import Deferred

            class Never:
                def defer(self, index, attempt): pass
                async def wait_ready(self):
                    await asyncio.Event().wait()  # the answers never come in this process
                    return []

            never = Never()

            @data_factory(max_concurrency=2, show_progress=False)
            async def gen(i: int):
                if os.environ.get("DEFER") == "1" and i % 2:
                    raise Deferred(never)
                return {"i": i}

            if __name__ == "__main__":
                gen.run(i=list(range(6)))
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "DEFER": "1"},
    )
    deadline = time.monotonic() + 30
    info = None
    while time.monotonic() < deadline:
        listed = [j for j in jobs.list_jobs() if j.name == "gen"]
        if listed and listed[0].counts["completed"] == 3:
            info = jobs.load_job(listed[0].job_id)
            if info.waiting == 3:
                break
        time.sleep(0.1)
    assert info is not None and info.waiting == 3, info
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    stopped = jobs.load_job(info.job_id)
    assert stopped.status == "interrupted" and stopped.waiting == 3
    assert stopped.counts["dead"] == 0 and stopped.counts["failed"] == 0

    resumed = subprocess.run(
        [sys.executable, "-m", "starfish", "jobs", "resume", info.job_id],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "DEFER"},
    )  # fmt: skip
    # the answers are in now (no DEFER in the resuming process): the waiting inputs complete
    assert resumed.returncode == 0, resumed.stderr
    done = jobs.load_job(info.job_id)
    assert done.status == "completed" and done.counts["completed"] == 6 and done.waiting == 0
