"""The job behind `starfish generate`: one StructuredLLM call per input row.

`generate` is a module-level function, so a job's stored call spec names it by reference and
`starfish jobs resume` works in any process; the model settings travel as one broadcast input
(`llm`, a dict without the key: keys come from the environment).
"""

from __future__ import annotations

from typing import Any

from starfish.llm.errors import LLMConfigError

_built: dict[str, Any] = {}


def parse_schema(text: str) -> list[dict[str, str]]:
    """'question:str,answer:str' -> the list form of an output schema."""
    fields = []
    for part in text.split(","):
        name, _, kind = part.strip().partition(":")
        if not name.strip().isidentifier():
            raise LLMConfigError(
                f"--schema {text!r}: {part.strip()!r} is not NAME or NAME:TYPE "
                "(e.g. 'question:str,answer:str')"
            )
        fields.append({"name": name.strip(), "type": kind.strip() or "str"})
    return fields


def build(settings: dict[str, Any]) -> Any:
    """The StructuredLLM for `settings`, built once per process."""
    import json

    from starfish.llm.structured import StructuredLLM

    key = json.dumps(settings, sort_keys=True)
    llm = _built.get(key)
    if llm is None:
        llm = _built[key] = StructuredLLM(**settings)
    return llm


async def generate(llm: dict[str, Any], **row: Any) -> list[dict[str, Any]]:
    """Render the prompt with the row's columns (and the broadcast values), return the records."""
    records: list[dict[str, Any]] = (await build(llm).run(**row)).data
    return records
