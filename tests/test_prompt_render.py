"""Prompt interpolation and the pieces of the stream renderer that need no kernel."""
from __future__ import annotations

import types

import pytest

from jupyter_llm.errors import LLMError
from jupyter_llm.prompt import interpolate
from jupyter_llm.render import bundle, extract_code, parse_json
from jupyter_llm.events import Response, TextDelta

NS = {"df": types.SimpleNamespace(shape=(120, 4)), "d": {"k": "v", 3: "three"}, "x": 3.14159, "name": "Ada"}


@pytest.mark.parametrize("template,expected", [
    ("rows: {df.shape}", "rows: (120, 4)"),
    ("{df.shape[0]} rows", "120 rows"),
    ("{d[k]} {d[3]}", "v three"),
    ("{x:.2f} {name!r}", "3.14 'Ada'"),
    ("literal {{name}}", "literal {name}"),
    ('json {"a": 1} stays', 'json {"a": 1} stays'),
    ("code { return 1; } and {} and { name }", "code { return 1; } and {} and { name }"),
    ("f-string {name.upper()}", "f-string {name.upper()}"),
])
def test_interpolate(template, expected):
    assert interpolate(template, NS) == expected


@pytest.mark.parametrize("template,fragment", [
    ("hi {nobody}", "unknown name {nobody}"),
    ("{d[zz]}", "no key"),
    ("{df.nope}", "nope"),
    ("{x:%%}", "x"),
])
def test_interpolate_errors(template, fragment):
    with pytest.raises(LLMError) as err:
        interpolate(template, NS)
    assert err.value.code == "BAD_ARGUMENT" and fragment in err.value.message


def test_extract_code_and_json():
    text = "Here:\n```python\nprint(1)\n```\nand\n```\nprint(2)\n```\n"
    assert extract_code(text) == ("python", "print(1)\n\nprint(2)")
    assert extract_code("x = 1") == ("python", "x = 1")
    assert parse_json('Sure!\n```json\n{"a": [1, 2]}\n```') == {"a": [1, 2]}
    assert parse_json('The answer is {"b": 2} as asked.') == {"b": 2}
    with pytest.raises(ValueError):
        parse_json("no json here")


def test_bundles():
    assert bundle("markdown", "# hi")["text/markdown"] == "# hi"
    assert bundle("html", "<b>x</b>")["text/html"] == "<b>x</b>"
    assert "text/html" not in bundle("html", "<b>x", live=True)
    assert bundle("code", "```py\nx\n```")["text/markdown"] == "```py\nx\n```"
    assert bundle("text", "t") == {"text/plain": "t"}
