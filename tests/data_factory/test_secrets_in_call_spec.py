"""No API key in a job's stored call spec (issue 16, case 7).

A function stored by value carries the globals it uses into the database. A key among them is
now either left out (a `file.py:function` TARGET is stored by reference) or refused before the
job is stored, with an error naming what holds it. Checked on the database files themselves.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from starfish import SecretError, data_factory, jobs
from tests.data_factory.stored import db_path

KEY = "sk-proj-TESTONLY0123456789abcdefXYZ"


def _on_disk(secret: str) -> bool:
    """Whether `secret` is in the database or its WAL (bytes, as a thief would read them)."""
    db = db_path()
    files = [db, db.with_name(db.name + "-wal")]
    return any(secret.encode() in f.read_bytes() for f in files if f.exists())


SCRIPT = """
import asyncio
from starfish import data_factory

OPENAI_KEY = {key!r}

@data_factory(show_progress=False)
async def gen(i: int):
    await asyncio.sleep(0)
    return {{"i": i, "auth": len(OPENAI_KEY)}}

gen.run(i=[1, 2])
print("RAN", gen.job_id)
"""


def test_a_script_whose_function_uses_a_key_global_is_refused_naming_the_global(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT.format(key=KEY))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert out.returncode == 1, out.stdout
    assert "RAN" not in out.stdout
    assert "SecretError" in out.stderr and "'OPENAI_KEY'" in out.stderr
    assert KEY not in out.stderr  # the message shows the prefix only
    assert jobs.list_jobs() == []  # nothing stored, nothing called
    assert not db_path().exists() or not _on_disk(KEY)


def test_a_file_target_holding_a_key_is_stored_by_reference_and_resumes(tmp_path):
    (tmp_path / "gen.py").write_text(
        textwrap.dedent(
            f"""
            import asyncio

            OPENAI_KEY = {KEY!r}
            FAIL = {{"path": {str(tmp_path / "fail")!r}}}

            async def gen(i: int):
                import os
                await asyncio.sleep(0)
                if os.path.exists(FAIL["path"]):
                    raise ConnectionError("down")
                return {{"i": i, "auth": len(OPENAI_KEY)}}
            """
        )
    )
    (tmp_path / "fail").touch()
    (tmp_path / "in.jsonl").write_text('{"i": 1}\n{"i": 2}\n')
    out = subprocess.run(
        [sys.executable, "-m", "starfish", "run", "gen.py:gen", "-i", "in.jsonl", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 1, out.stderr  # no input completed: a job to resume
    [job] = jobs.list_jobs()
    assert job.status == "failed"
    assert not _on_disk(KEY)
    (tmp_path / "fail").unlink()
    out = subprocess.run(
        [sys.executable, "-m", "starfish", "jobs", "resume", job.job_id],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert out.returncode == 0, out.stderr
    info = jobs.load_job(job.job_id)
    assert info.status == "completed" and info.counts["completed"] == 2
    assert list(jobs.iter_records(job.job_id)) == [
        {"i": 1, "auth": len(KEY)},
        {"i": 2, "auth": len(KEY)},
    ]
    assert not _on_disk(KEY)


def test_a_key_given_to_structured_llm_is_refused_in_a_closure_but_the_llm_itself_is_fine():
    from starfish import StructuredLLM

    local_key = "local-vllm-secret-42"  # no known prefix: known because it was given
    llm = StructuredLLM(
        model_name="m", base_url="http://127.0.0.1:9/v1", prompt="{{x}}", api_key=local_key
    )

    def make():
        header = {"Authorization": "Bearer " + local_key}

        @data_factory(storage="local", show_progress=False)
        async def uses_header(i: int):
            return {"i": i, "n": len(header)}

        @data_factory(storage="local", show_progress=False)
        async def uses_llm(i: int):
            return {"i": i, "model": llm.model_name}

        return uses_header, uses_llm

    uses_header, uses_llm = make()
    with pytest.raises(SecretError, match="'header'"):
        uses_header.run(i=[1])
    assert jobs.list_jobs() == []
    assert uses_llm.run(i=[1]) == [{"i": 1, "model": "m"}]  # pickled without its key
    assert jobs.load_job(uses_llm.job_id).status == "completed"
    assert not _on_disk(local_key)


def test_a_key_passed_as_an_input_is_refused_naming_the_input():
    @data_factory(storage="local", show_progress=False)
    async def gen(i: int, key: str):
        return {"i": i}

    with pytest.raises(SecretError, match="the input 'key'"):
        gen.run(i=[1, 2], key=KEY)
    assert jobs.list_jobs() == []
    assert not db_path().exists() or not _on_disk(KEY)


def test_words_that_merely_start_like_a_key_are_not_refused():
    @data_factory(storage="local", show_progress=False)
    async def gen(topic: str):
        return {"topic": topic}

    topics = ["sk-learn-and-pandas-tutorial", "task-0123456789abcdefghij", "sk-"]
    assert [r["topic"] for r in gen.run(topic=topics)] == topics
    assert jobs.load_job(gen.job_id).status == "completed"


def test_env_keys_the_model_layer_knows_are_refused(monkeypatch):
    import starfish.llm  # noqa: F401 - registers the model layer's keys

    monkeypatch.setenv("GROQ_API_KEY", "plainsecretvalue123")
    holder = {"k": os.environ["GROQ_API_KEY"]}

    def make():
        @data_factory(storage="local", show_progress=False)
        async def gen(i: int):
            return {"i": i, "n": len(holder)}

        return gen

    with pytest.raises(SecretError, match="'holder'"):
        make().run(i=[1])
    assert not Path(db_path()).exists() or not _on_disk("plainsecretvalue123")
