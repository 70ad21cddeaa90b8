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
    """Ctrl-C or SIGTERM ended a job (stored `interrupted`): say how to continue it."""
    from starfish.errors import JobTerminated

    terminated = isinstance(signal, JobTerminated)
    hint = f"; continue it with: starfish jobs resume {job_id}" if job_id else ""
    typer.echo(f"{'terminated' if terminated else 'interrupted'}{hint}", err=True)
    raise typer.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)


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


STRUCTURED_MODES = ("json_schema", "json_object", "prompt")


def llm_line(llm: dict[str, Any]) -> str:
    cost = llm.get("cost_usd")
    modes = ", ".join(
        f"{mode} ({llm[f'answers_{mode}']} answers)"
        for mode in STRUCTURED_MODES
        if llm.get(f"answers_{mode}")
    )
    return (
        f"{llm['requests']} requests, {llm['cache_hits']} cache hits, "
        f"{llm['prompt_tokens']} prompt + {llm['completion_tokens']} completion tokens, "
        f"{llm['rate_limited']} rate-limited, {llm['retries']} retries, "
        f"cost {'unknown' if cost is None else usd(cost)}"
        + (f", structured output {modes}" if modes else "")
    )


def usd(cost: float) -> str:
    """Dollars with the digits that matter: $0.4213, $0.000384."""
    return f"${cost:.4f}" if cost >= 0.01 or cost == 0 else f"${cost:.6f}"


def print_summary(info: Any) -> None:
    """What a user wants right after a job: its id, how it ended, what happened to the inputs."""
    reason = f" ({info.stop_reason})" if info.stop_reason else ""
    typer.echo(f"job {info.job_id}: {info.status}{reason} in {seconds(info.execution_time)}")
    typer.echo(f"  inputs {info.num_inputs}  {counts_line(info.counts)}")
    if getattr(info, "llm", None):
        typer.echo(f"  llm {llm_line(info.llm)}")


def export_hint(info: Any) -> str:
    """The command that gets the records out; the failures when nothing completed."""
    if info.status == "abandoned":
        return f"abandoned (its process ended mid-run): starfish jobs resume {info.job_id}"
    if info.counts.get("completed", 0) == 0 and info.counts.get("failed", 0):
        return f"failures: starfish jobs export {info.job_id} --output failed.jsonl --filter failed"
    return f"records: starfish jobs export {info.job_id} --output records.jsonl"


def exit_code_for(info: Any) -> int:
    return EXIT_FAILED_JOB if info.status in FAILED_STATUSES else EXIT_OK
