"""`starfish ui`: a local, read-only web viewer of the job database.

Nothing in the library imports this package; the CLI does, when `starfish ui` runs.
"""

from __future__ import annotations

from starfish.ui.server import is_loopback, make_app

__all__ = ["is_loopback", "make_app", "serve"]


def serve(host: str, port: int, token: str | None, open_browser: bool = False) -> None:
    """Serve the viewer until Ctrl-C (or SIGTERM), which stops it cleanly."""
    import webbrowser

    from aiohttp import web

    from starfish.ui.queries import database_path

    path = database_path()
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
    if token is not None:
        url += f"?token={token}"
    print(f"starfish ui: jobs of {path}, read-only, at {url}  (Ctrl-C stops it)", flush=True)
    if open_browser:
        webbrowser.open(url)
    web.run_app(make_app(path, token, host), host=host, port=port, print=None, access_log=None)
    print("starfish ui: stopped", flush=True)
