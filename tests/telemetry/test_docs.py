"""docs/telemetry.md lists exactly the fields the code lets leave the machine."""

from __future__ import annotations

import re
from pathlib import Path

from starfish.telemetry.schema import (
    CONFIG_FIELDS,
    CONTEXT_FIELDS,
    COUNT_FIELDS,
    ENVELOPE_FIELDS,
    EVENTS,
    JOB_EVENT,
    LLM_COUNT_FIELDS,
    SDK_FIELDS,
    WIRE_FIELDS,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "telemetry.md"
ROW = re.compile(r"^\| `([^`]+)` \| ([^|]+) \| ([^|]+) \|$")


def _documented() -> dict[str, str]:
    text = DOC.read_text()
    section = text.split("## Every field that can leave the machine", 1)[1]
    rows = {}
    for line in section.splitlines():
        match = ROW.match(line.strip())
        if match:
            rows[match.group(1)] = match.group(2).strip()
    return rows


def _code_allow_list() -> set[str]:
    """Every field the sanitizers and the wire can emit, derived from the code's own lists."""
    nested = {
        "config": CONFIG_FIELDS,
        "count_summary": COUNT_FIELDS,
        "llm_summary": LLM_COUNT_FIELDS,
    }
    props = {f"properties.{k}" for k in EVENTS[JOB_EVENT] if k not in nested}
    for name, fields in nested.items():
        props |= {f"properties.{name}.{k}" for k in fields}
    props |= {f"properties.{k}" for k in (*CONTEXT_FIELDS, *SDK_FIELDS)}
    envelope = {k for k in ENVELOPE_FIELDS if k != "properties"}
    return props | envelope | {"api_key", "sent_at", "batch"}


def test_docs_list_exactly_the_code_allow_list() -> None:
    documented = _documented()
    assert set(documented) == _code_allow_list()
    assert set(WIRE_FIELDS) == _code_allow_list()


def test_docs_types_match_the_code() -> None:
    documented = _documented()
    assert {k: t for k, (t, _) in WIRE_FIELDS.items()} == documented


EVENT_ROW = re.compile(r"^\| `([a-z_]+)` \| ([^|]+) \|$")


def test_docs_list_exactly_the_event_names_the_schema_allows() -> None:
    section = DOC.read_text().split("## Events", 1)[1].split("\n## ", 1)[0]
    names = {m.group(1) for line in section.splitlines() if (m := EVENT_ROW.match(line.strip()))}
    assert names == set(EVENTS)
