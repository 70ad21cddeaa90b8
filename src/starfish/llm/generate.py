"""The job behind `starfish generate`: one StructuredLLM call per input row.

`generate` is a module-level function, so a job's stored call spec names it by reference and
`starfish jobs resume` works in any process; the model settings travel as one broadcast input
(`llm`: the StructuredLLM's settings without the key, which comes from the environment, and
which input columns to keep on each record).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starfish.llm.errors import LLMConfigError

_built: dict[str, Any] = {}

CLI_OPTION_NAMES = {
    "max_tokens": "--max-tokens",
    "structured_output": "--structured-output {}",
}
"""How the model layer's messages name its settings when the command line set them."""
INPUT_PREFIX = "input_"
"""An input column whose name a record field already uses is kept under this prefix."""


def parse_schema(text: str) -> list[dict[str, Any]]:
    """'question:str,answer:str', or the JSON list form ('[{"name": "question", ...}]') -> the
    list form of an output schema."""
    if text.lstrip().startswith("["):
        try:
            fields = json.loads(text)
        except ValueError as exc:
            raise LLMConfigError(f"--schema: the JSON list form does not parse ({exc})") from None
        if not isinstance(fields, list) or not all(isinstance(f, dict) for f in fields):
            raise LLMConfigError(
                '--schema: the JSON form is a list of fields like {"name": "question", '
                '"type": "str"}'
            )
        return fields
    parsed: list[dict[str, Any]] = []
    for part in text.split(","):
        name, _, kind = part.strip().partition(":")
        if not name.strip().isidentifier():
            raise LLMConfigError(
                f"--schema {text!r}: {part.strip()!r} is not NAME or NAME:TYPE "
                "(e.g. 'question:str,answer:str', or the JSON list form)"
            )
        parsed.append({"name": name.strip(), "type": kind.strip() or "str"})
    return parsed


def build(settings: dict[str, Any]) -> Any:
    """The StructuredLLM for `settings`, built once per process, worded for the command line."""
    from starfish.llm.structured import StructuredLLM

    key = json.dumps(settings, sort_keys=True)
    llm = _built.get(key)
    if llm is None:
        llm = _built[key] = StructuredLLM(**settings)
        llm.option_names.update(CLI_OPTION_NAMES)
    return llm


def with_input(record: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """The record after the input's columns, so each record says what it was made from."""
    kept = {(INPUT_PREFIX + k if k in record else k): v for k, v in row.items()}
    return {**kept, **record}


async def generate(llm: dict[str, Any], **row: Any) -> list[dict[str, Any]]:
    """Render the prompt with the row's columns (and the broadcast values), return the records
    with the row's input columns on each."""
    if "settings" not in llm:  # a job stored before input columns were kept
        llm = {"settings": llm, "columns": []}
    model = build(llm["settings"])
    # Identical requests of one attempt are separate samples (and separate cache entries).
    responses = await asyncio.gather(*(model.run(**row) for _ in range(llm.get("samples", 1))))
    columns = {name: row[name] for name in llm["columns"] if name in row}
    return [with_input(record, columns) for r in responses for record in r.data]
