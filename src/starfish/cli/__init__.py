"""The `starfish` command: thin parsing and printing over the library."""

from __future__ import annotations

import typer

from starfish.cli.telemetry import app as telemetry_app

app = typer.Typer(
    name="starfish",
    help="Generate synthetic datasets at scale.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(telemetry_app, name="telemetry")


def main() -> None:
    app()
