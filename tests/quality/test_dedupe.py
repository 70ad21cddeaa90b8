"""Dedupe while the job runs: exact, near and semantic duplicates, `against` earlier jobs,
two identical records at once, and what is stored beside the records."""

from __future__ import annotations

import asyncio
import random

import pytest

from starfish import data_factory
from starfish.errors import OptionsError
from starfish.jobs import iter_records, load_job
from starfish.quality import Dedupe, Embeddings, iter_with_quality, summary

WORDS = [f"word{i}" for i in range(60)]


def sentence(seed: int, n: int = 40) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) + str(rng.randrange(50)) for _ in range(n))


def job(hook, **options):
    options.setdefault("show_progress", False)
    options.setdefault("max_concurrency", 4)
    options.setdefault("dead_queue_threshold", 1)

    @data_factory(on_record_complete=[hook], **options)
    async def gen(text):
        return {"text": text}

    return gen


def test_exact_duplicates_differing_in_case_spacing_and_punctuation_are_caught():
    texts = ["What is Rust?", "  what   is RUST ", "What is rust!?", "What is SQLite?"]
    gen = job(Dedupe("text"), max_concurrency=1)
    records = gen.run(text=texts)
    assert records == [{"text": "What is Rust?"}, {"text": "What is SQLite?"}]
    dup = list(iter_with_quality(gen.job_id, "duplicate"))
    assert [(r["quality.duplicate"], r["quality.duplicate_of"]) for r in dup] == [
        ("exact", 0),
        ("exact", 0),
    ]
    q = summary(gen.job_id)
    assert q is not None and q["kept"] == 2 and q["duplicates"]["exact"] == 2


def test_near_duplicates_are_caught_at_0_8_and_unrelated_records_kept():
    base = [sentence(i) for i in range(30)]
    changed = []
    for i, text in enumerate(base[:10]):
        words = text.split()
        words[i % 40] = "changed" + str(i)  # one word of 40: shingle Jaccard about 0.9
        changed.append(" ".join(words))
    gen = job(Dedupe("text", near=0.8), max_concurrency=1)
    records = gen.run(text=base + changed)
    assert [r["text"] for r in records] == base  # every unrelated one kept, no rewording
    dup = list(iter_with_quality(gen.job_id, "duplicate"))
    assert [r["quality.duplicate_of"] for r in dup] == list(range(10))
    assert {r["quality.duplicate"] for r in dup} == {"near"}
    assert all(0.8 <= r["quality.similarity"] < 1 for r in dup)
    # without near=, the rewordings are different records
    assert len(job(Dedupe("text"), max_concurrency=1).run(text=base + changed)) == 40


def test_semantic_duplicates_through_the_embeddings_endpoint(server):
    texts = [
        "how do I open a file in python",
        "in python how do I open a file",  # the same words reordered: cosine 1
        "what is the capital of france",
    ]
    semantic = Embeddings("loopback-model", base_url=server.url, threshold=0.95)
    gen = job(Dedupe("text", semantic=semantic), max_concurrency=1)
    assert [r["text"] for r in gen.run(text=texts)] == [texts[0], texts[2]]
    dup = list(iter_with_quality(gen.job_id, "duplicate"))
    assert [(r["quality.duplicate"], r["quality.duplicate_of"]) for r in dup] == [("semantic", 0)]
    paths = [r["body"]["input"] for r in server.requests]
    assert len(paths) == 3  # one /embeddings request per record, nothing else
    assert load_job(gen.job_id).llm["embedding_requests"] == 3


def test_against_an_earlier_job_treats_its_kept_records_as_seen():
    first = job(Dedupe("text"))
    first.run(text=["a cat", "a dog"])
    second = job(Dedupe("text", against=[first.job_id]), max_concurrency=1)
    assert second.run(text=["A cat!", "a bird"]) == [{"text": "a bird"}]
    dup = list(iter_with_quality(second.job_id, "duplicate"))
    assert dup[0]["quality.duplicate_of"] == 0


def test_two_identical_records_completing_at_once_keep_exactly_one():
    gate = asyncio.Event()

    async def judged(records, state):  # a later hook that waits, as a Judge waits on its model
        await asyncio.sleep(0.01)

    @data_factory(
        on_record_complete=[Dedupe("text"), judged],
        show_progress=False,
        max_concurrency=20,
        dead_queue_threshold=1,
    )
    async def gen(i):
        if i == 19:
            gate.set()
        await gate.wait()  # all 20 finish in the same turn of the loop
        return {"text": "same"}

    assert gen.run(i=list(range(20))) == [{"text": "same"}]
    info = load_job(gen.job_id)
    assert info.counts["completed"] == 1 and info.counts["duplicate"] == 19


def test_a_record_filtered_by_a_later_hook_is_not_seen_as_kept():
    """A reservation given back: the judge filtered the first, so the second is kept."""

    def reject_first(records, state):
        if not state.get("rejected"):
            state.set("rejected", True)
            return "filtered"
        return None

    gen = job(Dedupe("text"), max_concurrency=1)
    gen = gen.with_options(on_record_complete=[Dedupe("text"), reject_first])
    assert gen.run(text=["x", "x"]) == [{"text": "x"}]
    assert load_job(gen.job_id).counts["duplicate"] == 0


def test_argument_errors_are_options_errors_at_construction():
    for bad in (1.5, 0.2, "0.8", True):
        with pytest.raises(OptionsError, match="near"):
            Dedupe("q", near=bad)
    with pytest.raises(ValueError, match="threshold"):
        Embeddings("m", base_url="http://127.0.0.1:9/v1", threshold=1.2)
    with pytest.raises(OptionsError, match="semantic"):
        Dedupe("q", semantic=0.9)  # type: ignore[arg-type]


def test_an_unknown_field_stops_the_job_at_the_first_record():
    gen = job(Dedupe("question"))
    with pytest.raises(OptionsError, match="no field 'question'"):
        gen.run(text=["a", "b", "c"])
    info = load_job(gen.job_id)
    assert info.status == "failed" and info.counts["completed"] == 0


def test_a_plain_export_is_unchanged_and_with_quality_adds_columns(tmp_path):
    gen = job(Dedupe("text"), max_concurrency=1)
    gen.run(text=["a", "A", "b"])
    plain, rich = tmp_path / "plain.jsonl", tmp_path / "rich.jsonl"
    gen.export(plain)
    gen.export(rich, with_quality=True)
    import json

    assert (
        [json.loads(line) for line in plain.read_text().splitlines()]
        == list(iter_records(gen.job_id))
        == [{"text": "a"}, {"text": "b"}]
    )
    rows = [json.loads(line) for line in rich.read_text().splitlines()]
    assert [r["text"] for r in rows] == ["a", "b"]
    assert "quality.duplicate" in rows[0] and rows[0]["quality.duplicate"] is None


def test_near_1_0_catches_only_records_with_the_same_shingles():
    # "x y x y" and "x y x y x y" have the same word pairs ({x y, y x}) but are not the same
    # text; a changed word is not caught at 1.0.
    texts = ["alpha beta alpha beta", "alpha beta alpha beta alpha beta", "alpha beta gamma beta"]
    gen = job(Dedupe("text", near=1.0), max_concurrency=1)
    records = gen.run(text=texts)
    assert [r["text"] for r in records] == [texts[0], texts[2]]
    [dup] = list(iter_with_quality(gen.job_id, "duplicate"))
    assert dup["quality.duplicate"] == "near" and dup["quality.duplicate_of"] == 0
