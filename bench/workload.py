"""One benchmark workload in one process, for whichever `starfish` this interpreter imports.

The runner starts this script with our venv's python or with the peer's (starfish-core), so it
uses only the API both share: `@data_factory(...)`, `.run(i=[...])`, and
`data_factory.resume_from_checkpoint(job_id)`. It prints one line, `BENCH {json}`, last: the
peer logs freely, so the marker tells our figures from its chatter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import _bench_hook


def emit(**fields: Any) -> None:
    """Print the result line the runner looks for."""
    sys.stdout.flush()
    print("BENCH " + json.dumps(fields), flush=True)


def library_version() -> str:
    import starfish

    version = getattr(starfish, "__version__", None)
    if version is None:
        from starfish.version import __version__ as version
    return str(version)


def job_id_of(gen: Any) -> str:
    """Ours exposes `gen.job_id`; starfish-core keeps it on the factory's config."""
    job_id = getattr(gen, "job_id", None)
    if job_id is None:
        job_id = gen.factory.config.master_job_id
    return str(job_id)


def make_noop(concurrency: int, storage: str, counted: bool = False) -> Any:
    from starfish import data_factory

    if counted:

        @data_factory(max_concurrency=concurrency, storage=storage, show_progress=False)
        async def f(i: int) -> list[dict[str, int]]:
            await _bench_hook.tick()
            return [{"i": i}]

    else:

        @data_factory(max_concurrency=concurrency, storage=storage, show_progress=False)
        async def f(i: int) -> list[dict[str, int]]:
            return [{"i": i}]

    return f


def make_sleeper(concurrency: int, storage: str, seconds: float) -> Any:
    from starfish import data_factory

    @data_factory(max_concurrency=concurrency, storage=storage, show_progress=False)
    async def f(i: int) -> list[dict[str, int]]:
        await asyncio.sleep(seconds)
        return [{"i": i}]

    return f


PRELOAD = (
    "starfish.data_factory.job",
    "starfish.data_factory.storage.sqlite",
    # imported by a job when it first needs them (ours since the scheduler refactor): the
    # runner, the lease, the key scan and cloudpickle for the call spec, telemetry at the end
    "starfish.data_factory.running",
    "starfish.data_factory.storage.lease",
    "starfish.data_factory.secrets",
    "starfish.data_factory.report",
    "cloudpickle",
)


def preload(first_job: bool = False) -> None:
    """Import what a run needs before the timer starts: import cost has a row of its own.

    `first_job` imports nothing: the timer then also counts what the process's first job
    imports, as a script that runs one job pays it (see the `--first-job` rows).
    """
    import contextlib
    import importlib

    if first_job:
        return
    for name in PRELOAD:
        with contextlib.suppress(ImportError):  # the peer and older trees have other modules
            importlib.import_module(name)


def make_dedupe(concurrency: int, storage: str, hook: str) -> Any:
    """The dedupe hook of examples/qa_pairs.py over no-op calls: state cost, nothing else.

    Every 20th input repeats the question before it, so the hook marks it `duplicate` and the
    factory tries it again until it is dead. `hook="keys"` keeps one state key per question
    (the example's pattern); `hook="dict"` copies one dict of every question per change (the
    example's earlier pattern, quadratic in any storage).
    """
    from starfish import data_factory

    def per_key(output: Any, state: Any) -> str | None:
        keys = ["seen:" + " ".join(r["question"].lower().split()) for r in output]
        if any(k in state for k in keys):
            return "duplicate"
        for k in keys:
            state.set(k, True)
        return None

    def whole_dict(output: Any, state: Any) -> str | None:
        seen = dict(state.get("seen_questions") or {})
        duplicate = False
        for r in output:
            key = " ".join(r["question"].lower().split())
            duplicate = duplicate or key in seen
            seen[key] = True
        if duplicate:
            return "duplicate"
        state.set("seen_questions", seen)
        return None

    @data_factory(
        max_concurrency=concurrency,
        storage=storage,
        show_progress=False,
        on_record_complete=per_key if hook == "keys" else whole_dict,
        initial_state_values={} if hook == "keys" else {"seen_questions": {}},
    )
    async def f(i: int) -> list[dict[str, str]]:
        await asyncio.sleep(0)  # one loop turn per call, as a model call would take
        q = i - 1 if i % 20 == 19 else i
        return [{"question": f"What is topic number {q}?", "answer": "It is a topic."}]

    return f


def run_job(gen: Any, n: int, first_job: bool = False) -> dict[str, Any]:
    preload(first_job)
    start = time.perf_counter()
    try:
        records = gen.run(i=list(range(n)))
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"[:300], "run_s": time.perf_counter() - start}
    run_s = time.perf_counter() - start
    return {
        "run_s": run_s,
        "records": len(records),
        "records_per_s": n / run_s,
        "job_id": job_id_of(gen),
    }


def cmd_import(_: argparse.Namespace) -> None:
    start = time.perf_counter()
    import starfish  # noqa: F401

    emit(import_s=time.perf_counter() - start, version=library_version())


def cmd_job(args: argparse.Namespace) -> None:
    gen = make_noop(args.concurrency, args.storage)
    emit(**run_job(gen, args.n))


def cmd_io(args: argparse.Namespace) -> None:
    gen = make_sleeper(args.concurrency, args.storage, args.sleep)
    emit(**run_job(gen, args.n, args.first_job))


def cmd_dedupe(args: argparse.Namespace) -> None:
    gen = make_dedupe(args.concurrency, args.storage, args.hook)
    emit(**run_job(gen, args.n))


def cmd_floor_io(args: argparse.Namespace) -> None:
    """The same sleeps with plain asyncio and no library: what this machine allows."""

    async def main() -> float:
        pending = iter(range(args.n))
        results: dict[int, list[dict[str, int]]] = {}

        async def worker() -> None:
            for i in pending:
                await asyncio.sleep(args.sleep)
                results[i] = [{"i": i}]

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        return time.perf_counter() - start

    run_s = asyncio.run(main())
    emit(run_s=run_s, records=args.n, records_per_s=args.n / run_s)


def cmd_resume_start(args: argparse.Namespace) -> None:
    """Run a job whose function SIGKILLs this process at its BENCH_KILL_AT-th call."""
    gen = make_noop(args.concurrency, "local", counted=True)
    _bench_hook.JOB_ID.append(lambda: job_id_of(gen))
    emit(**run_job(gen, args.n), killed=False)


def cmd_resume_finish(args: argparse.Namespace) -> None:
    from starfish import data_factory

    make_noop(args.concurrency, "local", counted=True)
    preload()
    start = time.perf_counter()
    try:
        records = data_factory.resume_from_checkpoint(args.job_id)
    except Exception as e:
        emit(error=f"{type(e).__name__}: {e}"[:300], calls=_bench_hook.CALLS[0])
        # starfish-core leaves a non-daemon aiosqlite thread behind here, which blocks exit.
        os._exit(1)
    run_s = time.perf_counter() - start
    emit(run_s=run_s, records=len(records or []), calls=_bench_hook.CALLS[0])


def cmd_store_jobs(args: argparse.Namespace) -> None:
    """Store `--n` finished jobs of five inputs each (one of them dead) and a state key: what
    `starfish jobs list` then reads (ours only)."""
    from starfish import data_factory

    @data_factory(
        storage="local",
        show_progress=False,
        dead_queue_threshold=1,
        initial_state_values={"seen": 0},
    )
    async def f(i: int) -> list[dict[str, int]]:
        if i == 4:
            raise ValueError("the dead one")
        return [{"i": i}]

    start = time.perf_counter()
    for _ in range(args.n):
        f.run(i=list(range(5)))
    emit(run_s=time.perf_counter() - start, jobs=args.n)


def cmd_export(args: argparse.Namespace) -> None:
    """Stream a stored job's records to a file: what `starfish jobs export` does."""
    from starfish.io import write_records
    from starfish.jobs import iter_records

    start = time.perf_counter()
    count = write_records(args.out, iter_records(args.job_id))
    emit(run_s=time.perf_counter() - start, records=count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("import")
    for name in ("job", "io", "floor-io", "resume-start"):
        p = sub.add_parser(name)
        p.add_argument("--n", type=int, required=True)
        p.add_argument("--concurrency", type=int, default=50)
        p.add_argument("--storage", default="local")
        p.add_argument("--sleep", type=float, default=0.01)
        p.add_argument(
            "--first-job",
            action="store_true",
            help="time the imports of the process's first job too (io only)",
        )
    p = sub.add_parser("dedupe")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--storage", default="local")
    p.add_argument("--hook", choices=["keys", "dict"], default="keys")
    p = sub.add_parser("resume-finish")
    p.add_argument("--job-id", required=True)
    p.add_argument("--concurrency", type=int, default=50)
    p = sub.add_parser("store-jobs")
    p.add_argument("--n", type=int, required=True)
    p = sub.add_parser("export")
    p.add_argument("--job-id", required=True)
    p.add_argument("--out", required=True)
    args = parser.parse_args()
    handlers = {
        "import": cmd_import,
        "job": cmd_job,
        "io": cmd_io,
        "floor-io": cmd_floor_io,
        "dedupe": cmd_dedupe,
        "resume-start": cmd_resume_start,
        "resume-finish": cmd_resume_finish,
        "export": cmd_export,
        "store-jobs": cmd_store_jobs,
    }
    handlers[args.cmd](args)


if __name__ == "__main__":
    main()
