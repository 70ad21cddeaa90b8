"""`starfish run TARGET --input FILE`: a data factory over the rows of a file."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from starfish.cli._output import (
    EXIT_FAILED_JOB,
    exit_code_for,
    exit_code_of,
    exit_interrupted,
    export_hint,
    fail,
    print_json,
    print_summary,
)
from starfish.cli._target import TargetError, describe, load_target
from starfish.errors import JobTerminated

if TYPE_CHECKING:
    from starfish.data_factory import DataFactory
    from starfish.jobs import JobInfo

__all__ = ["check_output", "run", "run_over_file"]


STOP_THRESHOLD_HELP = (
    "Stop the job when this share of the last --stop-window attempts failed (default 0.9; "
    "0: never stop for failures). It also stops when the first 20 inputs tried all fail."
)


def no_cache_option() -> Any:
    return typer.Option(
        "--no-cache",
        help="Ask the model again instead of answering from cached responses (none of this "
        "job's answers are kept either).",
    )


def stop_threshold_option() -> Any:
    """`--stop-threshold SHARE`, as `run` and `generate` take it."""
    return typer.Option(
        "--stop-threshold", min=0.0, max=1.0, metavar="SHARE", help=STOP_THRESHOLD_HELP
    )


def input_option(help: str) -> Any:
    """`--input/-i FILE`, as `run` and `generate` take it."""
    return typer.Option("--input", "-i", metavar="FILE", help=help, show_default=False)


def run(
    target: Annotated[
        str,
        typer.Argument(
            metavar="TARGET",
            help="module:function or path/to/file.py:function; an async function or a "
            "@data_factory.",
            show_default=False,
        ),
    ],
    input_file: Annotated[
        Path,
        input_option("Rows to run over: .jsonl, .csv or .parquet. Each column is a parameter."),
    ],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            metavar="NAME=VALUE",
            help="NAME=VALUE given to every row (VALUE parsed as JSON when it parses). Repeatable.",
            show_default=False,
        ),
    ] = None,
    max_concurrency: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", help="Calls running at once.", show_default=False),
    ] = None,
    target_count: Annotated[
        int | None,
        typer.Option(
            min=0,
            metavar="N",
            help="Stop after this many completed inputs (0: all).",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            min=0.001, metavar="S", help="Seconds each call may take.", show_default=False
        ),
    ] = None,
    rate_limit: Annotated[
        str | None,
        typer.Option(
            "--rate-limit",
            metavar="RATE",
            help="At most this many call starts, spread evenly: 600/min, 20/s, 5000/hour.",
            show_default=False,
        ),
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor",
            metavar="NAME",
            help="Where calls run: local (default) or ray (a Ray cluster; pip install "
            "'starfish-datagen[ray]').",
            show_default=False,
        ),
    ] = None,
    stop_threshold: Annotated[float | None, stop_threshold_option()] = None,
    stop_window: Annotated[
        int | None,
        typer.Option(
            "--stop-window",
            min=50,
            metavar="N",
            help="How many of the latest attempts --stop-threshold is taken over (default "
            "100); the job cannot stop on the rate before it has seen that many.",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Also write the completed records here (.jsonl, .csv or .parquet).",
            show_default=False,
        ),
    ] = None,
    no_cache: Annotated[bool, no_cache_option()] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the job as JSON on stdout.")
    ] = False,
) -> None:
    """Run TARGET once per row of --input, store the job, and print a summary."""
    if output is not None:
        check_output(output)
    params = _parse_params(param or [])
    overrides = {
        "max_concurrency": max_concurrency,
        "target_count": target_count,
        "task_runner_timeout": timeout,
        "rate_limit": rate_limit,
        "executor": executor,
        "stop_threshold": stop_threshold,
        "stop_window": stop_window,
        "llm_cache": False if no_cache else None,
    }
    gen = _factory(target, overrides, not no_progress)
    run_over_file(gen, input_file, params, output, as_json)


def run_over_file(
    gen: Any,
    input_file: Path,
    params: dict[str, Any],
    output: Path | None,
    as_json: bool,
    check_columns: Callable[[tuple[str, ...]], None] | None = None,
) -> NoReturn:
    """Run `gen` once per row of `input_file` (streamed into storage), then report the job and
    write `output`; exits with the job's code. Shared by `run` and `generate`."""
    names, rows = _open_rows(input_file, params)
    if check_columns is not None:  # first: it words a clash with what `generate` adds itself
        check_columns(names)
    for name in params:
        if name in names:
            fail(f"--param {name} is also a column of {input_file}; give it in one place")
    _check_columns(gen.func, names, input_file, params)
    job_id, error = _run(gen, names, rows, params, input_file)
    info = _load_info(job_id)
    code = EXIT_FAILED_JOB if error is not None else exit_code_for(info) if info else 0
    records = _count_records(job_id) if as_json or info is None else None
    completed = info.counts["completed"] if info is not None else records or 0
    export = output if output is not None and completed > 0 else None
    written: int | None = None
    problem: str | None = None
    if as_json:
        if export is not None and job_id is not None:
            written, problem = _export(job_id, export)
        data: dict[str, Any] = info.to_dict() if info is not None else {"job_id": job_id}
        data["records"] = records
        data["output"] = str(output) if written is not None else None
        print_json(data)
    else:
        if info is not None:
            print_summary(info)
        else:
            typer.echo(f"job {job_id}: {records} records (not stored: in-memory storage)")
        # After the summary: whatever happens to the file, the job id is shown.
        if export is not None and job_id is not None:
            written, problem = _export(job_id, export)
        if written is not None:
            typer.echo(f"wrote {written} records to {output}")
        elif info is not None and problem is None:  # else the error line says how
            hint = export_hint(info)
            if hint is not None:
                typer.echo(hint)
    if problem is not None:
        fail(problem, EXIT_FAILED_JOB)
    raise typer.Exit(code)


def check_output(output: Path) -> None:
    from starfish import io

    try:
        io.check_writable(output)
    except io.DataFileError as e:
        fail(str(e))


def parse_value(text: str) -> Any:
    """JSON when it parses (`3`, `true`, `[1, 2]`, `"x"`), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _parse_params(items: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            fail(f"--param {item!r}: expected NAME=VALUE")
        params[name] = parse_value(value)
    return params


def _factory(target: str, overrides: dict[str, Any], show_progress: bool) -> DataFactory:
    """The DataFactory to run: TARGET itself with our overrides, or TARGET wrapped."""
    from starfish.data_factory import DataFactory, data_factory

    try:
        obj = load_target(target)
    except TargetError as e:
        fail(str(e))
    options = {k: v for k, v in overrides.items() if v is not None}
    options["show_progress"] = show_progress
    try:
        if isinstance(obj, DataFactory):
            return obj.with_options(**options)
        if inspect.iscoroutinefunction(obj):
            return data_factory(**options)(obj)
    except ValueError as e:
        fail(str(e))
    fail(f"TARGET {target} is {describe(obj)}")


def _open_rows(
    input_file: Path, params: dict[str, Any]
) -> tuple[tuple[str, ...], Iterator[tuple[dict[str, Any], str | None]]]:
    """The column names (from the first row) and every row, checked as it streams by.

    Only the first row is read here, so that a missing, empty or malformed file is reported
    before anything starts; the rest is read while the rows stream into storage.
    """
    from starfish import io

    try:
        rows = io.read_row_texts(input_file)
        first = next(rows, None)
    except FileNotFoundError:
        fail(f"--input {input_file}: no such file")
    except IsADirectoryError:
        fail(f"--input {input_file}: is a directory")
    except io.DataFileError as e:
        fail(str(e))
    except UnicodeDecodeError as e:
        fail(f"{input_file}: not UTF-8 text ({e.reason})")
    if first is None:
        fail(f"--input {input_file}: no rows")
    return tuple(first[0]), _checked_rows(input_file, first, rows)


def _checked_rows(
    input_file: Path,
    first: tuple[dict[str, Any], str | None],
    rows: Iterator[tuple[dict[str, Any], str | None]],
) -> Iterator[tuple[dict[str, Any], str | None]]:
    """The rows, each with exactly the first row's columns; a bad one is an `InputError`."""
    from starfish import InputError

    keys = first[0].keys()
    yield first
    n = 1
    try:
        for n, pair in enumerate(rows, start=2):
            row = pair[0]
            if row.keys() != keys:
                missing = sorted(keys - row.keys())
                extra = sorted(row.keys() - keys)
                what = f"lacks {missing}" if missing else f"has extra {extra}"
                raise InputError(f"{input_file}: row {n} {what}; every row needs the same columns")
            yield pair
    except UnicodeDecodeError as e:
        raise InputError(f"{input_file}: not UTF-8 text after row {n} ({e.reason})") from None


def _check_columns(
    func: Any, names: tuple[str, ...], input_file: Path, params: dict[str, Any]
) -> None:
    """Name the file and the parameters when a column has nowhere to go."""
    try:
        parameters = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = [name for name in (*names, *params) if name not in parameters]
    if unknown:
        name = unknown[0]
        where = f"--param {name}" if name in params else f"{input_file}: column {name!r}"
        takes = ", ".join(parameters)
        fail(f"{where} is not a parameter of {getattr(func, '__name__', 'TARGET')}({takes})")


def _run(
    gen: DataFactory,
    names: tuple[str, ...],
    rows: Iterator[tuple[dict[str, Any], str | None]],
    params: dict[str, Any],
    input_file: Path,
) -> tuple[str | None, Any]:
    """Run the job; usage errors end here, a job that completed nothing is reported later."""
    from starfish import InputError, OutputError, StarfishError, io
    from starfish.data_factory.inputs import stream_inputs

    try:
        suffix = input_file.suffix.lower()
        stream = stream_inputs(
            gen.func,
            names,
            rows,
            params,
            as_json=suffix != ".parquet",
            text_source=str(input_file) if suffix == ".csv" else None,  # values are text
        )
        gen.run_rows(stream)
    except (InputError, io.DataFileError) as e:
        fail(str(e))
    except OutputError as e:
        return gen.job_id, e
    except StarfishError as e:  # storage, ...: about the job or the machine, not the command
        fail(str(e), exit_code_of(e))
    except (KeyboardInterrupt, JobTerminated) as e:
        exit_interrupted(getattr(gen, "job_id", None), e)
    return gen.job_id, None


def _load_info(job_id: str | None) -> JobInfo | None:
    """The stored job, or None for a job that is not stored (`storage="in_memory"`)."""
    from starfish import jobs

    if job_id is None:
        return None
    try:
        return jobs.load_job(job_id)
    except jobs.JobNotFoundError:
        return None


def _count_records(job_id: str | None) -> int:
    from starfish import jobs

    return 0 if job_id is None else jobs.count_records(job_id)


def _export(job_id: str, output: Path) -> tuple[int | None, str | None]:
    """Write the completed records to --output, streamed from storage: (count, None), or
    (None, what went wrong). The records stay stored either way."""
    from starfish import io, jobs

    try:
        return io.write_records(output, jobs.iter_records(job_id)), None
    except io.DataFileError as e:
        problem = str(e)
    except OSError as e:
        problem = f"cannot write {output}: {e.strerror or e}"
    return None, f"{problem}; the records stay stored: starfish jobs export {job_id} -o FILE"
