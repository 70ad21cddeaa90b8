"""`starfish run` over a large JSONL file: peak RSS and time of the whole command.

Generates the file once (by default 1,000,000 rows of about 200 bytes: 190 MB) in a scratch
directory, then runs `starfish run` on it as a user would, with a target that returns one
small record per row, each run with a fresh app data dir, and reports the command's own peak
RSS (`wait4`) and wall time. `--compare SRC` also runs the `src/` directory of another
checkout (e.g. the commit before a change, from `git worktree add` or `git archive`) on the
same file, alternating with ours, so both see the same machine load.

    .venv/bin/python bench/large_input.py                          # 1,000,000 rows, ours
    .venv/bin/python bench/large_input.py --rows 20000             # a quick look
    .venv/bin/python bench/large_input.py --reps 3 --compare /tmp/before/src
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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


def run_once(scratch: Path, rows: int, src: Path | None, output: str | None) -> dict[str, Any]:
    """One `starfish run` of the generated file; `src` runs another checkout's package."""
    appdir = Path(tempfile.mkdtemp(dir=scratch, prefix="app-"))
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
    cmd = [sys.executable, "-m", "starfish", "run", "target.py:gen", "-i", "big.jsonl"]
    cmd += ["--no-progress", "--max-concurrency", "50", "--json"]
    if output:
        cmd += ["-o", str(appdir / output)]
    try:
        start = time.perf_counter()
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(cmd, cwd=scratch, env=env, stdout=out, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(), err.read().decode()
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise SystemExit(f"starfish run exited {code}: {stderr[-2000:]}")
        job = json.loads(stdout)
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
                samples[name].append(sample)
                print(f"  {name:<9} {json.dumps(sample)}", file=sys.stderr, flush=True)
        result: dict[str, Any] = {"rows": args.rows, "file_mb": size / 2**20}
        for name, runs in samples.items():
            for metric in ("maxrss_mb", "wall_s", "db_mb"):
                result[f"{name}_{metric}"] = statistics.median(r[metric] for r in runs)
        print("BENCH " + json.dumps(result), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
