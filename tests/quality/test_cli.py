"""`starfish generate --dedupe --near --judge --min-score --judge-model` end to end (a real
subprocess, the loopback server), then `jobs show` and `jobs export --with-quality`."""

from __future__ import annotations

import json

from tests.llm.test_generate import starfish, write_topics


def answer(body):
    prompt = body["messages"][-1]["content"]
    if "Rubric:" in prompt:
        score = 1 if "bad" in prompt.split("Record:", 1)[1] else 5
        return json.dumps({"records": [{"score": score, "reason": "because"}]})
    topic = prompt.rsplit(" ", 1)[-1].rstrip(".").split("-")[0]
    return json.dumps({"records": [{"question": f"What is {topic}?"}]})


def test_generate_with_dedupe_and_judge_end_to_end(make_server, tmp_path):
    server = make_server(reply=answer)
    topics = write_topics(tmp_path / "t.jsonl", ["owls", "owls-2", "tides", "bad"])
    out = starfish(
        "generate", "--model", "m", "--base-url", server.url,
        "--prompt", "One question about {{topic}}.", "--schema", "question:str",
        "--input", str(topics), "--output", "qa.jsonl", "--no-progress", "--json",
        "--dedupe", "question", "--near", "0.8",
        "--judge", "No bad questions.", "--min-score", "4", "--judge-model", "judge-m",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    job = json.loads(out.stdout)
    lines = (tmp_path / "qa.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["question"] for line in lines) == [
        "What is owls?",
        "What is tides?",
    ]
    judged = [b for b in server.bodies if "Rubric:" in b["messages"][-1]["content"]]
    assert {b["model"] for b in judged} == {"judge-m"}
    assert job["counts"]["duplicate"] == 3 and job["counts"]["filtered"] == 3

    shown = starfish("jobs", "show", job["job_id"], cwd=tmp_path)
    assert "quality:     kept 2 of 4 · duplicates 3 (exact 3, near 0, semantic 0)" in shown.stdout
    assert "judged 5: mean 2.6, 60 % under 4" in shown.stdout
    as_json = json.loads(starfish("jobs", "show", job["job_id"], "--json", cwd=tmp_path).stdout)
    assert as_json["quality"]["score_histogram"] == {"1": 3, "5": 2}

    done = starfish(
        "jobs", "export", job["job_id"], "-o", "q.jsonl", "--with-quality", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert [r["quality.score"] for r in rows] == [5, 5]
    plain = starfish("jobs", "export", job["job_id"], "-o", "p.jsonl", cwd=tmp_path)
    assert plain.returncode == 0
    assert "quality." not in (tmp_path / "p.jsonl").read_text()


def test_cli_argument_errors_exit_2(tmp_path):
    topics = write_topics(tmp_path / "t.jsonl", ["owls"])
    base = ["generate", "--model", "m", "--base-url", "http://127.0.0.1:9/v1",
            "--prompt", "{{topic}}", "--input", str(topics), "--no-progress"]  # fmt: skip
    bad_near = starfish(*base, "--dedupe", "q", "--near", "1.5", cwd=tmp_path)
    assert bad_near.returncode == 2 and "--near 1.5" in bad_near.stderr
    alone = starfish(*base, "--min-score", "3", cwd=tmp_path)
    assert alone.returncode == 2 and "--min-score needs --judge" in alone.stderr


def test_jobs_delete_removes_the_quality_rows_too(tmp_path):
    import sqlite3

    from starfish import data_factory
    from starfish.data_factory.storage import locate_job
    from starfish.quality import Dedupe

    @data_factory(
        on_record_complete=[Dedupe("text")],
        show_progress=False,
        max_concurrency=1,
        dead_queue_threshold=1,
    )
    async def gen(text):
        return {"text": text}

    gen.run(text=["a", "b", "A!", "c"])
    db = locate_job(gen.job_id)[0].path

    def rows():
        with sqlite3.connect(db) as conn:
            return [
                conn.execute(
                    f"SELECT count(*) FROM {t} WHERE job_id = ?", (gen.job_id,)
                ).fetchone()[0]
                for t in ("quality_index", "quality")
            ]

    assert rows() == [3, 1]  # three kept inputs indexed, one duplicate's finding
    # A new process, as from the shell: nothing there has imported starfish.quality.
    done = starfish("jobs", "delete", gen.job_id, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert rows() == [0, 0]
