"""The plain-template fast path renders exactly what Jinja2 renders."""

from __future__ import annotations

import jinja2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from starfish.llm.prompt import Prompt

NAMES = st.sampled_from(["topic", "n", "x_1"])
TEXT = st.text(max_size=20)
VALUES = st.one_of(
    st.text(max_size=10),
    st.integers(),
    st.floats(allow_nan=False),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
)


def jinja(template: str, values: dict) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    return env.from_string(template).render(values)


@given(
    pieces=st.lists(st.tuples(TEXT, NAMES, st.sampled_from(["", " ", "  "])), max_size=5),
    tail=TEXT,
    newline=st.sampled_from(["", "\n", "\n\n"]),
    topic=VALUES,
    n=VALUES,
    x=VALUES,
)
def test_fast_path_matches_jinja(pieces, tail, newline, topic, n, x):
    template = "".join(f"{text}{{{{{sp}{name}{sp}}}}}" for text, name, sp in pieces)
    template += tail + newline
    if not template.strip():
        template = "x" + template
    values = {"topic": topic, "n": n, "x_1": x}
    try:
        expected = jinja(template, values)
    except jinja2.TemplateError:
        return  # not a template (stray braces): Prompt refuses it, tested elsewhere
    prompt = Prompt(template)
    if not any(c in text for text, _, _ in pieces for c in "{}%#") and not any(
        c in tail for c in "{}%#"
    ):
        assert prompt._parts is not None  # plain templates take the fast path
    assert prompt.render(values) == expected


@pytest.mark.parametrize(
    "template",
    ["{% for i in range(n) %}{{ i }}{% endfor %}", "{{ topic | upper }}", "{# c #}{{ topic }}"],
)
def test_other_templates_use_jinja(template):
    prompt = Prompt(template)
    assert prompt._parts is None
    values = {"n": 2, "topic": "ab"}
    assert prompt.render(values) == jinja(template, values)
