"""Prompts are Jinja2 templates with StrictUndefined: a missing variable is an error that
names it, raised before any request is sent."""

from __future__ import annotations

from typing import Any

from starfish.llm.errors import LLMConfigError, PromptError


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

    def render(self, values: dict[str, Any]) -> str:
        import jinja2

        missing = sorted(self.variables.difference(values))
        if missing:
            raise PromptError(
                f"the prompt needs {', '.join(missing)} but run() was not given "
                f"{'it' if len(missing) == 1 else 'them'}: pass "
                f"{', '.join(m + '=...' for m in missing)}."
            )
        try:
            return self._template.render(values)
        except jinja2.UndefinedError as exc:  # e.g. a missing attribute of a given variable
            raise PromptError(f"the prompt cannot be rendered: {exc}") from None
