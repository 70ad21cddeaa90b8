"""Read input rows from, and write records to, JSONL, CSV and Parquet files.

Both directions stream: reading yields one row at a time, writing consumes an iterable in
chunks, so a job of any size moves through a constant amount of memory. The format is chosen
by the file extension. pyarrow is imported only when a Parquet file is touched.

CSV and Parquet need every column up front (a header, a schema), while records may gain a key
late in a job. When the records fill more than one chunk, the writer spools them to a
temporary file next to the output while it collects the union of all keys (CSV) or
unifies the inferred schemas (Parquet), then writes the file in a second pass. So the CSV
header is the union of every key seen, in first-seen order, and no field is dropped.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pickle
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from starfish.errors import StarfishError

__all__ = [
    "READ_FORMATS",
    "WRITE_FORMATS",
    "DataFileError",
    "check_writable",
    "read_row_texts",
    "read_rows",
    "write_records",
]

READ_FORMATS = (".jsonl", ".json", ".csv", ".parquet")
WRITE_FORMATS = (".jsonl", ".csv", ".parquet")
CHUNK_SIZE = 5000
_UTF8 = "utf-8-sig"
"""Reads UTF-8 with or without the byte-order mark that Excel and Notepad write."""


class DataFileError(StarfishError, ValueError):
    """A data file cannot be read or written: bad extension, malformed line, missing pyarrow."""


def read_rows(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the rows of a JSONL, CSV or Parquet file as dicts, one at a time.

    JSONL (and `.json` holding one object per line) must have one JSON object per non-blank
    line; a malformed line raises `DataFileError` naming the file and the 1-based line number.
    CSV values stay strings, as written. A missing file raises `FileNotFoundError` at once,
    not at the first `next()`, so callers can report it before doing any work.
    """
    path = Path(path)
    suffix = _suffix(path, READ_FORMATS, "read")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if suffix in (".jsonl", ".json"):
        return _read_jsonl(path)
    if suffix == ".csv":
        return _read_csv(path)
    return _read_parquet(path)


def read_row_texts(path: str | os.PathLike[str]) -> Iterator[tuple[dict[str, Any], str | None]]:
    """`read_rows`, each row paired with its own JSON text when the file is JSONL (None for
    CSV and Parquet): a caller that stores rows as JSON need not encode them again."""
    path = Path(path)
    if _suffix(path, READ_FORMATS, "read") in (".jsonl", ".json"):
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        return _read_jsonl_texts(path)
    return ((row, None) for row in read_rows(path))


def write_records(
    path: str | os.PathLike[str], records: Iterable[dict[str, Any]], chunk_size: int = CHUNK_SIZE
) -> int:
    """Write records to `path` in the format its extension names and return how many.

    The file is written to a temporary name and moved into place at the end, so a failed
    export never leaves a half-written file behind under the requested name.
    """
    path = Path(path)
    suffix = _suffix(path, WRITE_FORMATS, "write")
    if suffix == ".parquet":
        _import_pyarrow()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if suffix == ".jsonl":
            count = _write_jsonl(tmp, records)
        elif suffix == ".csv":
            count = _write_csv(tmp, records, chunk_size)
        else:
            count = _write_parquet(tmp, records, chunk_size)
        os.replace(tmp, path)
    except DataFileError as e:
        raise DataFileError(f"cannot write {path}: {e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return count


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise `DataFileError` now if `write_records(path, ...)` would refuse the format, so a
    caller can say so before a long job rather than after it."""
    if _suffix(Path(path), WRITE_FORMATS, "write") == ".parquet":
        _import_pyarrow()


def _suffix(path: Path, supported: tuple[str, ...], verb: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in supported:
        raise DataFileError(
            f"cannot {verb} {path}: unknown extension {suffix or '(none)'!r};"
            f" supported: {', '.join(supported)}"
        )
    return suffix


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    for row, _ in _read_jsonl_texts(path):
        yield row


_JSON_LINES = "expected JSON Lines (one object per line)"


def _read_jsonl_texts(path: Path) -> Iterator[tuple[dict[str, Any], str]]:
    first = True  # a JSON array or pretty-printed JSON shows on the first line that has text
    with path.open(encoding=_UTF8) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if first and line.lstrip().startswith("["):
                raise DataFileError(
                    f"{path}: a JSON array, {_JSON_LINES}; convert it with: "
                    f"jq -c '.[]' {path.name} > rows.jsonl"
                )
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                hint = (
                    f": {_JSON_LINES}; this looks like pretty-printed JSON, one object over "
                    "many lines"
                    if first
                    else ""
                )
                raise DataFileError(
                    f"{path}: line {lineno}: malformed JSON: {e.msg}{hint}"
                ) from None
            if not isinstance(row, dict):
                raise DataFileError(
                    f"{path}: line {lineno}: expected a JSON object, got {type(row).__name__}"
                    + (f" ({_JSON_LINES})" if first else "")
                )
            first = False
            yield row, line.strip(" \t\r\n")


def _read_csv(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding=_UTF8, newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            if None in row:
                raise DataFileError(
                    f"{path}: line {reader.line_num}: more fields than the header has columns"
                )
            if None in row.values():  # DictReader's filler for fields the line lacks
                raise DataFileError(
                    f"{path}: line {reader.line_num}: fewer fields than the header has columns "
                    f"({sum(v is not None for v in row.values())} of {len(row)})"
                )
            yield dict(row)


def _read_parquet(path: Path) -> Iterator[dict[str, Any]]:
    pq = _import_pyarrow().parquet
    parquet_file = pq.ParquetFile(path)
    try:
        for batch in parquet_file.iter_batches(batch_size=CHUNK_SIZE):
            yield from batch.to_pylist()
    finally:
        parquet_file.close()


def _import_pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise DataFileError(
            "Parquet needs pyarrow: pip install 'starfish-datagen[parquet]' (or use .jsonl / .csv)"
        ) from None
    return pyarrow


def _write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Strict JSON, one object a line. NaN and ±Infinity, which Python's json writes as bare
    `NaN`/`Infinity` and strict parsers reject, are written as null.

    A record holding a big string (a megabyte or more) is written as its text is made, in
    slices, so that it is held about twice, not three times; and no record or line is kept
    while the next one is read."""
    encode = json.JSONEncoder(ensure_ascii=False, default=str, allow_nan=False).encode
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            if _has_big_text(record):
                _write_big(f, record)
            else:
                try:
                    line = encode(record)
                except ValueError:  # a non-finite float (rare: only then walk the record)
                    line = encode(_finite(record))
                f.write(line)
            f.write("\n")
            del record  # not held while the next one is read
            count += 1
    return count


BIG_TEXT = 1 << 20
"""A record with a string this long at its top level is written piece by piece."""


def _has_big_text(record: Any) -> bool:
    return isinstance(record, dict) and any(
        type(v) is str and len(v) >= BIG_TEXT for v in record.values()
    )


def _write_big(f: Any, record: dict[str, Any]) -> None:
    """One big record, its text written as it is made and in slices, never joined into one
    line: the C encoder joins its pieces at the end, which holds a 10 MB record three times
    (the record, its escaped text, the line), this holds it twice."""
    encoder = json.JSONEncoder(ensure_ascii=False, default=str, allow_nan=False)
    for piece in encoder.iterencode(_finite(record)):  # the Python encoder: piece by piece
        for start in range(0, len(piece), BIG_TEXT):
            f.write(piece[start : start + BIG_TEXT])


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


CHUNK_BYTES = 4 << 20
"""A chunk also ends once its records' text (strings and bytes at their top level) passes
this: a chunk of 5,000 records of 10 MB would be 50 GB."""


def _chunks(records: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    weight = 0
    for record in records:
        chunk.append(record)
        weight += _weight(record)
        del record
        if len(chunk) >= size or weight >= CHUNK_BYTES:
            yield chunk
            chunk = []
            weight = 0
    if chunk:
        yield chunk


def _weight(record: Any) -> int:
    """About the bytes of a record: its top-level strings and bytes, 16 for anything else."""
    if not isinstance(record, dict):
        return 16
    return sum(len(v) if isinstance(v, (str, bytes)) else 16 for v in record.values())


class _Spool:
    """Chunks go to a temporary file on disk (pickled, so types survive) and come back in order.

    The first chunk stays in memory when it is small (under a megabyte of text); only when
    there is a second one does anything touch the disk, so small exports cost a single pass.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._first: list[dict[str, Any]] | None = None
        self._file: Any = None
        self._spooled = 0

    def add(self, chunk: list[dict[str, Any]]) -> None:
        if self._first is None and self._file is None and sum(map(_weight, chunk)) < (1 << 20):
            self._first = chunk  # small: kept until the second pass
            return
        if self._file is None:
            # Lives across add() calls and is closed by close(), so no `with` here.
            self._file = tempfile.TemporaryFile(dir=self._directory, suffix=".spool")  # noqa: SIM115
        pickle.dump(chunk, self._file, protocol=pickle.HIGHEST_PROTOCOL)
        self._spooled += 1

    def chunks(self) -> Iterator[list[dict[str, Any]]]:
        if self._first is not None:
            yield self._first
        if self._file is not None:
            self._file.seek(0)
            for _ in range(self._spooled):
                yield pickle.load(self._file)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _csv_cell(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


def _write_csv(path: Path, records: Iterable[dict[str, Any]], chunk_size: int) -> int:
    fields: dict[str, None] = {}
    spool = _Spool(path.parent)
    count = 0
    try:
        for chunk in _chunks(records, chunk_size):
            fields.update(_union_keys(chunk))
            count += len(chunk)
            spool.add(chunk)
        names = list(fields)
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=names)
            writer.writeheader()
            for chunk in spool.chunks():
                for r in chunk:
                    row = {k: _csv_cell(v) for k, v in r.items()}
                    if _has_big_text(row):
                        _write_big_row(f, names, row)
                    else:
                        writer.writerow(row)
                del chunk
    finally:
        spool.close()
    return count


def _write_big_row(f: Any, names: list[str], row: dict[str, Any]) -> None:
    """A CSV row holding a big string, written cell by cell and the big one in slices, quoted
    as the csv module quotes: never one joined line (the record, the line and its encoding
    held an 8 MB record five to seven times)."""
    for i, name in enumerate(names):
        if i:
            f.write(",")
        value = row.get(name, "")
        if type(value) is str and len(value) >= BIG_TEXT:
            f.write('"')
            for start in range(0, len(value), BIG_TEXT):
                f.write(value[start : start + BIG_TEXT].replace('"', '""'))
            f.write('"')
        else:
            cell = io.StringIO()
            csv.writer(cell).writerow([value])
            f.write(cell.getvalue()[:-2])  # without the writer's line end
    f.write("\r\n")


def _columns_table(
    pa: Any, chunk: list[dict[str, Any]], schema: Any, memory_pool: Any = None
) -> Any:
    """A table from a chunk of records, typed from every value (pyarrow's from_pylist would
    take the keys of the first record only and silently drop the rest). Built one column at a
    time, so a value that fits no Parquet type is reported with the name of its field."""
    names = list(schema.names) if schema is not None else list(_union_keys(chunk))
    arrays = []
    for name in names:
        values = [record.get(name) for record in chunk]
        kind = schema.field(name).type if schema is not None else None
        try:
            arrays.append(pa.array(values, type=kind, memory_pool=memory_pool))
        except OverflowError:
            raise DataFileError(_field_error(name, "an integer beyond 64 bits")) from None
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
            raise DataFileError(_field_error(name, _first_line(e))) from None
        del values  # one column's list of values at a time
    if schema is not None:
        return pa.Table.from_arrays(arrays, schema=schema)
    return pa.Table.from_arrays(arrays, names=names)


def _field_error(name: str, reason: str) -> str:
    return (
        f"field {name!r} does not fit one Parquet column ({reason}); "
        "export to .jsonl, which keeps any JSON value"
    )


def _first_line(error: BaseException) -> str:
    return " ".join(str(error).split("\n")[0].split())


def _unify(pa: Any, schema: Any, chunk_schema: Any) -> Any:
    """The schema of the records so far; a field whose types conflict is named."""
    try:
        return pa.unify_schemas([schema, chunk_schema], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        for field in chunk_schema:
            if field.name not in schema.names:
                continue
            earlier = schema.field(field.name)
            try:
                pa.unify_schemas(
                    [pa.schema([earlier]), pa.schema([field])], promote_options="permissive"
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                reason = f"{earlier.type} in some records, {field.type} in others"
                raise DataFileError(_field_error(field.name, reason)) from None
        raise DataFileError(f"records do not fit one Parquet schema: {_first_line(e)}") from None


def _union_keys(records: Iterable[dict[str, Any]]) -> dict[str, None]:
    keys: dict[str, None] = {}
    for record in records:
        keys.update(dict.fromkeys(record))
    return keys


def _write_parquet(path: Path, records: Iterable[dict[str, Any]], chunk_size: int) -> int:
    pa = _import_pyarrow()
    schema = None
    spool = _Spool(path.parent)
    count = 0
    try:
        for chunk in _chunks(records, chunk_size):
            chunk_schema = _columns_table(pa, chunk, None).schema
            schema = chunk_schema if schema is None else _unify(pa, schema, chunk_schema)
            count += len(chunk)
            spool.add(chunk)
        writer = pa.parquet.ParquetWriter(path, schema if schema is not None else pa.schema([]))
        try:
            for chunk in spool.chunks():
                writer.write_table(_columns_table(pa, chunk, schema))
        finally:
            writer.close()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise DataFileError(f"records do not fit one Parquet schema: {_first_line(e)}") from None
    finally:
        spool.close()
    return count
