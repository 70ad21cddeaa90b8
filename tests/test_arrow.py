"""A job's records as Arrow / pandas / datasets, and the `--format hf` folder loaded back with
`datasets.load_dataset`, whose card says how the data was made and nothing private."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from starfish import data_factory, jobs
from starfish.io import DataFileError

pa = pytest.importorskip("pyarrow")


@pytest.fixture(autouse=True)
def _offline_hf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """datasets keeps its cache in this test's folder and never asks the Hub."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _job(n: int = 30) -> str:
    @data_factory(max_concurrency=4, show_progress=False, dead_queue_threshold=1, stop_threshold=0)
    async def rows(i: int) -> list[dict[str, Any]]:
        if i == 3:
            raise ValueError("three")
        record: dict[str, Any] = {"i": i, "text": f"row {i}", "tags": [str(i)]}
        if i >= 20:
            record["late"] = i / 2  # a key that appears only late in the job
        return [record]

    with contextlib.suppress(Exception):  # input 3 is dead: the job may end `failed`
        rows.run(i=list(range(n)))
    assert rows.job_id is not None
    return rows.job_id


def test_to_arrow_streams_chunks_whose_schemas_differ_into_one_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import starfish.arrow

    monkeypatch.setattr(starfish.arrow, "CHUNK", 7)  # several batches, the late key in some
    job = jobs.load_job(_job())
    table = job.to_arrow()
    assert table.num_rows == 29
    assert table.schema.names == ["i", "text", "tags", "late"]
    assert table.schema.field("late").type == pa.float64()
    stored = [{"late": None, **r} for r in jobs.iter_records(job.job_id)]
    assert table.to_pylist() == stored  # the late key is null where a record lacks it
    failed = job.to_arrow("failed").to_pylist()
    assert [(r["index"], r["error_type"]) for r in failed] == [(3, "ValueError")]


def test_to_arrow_builds_the_table_with_the_system_allocator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The buffers (the chunks' columns and the casts that conform them) come from the system
    pool, which gives back what a trimmed buffer no longer needs; pyarrow's default pool
    (mimalloc in most wheels) kept about half as much again (docs/benchmarks.md)."""
    import starfish.arrow

    monkeypatch.setattr(starfish.arrow, "CHUNK", 7)  # `late` is cast to float64 in some chunks
    job = jobs.load_job(_job())
    default, system = pa.default_memory_pool(), pa.system_memory_pool()
    gc.collect()  # an earlier test's table, freed while this one is built, would hide it
    gc.disable()
    try:
        default_before, system_before = default.bytes_allocated(), system.bytes_allocated()
        table = job.to_arrow()
        system_grown = system.bytes_allocated() - system_before
        default_grown = default.bytes_allocated() - default_before
    finally:
        gc.enable()
    assert system_grown >= table.nbytes > 0
    if default.backend_name != system.backend_name:
        assert default_grown <= 0


def test_a_field_that_fits_no_arrow_type_is_named() -> None:
    @data_factory(show_progress=False)
    async def mixed(i: int) -> list[dict[str, Any]]:
        return [{"i": i, "v": "text" if i else 1, "big": 2**70 if i == 2 else i}]

    mixed.run(i=[0, 1])
    with pytest.raises(DataFileError, match="field 'v' does not fit one Parquet column"):
        jobs.load_job(mixed.job_id or "").to_arrow()
    mixed.run(i=[2])
    with pytest.raises(DataFileError, match=r"field 'big' does not fit .*beyond 64 bits"):
        jobs.load_job(mixed.job_id or "").to_arrow()


def test_to_pandas_and_to_dataset_hold_the_same_rows() -> None:
    job = jobs.load_job(_job())
    frame = job.to_pandas()
    assert frame.shape == (29, 4) and list(frame["i"][:4]) == [0, 1, 2, 4]
    dataset = job.to_dataset()
    assert dataset.num_rows == 29
    assert dataset.features["text"].dtype == "string"
    assert dataset[3] == {"i": 4, "text": "row 4", "tags": ["4"], "late": None}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "starfish", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ,
    )


def test_an_hf_export_loads_with_load_dataset_with_its_features_and_row_count(
    tmp_path: Path,
) -> None:
    import datasets

    job_id = _job(40)
    out = tmp_path / "qa-dataset"
    done = _cli("jobs", "export", job_id, "--output", str(out), "--format", "hf")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    loaded = datasets.load_dataset(str(out))
    train = loaded["train"]
    assert train.num_rows == 39
    assert train.features == datasets.Features(
        {
            "i": datasets.Value("int64"),
            "text": datasets.Value("string"),
            "tags": datasets.List(datasets.Value("string")),
            "late": datasets.Value("float64"),
        }
    )
    card = (out / "README.md").read_text()
    assert "num_examples: 39" in card and '"n<1K"' in card
    assert "inputs: 40; completed 39" in card


def test_shards_are_bounded_and_named_as_the_hub_reads_them(tmp_path: Path) -> None:
    import datasets

    from starfish.arrow import export_hf

    job_id = _job(100)
    done = export_hf(job_id, tmp_path / "out", shard_bytes=1)  # one chunk per shard
    names = sorted(p.name for p in (tmp_path / "out" / "data").iterdir())
    assert done["shards"] == len(names) >= 1
    assert names == [f"train-{i:05d}-of-{len(names):05d}.parquet" for i in range(len(names))]
    assert datasets.load_dataset(str(tmp_path / "out"))["train"].num_rows == 99


def test_the_card_of_a_model_job_says_how_it_was_made_and_nothing_private(
    tmp_path: Path,
) -> None:
    from tests.openai_server import OpenAIServer

    server = OpenAIServer().start()
    try:
        topics = tmp_path / "topics.jsonl"
        topics.write_text("".join(json.dumps({"topic": t}) + "\n" for t in ("owls", "tides")))
        secret = "sk-test-never-in-a-card-123"
        made = subprocess.run(
            [sys.executable, "-m", "starfish", "generate", "--model", "openai/gpt-4o-mini",
             "--base-url", server.url, "--api-key-env", "MY_KEY",
             "--prompt", "One question about {{topic}}.", "--schema", "question:str",
             "--input", str(topics), "--output", str(tmp_path / "qa.jsonl"), "--no-progress"],
            capture_output=True, text=True, timeout=120, env={**os.environ, "MY_KEY": secret},
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
    finally:
        server.stop()
    job_id = jobs.latest("generate").job_id
    out = tmp_path / "card"
    assert _cli("jobs", "export", job_id, "-o", str(out), "--format", "hf").returncode == 0
    card = (out / "README.md").read_text()
    assert "model: `openai/gpt-4o-mini`" in card
    assert "One question about {{topic}}." in card and '"question"' in card
    assert "2 requests" in card and "cost: $" in card
    for private in (secret, "MY_KEY", server.url, "127.0.0.1", str(tmp_path), "/tmp", "/root"):
        assert private not in card


def test_a_job_shows_as_html_in_a_notebook_with_its_text_escaped() -> None:
    @data_factory(show_progress=False)
    async def markup(i: int) -> list[dict[str, Any]]:
        return [{"i": i}]

    assert "has not run" in markup._repr_html_()
    markup.run(i=[1, 2, 3])
    html = markup._repr_html_()
    assert "completed" in html and "3 of 3 inputs done" in html
    info = jobs.load_job(markup.job_id or "")
    info.name = "<script>x</script>"
    assert "<script>" not in info._repr_html_() and "&lt;script&gt;" in info._repr_html_()
