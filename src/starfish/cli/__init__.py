"""The `starfish` command: thin parsing and printing over the library.

Exit codes: 0 success, 1 a job that failed or stopped (or completed nothing), 2 bad usage.
Nothing in the library imports this package, so `import starfish` stays free of typer/rich.
"""

from __future__ import annotations

import sys

import typer

from starfish._version import __version__
from starfish.cli.cache import app as cache_app
from starfish.cli.generate import generate
from starfish.cli.jobs import app as jobs_app
from starfish.cli.run import run
from starfish.cli.telemetry import app as telemetry_app
from starfish.cli.ui import ui

app = typer.Typer(
    name="starfish",
    help="Generate synthetic datasets at scale: any async function becomes a concurrent, "
    "resumable job.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain one-line usage errors, like any Click tool
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("run", no_args_is_help=True)(run)
app.command("generate", no_args_is_help=True)(generate)
app.add_typer(jobs_app, name="jobs")
app.add_typer(telemetry_app, name="telemetry")
app.add_typer(cache_app, name="cache")
app.command("ui")(ui)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"starfish {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_version, is_eager=True
    ),
) -> None:
    """Generate synthetic datasets at scale: any async function becomes a concurrent,
    resumable job."""


def main() -> None:
    """Entry point of the `starfish` console script and `python -m starfish`.

    Commands turn the errors they expect into one line and an exit code themselves; this is
    the net under them: any other error Starfish raised on purpose (a storage fault, say) is
    one line too, exit 2 only when it is a usage error, never a traceback.
    """
    from starfish.cli._output import exit_code_of, one_line
    from starfish.errors import StarfishError

    try:
        app(prog_name="starfish")
    except StarfishError as e:
        typer.echo(f"error: {one_line(e)}", err=True)
        sys.exit(exit_code_of(e))
