"""Streams an answer into the cell: a display handle updated at a bounded rate, then the final render.

iopub traffic stays linear in the answer length: once the live block passes `block_chars` it is
frozen at a paragraph break and a new block starts, so no update resends the whole answer.
In the IPython terminal the text is simply printed as it arrives.
"""
from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

from .events import Attempt, Event, Response, StreamError, TextDelta

INTERVAL = 0.1        # seconds between display updates (at most 10 per second)
BLOCK_CHARS = 2000    # freeze the live block at a paragraph break past this size

_FENCE = re.compile(r"^\s*(```|~~~)", re.M)


def in_kernel() -> bool:
    """True inside a Jupyter kernel (rich displays work); False in the IPython terminal or plain Python."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def extract_code(text: str) -> tuple[str, str]:
    """(language, code): the fenced blocks of an answer joined, or the whole answer if it has none."""
    blocks = re.findall(r"^\s*```([\w+-]*)[^\n]*\n(.*?)^\s*```", text, re.M | re.S)
    if not blocks:
        return "python", text.strip("\n")
    lang = next((b[0] for b in blocks if b[0]), "python")
    return lang, "\n\n".join(b[1].rstrip("\n") for b in blocks)


def parse_json(text: str) -> Any:
    """The JSON value in an answer (fences and prose around one object/array tolerated)."""
    candidates = [text.strip()]
    m = re.search(r"```(?:json)?\s*\n(.*?)```", text, re.S)
    if m:
        candidates.insert(0, m.group(1).strip())
    start = min([i for i in (text.find("{"), text.find("[")) if i >= 0], default=-1)
    if start >= 0:
        end = max(text.rfind("}"), text.rfind("]"))
        candidates.append(text[start:end + 1])
    error = None
    for c in candidates:
        try:
            return json.loads(c)
        except ValueError as exc:
            error = error or exc
    raise error  # type: ignore[misc]


def bundle(fmt: str, text: str, *, live: bool = False) -> dict[str, Any]:
    """The MIME bundle for `text` in format `fmt` (streaming or final); known secrets are masked."""
    from .redact import scrub
    text = scrub(text)
    if fmt == "text":
        return {"text/plain": text}
    if fmt == "html" and not live:
        return {"text/html": text, "text/plain": text}
    if fmt == "code":
        lang, code = extract_code(text) if not live else ("", text)
        return {"text/markdown": f"```{lang}\n{code}\n```", "text/plain": code}
    if fmt == "json":
        return {"text/markdown": f"```json\n{text}\n```", "text/plain": text}
    return {"text/markdown": text, "text/plain": text}


def _paragraph_break(text: str, after: int) -> int | None:
    """Offset just after the last blank line past `after` that is outside a code fence, or None."""
    cut = None
    for m in re.finditer(r"\n\s*\n", text):
        if m.end() <= after:
            continue
        if len(_FENCE.findall(text[:m.start()])) % 2 == 0:
            cut = m.end()
    return cut


class StreamRenderer:
    """`on_event` sink for Session.ask; call `finish(response)` once the answer is complete."""

    def __init__(self, fmt: str = "markdown", *, target: str = "", interval: float = INTERVAL,
                 block_chars: int = BLOCK_CHARS, rich: bool | None = None):
        self.fmt = fmt
        self.target = target
        self.interval = interval
        self.block_chars = block_chars
        self.rich = in_kernel() if rich is None else rich
        self.handles: list[Any] = []
        self.live = ""          # text of the current (last) block
        self.frozen: list[str] = []
        self.last_update = 0.0
        self.dirty = False
        self.note = ""
        self.printed = 0
        self.updates = 0

    # ---- kernel ----
    def start(self) -> None:
        """Show a placeholder at once so the user sees the request is under way."""
        if self.rich:
            self._new_block(self._waiting())

    def _waiting(self) -> dict[str, Any]:
        return {"text/markdown": f"*… waiting for {self.target}*", "text/plain": f"… waiting for {self.target}"}

    def _new_block(self, data: dict[str, Any]) -> None:
        from IPython.display import display
        self.handles.append(display(data, raw=True, display_id=True))

    def _update(self, data: dict[str, Any]) -> None:
        self.handles[-1].update(data, raw=True)
        self.updates += 1

    def _live_bundle(self) -> dict[str, Any]:
        data = bundle(self.fmt, self.live, live=True)
        if self.note and "text/markdown" in data:
            data = dict(data, **{"text/markdown": data["text/markdown"] + f"\n\n*{self.note}*"})
        return data

    def __call__(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            self._text(event.text)
        elif isinstance(event, Attempt) and (event.n > 1 or event.target != self.target):
            self.note = (f"retrying {event.target} (attempt {event.n})…" if event.n > 1
                         else f"falling back to {event.target}…")
            if self.rich and not self.live:
                self._update({"text/markdown": f"*{self.note}*", "text/plain": self.note})
        elif isinstance(event, StreamError) and not self.rich:
            pass  # the magic prints the error line

    def _text(self, text: str) -> None:
        if not self.rich:
            from .redact import scrub
            sys.stdout.write(scrub(text))
            sys.stdout.flush()
            self.printed += len(text)
            return
        first = not self.live and not self.frozen
        self.live += text
        self.note = ""
        self.dirty = True
        if not self.handles:
            self._new_block(self._live_bundle())
            self.dirty = False
            self.last_update = time.monotonic()
            return
        now = time.monotonic()
        if not first and now - self.last_update < self.interval:
            return
        if len(self.live) > self.block_chars and self.fmt in ("markdown", "text"):
            cut = _paragraph_break(self.live, 0)
            if cut and cut < len(self.live):
                done, self.live = self.live[:cut], self.live[cut:]
                self.frozen.append(done)
                self._update(bundle(self.fmt, done, live=True))
                self._new_block(self._live_bundle())
                self.dirty = False
                self.last_update = now
                return
        self._update(self._live_bundle())
        self.dirty = False
        self.last_update = now

    def finish(self, response: Response) -> Any:
        """Final render; returns the value the cell should return (the parsed object for json)."""
        text = response.text
        if not self.rich:
            if self.printed and not text.endswith("\n"):
                sys.stdout.write("\n")
            elif not self.printed and text:
                from .redact import scrub
                print(scrub(text))
            if response.incomplete:
                print(f"[incomplete: {response.finish_reason or 'cut'}]")
            return None
        data = bundle(self.fmt, text)
        if response.incomplete and "text/markdown" in data:
            why = "interrupted" if response.finish_reason == "interrupted" else (
                response.error.code if response.error else "cut")
            data["text/markdown"] += f"\n\n*⚠ incomplete ({why}): the text received so far is kept*"
        if not text:
            data = {"text/plain": ""}
        if self.fmt == "json" and response.value is not None and not response.incomplete:
            data = {"text/plain": ""}
        if len(self.handles) > 1:
            from IPython.display import clear_output
            clear_output(wait=True)
            self.handles = []
            self._new_block(data)
        elif self.handles:
            self._update(data)
        elif text:
            self._new_block(data)
        return None
