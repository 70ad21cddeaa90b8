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


def preload() -> None:
    """Import what a run needs before the timer starts: import cost has a row of its own."""
    import contextlib
    import importlib

    for name in ("starfish.data_factory.job", "starfish.data_factory.storage.sqlite"):
        with contextlib.suppress(ImportError):  # the peer has other modules
            importlib.import_module(name)


def run_job(gen: Any, n: int) -> dict[str, Any]:
    preload()
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
    p = sub.add_parser("resume-finish")
    p.add_argument("--job-id", required=True)
    p.add_argument("--concurrency", type=int, default=50)
    p = sub.add_parser("export")
    p.add_argument("--job-id", required=True)
    p.add_argument("--out", required=True)
    args = parser.parse_args()
    handlers = {
        "import": cmd_import,
        "job": cmd_job,
        "io": cmd_io,
        "floor-io": cmd_floor_io,
        "resume-start": cmd_resume_start,
        "resume-finish": cmd_resume_finish,
        "export": cmd_export,
    }
    handlers[args.cmd](args)


if __name__ == "__main__":
    main()
