"""Printing shared by the commands: one-line errors, job summaries, JSON."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any, NoReturn

import typer

from starfish.data_factory.storage.base import COUNT_KEYS

EXIT_OK = 0
EXIT_FAILED_JOB = 1
EXIT_USAGE = 2

FAILED_STATUSES = ("failed", "stopped")


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """One line on stderr and the exit code; users get no traceback for a mistake of theirs."""
    first_line = " ".join(str(message).split("\n")[0].split())
    typer.echo(f"error: {first_line}", err=True)
    raise typer.Exit(code)


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
    cost = llm.get("cost_usd")
    return (
        f"{llm['requests']} requests, {llm['cache_hits']} cache hits, "
        f"{llm['prompt_tokens']} prompt + {llm['completion_tokens']} completion tokens, "
        f"{llm['rate_limited']} rate-limited, {llm['retries']} retries, "
        f"cost {'unknown' if cost is None else usd(cost)}"
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
    if info.counts.get("completed", 0) == 0 and info.counts.get("failed", 0):
        return f"failures: starfish jobs export {info.job_id} --output failed.jsonl --filter failed"
    return f"records: starfish jobs export {info.job_id} --output records.jsonl"


def exit_code_for(info: Any) -> int:
    return EXIT_FAILED_JOB if info.status in FAILED_STATUSES else EXIT_OK
