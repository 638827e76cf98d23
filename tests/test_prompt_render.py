"""Prompt interpolation and the pieces of the stream renderer that need no kernel."""
from __future__ import annotations

import types

import pytest

from jupyter_llm.errors import LLMError
from jupyter_llm.prompt import interpolate
from jupyter_llm.render import StreamRenderer, _paragraph_break, bundle, extract_code, parse_json
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


def test_paragraph_break_skips_code_fences():
    text = "para one\n\n```\ncode\n\nmore code\n```\n\npara two"
    cut = _paragraph_break(text, 0)
    assert text[:cut].endswith("```\n\n")
    assert _paragraph_break("```\na\n\nb", 0) is None


class FakeHandle:
    def __init__(self, log, data):
        self.log = log
        self.log.append(("display", data))

    def update(self, data, raw=True):
        self.log.append(("update", data))


def test_renderer_bounded_updates_and_linear_bytes(monkeypatch):
    import IPython.display as disp
    log: list = []
    monkeypatch.setattr(disp, "display", lambda data, raw=True, display_id=True: FakeHandle(log, data))
    monkeypatch.setattr(disp, "clear_output", lambda wait=False: log.append(("clear", None)))
    r = StreamRenderer("markdown", target="t", interval=0.0, block_chars=500, rich=True)
    r.start()
    words = [f"word{i} " + ("\n\n" if i % 20 == 19 else "") for i in range(2000)]
    for w in words:
        r(TextDelta(w))
    r.finish(Response(text="".join(words)))
    sizes = [len(d.get("text/plain", "")) for kind, d in log if kind == "update"]
    # every streaming update carries at most one block plus a paragraph, never the whole answer
    assert max(sizes[:-1]) < 1500 < len("".join(words))
    assert ("clear", None) in log and log[-1][1]["text/markdown"] == "".join(words)


def test_renderer_throttles(monkeypatch):
    import IPython.display as disp
    log: list = []
    monkeypatch.setattr(disp, "display", lambda data, raw=True, display_id=True: FakeHandle(log, data))
    r = StreamRenderer("markdown", target="t", interval=10.0, rich=True)
    for i in range(500):
        r(TextDelta(f"w{i} "))
    r.finish(Response(text="x"))
    assert len(log) <= 4  # first text at once, then nothing until the final render


def test_renderer_terminal_prints_as_it_arrives(capsys):
    r = StreamRenderer("markdown", rich=False)
    r(TextDelta("hello "))
    assert capsys.readouterr().out == "hello "
    r(TextDelta("world"))
    r.finish(Response(text="hello world", incomplete=True, finish_reason="interrupted"))
    out = capsys.readouterr().out
    assert out.startswith("world\n") and "incomplete" in out
