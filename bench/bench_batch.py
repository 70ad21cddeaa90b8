"""The batch lane (`StructuredLLM(batch=True)`) against the loopback batch server, which answers
each batch at once, in a process of its own (tests/batch_server.py), so that what is timed is
the driver.

(a) --inputs (100,000) inputs through the batch lane: the driver's own time (build the request
    lines, upload, poll, download, keep the answers, replay them, store the records) as the
    CPU time of its process, its wall time and peak RSS; then the same job again on the same
    inputs, answered from the cache alone (the re-run of the finished job: nothing is sent).
    Each run is a fresh child process (peak RSS is its own), the two sharing the job database.
    Targets: batch CPU within 3x the cache-only re-run's, peak RSS under 400 MB.
(b) The cost line: the same --cost-inputs (1,000) inputs online against the loopback chat
    server (tests/openai_server.py) and in batch against the batch server, with the same
    `price=`; the cost each job stored, side by side.

    .venv/bin/python bench/bench_batch.py [--inputs 100000] [--cost-inputs 1000] [--reps 3]
        [--write]   # --write puts the tables into docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- batch:start -->", "<!-- batch:end -->"
PROMPT = "Write one question and its answer about topic {{topic}}."
SCHEMA = [{"name": "question", "type": "str"}, {"name": "answer", "type": "str"}]
PRICE = (0.15, 0.60)  # gpt-4o-mini's USD per million input / output tokens
CONCURRENCY = 1000


def child(mode: str, url: str, n: int, run: str) -> dict[str, Any]:
    """One job in this process: `batch` (through the batch lane) or `online`; the inputs named
    by `run`, so a second child with the same `run` replays them from the cache."""
    from starfish import StructuredLLM, data_factory, jobs

    llm = StructuredLLM(
        "m",
        prompt=PROMPT,
        output_schema=SCHEMA,
        base_url=url,
        price=PRICE,
        batch=mode == "batch",
    )

    @data_factory(max_concurrency=CONCURRENCY, show_progress=False)
    async def gen(topic: str) -> list[dict[str, Any]]:
        return (await llm.run(topic=topic)).data

    topics = [f"{run}-{i}" for i in range(n)]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    gen.run(topic=topics)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    info = jobs.load_job(gen.job_id)
    assert info.counts["completed"] == n, info.counts
    return {
        "wall": wall,
        "cpu": cpu,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "llm": info.llm,
        "batches": len(info.batches),
    }


def spawn(mode: str, url: str, n: int, run: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--url", url, "--n", str(n), "--run", run],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{out.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--cost-inputs", type=int, default=1_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--child", choices=("batch", "online"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.url, args.n, args.run)))
        return

    os.environ.setdefault("TELEMETRY_ENABLED", "false")
    os.environ.setdefault("POSTHOG_HOST", "http://127.0.0.1:9")
    os.environ["STARFISH_BATCH_POLL_S"] = "0.05"
    os.environ["STARFISH_LOCAL_STORAGE_DIR"] = tempfile.mkdtemp(prefix="starfish-bench-batch-")
    load0 = os.getloadavg()[0]
    from harness import ServedProcess

    batch_server = ServedProcess("tests.batch_server")
    chat_server = ServedProcess("tests.openai_server")
    runs: dict[str, list[dict[str, Any]]] = {"batch": [], "rerun": []}
    try:
        for rep in range(args.reps):
            name = f"r{rep}"
            runs["batch"].append(spawn("batch", batch_server.url, args.inputs, name))
            runs["rerun"].append(spawn("batch", batch_server.url, args.inputs, name))
            for key in ("batch", "rerun"):
                r = runs[key][-1]
                print(
                    f"  {key}: {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU, "
                    f"{r['rss_mb']:.0f} MB peak",
                    file=sys.stderr,
                )
        served = batch_server.stats()
        cost_online = spawn("online", chat_server.url, args.cost_inputs, "cost")
        cost_batch = spawn("batch", batch_server.url, args.cost_inputs, "cost")
    finally:
        batch_server.stop()
        chat_server.stop()
        shutil.rmtree(os.environ["STARFISH_LOCAL_STORAGE_DIR"], ignore_errors=True)

    def med(key: str, field: str) -> float:
        return statistics.median(r[field] for r in runs[key])

    ratio = statistics.median(
        b["cpu"] / r["cpu"] for b, r in zip(runs["batch"], runs["rerun"], strict=True)
    )
    peak = max(r["rss_mb"] for r in runs["batch"] + runs["rerun"])
    per_run = ", ".join(
        str(n)
        for n in served["lines_per_batch"][: len(served["lines_per_batch"]) // max(args.reps, 1)]
    )
    from harness import measured_on

    lines = [
        measured_on(load0) + ". "
        f"Command: `.venv/bin/python bench/bench_batch.py --inputs {args.inputs} "
        f"--cost-inputs {args.cost_inputs} --reps {args.reps}`.",
        "",
        f"**{args.inputs:,} inputs through the batch lane** (the loopback batch server answers "
        f"each batch at once, in its own process; batches of {per_run} lines; concurrency "
        f"{CONCURRENCY}; median of {args.reps}; targets: the driver's CPU within 3x the "
        "cache-only re-run's, peak RSS under 400 MB)",
        "",
        "| Run | Driver CPU (median) | Wall (median) | Peak RSS (max) | CPU of each run |",
        "|---|---|---|---|---|",
    ]
    for key, label in (
        ("batch", "batch lane: build, upload, poll, download, keep, replay, store"),
        ("rerun", "the same job re-run: every answer from the cache, nothing sent"),
    ):
        each = ", ".join(f"{r['cpu']:.1f}" for r in runs[key])
        lines.append(
            f"| {label} | {med(key, 'cpu'):.1f} s | {med(key, 'wall'):.1f} s | "
            f"{max(r['rss_mb'] for r in runs[key]):.0f} MB | {each} s |"
        )
    lines += [
        "",
        f"Batch / cache-only driver CPU: **{ratio:.2f}x** (target <= 3x); peak RSS "
        f"**{peak:.0f} MB** (target < 400 MB).",
        "",
        f"**The cost line: the same {args.cost_inputs:,}-input job online and in batch** "
        f"(`price={PRICE}`, USD per million input / output tokens, on both)",
        "",
        "| Job | Requests | Batch requests | Prompt + completion tokens | Cost |",
        "|---|---|---|---|---|",
    ]
    for label, r in (("online (loopback chat server)", cost_online), ("batch", cost_batch)):
        llm = r["llm"]
        lines.append(
            f"| {label} | {llm['requests']:,} | {llm.get('batch_requests', 0):,} | "
            f"{llm['prompt_tokens']:,} + {llm['completion_tokens']:,} | "
            f"${llm['cost_usd']:.6f}{' (batch)' if llm.get('batch_requests') else ''} |"
        )
    half = cost_batch["llm"]["cost_usd"] / cost_online["llm"]["cost_usd"]
    lines += [
        "",
        f"Batch / online cost: {half:.3f} (the two servers count the same tokens, so exactly "
        "half). How to read it: the driver's CPU is the steadier measure on a shared machine; "
        "the batch run's wall time adds the server's own work (answering every line and "
        "writing the output file) and the polls. Both runs hold the records `run()` returns; "
        "the batch run also holds each request line until its batch ends, and a whole "
        "output file of 50,000 answers while it keeps them in one transaction.",
    ]
    table = "\n".join(lines)
    print(table)
    if args.write:
        sys.path.insert(0, str(ROOT / "bench"))
        from harness import write_doc_block

        write_doc_block(DOC, START, END, "## The batch lane (bench/bench_batch.py)", table)
        print(f"wrote {DOC.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
