"""The dedupe index survives a kill -9: a resumed job keeps no record that repeats one kept
before the kill (a real process, killed, resumed with `starfish jobs resume`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from starfish.data_factory.storage import locate_job
from starfish.jobs import iter_records, latest, load_job
from starfish.quality.store import store_for

JOB = textwrap.dedent(
    """
    import asyncio, os, pathlib
    from starfish import data_factory
    from starfish.quality import Dedupe

    @data_factory(on_record_complete=[Dedupe("text", near=0.8)], max_concurrency=1,
                  dead_queue_threshold=1, show_progress=False)
    async def gen(i):
        if i == 60 and os.environ.get("HANG"):
            pathlib.Path("hanging").write_text("1")
            await asyncio.sleep(3600)
        return {"text": f"Topic number {i % 40}: the same words every time"}
    """
)


def test_resume_after_kill_9_keeps_the_dedupe_index(tmp_path: Path) -> None:
    (tmp_path / "qjob.py").write_text(JOB)
    env = {**os.environ, "HANG": "1", "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "import qjob; qjob.gen.run(i=list(range(100)))"],
        cwd=tmp_path,
        env=env,
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "hanging").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    # Input 60 hangs from its first step, before the loop turns: the outcomes of 0..59 are
    # committed right after (a busy machine may take a moment); kill once they are stored.
    job_id = latest("gen").job_id
    while load_job(job_id).counts["completed"] + load_job(job_id).counts["duplicate"] < 60:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = load_job(job_id).counts
    assert before["completed"] == 40 and before["duplicate"] == 20  # inputs 40..59
    # the index is stored, one row per kept input (not recomputed from the records on resume)
    stored = store_for(locate_job(job_id)[0].path).index_rows(job_id, "dedupe(text)")
    assert len(list(stored)) == 40
    env.pop("HANG")
    done = subprocess.run(
        [sys.executable, "-m", "starfish", "jobs", "resume", job_id, "--no-progress"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    texts = [r["text"] for r in iter_records(job_id)]
    assert len(texts) == 40 and len(set(texts)) == 40  # inputs 60..99 all seen as duplicates
    # 20 before the kill, 20 more as the dead-letter queue is tried again, 40 new ones
    assert load_job(job_id).counts["duplicate"] == 80
