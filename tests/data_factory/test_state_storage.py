"""Job state: JSON only (checked where it is written), stored per changed key with the records."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from starfish import OptionsError, data_factory
from starfish.data_factory import resume_from_checkpoint
from starfish.jobs import iter_records, list_jobs, load_job
from tests.data_factory.stored import db_path, rows_on_disk


def test_non_json_initial_state_is_refused_at_decoration_naming_the_key():
    with pytest.raises(OptionsError) as caught:

        @data_factory(initial_state_values={"count": 0, "seen": {"a", "b"}})
        async def gen(i):
            return [{"i": i}]

    assert isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert "initial_state_values['seen']" in message and "set" in message
    assert "JSON" in message and "list" in message  # the problem and the fix
    assert not db_path().exists()  # nothing ran, nothing stored


def test_with_options_checks_the_initial_state_too():
    @data_factory(show_progress=False)
    async def gen(i):
        return [{"i": i}]

    with pytest.raises(OptionsError, match=r"initial_state_values\['when'\]"):
        gen.with_options(initial_state_values={"when": object()})


def test_a_non_json_value_set_later_fails_at_the_set_call(caplog):
    def remember(output, state):
        state.set("last", {output[0]["i"]})  # a set: not JSON

    @data_factory(
        show_progress=False,
        dead_queue_threshold=2,
        job_run_stop_threshold=0,
        initial_state_values={"n": 0},
        on_record_complete=remember,
    )
    async def gen(i):
        return [{"i": i}]

    with pytest.raises(OptionsError):
        gen.state.set("direct", {1, 2})
    with (
        caplog.at_level(logging.WARNING, logger="starfish"),
        pytest.raises(Exception, match="without one completed input"),
    ):
        gen.run(i=[0, 1, 2])
    info = load_job(gen.job_id)
    assert info.status == "failed" and info.counts == rows_on_disk(gen.job_id)
    assert info.counts["failed"] == 6 and info.counts["dead"] == 3
    assert info.error_summary == {"OptionsError": 6}
    [first, *_] = iter_records(gen.job_id, "failed")
    assert "state['last']" in first["error"] and "JSON" in first["error"]
    assert info.state == {"n": 0}  # the refused value was never stored
    assert not [r for r in caplog.records if "not JSON-serialisable" in r.getMessage()]


def test_state_is_stored_per_key_and_restored_on_resume():
    def count(output, state):
        state.set(f"seen:{output[0]['i']}", True)
        state.update(total=state.get("total") + 1)

    @data_factory(
        show_progress=False,
        max_concurrency=3,
        target_count=40,
        initial_state_values={"total": 0, "label": "é"},
        on_record_complete=count,
    )
    async def gen(i):
        await asyncio.sleep(0)
        return [{"i": i}]

    gen.run(i=list(range(100)))
    stored = load_job(gen.job_id).state
    assert stored == gen.state.to_dict()
    assert stored["total"] == 40 and stored["label"] == "é"
    assert {k for k in stored if k.startswith("seen:")} == {f"seen:{i}" for i in gen.get_index()}
    resume_from_checkpoint(gen.job_id, target_count=0)
    after = load_job(gen.job_id).state
    assert after["total"] == 100 and len(after) == 102


def _bytes_written() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
def test_saving_state_writes_the_changed_keys_not_the_whole_state():
    big = "x" * 256_000  # a large value that never changes

    def tick(output, state):
        state.set(f"seen:{output[0]['i']}", True)  # the state grows by one key per input

    @data_factory(
        show_progress=False,
        max_concurrency=1,
        initial_state_values={"big": big},
        on_record_complete=tick,
    )
    async def gen(i):
        await asyncio.sleep(0)  # one commit per input
        return [{"i": i}]

    gen.run(i=[0])  # the database exists before we count
    before = _bytes_written()
    gen.run(i=list(range(300)))
    written = _bytes_written() - before
    # Re-storing the whole state at each change writes over 300 x 256 kB = 77 MB (measured:
    # 395 MB with checkpoints); one row per changed key, a few pages per commit.
    assert written < 20_000_000, f"{written:,} bytes written for 300 small changes"
    assert load_job(gen.job_id).state == {"big": big, **{f"seen:{i}": True for i in range(300)}}


KILL_SCRIPT = textwrap.dedent(
    """
    import asyncio
    from starfish import data_factory

    def mark(output, state):
        state.set(f"done:{output[0]['i']}", True)

    @data_factory(max_concurrency=8, show_progress=False, on_record_complete=mark)
    async def gen(i):
        await asyncio.sleep(0.002)
        return [{"i": i}]

    gen.run(i=list(range(100000)))
    """
)


def test_state_on_disk_matches_the_records_on_disk_after_kill_9(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path)
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None
            if db_path().exists():
                conn = sqlite3.connect(db_path())
                try:
                    n = conn.execute("SELECT count(*) FROM inputs").fetchone()[0]
                except sqlite3.OperationalError:
                    n = 0
                finally:
                    conn.close()
                if n >= 300:
                    break
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    [info] = list_jobs()
    done = {int(k.split(":")[1]) for k in info.state}
    completed = {r["i"] for r in iter_records(info.job_id)}
    assert len(completed) >= 300
    assert done == completed  # state and records were committed together


def test_in_memory_state_is_never_encoded_so_it_may_hold_any_value():
    def remember(output, state):
        state.set("seen", state.get("seen") | {output[0]["i"]})

    @data_factory(
        storage="in_memory",
        show_progress=False,
        max_concurrency=1,
        initial_state_values={"seen": set()},
        on_record_complete=remember,
    )
    async def gen(i):
        return [{"i": i}]

    assert gen.run(i=[0, 1, 2]) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert load_job(gen.job_id).state == {"seen": {0, 1, 2}}
