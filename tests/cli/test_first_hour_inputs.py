"""Input files that point the right way (issue 17, point 6): typed CSV columns, JSON that is
not JSON Lines, short CSV rows, an async generator as TARGET, a column `generate` cannot take."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Cli, run_job

TYPED = """
from typing import Optional

async def typed(name: str, n: int, ratio: float, keep: bool, extra: Optional[int] = None):
    return [{"name": name, "n": n, "ratio": ratio, "keep": keep, "extra": extra,
             "types": [type(v).__name__ for v in (n, ratio, keep)]}]


async def agen(name: str):
    yield {"name": name}
"""


def _records(cli: Cli, job_id: str, tmp: Path) -> list[dict]:
    out = tmp / "out.jsonl"
    assert cli("jobs", "export", job_id, "-o", str(out)).code == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_csv_values_become_the_annotated_int_float_and_bool(cli: Cli, workdir: Path) -> None:
    (workdir / "typed.py").write_text(TYPED)
    (workdir / "rows.csv").write_text("name,n,ratio,keep,extra\nada,2,0.5,true,\nbo, 3 ,1e3,No,7\n")
    job = run_job(cli, "typed.py:typed", "-i", "rows.csv")
    assert job["counts"]["completed"] == 2
    records = _records(cli, job["job_id"], workdir)
    assert records[0] == {
        "name": "ada", "n": 2, "ratio": 0.5, "keep": True, "extra": None,
        "types": ["int", "float", "bool"],
    }  # fmt: skip
    assert records[1]["n"] == 3 and records[1]["ratio"] == 1000.0
    assert records[1]["keep"] is False and records[1]["extra"] == 7


def test_a_csv_value_that_is_not_the_type_stops_before_the_job(cli: Cli, workdir: Path) -> None:
    (workdir / "typed.py").write_text(TYPED)
    (workdir / "rows.csv").write_text("name,n,ratio,keep\nada,2,0.5,true\nbo,two,1,false\n")
    result = cli("run", "typed.py:typed", "-i", "rows.csv", "--no-progress")
    assert result.code == 2, result
    assert "rows.csv: row 2, column 'n': 'two' is not an int" in result.err
    assert cli("jobs", "list", "--json").json() == []  # nothing was left behind


def test_a_json_array_or_pretty_json_says_json_lines(cli: Cli, workdir: Path) -> None:
    (workdir / "array.json").write_text(json.dumps([{"name": "ada"}, {"name": "bo"}]))
    (workdir / "pretty.jsonl").write_text(json.dumps({"name": "ada"}, indent=2) + "\n")
    for name in ("array.json", "pretty.jsonl"):
        result = cli("run", "targets.py:echo", "-i", name, "--no-progress")
        assert result.code == 2, result
        assert "expected JSON Lines (one object per line)" in result.err, result


def test_a_short_csv_row_is_an_error_like_a_long_one(cli: Cli, workdir: Path) -> None:
    (workdir / "short.csv").write_text("name,n\nada,1\nbo\n")
    result = cli("run", "targets.py:echo", "-i", "short.csv", "--no-progress")
    assert result.code == 2, result
    assert "short.csv: line 3: fewer fields than the header has columns" in result.err


def test_an_async_generator_target_is_named_so(cli: Cli, workdir: Path) -> None:
    (workdir / "typed.py").write_text(TYPED)
    result = cli("run", "typed.py:agen", "-i", "names.jsonl", "--no-progress")
    assert result.code == 2, result
    assert "is an async generator" in result.err and "`return` the list" in result.err


def test_generate_refuses_a_column_named_self_or_llm(cli: Cli, workdir: Path) -> None:
    for column in ("self", "llm"):
        (workdir / "rows.csv").write_text(f"topic,{column}\nrust,x\n")
        result = cli(
            "generate", "--model", "openai/m", "--prompt", "About {{topic}}", "-i", "rows.csv",
            "--base-url", "http://127.0.0.1:9/v1", "--no-progress",
            env={"OPENAI_API_KEY": "sk-test"},
        )  # fmt: skip
        assert result.code == 2, result
        assert f"a column cannot be named {column!r}" in result.err, result
