"""`starfish run TARGET --input FILE`: a data factory over the rows of a file."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from starfish.cli._output import (
    EXIT_FAILED_JOB,
    exit_code_for,
    exit_interrupted,
    export_hint,
    fail,
    print_json,
    print_summary,
)
from starfish.cli._target import TargetError, load_target
from starfish.errors import JobTerminated


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
        typer.Option(
            "--input",
            "-i",
            metavar="FILE",
            help="Rows to run over: .jsonl, .csv or .parquet. Each column is a parameter.",
            show_default=False,
        ),
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
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the job as JSON on stdout.")
    ] = False,
) -> None:
    """Run TARGET once per row of --input, store the job, and print a summary."""
    from starfish import io

    if output is not None:
        _check_output(output)
    params = _parse_params(param or [])
    gen = _factory(target, max_concurrency, target_count, timeout, not no_progress)
    columns = _read_columns(input_file, params)
    _check_columns(gen.func, columns, input_file, params)
    records, job_id, error = _run(gen, columns)
    info = _load_info(job_id)
    written = None
    if output is not None and records:
        written = io.write_records(output, records)
    _report(info, job_id, records, output, written, as_json)
    if error is not None:
        raise typer.Exit(EXIT_FAILED_JOB)
    raise typer.Exit(exit_code_for(info) if info is not None else 0)


def _check_output(output: Path) -> None:
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


def _factory(
    target: str,
    max_concurrency: int | None,
    target_count: int | None,
    timeout: float | None,
    show_progress: bool,
) -> Any:
    """The DataFactory to run: TARGET itself with our overrides, or TARGET wrapped."""
    from starfish.data_factory import DataFactory, data_factory

    try:
        obj = load_target(target)
    except TargetError as e:
        fail(str(e))
    options: dict[str, Any] = {"show_progress": show_progress}
    if max_concurrency is not None:
        options["max_concurrency"] = max_concurrency
    if target_count is not None:
        options["target_count"] = target_count
    if timeout is not None:
        options["task_runner_timeout"] = timeout
    try:
        if isinstance(obj, DataFactory):
            return obj.with_options(**options)
        if inspect.iscoroutinefunction(obj):
            return data_factory(**options)(obj)
    except ValueError as e:
        fail(str(e))
    kind = "a function" if callable(obj) else type(obj).__name__
    fail(f"TARGET {target} is {kind}, not an async function or a @data_factory")


def _read_columns(input_file: Path, params: dict[str, Any]) -> dict[str, list[Any]]:
    """The rows of the file as columns (what `gen.run` zips), plus each --param repeated."""
    from starfish import io

    columns: dict[str, list[Any]] = {}
    n = 0
    try:
        for n, row in enumerate(io.read_rows(input_file), start=1):
            if n == 1:
                columns = {key: [] for key in row}
            if row.keys() != columns.keys():
                missing = sorted(columns.keys() - row.keys())
                extra = sorted(row.keys() - columns.keys())
                what = f"lacks {missing}" if missing else f"has extra {extra}"
                fail(f"{input_file}: row {n} {what}; every row needs the same columns")
            for key, value in row.items():
                columns[key].append(value)
    except FileNotFoundError:
        fail(f"--input {input_file}: no such file")
    except IsADirectoryError:
        fail(f"--input {input_file}: is a directory")
    except io.DataFileError as e:
        fail(str(e))
    except UnicodeDecodeError as e:
        fail(f"{input_file}: not UTF-8 text ({e.reason})")
    if n == 0:
        fail(f"--input {input_file}: no rows")
    for name, value in params.items():
        if name in columns:
            fail(f"--param {name} is also a column of {input_file}; give it in one place")
        columns[name] = [value] * n
    return columns


def _check_columns(
    func: Any, columns: dict[str, list[Any]], input_file: Path, params: dict[str, Any]
) -> None:
    """Name the file and the parameters when a column has nowhere to go."""
    try:
        parameters = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = [name for name in columns if name not in parameters]
    if unknown:
        name = unknown[0]
        where = f"--param {name}" if name in params else f"{input_file}: column {name!r}"
        takes = ", ".join(parameters)
        fail(f"{where} is not a parameter of {getattr(func, '__name__', 'TARGET')}({takes})")


def _run(gen: Any, columns: dict[str, list[Any]]) -> tuple[list[dict] | None, str | None, Any]:
    """Run the job; usage errors end here, a job that completed nothing is reported later."""
    from starfish import InputError, OutputError

    try:
        records = gen.run(**columns)
    except InputError as e:
        fail(str(e))
    except OutputError as e:
        return None, gen.job_id, e
    except (KeyboardInterrupt, JobTerminated) as e:
        exit_interrupted(getattr(gen, "job_id", None), e)
    return records, gen.job_id, None


def _load_info(job_id: str | None) -> Any:
    """The stored job, or None for a job that is not stored (`storage="in_memory"`)."""
    from starfish import jobs

    if job_id is None:
        return None
    try:
        return jobs.load_job(job_id)
    except jobs.JobNotFoundError:
        return None


def _report(
    info: Any,
    job_id: str | None,
    records: list[dict] | None,
    output: Path | None,
    written: int | None,
    as_json: bool,
) -> None:
    if as_json:
        data = info.to_dict() if info is not None else {"job_id": job_id}
        data["records"] = len(records or [])
        data["output"] = str(output) if written is not None else None
        print_json(data)
        return
    if info is not None:
        print_summary(info)
    else:
        typer.echo(f"job {job_id}: {len(records or [])} records (not stored: in-memory storage)")
    if written is not None:
        typer.echo(f"wrote {written} records to {output}")
    elif info is not None:
        typer.echo(export_hint(info))
