"""`starfish telemetry ...` (placeholder until the telemetry work lands)."""

import typer

app = typer.Typer(help="See and change what telemetry sends.", no_args_is_help=True)
