"""Streams an answer into the cell with iopub traffic linear in its length, in every format and at every rate.

The answer is a column of append-only displays: finished blocks, each sent once when it is frozen
(`blocks.Segmenter` picks the cut: Markdown-clean boundaries, line breaks for text), and one live tail
that is the only thing ever updated. An update is sent when the new text pays for it: its cost (the
message overhead plus the live tail) may be at most `BYTES_PER_CHAR` bytes per new character, or when
new text has waited `MAX_WAIT` seconds; never more often than every `MIN_INTERVAL`, and never without
new text. Markdown and text answers keep their blocks as the final output (nothing is sent twice);
code, json and html answers, or a Markdown answer cut inside a paragraph or fence, get one final
render in place of the blocks. Under the answer: status lines and the footer (`footer`); reasoning
shows collapsed above it. In the IPython terminal the text is printed as it arrives.
"""
from __future__ import annotations

import json
import re
import sys
import time
from typing import Any, Callable

from . import footer as foot
from .blocks import HARD, SOFT, Cut, Segmenter
from .events import Attempt, Event, ReasoningDelta, Response, TextDelta
from .render import bundle

BYTES_PER_CHAR = 10    # an update may cost at most this many bytes per new character ...
OVERHEAD = 700         # ... counting ~700 bytes of iopub envelope (header, parent header, display id)
MIN_INTERVAL = 0.1     # seconds: never more than 10 updates a second
MAX_WAIT = 0.6         # seconds: new text is shown after this long even when it does not pay for itself
_SEGMENT = {"markdown": "markdown", "code": "markdown", "text": "text"}   # json, html: "lines"
_BACKTICKS = re.compile(r"`{3,}")


def _fence_for(text: str) -> str:
    """A backtick fence longer than any run of backticks in `text`."""
    longest = max((len(m) for m in _BACKTICKS.findall(text)), default=2)
    return "`" * (longest + 1)


class StreamRenderer:
    """`on_event` sink for Session.ask; call `finish(response)` once the answer is complete."""

    def __init__(self, fmt: str = "markdown", *, target: str = "", rich: bool | None = None, footer: bool = True,
                 min_interval: float = MIN_INTERVAL, max_wait: float = MAX_WAIT, soft: int = SOFT,
                 hard: int = HARD, clock: Callable[[], float] = time.monotonic):
        from .render import in_kernel
        self.fmt = fmt
        self.target = target
        self.rich = in_kernel() if rich is None else rich
        self.footer = footer
        self.min_interval = min_interval
        self.max_wait = max_wait
        self.clock = clock
        self.seg = Segmenter(_SEGMENT.get(fmt, "lines"), soft=soft, hard=hard)
        self.lead = None            # the first display: placeholder, then reasoning or the first block
        self.handles: list[Any] = []   # answer blocks, the last one live
        self.tail = ""              # text of the live block
        self.shown = 0              # characters of `tail` the frontend shows
        self.blocks = 0             # frozen blocks
        self.dirty = False          # a cut was not Markdown-clean: the end replaces the blocks
        self.open_new = False       # the last block was frozen whole: the next text opens a new display
        self.reasoning: list[str] = []
        self.reasoning_chars = 0
        self.reasoning_shown = False
        self.last_update = 0.0
        self.note = ""
        self.printed = 0
        self.updates = 0            # display messages sent (tests and benchmarks read these)
        self.bytes = 0

    # ---- display primitives ----
    def _display(self, data: dict[str, Any]):
        from IPython.display import display
        from .redact import scrub_deep   # a known secret echoed by a model is masked (redact.py)
        data = scrub_deep(data)
        self._count(data)
        return display(data, raw=True, display_id=True)

    def _update(self, handle, data: dict[str, Any]) -> None:
        from .redact import scrub_deep
        data = scrub_deep(data)
        self._count(data)
        handle.update(data, raw=True)

    def _count(self, data: dict[str, Any]) -> None:
        self.updates += 1
        self.bytes += len(json.dumps(data))

    # ---- kernel ----
    def start(self) -> None:
        """Show a placeholder at once so the user sees the request is under way."""
        if self.rich:
            self.lead = self._display(self._waiting())

    def _waiting(self) -> dict[str, Any]:
        return {"text/markdown": f"*… waiting for {self.target}*", "text/plain": f"… waiting for {self.target}"}

    def __call__(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            if event.text:
                self._text(event.text)
        elif isinstance(event, ReasoningDelta):
            self._reasoning(event.text)
        elif isinstance(event, Attempt) and (event.n > 1 or event.target != self.target):
            self.note = (f"retrying {event.target} (attempt {event.n})…" if event.n > 1
                         else f"falling back to {event.target}…")
            if self.rich and self.lead is not None and not self.handles:
                self._update(self.lead, {"text/markdown": f"*{self.note}*", "text/plain": self.note})

    def _reasoning(self, text: str) -> None:
        self.reasoning.append(text)
        self.reasoning_chars += len(text)
        if not self.rich or self.handles or self.lead is None:
            return
        now = self.clock()
        if now - self.last_update >= self.max_wait:
            self._update(self.lead, foot.thinking_bundle(self.reasoning_chars))
            self.last_update = now

    def _text(self, text: str) -> None:
        if not self.rich:
            from .redact import scrub
            sys.stdout.write(scrub(text))
            sys.stdout.flush()
            self.printed += len(text)
            return
        self.tail += text
        if not self.handles:
            self._first_block()
            return
        now = self.clock()
        if now - self.last_update < self.min_interval:
            return
        new = len(self.tail) - self.shown
        if new * BYTES_PER_CHAR < OVERHEAD + len(self.tail) and now - self.last_update < self.max_wait:
            return
        self._flush(now)

    def _first_block(self) -> None:
        """The first text replaces the placeholder at once (below the reasoning, when there was some)."""
        if self.reasoning and self.lead is not None:
            self._update(self.lead, foot.reasoning_bundle("".join(self.reasoning)))
            self.reasoning_shown = True
            self.handles.append(self._display(self._live_bundle()))
        elif self.lead is not None:
            self._update(self.lead, self._live_bundle())
            self.handles.append(self.lead)
        else:
            self.handles.append(self._display(self._live_bundle()))
        self.shown = len(self.tail)
        self.last_update = self.clock()

    def _flush(self, now: float) -> None:
        """Send the new text: freeze a block when the segmenter finds a cut, else update the live tail."""
        if self.open_new:
            self.open_new = False
            self.handles.append(self._display(self._live_bundle()))
        else:
            cut = self.seg.find(self.tail)
            if cut is not None and cut.offset > 0:
                self._freeze(cut)
            else:
                self._update(self.handles[-1], self._live_bundle())
        self.shown = len(self.tail)
        self.last_update = now

    def _freeze(self, cut: Cut) -> None:
        block, rest = self.tail[:cut.offset], self.tail[cut.offset:]
        self.dirty = self.dirty or not cut.clean
        self._update(self.handles[-1], self._block_bundle(block, final=True))
        self.blocks += 1
        self.seg.advance(cut)
        self.tail = rest
        if rest:
            self.handles.append(self._display(self._live_bundle()))
        else:
            self.open_new = True

    def _block_bundle(self, text: str, *, final: bool = False) -> dict[str, Any]:
        """How a block shows while streaming (`final`: as it stays, with text/plain for saved notebooks)."""
        kind = self.seg.fmt
        if kind == "text":
            return {"text/plain": text[:-1] if final and text.endswith("\n") else text}
        if kind == "markdown":
            md = (self.seg.fence + "\n" + text) if self.seg.fence else text
            keep = final and not self.dirty and self.fmt == "markdown"
            return {"text/markdown": md, "text/plain": text} if keep else {"text/markdown": md}
        fence = _fence_for(text)
        lang = "html" if self.fmt == "html" else "json"
        return {"text/markdown": f"{fence}{lang}\n{text}\n{fence}"}

    def _live_bundle(self) -> dict[str, Any]:
        return self._block_bundle(self.tail)

    # ---- the end ----
    def finish(self, response: Response) -> Any:
        """Final render, then the status lines and footer under it."""
        if not self.rich:
            return self._finish_terminal(response)
        text = response.text
        keeps_blocks = self.handles and not self.dirty and self.fmt in ("markdown", "text") \
            and not (self.reasoning and not self.reasoning_shown)
        if keeps_blocks:
            if self.open_new and self.tail:
                self.handles.append(self._display(self._final_tail()))
            elif self.tail or not self.open_new:
                self._update(self.handles[-1], self._final_tail())
        else:
            self._replace_all(response)
        end = foot.end_bundle(response, footer=self.footer)
        if end is not None:
            self._display(end)
        return None

    def _final_tail(self) -> dict[str, Any]:
        if self.fmt == "text":
            return {"text/plain": self.tail}
        md = (self.seg.fence + "\n" + self.tail) if self.seg.fence else self.tail
        return {"text/markdown": md, "text/plain": self.tail}

    def _replace_all(self, response: Response) -> None:
        """One render in place of everything streamed (the format's final form differs from the live one)."""
        text = response.text
        data = bundle(self.fmt, text)
        if not text or (self.fmt == "json" and response.value is not None and not response.incomplete):
            data = {"text/plain": ""}
        first = []
        if self.reasoning:
            first.append(foot.reasoning_bundle("".join(self.reasoning)))
        if self.handles or self.reasoning_shown:
            from IPython.display import clear_output
            clear_output(wait=True)
            self.handles, self.lead = [], None
            self.updates += 1
        if self.lead is not None:   # only the placeholder was shown: replace it
            items = first + [data] if (not first or data.get("text/plain") or len(data) > 1) else first
            self._update(self.lead, items[0])
            for item in items[1:]:
                self._display(item)
            return
        for item in first + ([data] if data.get("text/plain") or len(data) > 1 else []):
            self._display(item)

    def _finish_terminal(self, response: Response) -> None:
        text = response.text
        if self.printed and not text.endswith("\n"):
            sys.stdout.write("\n")
        elif not self.printed and text:
            from .redact import scrub
            print(scrub(text))
        end = foot.end_bundle(response, footer=self.footer)
        if end is not None:
            print(end["text/plain"])
        return None
