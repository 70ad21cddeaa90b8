"""A job's records as Arrow, pandas and Hugging Face `datasets`, and as a Hub-ready folder.

Records stream from storage in chunks; each chunk becomes one Arrow record batch typed from
every value in it (as the Parquet export does), and the batches are joined at the end with
their schemas unified. So the Python objects of one chunk live at a time beside the growing
Arrow data, whose buffers come from the system allocator (see `_pool`): converting 1,000,000
records peaks at about 1.1 times the table's size above a process that has its libraries
loaded (bench/bench_ui.py). pyarrow, pandas and datasets are imported only when called
(`starfish-datagen[pandas]`, `starfish-datagen[hf]`); pyarrow itself imports pandas, when it
is installed, on its first conversion of Python values (about 55 MB, once a process).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from starfish.io import DataFileError, _chunks, _columns_table, _import_pyarrow, _unify

__all__ = ["SHARD_BYTES", "export_hf", "to_arrow", "to_dataset", "to_pandas"]

SHARD_BYTES = 256 << 20
"""A Parquet shard of an `--format hf` export ends once its Arrow data passes this."""
CHUNK = 10_000


def _records(job_id: str, filter: str, with_quality: bool) -> Iterator[dict[str, Any]]:
    from starfish import jobs

    if filter == "dead":
        return jobs.iter_dead(job_id)
    if with_quality:
        from starfish.quality import iter_with_quality

        return iter_with_quality(job_id, filter)
    return jobs.iter_records(job_id, filter=filter)


def _pool(pa: Any) -> Any:
    """The memory pool the table's buffers come from: the system allocator's, not pyarrow's
    default (mimalloc in most wheels). A column is built from Python values in a buffer that
    grows by doubling and is then trimmed to its length by a realloc; mimalloc keeps a block
    trimmed by less than half whole, so a table built chunk by chunk held about 1.5 times its
    bytes, where the system allocator reuses the tail for the next buffers (about 1.1 times;
    bench/bench_ui.py, 1,000,000 records)."""
    return pa.system_memory_pool()


def _batches(job_id: str, filter: str, with_quality: bool) -> Iterator[Any]:
    """One Arrow table per chunk of records, each typed from its own values."""
    pa = _import_pyarrow()
    pool = _pool(pa)
    for chunk in _chunks(_records(job_id, filter, with_quality), CHUNK):
        try:
            table = _columns_table(pa, chunk, None, pool)
        finally:
            chunk.clear()  # the dicts go before the next chunk is read
        yield table


def _unified(pa: Any, tables: list[Any]) -> Any:
    schema = None
    for table in tables:
        schema = table.schema if schema is None else _unify(pa, schema, table.schema)
    return schema if schema is not None else pa.schema([])


def _conform(pa: Any, table: Any, schema: Any) -> Any:
    """`table` with every column of `schema` (missing ones null) in its order and types."""
    import pyarrow.compute as pc

    pool = _pool(pa)
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(pc.cast(table.column(field.name), field.type, memory_pool=pool))
        else:
            columns.append(pa.nulls(table.num_rows, type=field.type, memory_pool=pool))
    return pa.Table.from_arrays(columns, schema=schema)


def to_arrow(job_id: str, filter: str = "completed", with_quality: bool = False) -> Any:
    """The job's records with status `filter` as a `pyarrow.Table`, in input order. Its columns
    are the chunks' arrays, not copied into one (`concat_tables` without promotion)."""
    pa = _import_pyarrow()
    tables = list(_batches(job_id, filter, with_quality))
    schema = _unified(pa, tables)
    if not tables:
        return schema.empty_table()
    for i, table in enumerate(tables):
        if not table.schema.equals(schema):
            tables[i] = _conform(pa, table, schema)
    return pa.concat_tables(tables)


def to_pandas(job_id: str, filter: str = "completed", with_quality: bool = False) -> Any:
    """The records as a `pandas.DataFrame` (`pip install 'starfish-datagen[pandas]'`)."""
    try:
        import pandas  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        raise DataFileError(
            "to_pandas needs pandas: pip install 'starfish-datagen[pandas]'"
        ) from None
    return to_arrow(job_id, filter, with_quality).to_pandas()


def to_dataset(job_id: str, filter: str = "completed", with_quality: bool = False) -> Any:
    """The records as a Hugging Face `datasets.Dataset` over the Arrow table (no copy)."""
    try:
        import datasets  # type: ignore[import-untyped]
    except ImportError:
        raise DataFileError(
            "to_dataset needs datasets: pip install 'starfish-datagen[hf]'"
        ) from None
    return datasets.Dataset(to_arrow(job_id, filter, with_quality))


# Hugging Face Hub layout --------------------------------------------------------------------


def export_hf(
    job_id: str,
    folder: str | os.PathLike[str],
    filter: str = "completed",
    with_quality: bool = False,
    shard_bytes: int = SHARD_BYTES,
) -> dict[str, Any]:
    """Write `folder/data/train-0000N-of-0000M.parquet` and a `README.md` dataset card, the
    layout `datasets.load_dataset(folder)` and `huggingface-cli upload` take as it is.

    Two passes over storage: the first finds the schema every shard shares, the second writes
    shards of at most about `shard_bytes` of Arrow data each. Returns rows, shards, bytes."""
    pa = _import_pyarrow()
    import pyarrow.parquet as pq

    from starfish import jobs

    info = jobs.load_job(job_id)
    schema = None
    for table in _batches(info.job_id, filter, with_quality):
        schema = table.schema if schema is None else _unify(pa, schema, table.schema)
    schema = schema if schema is not None else pa.schema([])
    root = Path(folder)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    for old in data.glob("train-*.parquet"):
        old.unlink()  # a folder exported before holds no stale shard of another count
    parts: list[Path] = []
    writer: Any = None
    size = rows = total_bytes = 0

    def close() -> None:
        nonlocal writer
        if writer is not None:
            writer.close()
            writer = None

    try:
        for table in _batches(info.job_id, filter, with_quality):
            table = _conform(pa, table, schema)
            if writer is None or size >= shard_bytes:
                close()
                parts.append(data / f".part-{len(parts):05d}.parquet")
                writer = pq.ParquetWriter(parts[-1], schema)
                size = 0
            writer.write_table(table)
            size += table.nbytes
            total_bytes += table.nbytes
            rows += table.num_rows
        if not parts:  # no records: one empty shard keeps the features
            parts.append(data / ".part-00000.parquet")
            pq.write_table(schema.empty_table(), parts[-1])
    finally:
        close()
    for i, part in enumerate(parts):
        part.rename(data / f"train-{i:05d}-of-{len(parts):05d}.parquet")
    download = sum(p.stat().st_size for p in data.glob("train-*.parquet"))
    card = dataset_card(info, schema, rows, total_bytes, download, filter)
    (root / "README.md").write_text(card, encoding="utf-8")
    return {"rows": rows, "shards": len(parts), "bytes": download}


def _dtype(kind: Any) -> Any:
    """An Arrow type as the Hub's YAML writes a feature: dtype, list or struct."""
    pa = _import_pyarrow()
    if pa.types.is_struct(kind):
        return {"struct": [{"name": f.name, **_feature(f.type)} for f in kind]}
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        inner = _feature(kind.value_type)
        return {"list": inner["dtype"] if set(inner) == {"dtype"} else inner}
    names = {"double": "float64", "float": "float32", "halffloat": "float16"}
    return {"dtype": names.get(str(kind), str(kind))}


def _feature(kind: Any) -> dict[str, Any]:
    found = _dtype(kind)
    return found if isinstance(found, dict) else {"dtype": found}


def _size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")]
    bounds += [(1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
    for bound, label in bounds:
        if n < bound:
            return label
    return "n>100M" if n >= 1_000_000_000 else "100M<n<1B"


_SAFE_CONFIG = ("max_concurrency", "target_count", "task_runner_timeout", "dead_queue_threshold")


def dataset_card(info: Any, schema: Any, rows: int, nbytes: int, download: int, filter: str) -> str:
    """The README.md: YAML metadata the Hub reads, then how the data was made, from what the
    job stored. Never a key, a base URL (a private server's address) or a path."""
    from starfish._version import __version__
    from starfish.quality import summary

    features = [{"name": f.name, **_feature(f.type)} for f in schema]
    meta = {
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}
        ],
        "dataset_info": {
            "features": features,
            "splits": [{"name": "train", "num_bytes": nbytes, "num_examples": rows}],
            "download_size": download,
            "dataset_size": nbytes,
        },
        "size_categories": [_size_category(rows)],
        "tags": ["synthetic", "starfish"],
    }
    made = info.made_with or {}
    lines = ["---", *_yaml(meta), "---", "", f"# {info.name or 'Starfish job'}", ""]
    lines.append(
        f"Synthetic data made with [Starfish](https://pypi.org/project/starfish-datagen/) "
        f"{__version__}: the {filter} records of one job, {rows:,} rows."
    )
    lines += ["", "## How it was made", ""]
    if made.get("model_name"):
        lines.append(f"- model: `{made['model_name']}`")
    else:
        lines.append(f"- function: `{info.name}`")
    if made.get("prompt"):
        lines += ["- prompt template:", "", "```text", str(made["prompt"]), "```", ""]
    if made.get("output_schema"):
        lines.append(f"- output schema: `{json.dumps(made['output_schema'])}`")
    if made.get("structured_output"):
        lines.append(f"- structured output: `{made['structured_output']}`")
    c = info.counts
    lines.append(
        f"- inputs: {info.num_inputs:,}; completed {c['completed']:,}, failed attempts "
        f"{c['failed']:,}, filtered {c['filtered']:,}, duplicate {c['duplicate']:,}, "
        f"dead {c['dead']:,}"
    )
    settings = {k: info.config[k] for k in _SAFE_CONFIG if info.config.get(k) is not None}
    if settings:
        lines.append("- settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    llm = info.llm or {}
    if llm:
        lines.append(
            f"- model calls: {llm.get('requests', 0):,} requests, "
            f"{llm.get('prompt_tokens', 0):,} prompt and {llm.get('completion_tokens', 0):,} "
            "completion tokens"
        )
        cost = llm.get("cost_usd")
        lines.append(f"- cost: {'unknown' if cost is None else f'${cost:,.4f}'}")
    quality = summary(info.job_id)
    if quality is not None:
        d = quality["duplicates"]
        lines.append(
            f"- quality: duplicates exact {d['exact']:,}, near {d['near']:,}, "
            f"semantic {d['semantic']:,}; judged {quality['judged']:,}"
            + (f", mean score {quality['mean_score']}" if quality["judged"] else "")
        )
    lines += ["", f"Starfish version: {__version__}", ""]
    return "\n".join(lines)


def _yaml(value: Any, indent: int = 0) -> list[str]:
    """A small YAML writer for the card's metadata (dicts, lists, scalars), block style."""
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                out.append(f"{pad}{key}:")
                out += _yaml(item, indent + 2)
            else:
                out.append(f"{pad}{key}: {_scalar(item)}")
    else:
        for item in value:
            if isinstance(item, (dict, list)) and item:
                inner = _yaml(item, indent + 2)
                out.append(f"{pad}- {inner[0].lstrip()}")
                out += inner[1:]
            else:
                out.append(f"{pad}- {_scalar(item)}")
    return out


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return str(value)
    if value in ({}, []):
        return json.dumps(value)
    return json.dumps(str(value))  # a JSON string is a valid YAML string
