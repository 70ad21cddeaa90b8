"""`starfish generate` end to end: a real subprocess against the loopback server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.llm.conftest import KEY


def starfish(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "starfish", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def write_topics(path: Path, topics: list[str]) -> Path:
    path.write_text("".join(json.dumps({"topic": t}) + "\n" for t in topics))
    return path


def test_generate_end_to_end_then_a_re_run_is_free(make_server, tmp_path):
    server = make_server()
    topics = write_topics(tmp_path / "topics.jsonl", ["tides", "volcanoes", "owls"])
    args = [
        "generate",
        "--model", "openai/gpt-4o-mini",
        "--prompt", "Write {{num_records}} questions about {{topic}}.",
        "--schema", "question:str,answer:str",
        "--input", str(topics),
        "--output", "qa.jsonl",
        "--num-records", "2",
        "--temperature", "0.5",
        "--no-progress",
    ]  # fmt: skip
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.url}
    out = starfish(*args, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert "wrote 3 records to qa.jsonl" in out.stdout
    assert "  llm 3 requests, 0 cache hits" in out.stdout
    records = [json.loads(line) for line in (tmp_path / "qa.jsonl").read_text().splitlines()]
    # Each record keeps the input row it came from.
    assert sorted(records, key=lambda r: r["topic"]) == [
        {"topic": t, "question": "text", "answer": "text"} for t in ("owls", "tides", "volcanoes")
    ]
    contents = sorted(b["messages"][0]["content"] for b in server.bodies)
    assert contents == [
        "Write 2 questions about owls.",
        "Write 2 questions about tides.",
        "Write 2 questions about volcanoes.",
    ]
    assert all(b["model"] == "gpt-4o-mini" and b["temperature"] == 0.5 for b in server.bodies)
    assert all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in server.requests)

    listed = json.loads(starfish("jobs", "list", "--json", cwd=tmp_path).stdout)
    assert [j["name"] for j in listed] == ["generate"]
    again = starfish(*args, "--json", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert len(server.requests) == 3  # every answer came from the cache
    assert json.loads(again.stdout)["llm"]["cache_hits"] == 3


def test_generate_setup_errors_come_before_any_request(make_server, tmp_path, monkeypatch):
    server = make_server()
    topics = write_topics(tmp_path / "topics.jsonl", ["a"])
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    base = ["generate", "--input", str(topics), "--no-progress"]
    no_key = starfish(*base, "--model", "openai/gpt-4o-mini", "--prompt", "{{topic}}", cwd=tmp_path)
    assert no_key.returncode == 2 and "OPENAI_API_KEY" in no_key.stderr
    bad_var = starfish(
        *base, "--model", "m", "--base-url", server.url, "--prompt", "{{subject}}", cwd=tmp_path
    )
    assert bad_var.returncode == 2
    assert "{{subject}}" in bad_var.stderr and "columns: topic" in bad_var.stderr
    bad_schema = starfish(
        *base, "--model", "m", "--base-url", server.url, "--prompt", "{{topic}}",
        "--schema", "q:text", cwd=tmp_path,
    )  # fmt: skip
    assert bad_schema.returncode == 2 and "type 'text'" in bad_schema.stderr
    assert server.requests == []


def test_generate_takes_the_json_list_schema_a_key_variable_and_a_mode(make_server, tmp_path):
    server = make_server()
    topics = write_topics(tmp_path / "topics.jsonl", ["tides"])
    schema = json.dumps([{"name": "question", "type": "str"}, {"name": "topic", "type": "str"}])
    (tmp_path / "schema.json").write_text(schema)
    base = [
        "generate", "--model", "m", "--base-url", server.url, "--prompt", "{{topic}}",
        "--input", str(topics), "--output", "out.jsonl", "--no-progress",
    ]  # fmt: skip
    out = starfish(
        *base, "--schema", schema, "--api-key-env", "MY_PROXY_KEY",
        "--structured-output", "json_object", cwd=tmp_path, env={"MY_PROXY_KEY": KEY},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    [request] = server.requests
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    assert request["body"]["response_format"]["type"] == "json_object"
    assert "structured output json_object (1 answers)" in out.stdout
    # A record field named like an input column keeps both: the input's is prefixed.
    [record] = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert record == {"input_topic": "tides", "question": "text", "topic": "text"}
    import os

    stored = Path(os.environ["STARFISH_LOCAL_STORAGE_DIR"])
    assert [p for p in stored.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()] == []

    from_file = starfish(
        *base, "--schema", "@schema.json", "--no-input-columns", "--temperature", "0.1",
        cwd=tmp_path, env={"MY_PROXY_KEY": KEY},
    )  # fmt: skip
    assert from_file.returncode == 0, from_file.stderr
    [record] = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert record == {"question": "text", "topic": "text"}
    assert "Authorization" not in server.requests[-1]["headers"]

    unset = starfish(*base, "--api-key-env", "NOT_SET_ANYWHERE", cwd=tmp_path)
    assert unset.returncode == 2 and "NOT_SET_ANYWHERE is not set" in unset.stderr
    bad_mode = starfish(*base, "--schema", schema, "--structured-output", "grammar", cwd=tmp_path)
    assert bad_mode.returncode == 2 and "structured_output must be one of" in bad_mode.stderr
    assert len(server.requests) == 2


def test_samples_no_cache_jobs_show_and_clearing_one_jobs_cache(make_server, tmp_path):
    server = make_server()
    topics = write_topics(tmp_path / "topics.jsonl", ["tides", "owls"])
    base = [
        "generate", "--model", "m", "--base-url", server.url, "--prompt", "About {{topic}}.",
        "--schema", "question:str", "--input", str(topics), "--no-progress", "--json",
    ]  # fmt: skip
    first = starfish(*base, "--samples", "3", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    job_a = json.loads(first.stdout)
    assert job_a["records"] == 6 and len(server.requests) == 6  # 3 independent calls a row
    show = starfish("jobs", "show", job_a["job_id"], cwd=tmp_path)
    assert "made with:" in show.stdout and f"base_url: {server.url}" in show.stdout
    assert "prompt: About {{topic}}." in show.stdout and '"name": "question"' in show.stdout

    again = starfish(*base, "--samples", "3", "--no-cache", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(server.requests) == 12  # asked again, nothing answered from the cache
    job_b = json.loads(starfish(*base, cwd=tmp_path).stdout)  # 1 sample: answered by the cache
    assert len(server.requests) == 12 and job_b["llm"]["cache_hits"] == 2

    cleared = starfish("cache", "clear", "--job", job_a["job_id"][:10], cwd=tmp_path)
    assert cleared.returncode == 0 and "deleted 6 cached responses" in cleared.stdout
    starfish(*base, cwd=tmp_path)
    assert len(server.requests) == 14  # job A's answers are gone; job B kept none of its own
    unknown = starfish("cache", "clear", "--job", "ffffffff", cwd=tmp_path)
    assert unknown.returncode == 2 and "no job" in unknown.stderr
