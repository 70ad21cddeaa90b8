"""Output schemas: the list form or a pydantic model -> one validator and one JSON schema.

The server is asked for an object `{"records": [...]}` (providers' structured modes need an
object at the top), and the answer is parsed tolerantly: code fences, text around the JSON, a
bare list, a single record, or an object holding the list under another key.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starfish.llm.errors import LLMConfigError

_TYPES: dict[str, str] = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "list": "array",
    "dict": "object",
}
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def _field_schema(field: dict[str, Any], where: str) -> tuple[dict[str, Any], bool]:
    if not isinstance(field, dict) or not isinstance(field.get("name"), str):
        raise LLMConfigError(
            f"output_schema{where}: each field must be a dict with a 'name' and a 'type', "
            f"not {field!r}"
        )
    kind = field.get("type", "str")
    if kind not in _TYPES:
        raise LLMConfigError(
            f"output_schema{where}: field {field['name']!r} has type {kind!r}; use one of "
            f"{', '.join(_TYPES)}."
        )
    schema: dict[str, Any] = {"type": _TYPES[kind]}
    if field.get("description"):
        schema["description"] = str(field["description"])
    props = field.get("properties")
    if props is not None:
        nested = _object_schema(props, f"{where}.{field['name']}")
        if kind == "dict":
            schema = {**schema, **nested}
        elif kind == "list":
            schema["items"] = nested
        else:
            raise LLMConfigError(
                f"output_schema{where}: field {field['name']!r} has 'properties' but type "
                f"{kind!r}; only dict and list fields can have properties."
            )
    elif kind == "list":
        schema["items"] = {}
    return schema, bool(field.get("required", True))


def _object_schema(fields: list[dict[str, Any]], where: str = "") -> dict[str, Any]:
    if not isinstance(fields, list) or not fields:
        raise LLMConfigError(
            f"output_schema{where} must be a non-empty list of fields like "
            "{'name': 'question', 'type': 'str'}, or a pydantic model class."
        )
    props: dict[str, Any] = {}
    for field in fields:
        sub, required = _field_schema(field, where)
        if field["name"] in props:
            raise LLMConfigError(
                f"output_schema{where}: field {field['name']!r} is listed twice; give each "
                "field once."
            )
        if not field["name"]:
            raise LLMConfigError(f"output_schema{where}: a field name cannot be empty.")
        if not required:
            sub = {**sub, "type": [sub["type"], "null"]}
        props[field["name"]] = sub
    # Every field listed as required (optional ones accept null): what strict mode demands.
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


def _is_strict_ready(schema: dict[str, Any]) -> bool:
    """OpenAI's strict mode wants every object closed; open `dict`/`list` fields are not."""
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if "object" in kinds:
        if "properties" not in schema:
            return False
        return all(_is_strict_ready(s) for s in schema["properties"].values())
    if "array" in kinds:
        return bool(schema.get("items")) and _is_strict_ready(schema["items"])
    return True


class OutputSchema:
    """Validates records and describes them to the server."""

    def __init__(self, spec: Any) -> None:
        import pydantic

        self.model: type[pydantic.BaseModel]
        if isinstance(spec, type) and issubclass(spec, pydantic.BaseModel):
            self.model = spec
            record = spec.model_json_schema()
            self.strict = False
        else:
            record = _object_schema(spec)
            self.model = _model_from_schema("Record", record)
            self.strict = _is_strict_ready(record)
        defs = record.pop("$defs", None)
        # At least one record: an empty list is an answer that says nothing, so it is re-asked.
        self.json_schema: dict[str, Any] = {
            "type": "object",
            "properties": {"records": {"type": "array", "items": record, "minItems": 1}},
            "required": ["records"],
            "additionalProperties": False,
        }
        if defs:
            self.json_schema["$defs"] = defs
        self._adapter = pydantic.TypeAdapter(list[self.model])  # type: ignore[name-defined]

    def response_format(self) -> dict[str, Any]:
        return {
            "type": "json_schema",
            "json_schema": {"name": "records", "schema": self.json_schema, "strict": self.strict},
        }

    def instructions(self) -> str:
        """The schema written into the prompt (json_object and prompt modes)."""
        return (
            'Answer with only a JSON object of the form {"records": [...]} '
            "matching this JSON schema:\n" + json.dumps(self.json_schema)
        )

    def parse(self, content: str | None) -> list[dict[str, Any]]:
        """The validated records in `content`; ValueError saying what is wrong otherwise."""
        import pydantic

        value = extract_json(content)
        records = _records_of(value)
        if not records:
            raise ValueError("the answer holds no records; expected at least one")
        try:
            models = self._adapter.validate_python(records)
        except pydantic.ValidationError as exc:
            raise ValueError(_short_errors(exc)) from None
        return [m.model_dump(mode="json", by_alias=True) for m in models]


def extract_json(content: str | None) -> Any:
    """The first JSON value in `content`, inside code fences or surrounded by text."""
    if not content or not content.strip():
        raise ValueError("the answer is empty; expected JSON")
    text = content.strip()
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError as first:
        decoder = json.JSONDecoder()
        for i, ch in enumerate(text):
            if ch in "{[":
                try:
                    return decoder.raw_decode(text, i)[0]
                except json.JSONDecodeError:
                    continue
        raise ValueError(
            f"the answer is not valid JSON ({first.msg} at char {first.pos})"
        ) from None


def _records_of(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        if isinstance(value.get("records"), list):
            records: list[Any] = value["records"]
            return records
        lists = [v for v in value.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
        if len(value) == 1 and len(lists) == 1:
            return lists[0]
        return [value]
    raise ValueError(f"expected a JSON object or list, got {type(value).__name__}")


def _short_errors(exc: Any) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"record {loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _model_from_schema(name: str, schema: dict[str, Any]) -> Any:
    """A pydantic model for an object schema built by `_object_schema`.

    Each field is an alias of a neutral attribute name: any JSON key round-trips, even one
    pydantic treats specially as an attribute (`_x` would be private and dropped,
    `model_config` is reserved)."""
    import pydantic

    fields: dict[str, Any] = {}
    for i, (field, sub) in enumerate(schema["properties"].items()):
        kind = sub["type"]
        optional = isinstance(kind, list)
        base = kind[0] if optional else kind
        py: Any
        if base == "object" and "properties" in sub:
            py = _model_from_schema(f"{name}_{field}", sub)
        elif base == "array" and "properties" in sub.get("items", {}):
            py = list[_model_from_schema(f"{name}_{field}", sub["items"])]  # type: ignore[misc]
        else:
            py = {
                "string": str,
                "integer": int,
                "number": float,
                "boolean": bool,
                "array": list,
                "object": dict,
            }[base]
        default = None if optional else ...
        fields[f"f{i}"] = (py | None if optional else py, pydantic.Field(default, alias=field))
    return pydantic.create_model(name, **fields)
