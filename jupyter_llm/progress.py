"""Progress of a map: one ipywidgets bar plus a line (rows done/failed, tokens, cost so far, rows/s, ETA)
in Jupyter, one updating text line in a terminal, at most 4 updates a second, and a summary line at the
end. Only the thread that runs the map calls it; ipywidgets is imported when a bar is first shown."""
from __future__ import annotations

import sys
import time
from typing import Any

INTERVAL = 0.25   # seconds between display updates: at most 4 a second


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class MapProgress:
    """Counts finished rows (`add`) and shows them (`refresh`, throttled); `finish(line)` shows the summary."""

    def __init__(self, total: int, *, rich: bool | None = None, interval: float = INTERVAL, stream=None):
        if rich is None:
            from .render import in_kernel
            rich = in_kernel()
        self.total = total
        self.rich = rich
        self.interval = interval
        self.stream = stream or sys.stdout
        self.done = self.failed = self.cached = 0
        self.tokens = 0
        self.cost = 0.0
        self.started = time.monotonic()
        self.last = 0.0
        self.dirty = False
        self.updates = 0            # display updates sent (tests and the benchmark check the rate)
        self.bar: Any = None
        self.label: Any = None
        self.box: Any = None
        self.handle: Any = None
        self._width = 0

    # ---- counting ----
    def add(self, result: Any) -> None:
        self.done += 1
        if not result.ok:
            self.failed += 1
        r = result.response
        if r is not None:
            self.tokens += r.usage.input_tokens + r.usage.output_tokens
            self.cost += r.cost or 0.0
            self.cached += bool(r.cached)
        self.dirty = True

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 and self.done else 0.0
        left = self.total - self.done
        eta = left / rate if rate > 0 else None
        failed = f", {self.failed} failed" if self.failed else ""
        cached = f", {self.cached} cached" if self.cached else ""
        return (f"{self.done}/{self.total} rows{failed}{cached} · {self.tokens:,} tokens · ${self.cost:.4f} · "
                f"{rate:.1f} rows/s · ETA {_eta(eta) if left else '0 s'}")

    # ---- display ----
    def start(self) -> None:
        self.started = time.monotonic()
        if self.rich:
            import ipywidgets as w
            from IPython.display import display
            self.bar = w.IntProgress(value=0, min=0, max=max(1, self.total), description="llm map",
                                     bar_style="info", layout=w.Layout(width="50%"))
            self.label = w.HTML(value=self._html(self.line()))
            self.box = w.VBox([self.bar, self.label])
            self.handle = display(self.box, display_id=True)
        else:
            self._write(self.line())
        self.last = time.monotonic()

    def due_in(self) -> float:
        """Seconds until the next update may be shown (the caller waits at most this long for rows)."""
        return max(0.0, self.last + self.interval - time.monotonic()) if self.dirty else self.interval

    def refresh(self, force: bool = False) -> None:
        if not self.dirty or (not force and time.monotonic() - self.last < self.interval):
            return
        text = self.line()
        if self.rich and self.bar is not None:
            self.bar.value = self.done
            self.bar.bar_style = "warning" if self.failed else "info"
            self.label.value = self._html(text)
        elif not self.rich:
            self._write(text)
        self.dirty = False
        self.updates += 1
        self.last = time.monotonic()

    def finish(self, summary: str) -> None:
        """Replace the live bar and line by the one-line summary."""
        if self.rich and self.bar is not None:
            # The live widgets give way, in place, to a static line that a saved notebook keeps as it is.
            bundle = {"text/html": self._html(summary), "text/plain": summary}
            if self.handle is not None:
                self.handle.update(bundle, raw=True)
            else:  # no display publisher answered with a handle (IPython without a shell)
                from IPython.display import display
                display(bundle, raw=True)
            for widget in (self.bar, self.label, self.box):
                widget.close()
        elif not self.rich:
            self._write(summary, end=True)

    @staticmethod
    def _html(text: str) -> str:
        import html
        return f"<span style='font-family:var(--jp-code-font-family,monospace)'>{html.escape(text)}</span>"

    def _write(self, text: str, end: bool = False) -> None:
        pad = " " * max(0, self._width - len(text))
        self.stream.write("\r" + text + pad + ("\n" if end else ""))
        self.stream.flush()
        self._width = 0 if end else len(text)
