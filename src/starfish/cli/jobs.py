"""`starfish jobs ...`: list, inspect, export, resume and delete stored jobs."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from starfish.cli._output import (
    ATTEMPT_COUNTS_NOTE,
    EXIT_FAILED_JOB,
    batch_line,
    counts_line,
    exit_code_for,
    exit_code_of,
    exit_interrupted,
    export_hint,
    fail,
    llm_line,
    pending,
    print_json,
    print_summary,
    seconds,
    when,
)
from starfish.errors import JobTerminated

app = typer.Typer(
    help="List, inspect, export, resume and delete stored jobs.", no_args_is_help=True
)

JobId = Annotated[
    str, typer.Argument(metavar="JOB_ID", help="A job id, as `starfish jobs list` shows it.")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


class Filter(str, enum.Enum):
    completed = "completed"
    failed = "failed"
    filtered = "filtered"
    duplicate = "duplicate"
    dead = "dead"


def _load(job_id: str) -> Any:
    from starfish import jobs

    try:
        return jobs.load_job(job_id)
    except jobs.JobNotFoundError as e:
        fail(str(e) or f"no job {job_id!r}; `starfish jobs list` shows the stored jobs")


@app.command("list")
def list_jobs(as_json: AsJson = False) -> None:
    """List stored jobs, newest first."""
    from starfish import jobs

    infos = jobs.list_jobs()
    if as_json:
        print_json([info.to_dict() for info in infos])
        return
    if not infos:
        typer.echo("no jobs stored yet; `starfish run` starts one")
        return
    rows = [
        (
            info.job_id,
            info.name or "-",
            info.status,
            str(info.num_inputs),
            str(info.counts.get("completed", 0)),
            when(info.created_at),
        )
        for info in infos
    ]
    header = ("JOB ID", "NAME", "STATUS", "INPUTS", "COMPLETED", "CREATED")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@app.command("show")
def show(job_id: JobId, as_json: AsJson = False) -> None:
    """Status, stop reason, counts, config, timings and dead-queue inputs of one job."""
    from starfish.quality import quality_line, summary

    info = _load(job_id)
    quality = summary(info.job_id)
    if as_json:
        print_json({**info.to_dict(), "quality": quality})
        return
    reason = info.stop_reason or "-"
    dead = ", ".join(str(i) for i in info.dead_queue) if info.dead_queue else "-"
    lines = [
        ("job", info.job_id),
        ("name", info.name or "-"),
        ("status", info.status),
        ("stop reason", reason),
        ("run mode", info.run_mode or "-"),
        ("inputs", str(info.num_inputs)),
        ("counts", counts_line(info.counts) + pending(info)),
        ("", f"({ATTEMPT_COUNTS_NOTE})"),
        ("dead queue", dead),
        *(
            [("waiting", f"{info.waiting} inputs (deferred; they run again)")]
            if info.waiting
            else []
        ),
        ("created", when(info.created_at)),
        ("finished", when(info.finished_at)),
        ("run time", seconds(info.execution_time)),
    ]
    if quality is not None:
        lines.append(("quality", quality_line(quality)))
    if info.llm:
        lines.append(("llm", llm_line(info.llm)))
    lines += [("batch" if i == 0 else "", batch_line(b)) for i, b in enumerate(info.batches)]
    for key, value in lines:
        typer.echo(f"{key + ':' if key else '':<13}{value}")
    if info.made_with:
        typer.echo("made with:")
        for key, value in info.made_with.items():
            text = value if isinstance(value, str) else json.dumps(value)
            typer.echo(f"  {key}: {text}")
    typer.echo("config:")
    for key, value in sorted((info.config or {}).items()):
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        typer.echo(f"  {key}: {text}")


@app.command("export")
def export(
    job_id: JobId,
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="File to write: .jsonl, .csv or .parquet (with --format hf: a folder).",
            show_default=False,
        ),
    ],
    filter_: Annotated[
        Filter,
        typer.Option(
            "--filter",
            help="Which records to write: completed records, the failed / filtered / "
            "duplicate attempts, or one row per dead input (its last error and its input).",
        ),
    ] = Filter.completed,
    with_quality: Annotated[
        bool,
        typer.Option(
            "--with-quality",
            help="Add quality.* columns: the judge's score and reason, a duplicate's kind, "
            "similarity and the input it repeats.",
        ),
    ] = False,
    format_: Annotated[
        str,
        typer.Option(
            "--format",
            metavar="FORMAT",
            help="'file' (the format of the extension) or 'hf': a folder in the Hugging Face "
            "Hub's layout, Parquet shards under data/ and a README.md dataset card, which "
            "datasets.load_dataset(DIR) loads and `huggingface-cli upload` publishes.",
        ),
    ] = "file",
) -> None:
    """Write a job's records to a file, streamed from storage (memory stays flat)."""
    from starfish._memory import return_big_blocks

    return_big_blocks()
    from starfish import io, jobs

    job_id = _load(job_id).job_id
    if format_ not in ("file", "hf"):
        fail(f"--format must be 'file' or 'hf', got {format_!r}")
    if format_ == "hf":
        _export_hf(job_id, output, filter_.value, with_quality)
        return
    try:
        io.check_writable(output)  # a format we cannot write is a usage error: exit 2
    except io.DataFileError as e:
        fail(str(e))
    try:
        if filter_ is Filter.dead:
            records = jobs.iter_dead(job_id)
        elif with_quality:
            from starfish.quality import iter_with_quality

            records = iter_with_quality(job_id, filter_.value)
        else:
            records = jobs.iter_records(job_id, filter=filter_.value)
        count = io.write_records(output, records)
    except io.DataFileError as e:  # records that do not fit the format: the job is fine
        fail(str(e), EXIT_FAILED_JOB)
    except OSError as e:
        fail(f"cannot write {output}: {e.strerror or e}", EXIT_FAILED_JOB)
    typer.echo(f"wrote {count} {filter_.value} records of job {job_id} to {output}")


def _export_hf(job_id: str, output: Path, filter_: str, with_quality: bool) -> None:
    from starfish import io
    from starfish.arrow import export_hf

    if output.exists() and not output.is_dir():
        fail(f"--format hf writes a folder, and {output} is a file")
    try:
        done = export_hf(job_id, output, filter_, with_quality)
    except io.DataFileError as e:
        fail(str(e), EXIT_FAILED_JOB)
    except OSError as e:
        fail(f"cannot write {output}: {e.strerror or e}", EXIT_FAILED_JOB)
    typer.echo(
        f"wrote {done['rows']} {filter_} records of job {job_id} to {output}/ "
        f"({done['shards']} Parquet shard(s) in data/, README.md dataset card)"
    )


@app.command("resume")
def resume(
    job_id: JobId,
    max_concurrency: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", help="Calls running at once.", show_default=False),
    ] = None,
    reload: Annotated[
        bool,
        typer.Option(
            "--reload",
            help="Import TARGET afresh from where the run imported it (its file or module), "
            "instead of running the code stored when the job started: a fixed function "
            "rescues the inputs the old one killed.",
        ),
    ] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    as_json: AsJson = False,
) -> None:
    """Continue a stored job: runs only the inputs that have not completed."""
    from starfish import OutputError, StarfishError, jobs

    job_id = _load(job_id).job_id
    overrides: dict[str, Any] = {"show_progress": not no_progress}
    if max_concurrency is not None:
        overrides["max_concurrency"] = max_concurrency
    error = None
    try:
        jobs.run_resume(job_id, reload=reload, **overrides)  # records stay in storage
    except OutputError as e:
        error = e
    except StarfishError as e:  # cannot be resumed (exit 1), a storage fault, ...
        fail(str(e), exit_code_of(e))
    except (KeyboardInterrupt, JobTerminated) as e:
        exit_interrupted(job_id, e)
    info = _load(job_id)
    if as_json:
        print_json(info.to_dict())
    else:
        print_summary(info)
        hint = export_hint(info)
        if hint is not None:
            typer.echo(hint)
    raise typer.Exit(EXIT_FAILED_JOB if error is not None else exit_code_for(info))


@app.command("delete")
def delete(
    job_id: JobId,
    keep_batches: Annotated[
        bool,
        typer.Option(
            "--keep-batches",
            help="Leave the job's live provider batches running (and billed) instead of "
            "cancelling them.",
        ),
    ] = False,
) -> None:
    """Delete a stored job and its records; cancel its batches still running at a provider."""
    from starfish import ResumeError, jobs

    job_id = _load(job_id).job_id
    try:
        notes = jobs.delete_job(job_id, keep_batches=keep_batches)
    except (ResumeError, jobs.LiveBatchesError) as e:
        fail(str(e), EXIT_FAILED_JOB)
    for note in notes:
        typer.echo(note)
    typer.echo(f"deleted job {job_id}")
