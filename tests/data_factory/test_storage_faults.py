"""Faults that reach the storage: record content it cannot encode, a full disk, a bad database.

Every test checks the stored job afterwards: its status, stop reason, and counts equal to the
rows on disk.
"""

from __future__ import annotations

import asyncio
import json

from starfish import data_factory
from starfish.jobs import iter_records, load_job
from tests.data_factory.stored import rows_on_disk

LONE_SURROGATE = json.loads('"\\ud83d"')  # half an emoji, as model output does contain


def test_a_record_with_a_lone_surrogate_fails_only_its_input():
    def keep_odd_ones_out(output, state):
        # a filtered record is stored too: its content must not stop the writer either
        return "filtered" if output[0]["i"] == 7 else None

    @data_factory(
        show_progress=False,
        max_concurrency=4,
        dead_queue_threshold=2,
        job_run_stop_threshold=0,
        on_record_complete=keep_odd_ones_out,
    )
    async def gen(i):
        await asyncio.sleep(0)
        if i == 5:
            raise ValueError("model said " + LONE_SURROGATE)  # in an error message
        text = LONE_SURROGATE if i in (3, 7) else "ok"
        return [{"i": i, "text": text}]

    records = gen.run(i=list(range(40)))
    assert records == [{"i": i, "text": "ok"} for i in range(40) if i not in (3, 5, 7)]
    info = load_job(gen.job_id)
    assert info.status == "completed" and info.stop_reason == "all inputs done"
    assert info.counts == {"completed": 37, "failed": 6, "filtered": 0, "duplicate": 0, "dead": 3}
    assert info.counts == rows_on_disk(gen.job_id)
    assert info.dead_queue == [3, 5, 7]
    assert list(iter_records(gen.job_id)) == records
    failures = list(iter_records(gen.job_id, "failed"))
    assert [(f["index"], f["error_type"]) for f in failures] == [
        (3, "UnicodeEncodeError"),
        (3, "UnicodeEncodeError"),
        (5, "ValueError"),
        (5, "ValueError"),
        (7, "UnicodeEncodeError"),
        (7, "UnicodeEncodeError"),
    ]
    assert failures[2]["error"] == "model said " + LONE_SURROGATE  # stored as it was raised
    # a resume tries the dead inputs again, and fails them again, without harm to the rest
    assert gen.resume() == records
    again = load_job(gen.job_id)
    assert again.status == "completed" and again.counts == rows_on_disk(gen.job_id)
    assert again.counts["failed"] == 12 and again.counts["dead"] == 3
