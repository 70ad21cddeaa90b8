"""The stored call spec: jobs stored by an earlier version still resume."""

from __future__ import annotations

import pickle
import sqlite3

import pytest

from starfish import OutputError, ResumeError, data_factory, jobs
from starfish.data_factory import call_spec
from starfish.paths import app_data_dir

FAIL = {"on": True}


async def shout(name: str) -> dict:
    if FAIL["on"]:
        raise ConnectionError("service unreachable")
    return {"name": name.upper()}


def _version_1_spec(options: dict) -> bytes:
    """The bytes the first spec format stored: one pickle, the function as a `_FuncRef` of
    `starfish.data_factory.factory` (where the class lived then)."""
    ref = call_spec._FuncRef(__name__, "shout")
    saved = call_spec._FuncRef.__module__
    call_spec._FuncRef.__module__ = "starfish.data_factory.factory"
    try:
        inputs = {"names": ("name",), "lists": (["a", "b", "c"],), "scalars": {}}
        payload = {"version": 1, "inputs": inputs, "options": options, "func": ref}
        return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        call_spec._FuncRef.__module__ = saved


def test_a_job_stored_in_the_first_spec_format_resumes() -> None:
    gen = data_factory(show_progress=False, dead_queue_threshold=1, job_run_stop_threshold=0)(shout)
    FAIL["on"] = True
    with pytest.raises(OutputError):
        gen.run(name=["a", "b", "c"])
    blob = _version_1_spec(gen.options)
    assert b"starfish.data_factory.factory" in blob and b"_FuncRef" in blob
    with sqlite3.connect(app_data_dir() / "db" / "starfish.db") as conn:
        conn.execute("UPDATE specs SET spec = ?", (blob,))
    FAIL["on"] = False
    with pytest.raises(ResumeError, match=r"older Starfish.*cannot be reloaded"):
        jobs.resume_job(gen.job_id, reload=True)
    assert jobs.resume_job(gen.job_id) == [{"name": "A"}, {"name": "B"}, {"name": "C"}]
    assert jobs.load_job(gen.job_id).status == "completed"
