"""The viewer's HTTP API on a real server and its queries on a real database: paging,
search windows, read-only access, the loopback rules and a clean Ctrl-C."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from starfish.ui import queries
from tests.ui.conftest import Viewer, database, get, make_job


def _pages(viewer: Viewer, job_id: str, status: str, q: str = "") -> list[int]:
    seen, after = [], "-1"
    for _ in range(1000):
        code, body = get(
            f"{viewer.url}api/jobs/{job_id}/records?status={status}&after={after}&limit=7&q={q}"
        )
        assert code == 200, body
        page = json.loads(body)
        seen += [row["index"] for row in page["rows"]]
        if page["next"] is None:
            return seen
        after = page["next"]
    raise AssertionError("paging did not end")


def test_keyset_pages_cover_every_record_once_in_input_order(
    start_ui: Callable[..., Viewer],
) -> None:
    job_id = make_job(100, die_every=9)
    viewer = start_ui()
    dead = [i for i in range(100) if (i + 1) % 9 == 0]
    assert _pages(viewer, job_id, "completed") == [i for i in range(100) if i not in dead]
    assert _pages(viewer, job_id, "dead") == dead
    assert _pages(viewer, job_id, "failed") == sorted(dead * 2)  # two attempts each
    nines = [9, *(i for i in range(90, 100) if i not in dead)]
    assert _pages(viewer, job_id, "completed", q="QUESTION%209") == nines  # case-insensitive


def test_a_search_looks_at_a_bounded_window_per_request_and_says_where_to_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = make_job(100)
    monkeypatch.setattr(queries, "WINDOW", 10)
    reader = queries.Reader(database())
    page = reader.records(job_id, "completed", "-1", 50, "question 95")
    assert page == {"rows": [], "next": "9", "scanned_to": 9}
    found, after = [], "-1"
    while after is not None:
        page = reader.records(job_id, "completed", after, 50, "question 95")
        found += [row["index"] for row in page["rows"]]
        after = page["next"]
    assert found == [95]


def test_the_viewer_never_writes_the_database(start_ui: Callable[..., Viewer]) -> None:
    job_id = make_job(20, die_every=5)
    path = database()
    conn = sqlite3.connect(path)
    before = conn.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall()
    conn.close()
    viewer = start_ui()
    for route in ("", f"/{job_id}", f"/{job_id}/chart", f"/{job_id}/quality"):
        assert get(f"{viewer.url}api/jobs{route}")[0] == 200
    conn = sqlite3.connect(path)
    after = conn.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall()
    conn.close()
    assert after == before  # no llm or quality tables were created by looking
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        _write_through_reader(path)  # its connection is read-only


def _write_through_reader(path: object) -> None:
    reader = queries.Reader(path)  # type: ignore[arg-type]
    with reader._db() as conn:
        assert conn is not None
        conn.execute("CREATE TABLE nope (x)")


def test_with_no_database_it_lists_nothing_and_creates_nothing(
    start_ui: Callable[..., Viewer],
) -> None:
    viewer = start_ui()
    assert json.loads(get(viewer.url + "api/jobs")[1]) == []
    assert not database().exists()


def test_a_request_addressed_to_another_name_is_refused_on_loopback(
    start_ui: Callable[..., Viewer],
) -> None:
    viewer = start_ui()
    code, body = get(viewer.url + "api/jobs", {"Host": "attacker.example:8765"})
    assert code == 403 and b"addressed to this machine" in body
    assert get(viewer.url + "api/jobs", {"Host": "localhost"})[0] == 200


def test_a_host_other_than_loopback_needs_a_token() -> None:
    cmd = [sys.executable, "-m", "starfish", "ui", "--host", "0.0.0.0", "--port", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--token" in done.stderr


def test_ctrl_c_stops_it_cleanly(start_ui: Callable[..., Viewer]) -> None:
    viewer = start_ui()
    viewer.proc.send_signal(signal.SIGINT)
    out, _ = viewer.proc.communicate(timeout=30)
    assert viewer.proc.returncode == 0, out
    assert "Traceback" not in out and "starfish ui: stopped" in out


def test_the_chart_adds_up_the_cost_kept_with_each_answer(start_ui: Callable[..., Viewer]) -> None:
    """Each answer is kept with what it cost, so the cost line is the job's own spending over
    time (not its total spread by tokens); summed, it is the job's stored cost."""
    from starfish import StructuredLLM, data_factory, jobs
    from tests.openai_server import OpenAIServer

    server = OpenAIServer().start()
    try:
        llm = StructuredLLM("m", prompt="About {{t}}.", base_url=server.url, price=(1000.0, 2000.0))

        @data_factory(max_concurrency=4, show_progress=False)
        async def ask(t: int) -> list[dict[str, Any]]:
            return (await llm.run(t=t)).data

        ask.run(t=list(range(12)))
    finally:
        server.stop()
    info = jobs.load_job(ask.job_id)
    assert info.llm is not None and info.llm["cost_usd"] > 0
    viewer = start_ui()
    code, body = get(f"{viewer.url}api/jobs/{ask.job_id}/chart")
    assert code == 200
    points = json.loads(body)["points"]
    assert sum(p[1] for p in points) == 12
    assert all(p[3] is not None for p in points)
    assert sum(p[3] for p in points) == pytest.approx(info.llm["cost_usd"])
