"""Faults that reach the storage: record content it cannot encode, a full disk, a bad database.

Every test checks the stored job afterwards: its status, stop reason, and counts equal to the
rows on disk.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from starfish import data_factory
from starfish.jobs import iter_records, load_job
from tests.data_factory.stored import db_path, job_row, rows_on_disk

LONE_SURROGATE = json.loads('"\\ud83d"')  # half an emoji, as model output does contain


def test_a_record_with_a_lone_surrogate_fails_only_its_input():
    def keep_odd_ones_out(output, state):
        # a filtered record is stored too: its content must not stop the writer either
        return "filtered" if output[0]["i"] == 7 else None

    @data_factory(
        show_progress=False,
        max_concurrency=4,
        dead_queue_threshold=2,
        job_run_stop_threshold=0,
        on_record_complete=keep_odd_ones_out,
    )
    async def gen(i):
        await asyncio.sleep(0)
        if i == 5:
            raise ValueError("model said " + LONE_SURROGATE)  # in an error message
        text = LONE_SURROGATE if i in (3, 7) else "ok"
        return [{"i": i, "text": text}]

    records = gen.run(i=list(range(40)))
    assert records == [{"i": i, "text": "ok"} for i in range(40) if i not in (3, 5, 7)]
    info = load_job(gen.job_id)
    assert info.status == "completed" and info.stop_reason == "all inputs done"
    assert info.counts == {"completed": 37, "failed": 6, "filtered": 0, "duplicate": 0, "dead": 3}
    assert info.counts == rows_on_disk(gen.job_id)
    assert info.dead_queue == [3, 5, 7]
    assert list(iter_records(gen.job_id)) == records
    failures = list(iter_records(gen.job_id, "failed"))
    assert [(f["index"], f["error_type"]) for f in failures] == [
        (3, "UnicodeEncodeError"),
        (3, "UnicodeEncodeError"),
        (5, "ValueError"),
        (5, "ValueError"),
        (7, "UnicodeEncodeError"),
        (7, "UnicodeEncodeError"),
    ]
    assert failures[2]["error"] == "model said " + LONE_SURROGATE  # stored as it was raised
    # a resume tries the dead inputs again, and fails them again, without harm to the rest
    assert gen.resume() == records
    again = load_job(gen.job_id)
    assert again.status == "completed" and again.counts == rows_on_disk(gen.job_id)
    assert again.counts["failed"] == 12 and again.counts["dead"] == 3


# A full disk: a small tmpfs (tests run as root), filled by the job's own function at a known
# call so that the fault lands mid-job every time.
FULL_DISK_TARGETS = """
import asyncio
import os


def fill(directory):
    with open(os.path.join(directory, "filler"), "wb") as f:
        try:
            while True:
                f.write(b"x" * 65536)
                f.flush()
        except OSError:
            pass


async def big(i: int, log: str):
    with open(log, "a") as f:
        f.write(f"{i}\\n")
    if i == int(os.environ.get("FILL_AT", "-1")):  # read per call: resume unpickles this
        fill(os.environ["STARFISH_LOCAL_STORAGE_DIR"])
    await asyncio.sleep(0.001)
    return [{"i": i, "text": "y" * 2000}]
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs used as the app data dir; unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "starfish", *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_full_disk_stops_the_job_at_once_and_resume_completes_it(tmp_path, small_disk):
    n, concurrency = 3000, 4
    (tmp_path / "targets.py").write_text(FULL_DISK_TARGETS)
    log = tmp_path / "calls.log"
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"i": i, "log": str(log)}) + "\n" for i in range(n))
    )
    env = {"STARFISH_LOCAL_STORAGE_DIR": str(small_disk), "FILL_AT": "300"}
    args = ("run", "targets.py:big", "-i", "in.jsonl", "--no-progress")
    run = _cli(*args, "--max-concurrency", str(concurrency), cwd=tmp_path, env=env)

    assert run.returncode == 1, run
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr  # one line, no traceback
    assert "database or disk is full" in lines[0] and "starfish jobs resume" in lines[0]

    db = small_disk / "db" / "starfish.db"
    [job_id] = [row[0] for row in sqlite3.connect(db).execute("SELECT job_id FROM jobs")]
    assert job_id in lines[0], lines[0]
    row = job_row(job_id, db)
    assert row["status"] == "failed"
    assert row["stop_reason"] == "storage: database or disk is full"
    stored = rows_on_disk(job_id, db)
    assert json.loads(row["counts"]) == stored
    assert 300 - 2 * concurrency <= stored["completed"] < n
    calls = len(log.read_text().splitlines())
    # no new call started after the failed write: only those in flight or in the failed batch
    assert calls <= stored["completed"] + 2 * concurrency + 1, (calls, stored)

    (small_disk / "filler").unlink()  # space is freed, and the disk made big enough
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    env["FILL_AT"] = "-1"  # input 300 may run again: it must not fill the disk this time
    resumed = _cli("jobs", "resume", job_id, "--no-progress", "--json", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, (resumed.stderr, resumed.stdout[-500:])
    info = json.loads(resumed.stdout)
    assert info["status"] == "completed"
    assert info["counts"]["completed"] == n == rows_on_disk(job_id, db)["completed"]
    assert json.loads(job_row(job_id, db)["counts"]) == rows_on_disk(job_id, db)


REFUSED_WRITE_SCRIPT = """
import asyncio, json, os, resource, signal, sys

from starfish import StorageError, data_factory

db = sys.argv[1]
calls = []


@data_factory(show_progress=False, max_concurrency=4)
async def gen(i):
    calls.append(i)
    if i == int(os.environ.get("FAIL_AT", "-1")):
        # From here the OS refuses to grow any file (EFBIG), as a read-only disk refuses writes.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        size = max(os.path.getsize(db), os.path.getsize(db + "-wal"))
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))
    await asyncio.sleep(0.001)
    return [{"i": i, "text": "y" * 500}]


try:
    gen.run(i=list(range(2000)))
except StorageError as e:
    print(json.dumps({"error": str(e), "calls": len(calls), "job_id": gen.job_id}))
"""


def test_a_write_the_os_refuses_mid_job_stops_it_and_the_job_reads_as_abandoned(tmp_path):
    from starfish.data_factory import resume_from_checkpoint

    script = tmp_path / "job.py"
    script.write_text(REFUSED_WRITE_SCRIPT)
    db = db_path()
    out = subprocess.run(
        [sys.executable, str(script), str(db)],
        env={**os.environ, "FAIL_AT": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    job_id = result["job_id"]
    assert "\n" not in result["error"] and str(db) in result["error"]
    assert f"starfish jobs resume {job_id}" in result["error"]
    stored = rows_on_disk(job_id)
    assert result["calls"] <= stored["completed"] + 2 * 4 + 1  # no new call after the failure
    row = job_row(job_id)
    if row["status"] == "failed":  # the final row could still be written
        assert row["stop_reason"].startswith("storage: ")
        assert json.loads(row["counts"]) == stored
    else:  # not even that: the job reads as killed mid-run, with the counts of its rows
        assert row["status"] == "running"
        info = load_job(job_id)
        assert info.status == "abandoned" and info.counts == stored
    records = resume_from_checkpoint(job_id)
    assert records == [{"i": i, "text": "y" * 500} for i in range(2000)]
    info = load_job(job_id)
    assert info.status == "completed" and info.counts == rows_on_disk(job_id)


@pytest.mark.parametrize("fault", ["corrupt", "not-a-file", "read-only-dir"])
def test_commands_report_a_bad_database_in_one_line(tmp_path, small_disk, fault):
    (tmp_path / "t.py").write_text("async def f(i: int):\n    return [{'i': i}]\n")
    (tmp_path / "in.jsonl").write_text('{"i": 1}\n')
    db_dir = small_disk / "db"
    db_dir.mkdir()
    db = db_dir / "starfish.db"
    if fault == "corrupt":
        db.write_bytes(b"this is not a database file, whatever its name says " * 100)
    elif fault == "not-a-file":
        db.mkdir()
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    env = {"STARFISH_LOCAL_STORAGE_DIR": str(small_disk)}
    commands = [("run", "t.py:f", "-i", "in.jsonl", "--no-progress")]
    if fault != "read-only-dir":  # no database there: nothing to list, nothing to fail
        commands += [("jobs", "list"), ("jobs", "show", "abc"), ("jobs", "resume", "abc")]
    for command in commands:
        result = _cli(*command, cwd=tmp_path, env=env)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1, (command, result)
        assert len(lines) == 1 and "Traceback" not in result.stderr, (command, result.stderr)
        assert str(db) in lines[0] or str(db_dir) in lines[0], (command, lines[0])
        fix = {
            "corrupt": "move it aside",
            "not-a-file": "STARFISH_LOCAL_STORAGE_DIR",
            "read-only-dir": "writable",
        }[fault]
        assert fix in lines[0], (command, lines[0])


def test_a_database_damaged_after_a_job_reads_as_one_line_per_command(tmp_path):
    @data_factory(show_progress=False)
    async def gen(i):
        return [{"i": i, "text": "z" * 300}]

    gen.run(i=list(range(2000)))
    db = db_path()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with open(db, "r+b") as f:  # scribble over pages in the middle of the records
        f.seek(4096 * 20)
        f.write(b"\xff" * 4096 * 40)
    out = tmp_path / "out.jsonl"
    result = _cli("jobs", "export", gen.job_id, "-o", str(out), cwd=tmp_path, env={})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(db) in lines[0] and "malformed" in lines[0] and "move it aside" in lines[0]
