"""The streaming display without a kernel: a fake frontend applies display/update/clear messages, a fake
clock sets the token rate. Checks: the final outputs equal a one-shot render, blocks are cut where
Markdown renders the same, bytes per character stay bounded and flat at 50 and 500 tok/s in every
format, no update without new text, and the lines under an answer."""
from __future__ import annotations

import json
import random

import mistune
import pytest

from jupyter_llm.blocks import Segmenter
from jupyter_llm.errors import LLMError
from jupyter_llm.events import ReasoningDelta, Response, TextDelta, Usage
from jupyter_llm.footer import end_bundle, footer_text, status_lines
from jupyter_llm.render import bundle
from jupyter_llm.stream_display import OVERHEAD, StreamRenderer

ENVELOPE = OVERHEAD  # bytes an iopub message carries besides its data (header, parent header, ids)


class Frontend:
    """What a notebook shows: outputs in order; counts message bytes as iopub would carry them."""

    def __init__(self):
        self.outputs: list[dict] = []
        self.by_id: dict[int, int] = {}
        self.messages = 0
        self.bytes = 0
        self.pending_clear = False
        self.clears = 0

    def _send(self, data) -> None:
        self.messages += 1
        self.bytes += ENVELOPE + len(json.dumps({"data": data, "metadata": {}, "transient": {"display_id": "x" * 32}}))

    def display(self, data, raw=True, display_id=True):
        if self.pending_clear:
            self.outputs, self.by_id, self.pending_clear = [], {}, False
        self._send(data)
        self.outputs.append(dict(data))
        handle = Handle(self, len(self.outputs) - 1)
        return handle

    def clear_output(self, wait=False):
        self.messages += 1
        self.clears += 1
        self.bytes += ENVELOPE
        if wait:
            self.pending_clear = True
        else:
            self.outputs = []


class Handle:
    def __init__(self, fe: Frontend, index: int):
        self.fe, self.index = fe, index

    def update(self, data, raw=True):
        self.fe._send(data)
        if not self.fe.pending_clear or self.index < len(self.fe.outputs):
            self.fe.outputs[self.index] = dict(data)


@pytest.fixture
def fe(monkeypatch):
    import IPython.display as disp
    f = Frontend()
    monkeypatch.setattr(disp, "display", f.display)
    monkeypatch.setattr(disp, "clear_output", f.clear_output)
    return f


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


WORDS = ("the lighthouse keeper watched sea storm lamp night ship coast rock wave light tower harbour bell fog "
         "signal beacon island sailor shore wind tide lantern glass oil chart compass north quiet long old").split()


def markdown_answer(tokens: int, seed: int = 0) -> str:
    """LLM-like Markdown: headings, paragraphs, tight and loose lists, numbered lists, code fences, tables."""
    rng = random.Random(seed)
    out, n = [], 0
    while n < tokens:
        kind = rng.choice(["p", "p", "p", "ul", "ol_loose", "code", "h", "table", "long_p"])
        if kind in ("p", "long_p"):
            k = rng.randint(30, 80) * (4 if kind == "long_p" else 1)
            words = [rng.choice(WORDS) for _ in range(k)]
            out.append(" ".join(words).capitalize() + ".")
        elif kind == "ul":
            k = rng.randint(2, 6)
            out.append("\n".join(f"- {' '.join(rng.choice(WORDS) for _ in range(8))}" for _ in range(k)))
        elif kind == "ol_loose":
            k = rng.randint(2, 5)
            out.append("\n\n".join(f"{i + 1}. **{rng.choice(WORDS)}**: {' '.join(rng.choice(WORDS) for _ in range(20))}"
                                   for i in range(k)))
        elif kind == "code":
            k = rng.randint(3, 60)
            lines = [f"    x_{i} = {rng.randint(0, 99)}  # {rng.choice(WORDS)}" if i % 3 else "" for i in range(k)]
            out.append("```python\ndef f():\n" + "\n".join(lines) + "\n```")
        elif kind == "h":
            out.append("#" * rng.randint(1, 3) + " " + " ".join(rng.choice(WORDS) for _ in range(4)).title())
        else:
            rows = [f"| {rng.choice(WORDS)} | {rng.randint(0, 999)} |" for _ in range(rng.randint(2, 8))]
            out.append("| name | value |\n|---|---|\n" + "\n".join(rows))
        n = sum(len(p.split()) for p in out)
    return "\n\n".join(out) + "\n"


def tokens_of(text: str, seed: int = 1) -> list[str]:
    """Split into ~4-character tokens, the way models stream (whitespace kept)."""
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(text):
        k = rng.randint(1, 7)
        out.append(text[i:i + k])
        i += k
    return out


def stream(fe: Frontend, fmt: str, text: str, rate: float, **kw) -> StreamRenderer:
    clock = Clock()
    r = StreamRenderer(fmt, target="emu:m", rich=True, clock=clock, **kw)
    r.start()
    toks = tokens_of(text)
    for t in toks:
        clock.t += 1.0 / rate
        r(TextDelta(t))
    resp = Response(text=text, target="emu:m", answered_by="emu:m", usage=Usage(10, len(toks)), latency=clock.t,
                    ttft=0.1, cost=0.0, finish_reason="stop")
    if fmt == "json":
        resp.value = json.loads(text)
    r.finish(resp)
    return r


def answer_outputs(fe: Frontend) -> list[dict]:
    return [o for o in fe.outputs if "jupyter-llm-footer" not in o.get("text/html", "")]


def render(md: str) -> str:
    return mistune.html(md)


# ---- one-shot equality ----

@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rate", [50, 500])
def test_markdown_blocks_render_like_one_shot(fe, seed, rate):
    text = markdown_answer(1500, seed)
    r = stream(fe, "markdown", text, rate)
    outs = answer_outputs(fe)
    if not r.dirty:
        assert fe.clears == 0 and len(outs) == r.blocks + 1 >= 2
        assert "".join(o["text/plain"] for o in outs) == text
        # each block rendered alone, concatenated, equals the whole rendered at once
        assert "".join(render(o["text/markdown"]) for o in outs) == render(text)
    else:
        assert outs == [bundle("markdown", text)]


def test_markdown_with_a_long_code_block_ends_in_one_render(fe):
    text = "Intro paragraph.\n\n```python\n" + "\n".join(f"x{i} = {i}" for i in range(400)) + "\n```\n\nDone.\n"
    r = stream(fe, "markdown", text, 500)
    assert r.dirty and r.blocks >= 2
    # while it streamed, every block inside the fence rendered as code (the fence reopened)
    assert answer_outputs(fe) == [bundle("markdown", text)]


@pytest.mark.parametrize("fmt", ["code", "json", "html"])
def test_other_formats_end_in_their_one_shot_render(fe, fmt):
    if fmt == "json":
        text = json.dumps([{"id": i, "name": f"item {i}", "tags": ["a", "b"]} for i in range(150)], indent=2)
    elif fmt == "html":
        text = "<table>\n" + "\n".join(f"<tr><td>{i}</td><td>row {i}</td></tr>" for i in range(200)) + "\n</table>"
    else:
        text = "Here you go:\n\n```python\n" + "\n".join(f"print({i})" for i in range(300)) + "\n```\n"
    stream(fe, fmt, text, 500)
    want = {"text/plain": ""} if fmt == "json" else bundle(fmt, text)
    assert answer_outputs(fe) == ([] if fmt == "json" else [want])


def test_text_blocks_join_to_the_answer(fe):
    text = "\n".join(" ".join(random.Random(i).choice(WORDS) for _ in range(12)) for i in range(300))
    r = stream(fe, "text", text, 500)
    outs = answer_outputs(fe)
    assert fe.clears == 0 and r.blocks >= 3
    assert "\n".join(o["text/plain"] for o in outs) == text
    assert all(not o["text/plain"].startswith("\n") and not o["text/plain"].endswith("\n") for o in outs[:-1])


# ---- bytes ----

def _text_for(fmt: str, tokens: int) -> str:
    if fmt == "markdown":
        return markdown_answer(tokens, tokens)
    rng = random.Random(tokens)
    if fmt == "code":
        lines = [f"    value_{i} = compute({rng.randint(0, 999)}, '{rng.choice(WORDS)}')" for i in range(tokens // 6)]
        return "```python\ndef main():\n" + "\n".join(lines) + "\n```\n"
    if fmt == "json":
        return json.dumps([{"id": i, "word": rng.choice(WORDS)} for i in range(tokens // 8)], indent=2)
    if fmt == "html":
        return "<ul>\n" + "\n".join(f"<li>{rng.choice(WORDS)} {i}</li>" for i in range(tokens // 5)) + "\n</ul>"
    # text without blank lines, wrapped at 100 characters
    words = " ".join(rng.choice(WORDS) for _ in range(tokens))
    return "\n".join(words[i:i + 100] for i in range(0, len(words), 100))


@pytest.mark.parametrize("fmt", ["markdown", "text", "code", "json", "html"])
@pytest.mark.parametrize("rate", [50, 500])
def test_bytes_per_char_bounded_and_flat(monkeypatch, fmt, rate):
    import IPython.display as disp
    per_char = {}
    for tokens in (1000, 4000):
        fe = Frontend()
        monkeypatch.setattr(disp, "display", fe.display)
        monkeypatch.setattr(disp, "clear_output", fe.clear_output)
        text = _text_for(fmt, tokens)
        stream(fe, fmt, text, rate)
        per_char[tokens] = fe.bytes / len(text)
    assert per_char[4000] <= 20 and per_char[1000] <= 20, per_char
    assert per_char[4000] <= per_char[1000] * 1.2, per_char


def test_no_update_without_new_text_and_first_text_at_once(fe):
    clock = Clock()
    r = StreamRenderer("markdown", target="t", rich=True, clock=clock)
    r.start()
    r(TextDelta("Hello"))
    assert fe.outputs[0]["text/markdown"] == "Hello"  # the placeholder is replaced by the first text at once
    sent = fe.messages
    for _ in range(50):
        clock.t += 1.0
        r(TextDelta(""))
        r(Usage(1, 1))
    assert fe.messages == sent
    clock.t += 0.6
    r(TextDelta(" world"))  # little new text, but it has waited: shown
    assert fe.outputs[0]["text/markdown"] == "Hello world"


# ---- reasoning and the lines under the answer ----

def test_reasoning_collapsed_above_the_answer(fe):
    clock = Clock()
    r = StreamRenderer("markdown", target="t", rich=True, clock=clock)
    r.start()
    for i in range(20):
        clock.t += 0.1
        r(ReasoningDelta(f"step {i}. "))
    assert "thinking" in fe.outputs[0]["text/plain"]
    r(TextDelta("The answer."))
    r.finish(Response(text="The answer.", target="t", answered_by="t", finish_reason="stop"))
    assert fe.outputs[0]["text/html"].startswith("<details") and "step 19." in fe.outputs[0]["text/html"]
    assert fe.outputs[1]["text/markdown"] == "The answer."


def test_footer_and_status_lines():
    r = Response(text="x" * 42, target="openai:gpt-4o", answered_by="local:8081", usage=Usage(5, 120), latency=3.0,
                 ttft=1.0, cost=0.0123, finish_reason="length", truncated=True, max_tokens=120)
    assert footer_text(r) == "local:8081 · 120 tokens · 3.0 s · 60.0 tok/s · $0.0123 · fallback from openai:gpt-4o"
    assert status_lines(r) == [("warn", "stopped at max_tokens (120): %llm continue carries on")]
    stopped = Response(text="y" * 1234, finish_reason="interrupted", incomplete=True)
    assert status_lines(stopped) == [("note", "stopped: 1,234 characters kept")]
    cached = Response(text="z", target="t", answered_by="t", cached=True, usage=Usage(1, 7), latency=0.0)
    assert footer_text(cached) == "t · 7 tokens · $0 · cached"
    cut = Response(text="abc", incomplete=True, error=LLMError("NETWORK_ERROR", "dropped"), finish_reason="error")
    assert status_lines(cut)[0][0] == "warn" and "NETWORK_ERROR" in status_lines(cut)[0][1]
    assert end_bundle(Response(text="ok", finish_reason="stop"), footer=False) is None
    assert "stopped at max_tokens" in end_bundle(r, footer=False)["text/plain"]
    assert footer_text(Response(text="a", target="u:m", answered_by="u:m", usage=Usage(1, 3))).endswith("price unknown")


def test_segmenter_never_cuts_before_a_list_continuation():
    seg = Segmenter("markdown", soft=10, hard=10_000)
    text = "1. first item with words\n\n2. second item with more words\n\n   indented continuation here\n"
    assert seg.find(text) is None
    text2 = text + "\nA paragraph after the list ends here.\n"
    cut = seg.find(text2)
    assert cut is not None and cut.clean and text2[cut.offset:].startswith("A paragraph")


def test_segmenter_paragraphs_indented_one_space_cut_clean_outside_lists():
    seg = Segmenter("markdown", soft=10, hard=10_000)
    text = "word0 word1 word2\n\n word3 word4 word5 word6\n\n word7 and more words here\n"
    cut = seg.find(text)
    assert cut is not None and cut.clean
    assert mistune.html(text[:cut.offset]) + mistune.html(text[cut.offset:]) == mistune.html(text)
    listed = "- item one here\n\n  continued item paragraph\n\n  more of the same item\n"
    assert Segmenter("markdown", soft=10, hard=10_000).find(listed) is None
