"""Prompts are Jinja2 templates with StrictUndefined: a missing variable is an error that
names it, raised before any request is sent.

A template that is only text and `{{ name }}` substitutions (most prompts) is rendered by
joining its parts, as Jinja2 would render it, without building a Jinja2 context per call.
"""

from __future__ import annotations

import re
from typing import Any

from starfish.llm.errors import LLMConfigError, PromptError

_PLAIN = re.compile(r"{{\s*([A-Za-z_][A-Za-z0-9_]*)\s*}}")
_NEWLINE = re.compile(r"\r\n|\r")


class Prompt:
    def __init__(self, template: str) -> None:
        import jinja2
        from jinja2 import meta

        if not isinstance(template, str) or not template.strip():
            raise LLMConfigError("prompt must be a non-empty string (a Jinja2 template)")
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
        try:
            self.variables = frozenset(meta.find_undeclared_variables(env.parse(template)))
            self._template = env.from_string(template)
        except jinja2.TemplateSyntaxError as exc:
            raise LLMConfigError(f"the prompt is not a valid Jinja2 template: {exc}") from None
        self._parts: list[str] | None = None
        parts = _PLAIN.split(template)
        texts = parts[0::2]
        if not any(mark in t for t in texts for mark in ("{", "}", "%}", "#}")):
            # As Jinja2 does: newlines become "\n", and one trailing newline is dropped.
            parts[0::2] = [_NEWLINE.sub("\n", t) for t in texts]
            if parts[-1].endswith("\n"):
                parts[-1] = parts[-1][:-1]
            self._parts = parts

    def render(self, values: dict[str, Any]) -> str:
        import jinja2

        missing = sorted(self.variables.difference(values))
        if missing:
            raise PromptError(
                f"the prompt needs {', '.join(missing)} but run() was not given "
                f"{'it' if len(missing) == 1 else 'them'}: pass "
                f"{', '.join(m + '=...' for m in missing)}."
            )
        parts = self._parts
        if parts is not None:
            out = parts.copy()
            for i in range(1, len(out), 2):
                out[i] = str(values[out[i]])
            return "".join(out)
        try:
            return self._template.render(values)
        except jinja2.UndefinedError as exc:  # e.g. a missing attribute of a given variable
            raise PromptError(f"the prompt cannot be rendered: {exc}") from None
