"""`starfish run` over a large JSONL file: peak RSS and time of the whole command.

Generates the file once (by default 1,000,000 rows of about 200 bytes: 190 MB) in a scratch
directory, then runs `starfish run` on it as a user would, with a target that returns one
small record per row, each run with a fresh app data dir, and reports the command's own peak
RSS (`wait4`) and wall time. `--resume` also kills a run (SIGKILL) once half the inputs are
stored and measures `starfish jobs resume` of it, which reads the rows back from storage.
`--compare SRC` also runs the `src/` directory of another
checkout (e.g. the commit before a change, from `git worktree add` or `git archive`) on the
same file, alternating with ours, so both see the same machine load.

    .venv/bin/python bench/large_input.py                          # 1,000,000 rows, ours
    .venv/bin/python bench/large_input.py --rows 20000             # a quick look
    .venv/bin/python bench/large_input.py --reps 3 --compare /tmp/before/src
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET = """
async def gen(id: int, topic: str, text: str):
    return {"id": id, "topic": topic, "chars": len(text)}
"""


def make_input(path: Path, rows: int) -> int:
    """`rows` JSONL rows of about 200 bytes each; returns the file size in bytes."""
    filler = "lorem ipsum dolor sit amet " * 6
    with path.open("w", encoding="utf-8") as f:
        for i in range(rows):
            row = {"id": i, "topic": f"topic {i % 997}", "text": filler[: 150 + i % 9]}
            f.write(json.dumps(row))
            f.write("\n")
    return path.stat().st_size


def _env(appdir: Path, src: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARFISH_")}
    env.pop("PYTHONPATH", None)
    env.update(
        TELEMETRY_ENABLED="false",
        DO_NOT_TRACK="1",
        POSTHOG_HOST="http://127.0.0.1:9",
        STARFISH_LOCAL_STORAGE_DIR=str(appdir),
    )
    if src is not None:
        env["PYTHONPATH"] = str(src)  # ahead of the editable install's path entry
    return env


def _measured(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[dict[str, Any], float, Any]:
    """Run `cmd` to its end: its JSON output, wall time and resource usage (`wait4`)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd[3:5])} exited {code}: {stderr[-2000:]}")
    return json.loads(stdout), wall, usage


def resume_once(scratch: Path, rows: int, src: Path | None) -> dict[str, Any]:
    """Kill -9 a run once half its inputs are stored, then measure `jobs resume` of it."""
    appdir = Path(tempfile.mkdtemp(dir=scratch, prefix="app-"))
    env = _env(appdir, src)
    run = [sys.executable, "-m", "starfish", "run", "target.py:gen", "-i", "big.jsonl"]
    run += ["--no-progress", "--max-concurrency", "50"]
    db = appdir / "db" / "starfish.db"
    try:
        proc = subprocess.Popen(run, cwd=scratch, env=env, stdout=subprocess.DEVNULL)
        done = 0
        while done < rows // 2:
            if proc.poll() is not None:
                raise SystemExit(f"the run ended (exit {proc.returncode}) before it was killed")
            time.sleep(0.2)
            if db.exists():
                with (
                    contextlib.closing(sqlite3.connect(db, timeout=30)) as conn,
                    contextlib.suppress(sqlite3.OperationalError),  # no table yet
                ):
                    (done,) = conn.execute("SELECT count(*) FROM inputs").fetchone()
        proc.kill()
        proc.wait()
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
            (job_id,) = conn.execute("SELECT job_id FROM jobs").fetchone()
            (stored,) = conn.execute("SELECT count(*) FROM inputs").fetchone()
        cmd = [sys.executable, "-m", "starfish", "jobs", "resume", job_id, "--no-progress"]
        job, wall, usage = _measured([*cmd, "--json"], scratch, env)
        if job["counts"]["completed"] != rows:
            raise SystemExit(f"resume completed {job['counts']['completed']} of {rows}")
        return {
            "resume_maxrss_mb": usage.ru_maxrss / 1024,
            "resume_wall_s": wall,
            "resume_ran": rows - stored,
        }
    finally:
        shutil.rmtree(appdir, ignore_errors=True)


def run_once(scratch: Path, rows: int, src: Path | None, output: str | None) -> dict[str, Any]:
    """One `starfish run` of the generated file; `src` runs another checkout's package."""
    appdir = Path(tempfile.mkdtemp(dir=scratch, prefix="app-"))
    env = _env(appdir, src)
    cmd = [sys.executable, "-m", "starfish", "run", "target.py:gen", "-i", "big.jsonl"]
    cmd += ["--no-progress", "--max-concurrency", "50", "--json"]
    if output:
        cmd += ["-o", str(appdir / output)]
    try:
        job, wall, usage = _measured(cmd, scratch, env)
        if job["counts"]["completed"] != rows:
            raise SystemExit(f"completed {job['counts']['completed']} of {rows}")
        db = appdir / "db" / "starfish.db"
        return {
            "maxrss_mb": usage.ru_maxrss / 1024,
            "wall_s": wall,
            "db_mb": db.stat().st_size / 2**20 if db.exists() else 0.0,
        }
    finally:
        shutil.rmtree(appdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--output", help="also pass `-o FILE` (e.g. out.jsonl)")
    parser.add_argument("--compare", type=Path, help="another checkout's src/ to run too")
    parser.add_argument("--resume", action="store_true", help="also measure a resume")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="starfish-large-input-"))
    try:
        (scratch / "target.py").write_text(TARGET)
        size = make_input(scratch / "big.jsonl", args.rows)
        sources: dict[str, Path | None] = {"ours": None}
        if args.compare is not None:
            sources = {"compared": args.compare.resolve(), "ours": None}
        samples: dict[str, list[dict[str, Any]]] = {name: [] for name in sources}
        for rep in range(args.reps):
            order = list(sources) if rep % 2 == 0 else list(sources)[::-1]
            for name in order:
                sample = run_once(scratch, args.rows, sources[name], args.output)
                if args.resume:
                    sample.update(resume_once(scratch, args.rows, sources[name]))
                samples[name].append(sample)
                print(f"  {name:<9} {json.dumps(sample)}", file=sys.stderr, flush=True)
        result: dict[str, Any] = {"rows": args.rows, "file_mb": size / 2**20}
        for name, runs in samples.items():
            for metric in runs[0]:
                result[f"{name}_{metric}"] = statistics.median(r[metric] for r in runs)
        print("BENCH " + json.dumps(result), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
