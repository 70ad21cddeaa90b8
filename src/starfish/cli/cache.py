"""`starfish cache ...`: the model responses kept in the local job database."""

from __future__ import annotations

from typing import Annotated

import typer

from starfish.cli._output import print_json

__all__ = ["app"]

app = typer.Typer(help="See and clear the cached model responses.", no_args_is_help=True)


@app.command("info")
def info(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Where the cache is, how many responses it keeps and their size."""
    from starfish.llm.cache import cache_info

    data = cache_info()
    if as_json:
        print_json(data)
        return
    typer.echo(f"cache:      {data['path']} (table llm_cache)")
    typer.echo(f"responses:  {data['responses']}")
    size = data["bytes"]
    typer.echo(
        f"size:       {size / 1e6:.1f} MB" if size >= 1e6 else f"size:       {size / 1e3:.1f} kB"
    )


@app.command("clear")
def clear(
    job: Annotated[
        str | None,
        typer.Option(
            "--job",
            metavar="ID",
            help="Only the responses this job kept (a unique id prefix will do).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Delete cached responses (all, or one job's): the next run pays for those calls again."""
    from starfish.llm.cache import clear_cache

    if job is None:
        typer.echo(f"deleted {clear_cache()} cached responses")
        return
    from starfish.cli._output import fail
    from starfish.errors import JobNotFoundError
    from starfish.jobs import load_job

    try:
        job_id = load_job(job).job_id
    except JobNotFoundError as e:
        fail(str(e))
    typer.echo(f"deleted {clear_cache(job_id=job_id)} cached responses of job {job_id}")
