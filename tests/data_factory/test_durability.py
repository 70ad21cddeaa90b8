"""Finished inputs: how soon they are on disk (read as a crash would), and what `run()` returns."""

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


def test_run_returns_in_input_order_exactly_what_storage_holds():
    from collections import OrderedDict

    from starfish.jobs import iter_records

    @data_factory(max_concurrency=8, show_progress=False)
    async def gen(i):
        await asyncio.sleep((7 * i % 5) / 1000)  # finish out of input order
        if i % 4 == 0:
            return []
        if i % 4 == 1:
            return OrderedDict(i=i)
        return [{"i": i, "k": k} for k in range(i % 4)]

    records = gen.run(i=list(range(40)))
    assert records == list(iter_records(gen.job_id))
    expected = []
    for i in range(40):
        expected += [{"i": i}] if i % 4 == 1 else [{"i": i, "k": k} for k in range(i % 4)]
    assert records == expected
