"""`starfish run` over a large JSONL file: peak RSS and time of the whole command.

Generates the file (by default 1,000,000 rows of about 200 bytes: 200 MB) in a scratch
directory, then runs the installed `starfish run` on it as a user would, with a target that
returns one small record per row, and reports the command's own peak RSS (`wait4`) and wall
time. Run it alone, or through `bench/run.py --workloads large_input`.

    .venv/bin/python bench/large_input.py                 # 1,000,000 rows
    .venv/bin/python bench/large_input.py --rows 20000    # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = """
async def gen(id: int, topic: str, text: str):
    return {"id": id, "topic": topic, "chars": len(text)}
"""


def make_input(path: Path, rows: int) -> int:
    """`rows` JSONL rows of about 200 bytes each; returns the file size in bytes."""
    filler = "lorem ipsum dolor sit amet " * 6
    with path.open("w", encoding="utf-8") as f:
        for i in range(rows):
            f.write(
                json.dumps({"id": i, "topic": f"topic {i % 997}", "text": filler[: 150 + i % 9]})
            )
            f.write("\n")
    return path.stat().st_size


def run(rows: int, starfish: Path, output: str | None, keep: bool) -> dict[str, float | int]:
    scratch = Path(tempfile.mkdtemp(prefix="starfish-large-input-"))
    try:
        (scratch / "target.py").write_text(TARGET)
        size = make_input(scratch / "big.jsonl", rows)
        env = {k: v for k, v in os.environ.items() if not k.startswith("STARFISH_")}
        env.update(
            TELEMETRY_ENABLED="false",
            DO_NOT_TRACK="1",
            POSTHOG_HOST="http://127.0.0.1:9",
            STARFISH_LOCAL_STORAGE_DIR=str(scratch / "app"),
        )
        cmd = [str(starfish), "run", "target.py:gen", "-i", "big.jsonl", "--no-progress"]
        cmd += ["--max-concurrency", "50", "--json"]
        if output:
            cmd += ["-o", output]
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
        db = scratch / "app" / "db" / "starfish.db"
        return {
            "rows": rows,
            "file_mb": size / 2**20,
            "maxrss_mb": usage.ru_maxrss / 1024,
            "wall_s": wall,
            "db_mb": db.stat().st_size / 2**20 if db.exists() else 0.0,
        }
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--output", help="also pass `-o FILE` (e.g. out.jsonl)")
    parser.add_argument(
        "--starfish",
        type=Path,
        default=Path(sys.executable).parent / "starfish",
        help="the starfish command to measure (default: this venv's)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    result = run(args.rows, args.starfish, args.output, args.keep)
    print("BENCH " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
