"""How soon a finished input is on disk, read by a second SQLite connection as a crash would."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

from starfish import data_factory


def _stored() -> int:
    db = Path(os.environ["STARFISH_LOCAL_STORAGE_DIR"]) / "db" / "starfish.db"
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*) FROM inputs WHERE status = 'completed'").fetchone()[0]
    finally:
        conn.close()


def test_inputs_finished_in_earlier_loop_turns_are_already_committed():
    seen: list[tuple[int, int]] = []

    @data_factory(max_concurrency=1, show_progress=False)
    async def gen(i):
        await asyncio.sleep(0)  # one loop turn per input
        seen.append((i, _stored()))
        return [{"i": i}]

    gen.run(i=list(range(30)))
    # When input i runs, inputs 0 .. i-2 have finished in earlier turns and are on disk.
    assert all(stored >= i - 1 for i, stored in seen), seen


def test_a_function_that_never_awaits_leaves_at_most_256_inputs_uncommitted():
    seen: list[tuple[int, int]] = []

    @data_factory(max_concurrency=1, show_progress=False)
    async def gen(i):
        if i % 100 == 0:
            seen.append((i, _stored()))
        return [{"i": i}]

    gen.run(i=list(range(2000)))
    assert len(seen) == 20
    assert all(i - stored <= 256 for i, stored in seen), seen
