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
def clear() -> None:
    """Delete every cached response: the next run of a job pays for its calls again."""
    from starfish.llm.cache import clear_cache

    typer.echo(f"deleted {clear_cache()} cached responses")
