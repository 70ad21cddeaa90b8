"""`starfish ui`: serve the local read-only job viewer."""

from __future__ import annotations

from typing import Annotated

import typer

from starfish.cli._output import fail


def ui(
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8765,
    host: Annotated[
        str,
        typer.Option(help="Address to bind; any but loopback needs --token."),
    ] = "127.0.0.1",
    token: Annotated[
        str | None,
        typer.Option(
            help="A secret every request must carry (?token=T once, then a cookie); "
            "required when --host is not loopback.",
            show_default=False,
        ),
    ] = None,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the viewer in the default browser.")
    ] = False,
) -> None:
    """A local, read-only web viewer of the stored jobs: live progress, counts, cost,
    the dead-letter queue and the records."""
    from starfish.ui import is_loopback, serve

    if not is_loopback(host) and not token:
        fail(
            f"--host {host} is reachable from other machines: give --token SECRET too "
            "(every request must then carry it), or keep the default 127.0.0.1"
        )
    if token is not None and len(token) < 8:
        fail("--token must be at least 8 characters")
    try:
        serve(host, port, token, open_browser)
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror or e}", 1)
