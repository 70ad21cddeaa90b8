"""`starfish telemetry ...`: see what telemetry does and sends, and change it."""

from __future__ import annotations

import json
from typing import Any

import typer

from starfish.paths import app_data_dir
from starfish.telemetry import outbox
from starfish.telemetry.identity import TelemetryConfig
from starfish.telemetry.settings import choice_path, resolve, save_choice

__all__ = ["app"]

app = typer.Typer(help="See and change what telemetry sends.", no_args_is_help=True)


def _status() -> dict[str, Any]:
    settings = resolve()
    directory = app_data_dir()
    client_id = TelemetryConfig.read_client_id()
    return {
        "mode": settings.mode,
        "reason": settings.reason,
        "client_id": str(client_id) if client_id else None,
        "endpoint": settings.endpoint,
        "debug": settings.debug,
        "is_ci": settings.is_ci,
        "pending_events": len(outbox.read_outbox(directory)),
        "files": {
            "app_data_dir": str(directory),
            "client_id": str(TelemetryConfig.config_path()),
            "saved_choice": str(choice_path()),
            "outbox": str(directory / outbox.OUTBOX_FILE),
            "log": str(directory / outbox.LOG_FILE),
        },
    }


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show the mode (on, local, off), which setting decided it, the client id and files."""
    info = _status()
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"mode:      {info['mode']}  ({info['reason']})")
    typer.echo(f"client id: {info['client_id'] or '(none yet; made on the first event)'}")
    typer.echo(f"endpoint:  {info['endpoint']}")
    typer.echo(f"pending:   {info['pending_events']} undelivered event(s)")
    for name, path in info["files"].items():
        typer.echo(f"{name + ':':<15}{path}")


def _save(mode: str) -> None:
    try:
        path = save_choice(mode)
    except OSError as exc:
        typer.echo(f"could not save the choice: {exc}", err=True)
        raise typer.Exit(1) from None
    if mode == "off":
        # Opting out also drops what an earlier run left undelivered.
        directory = app_data_dir()
        pending = {e.get("uuid") for e in outbox.read_outbox(directory)}
        if pending:
            outbox.settle(directory, pending, [])
    typer.echo(f"saved telemetry mode '{mode}' in {path}")
    settings = resolve()
    if settings.mode != mode:
        typer.echo(f"note: still '{settings.mode}': {settings.reason}", err=True)


@app.command()
def enable() -> None:
    """Send anonymous usage events (the default, once a project key is configured)."""
    _save("on")


@app.command()
def disable() -> None:
    """Send nothing, and drop undelivered events."""
    _save("off")


@app.command()
def local() -> None:
    """Record events in the local log only; never send them."""
    _save("local")


@app.command()
def log(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array."),
    limit: int = typer.Option(outbox.MAX_LOG, help="Show at most this many, newest last."),
) -> None:
    """Show the last events sent (or recorded, in local mode), exactly as they left."""
    entries = outbox.read_log(app_data_dir(), limit)
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    if not entries:
        typer.echo("no telemetry events sent or recorded from this app data dir")
        return
    for entry in entries:
        event = entry.get("event", {})
        when, status = entry.get("logged_at", "?"), entry.get("status", "?")
        typer.echo(f"{when}  {status:<5}  {event.get('event')}")
        typer.echo("  " + json.dumps(event.get("properties", {}), sort_keys=True))
