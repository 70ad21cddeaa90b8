"""Printing shared by the commands: one-line errors, job summaries, JSON."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any, NoReturn

import typer

from starfish.data_factory.storage.base import COUNT_KEYS
from starfish.errors import InputError, JobNotFoundError, OptionsError

EXIT_OK = 0
EXIT_FAILED_JOB = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM, what `docker stop` and Kubernetes expect

FAILED_STATUSES = ("failed", "stopped", "abandoned")
"""`abandoned`: stored as running, but no process runs it (killed mid-run): resumable."""


USAGE_ERRORS = (OptionsError, InputError, JobNotFoundError)
"""What the user typed is wrong (an option, TARGET, the input file, a job id): exit 2. The
commands also treat an `io.DataFileError` from reading --input, or from an --output extension
we cannot write, as usage. Every other `StarfishError` (resume, storage, records that do not
fit the output format) is about the job or the machine, not the command line: exit 1."""


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """One line on stderr and the exit code; users get no traceback for a mistake of theirs."""
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code)


def exit_interrupted(job_id: str | None, signal: BaseException) -> NoReturn:
    """Ctrl-C or SIGTERM ended a job (stored `interrupted`): one line on how to continue it."""
    from starfish.data_factory.interrupted import line_of
    from starfish.errors import JobTerminated

    if isinstance(signal, JobTerminated):
        if job_id is None:  # else the library has printed the job's line already
            typer.echo("terminated before the job started", err=True)
        raise typer.Exit(EXIT_TERMINATED)
    line = line_of(signal)
    if line is None:
        line = (
            f"job {job_id} interrupted; continue it with: starfish jobs resume {job_id}"
            if job_id
            else "interrupted before the job started"
        )
    typer.echo(f"starfish: {line}", err=True)
    raise typer.Exit(EXIT_INTERRUPTED)


def one_line(message: object) -> str:
    return " ".join(str(message).split("\n")[0].split())


def exit_code_of(error: BaseException) -> int:
    """Exit 2 only for usage errors; 1 for any other error Starfish raised on purpose."""
    return EXIT_USAGE if isinstance(error, USAGE_ERRORS) else EXIT_FAILED_JOB


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def when(value: Any) -> str:
    """A timestamp (epoch seconds or ISO text) as local 'YYYY-MM-DD HH:MM:SS'."""
    if value is None or value == "":
        return "-"
    if isinstance(value, (int, float)):
        return _dt.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, _dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value).replace("T", " ")[:19]


def seconds(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f} s"


def counts_line(counts: dict[str, int]) -> str:
    return "  ".join(f"{name} {counts.get(name, 0)}" for name in COUNT_KEYS)


def llm_line(llm: dict[str, Any]) -> str:
    from starfish.llm.structured import STRUCTURED_OUTPUT

    cost = llm.get("cost_usd")
    modes = ", ".join(
        f"{mode} ({llm[f'answers_{mode}']} answers)"
        for mode in STRUCTURED_OUTPUT
        if llm.get(f"answers_{mode}")
    )
    return (
        f"{llm['requests']} requests, {llm['cache_hits']} cache hits, "
        f"{llm['prompt_tokens']} prompt + {llm['completion_tokens']} completion tokens, "
        f"{llm['rate_limited']} rate-limited, {llm['retries']} retries, "
        f"cost {'unknown' if cost is None else usd(cost)}"
        + (" (batch)" if llm.get("batch_requests") else "")
        + (f", structured output {modes}" if modes else "")
    )


def batch_line(batch: dict[str, Any]) -> str:
    """`batch_000001  completed  30 requests: 28 succeeded, 2 failed  created ...  ended ...`"""
    counts = (
        f"{batch['requests']} requests: {batch['succeeded']} succeeded, {batch['failed']} failed"
    )
    if batch["unfinished"]:
        counts += f", {batch['unfinished']} unfinished"
    status = batch["provider_status"] or batch["state"]
    line = (
        f"{batch['batch_id'] or '(creating)'}  {status}  {counts}  "
        f"created {when(batch['created_at'])}  ended {when(batch['ended_at'])}"
    )
    return line + (f"  ({batch['reason']})" if batch["reason"] else "")


def usd(cost: float) -> str:
    """Dollars with the digits that matter: $0.4213, $0.000384."""
    return f"${cost:.4f}" if cost >= 0.01 or cost == 0 else f"${cost:.6f}"


ATTEMPT_COUNTS_NOTE = (
    "completed and dead count inputs; failed, filtered and duplicate count attempts, "
    "so they can exceed the inputs"
)


def print_summary(info: Any) -> None:
    """What a user wants right after a job: its id, how it ended, what happened to the inputs
    and, when attempts failed, the most common error with a sample of its message."""
    reason = f" ({info.stop_reason})" if info.stop_reason else ""
    typer.echo(f"job {info.job_id}: {info.status}{reason} in {seconds(info.execution_time)}")
    typer.echo(f"  inputs {info.num_inputs}  {counts_line(info.counts)}{pending(info)}")
    counts = info.counts
    if counts.get("failed") or counts.get("filtered") or counts.get("duplicate"):
        typer.echo(f"  ({ATTEMPT_COUNTS_NOTE})")
    why = info_cause(info)
    if why and "most common error" not in (info.stop_reason or ""):
        typer.echo(f"  most common error: {why}")
    if getattr(info, "llm", None):
        typer.echo(f"  llm {llm_line(info.llm)}")


def pending(info: Any) -> str:
    """`  not finished 870`: inputs neither completed nor dead (a stopped or interrupted job
    leaves them for a resume, including those that failed fewer times than allowed)."""
    if info.status == "completed":
        return ""
    left = info.num_inputs - info.counts.get("completed", 0) - info.counts.get("dead", 0)
    return f"  not finished {left}" if left > 0 else ""


def info_cause(info: Any) -> str | None:
    """The job's most common error and a message sample, read from its failure records."""
    errors = getattr(info, "error_summary", None)
    if not errors:
        return None
    from starfish import jobs
    from starfish.data_factory.failures import most_common_cause
    from starfish.errors import StarfishError

    try:
        return most_common_cause(errors, jobs.iter_records(info.job_id, filter="failed"))
    except StarfishError:  # unreadable, or deleted meanwhile: the counts are still shown
        return None


def export_hint(info: Any) -> str | None:
    """The command that gets the records out, or what to do instead; None when a job has
    nothing to export (the summary's error line says why)."""
    if info.status == "abandoned":
        return f"abandoned (its process ended mid-run): starfish jobs resume {info.job_id}"
    if info.counts.get("completed", 0) == 0:
        return None
    return f"records: starfish jobs export {info.job_id} --output records.jsonl"


def exit_code_for(info: Any) -> int:
    return EXIT_FAILED_JOB if info.status in FAILED_STATUSES else EXIT_OK
