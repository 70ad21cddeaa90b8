"""Reading rows and writing records: round trips in each format, errors that name the problem."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from starfish import io
from starfish.io import DataFileError, read_rows, write_records

RECORDS = [
    {"id": 1, "text": 'héllo, "world"\nsecond line', "score": 0.5, "ok": True},
    {"id": 2, "text": "plain", "score": None, "ok": False},
]


def test_jsonl_round_trip_keeps_types_and_unicode(tmp_path: Path) -> None:
    nested = [*RECORDS, {"id": 3, "tags": ["a", "b"], "meta": {"k": 1}}]
    assert write_records(tmp_path / "r.jsonl", iter(nested)) == 3
    assert list(read_rows(tmp_path / "r.jsonl")) == nested
    assert "héllo" in (tmp_path / "r.jsonl").read_text(encoding="utf-8")


def test_json_extension_reads_json_lines(tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text('{"a": 1}\n{"a": 2}\n')
    assert list(read_rows(tmp_path / "r.json")) == [{"a": 1}, {"a": 2}]


def test_csv_round_trip_values_come_back_as_strings(tmp_path: Path) -> None:
    assert write_records(tmp_path / "r.csv", RECORDS) == 2
    assert list(read_rows(tmp_path / "r.csv")) == [
        {"id": "1", "text": RECORDS[0]["text"], "score": "0.5", "ok": "True"},
        {"id": "2", "text": "plain", "score": "", "ok": "False"},
    ]


def test_csv_header_is_the_union_of_all_keys_even_past_the_first_chunk(tmp_path: Path) -> None:
    records = [{"a": i} for i in range(7)] + [{"a": 7, "late": [1, 2]}]
    assert write_records(tmp_path / "r.csv", records, chunk_size=3) == 8
    rows = list(read_rows(tmp_path / "r.csv"))
    assert list(rows[0]) == ["a", "late"]
    assert rows[0] == {"a": "0", "late": ""}
    assert rows[-1] == {"a": "7", "late": "[1, 2]"}
    assert [r["a"] for r in rows] == [str(i) for i in range(8)]


def test_parquet_round_trip_keeps_types(tmp_path: Path) -> None:
    assert write_records(tmp_path / "r.parquet", RECORDS) == 2
    assert list(read_rows(tmp_path / "r.parquet")) == RECORDS


def test_parquet_in_row_groups_with_a_late_key_and_nested_values(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    records = [{"a": i, "b": str(i)} for i in range(10)] + [{"a": 10, "c": [1, 2]}]
    assert write_records(tmp_path / "r.parquet", (r for r in records), chunk_size=4) == 11
    assert pq.ParquetFile(tmp_path / "r.parquet").num_row_groups == 3
    rows = list(read_rows(tmp_path / "r.parquet"))
    assert rows[0] == {"a": 0, "b": "0", "c": None}
    assert rows[-1] == {"a": 10, "b": None, "c": [1, 2]}
    assert len(rows) == 11


def test_parquet_conflicting_types_is_a_clear_error_and_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match=r"r\.parquet: field 'a' does not fit one Parquet col"):
        write_records(tmp_path / "r.parquet", [{"a": 1}, {"a": "x"}], chunk_size=1)
    assert list(tmp_path.iterdir()) == []


def test_empty_exports(tmp_path: Path) -> None:
    for ext in ("jsonl", "csv", "parquet"):
        assert write_records(tmp_path / f"e.{ext}", []) == 0
        assert list(read_rows(tmp_path / f"e.{ext}")) == []


def test_malformed_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2,}\n')
    rows = read_rows(path)
    assert next(rows) == {"a": 1}  # streaming: the bad line is not read yet
    with pytest.raises(DataFileError, match=r"in\.jsonl: line 3: malformed JSON"):
        next(rows)


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataFileError, match="line 2: expected a JSON object, got list"):
        list(read_rows(path))
    path.write_text("[1, 2]\n")  # on the first line: the file is a JSON array
    with pytest.raises(DataFileError, match=r"a JSON array, expected JSON Lines"):
        list(read_rows(path))


def test_csv_row_with_too_many_fields(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(DataFileError, match="line 3: more fields"):
        list(read_rows(path))


def test_unknown_extension_names_the_supported_ones(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match=r"'\.txt'; supported: \.jsonl, \.csv, \.parquet"):
        write_records(tmp_path / "r.txt", RECORDS)
    with pytest.raises(DataFileError, match=r"supported: \.jsonl, \.json, \.csv, \.parquet"):
        read_rows(tmp_path / "r.xlsx")
    assert list(tmp_path.iterdir()) == []


def test_missing_file_fails_at_call_not_at_first_row(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        read_rows(tmp_path / "nope.jsonl")


def test_failure_midway_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"old": true}\n')

    def records():
        yield {"a": 1}
        raise RuntimeError("storage went away")

    with pytest.raises(RuntimeError):
        write_records(path, records())
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"old": True}]
    assert list(tmp_path.iterdir()) == [path]


def test_parquet_without_pyarrow_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataFileError, match=r"pip install 'starfish-datagen\[parquet\]'"):
        io.write_records(tmp_path / "r.parquet", RECORDS)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("in.csv", "name,n\nada,1\nbo,2\n"),
        ("in.jsonl", '{"name": "ada", "n": "1"}\n{"name": "bo", "n": "2"}\n'),
    ],
)
def test_a_byte_order_mark_reads_as_if_there_were_none(
    tmp_path: Path, name: str, text: str
) -> None:
    """Excel writes UTF-8 CSV with a BOM; it must not end up in the first column's name."""
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert list(read_rows(path)) == [{"name": "ada", "n": "1"}, {"name": "bo", "n": "2"}]


def _strict_json(line: str) -> object:
    """Parse as strict JSON parsers (Go, Rust, jq --strict, browsers) do: no NaN/Infinity."""

    def refuse(name: str) -> object:
        raise ValueError(f"not JSON: {name}")

    return json.loads(line, parse_constant=refuse)


def test_jsonl_writes_nan_and_infinity_as_null(tmp_path: Path) -> None:
    nan, inf = float("nan"), float("inf")
    records = [{"x": nan, "y": [inf, 1.5], "z": {"w": -inf}}, {"x": 2.0, "y": [], "z": {}}]
    assert write_records(tmp_path / "r.jsonl", records) == 2
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert [_strict_json(line) for line in lines] == [
        {"x": None, "y": [None, 1.5], "z": {"w": None}},
        {"x": 2.0, "y": [], "z": {}},
    ]


@pytest.mark.parametrize(
    ("records", "chunk_size", "field", "why"),
    [
        ([{"id": 1, "big": 2**80}], 10, "big", "an integer beyond 64 bits"),
        ([{"id": 1, "v": 1}, {"id": 2, "v": "x"}], 10, "v", "tried to convert to int64"),
        ([{"id": 1, "v": 1}, {"id": 2, "v": "x"}], 1, "v", "int64 in some records, string"),
    ],
    ids=["2**80", "int and str in one chunk", "int and str across chunks"],
)
def test_parquet_errors_name_the_field_in_one_line(
    tmp_path: Path, records: list[dict], chunk_size: int, field: str, why: str
) -> None:
    pytest.importorskip("pyarrow")
    with pytest.raises(DataFileError) as caught:
        write_records(tmp_path / "r.parquet", records, chunk_size=chunk_size)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"cannot write {tmp_path / 'r.parquet'}: field {field!r} ")
    assert why in message
    assert "export to .jsonl" in message
    assert list(tmp_path.iterdir()) == []


def test_row_texts_are_each_rows_own_json(tmp_path: Path) -> None:
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_bytes(b'\xef\xbb\xbf {"a": 1, "b": [2]} \r\n\n{"a": 3}\n')
    pairs = list(io.read_row_texts(jsonl))
    assert pairs == [({"a": 1, "b": [2]}, '{"a": 1, "b": [2]}'), ({"a": 3}, '{"a": 3}')]
    (tmp_path / "in.csv").write_text("a\n1\n")
    assert list(io.read_row_texts(tmp_path / "in.csv")) == [({"a": "1"}, None)]
    with pytest.raises(FileNotFoundError):
        io.read_row_texts(tmp_path / "nope.jsonl")


def test_a_csv_row_with_a_big_text_reads_back_as_written(tmp_path):
    import csv

    from starfish.io import BIG_TEXT, write_records

    big = ('say "hi", then\nmore ' * (BIG_TEXT // 10))[: BIG_TEXT + 7]
    records = [
        {"i": 1, "text": "small", "tags": ["a"]},
        {"i": 2, "text": big, "tags": ["b", "c"], "empty": ""},
        {"i": 3, "text": 'x,"y"', "tags": []},
    ]
    out = tmp_path / "big.csv"
    assert write_records(out, records) == 3
    limit = csv.field_size_limit(4 * BIG_TEXT)  # the reader's own limit, not the file's
    try:
        with out.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    finally:
        csv.field_size_limit(limit)
    assert [r["i"] for r in rows] == ["1", "2", "3"]
    assert rows[1]["text"] == big and rows[1]["tags"] == '["b", "c"]' and rows[1]["empty"] == ""
    assert rows[2]["text"] == 'x,"y"' and rows[0]["empty"] == ""
