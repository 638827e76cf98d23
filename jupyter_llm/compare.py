"""`%%llm --compare`: one prompt to several targets at once, answers side by side, then a metrics table.

Worker threads only call `Session.ask` and push `(column, event)` into a queue; the calling (main)
thread alone touches the display, so output never lands in another cell. The display is one HTML
output (a one-row table of columns, escaped text, then the metrics table) updated through a display
handle at most 10 times a second and at most ~BYTE_RATE bytes a second; its last update is the final,
static view a saved or nbconvert'ed notebook keeps. In the IPython terminal each answer is printed as
a block when it completes, then the table.

Compare never touches the active target, the conversation or `_llm`: the cell's value is the list of
Responses (a `Comparison`, in target order) and `_llm_compare` holds the table as a pandas DataFrame
(plain row dicts when pandas is missing).
"""
from __future__ import annotations

import html
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import LLMError
from .events import Attempt, Finish, Response, StreamError, TextDelta
from .compare_results import FRAME_COLUMNS, HEADERS, Comparison, metrics_rows, status, to_frame  # noqa: F401 (FRAME_COLUMNS: importable here as before)
from .tables import html_table, seconds, text_table

INTERVAL = 0.1        # seconds between display updates (at most 10 per second overall)
BYTE_RATE = 100_000   # kept for callers that pass it; updates are now paid for by new text (see due_in)
WINDOW = 800          # characters of each streaming column shown live (the end of it); all of it at the end
PLAIN_WINDOW = 200    # the same in the live text/plain (for front ends without HTML)
MAX_WAIT = 1.0        # seconds new text may wait when it does not pay for an update (all columns are resent)


@dataclass(frozen=True)
class _Done:
    response: Response


def _parse_all(session, targets: list[str]) -> list:
    """Every target parsed before anything is sent; duplicates and an empty list are BAD_ARGUMENT."""
    if not targets:
        raise LLMError("BAD_ARGUMENT", "--compare needs at least one target", hint="e.g. --compare local:8081 openai:gpt-4o-mini")
    parsed, seen = [], {}
    for text in targets:
        t = session.parse(text)
        if str(t) in seen:
            dup = seen[str(t)]
            same = f"{dup!r} and {text!r} both name {t}" if dup != text else f"{text!r} is given twice"
            raise LLMError("BAD_ARGUMENT", f"duplicate compare target: {same}", hint="name each target once")
        seen[str(t)] = text
        parsed.append(t)
    return parsed


def _worker(session, index: int, target, prompt: str, out: queue.SimpleQueue, stop: threading.Event,
            kwargs: dict) -> None:
    """Run one column's request; push its events and finally `_Done(response)`. Never raises."""
    def on_event(ev) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # Session.ask keeps the text so far and marks it interrupted
        out.put((index, ev))

    try:
        response = session.ask(prompt, target=target, on_event=on_event, no_history=True, fallback=False, **kwargs)
    except LLMError as exc:
        response = Response(target=str(target), answered_by=str(target), error=exc, finish_reason="error")
    except KeyboardInterrupt:
        response = Response(target=str(target), answered_by=str(target), finish_reason="interrupted", incomplete=True)
    except Exception as exc:  # a bug in an adapter must not kill the other columns
        response = Response(target=str(target), answered_by=str(target), finish_reason="error",
                            error=LLMError("PROVIDER_ERROR", f"{type(exc).__name__}: {exc}"))
    out.put((index, _Done(response)))


@dataclass
class _Column:
    target: str                     # resolved, e.g. local:8081/tiny-a
    label: str                      # as the user typed it, e.g. tiny-a
    parts: list[str] = field(default_factory=list)
    size: int = 0                   # characters received
    shown_done: bool = False        # the display shows this column finished
    note: str = ""
    first: float | None = None      # monotonic time of the first text
    response: Response | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def window(self, n: int = WINDOW) -> tuple[int, str]:
        """(characters left out, the last ~n characters): the live view never resends a whole answer."""
        if self.size <= n:
            return 0, self.text
        tail, got = [], 0
        for part in reversed(self.parts):
            tail.append(part)
            got += len(part)
            if got >= n:
                break
        text = "".join(reversed(tail))[-n:]
        return self.size - len(text), text


class CompareView:
    """Column state plus the display: throttled HTML updates in a kernel, blocks of text in a terminal."""

    def __init__(self, targets: list[str], fmt: str = "markdown", *, labels: list[str] | None = None,
                 rich: bool = True, interval: float = INTERVAL, byte_rate: int = BYTE_RATE, live: bool = True):
        self.live = live          # False: nothing is shown until finish() (--no-stream)
        self.columns = [_Column(t, label) for t, label in zip(targets, labels or targets)]
        self.fmt = fmt
        self.rich = rich
        self.interval = interval
        self.byte_rate = byte_rate
        self.start_time = time.monotonic()
        self.handle = None
        self.dirty = False
        self.last_update = 0.0
        self.last_size = 0
        self.new_chars = 0        # characters received since the last update
        self.updates = 0          # display updates sent (tests check the rate)
        self.bytes = 0            # bytes of display data sent

    # ---- state ----
    def apply(self, index: int, ev) -> None:
        col = self.columns[index]
        if isinstance(ev, TextDelta) and ev.text:
            if col.first is None:
                col.first = time.monotonic()
            col.parts.append(ev.text)
            col.size += len(ev.text)
            self.new_chars += len(ev.text)
            col.note = ""
        elif isinstance(ev, Attempt) and ev.n > 1:
            col.note = f"retrying (attempt {ev.n})…"
        elif isinstance(ev, StreamError):
            col.note = ev.error.code
        elif isinstance(ev, Finish) or not isinstance(ev, _Done):
            return
        else:
            col.response = ev.response
            if not self.rich and self.live:
                self._print_block(col)
        self.dirty = self.rich  # the terminal has nothing to refresh

    def responses(self) -> list[Response]:
        """A Response per column: the finished ones, and for unfinished ones the text so far, interrupted."""
        out = []
        now = time.monotonic()
        for col in self.columns:
            if col.response is not None:
                out.append(col.response)
                continue
            text = col.text
            out.append(Response(text=text, target=col.target, answered_by=col.target, chunks=list(col.parts),
                                latency=now - self.start_time, finish_reason="interrupted", incomplete=True,
                                ttft=None if col.first is None else col.first - self.start_time))
        return out

    # ---- display ----
    def start(self) -> None:
        if not self.live:
            return
        if self.rich:
            from IPython.display import display
            data = self.bundle()
            self.handle = display(data, raw=True, display_id=True)
            self._count(data)
            self.last_update = time.monotonic()
        else:
            print("comparing " + ", ".join(self._title(c) for c in self.columns) + " …", flush=True)

    def due_in(self) -> float:
        """Seconds until the next update may be sent (0 when one is due now). An update must be paid for by
        new text (at most BYTES_PER_CHAR bytes per new character, envelope included) or have waited MAX_WAIT:
        so traffic stays linear in the answers, whatever the token rate; never more than 10 a second."""
        from .stream_display import BYTES_PER_CHAR, OVERHEAD
        since = time.monotonic() - self.last_update
        if self.new_chars * BYTES_PER_CHAR >= OVERHEAD + self.last_size or any(
                c.response is not None and not c.shown_done for c in self.columns):
            return max(0.0, self.interval - since)
        return max(0.0, max(self.interval, MAX_WAIT) - since)

    def flush(self, force: bool = False) -> None:
        """Send an update if something changed and the rate limit allows it (always when `force`)."""
        if not self.rich or not self.dirty or (not force and (self.due_in() > 0 or not self.live)):
            return
        data = self.bundle()
        if self.handle is None:   # --no-stream: the first display is the final one
            from IPython.display import display
            self.handle = display(data, raw=True, display_id=True)
        else:
            self.handle.update(data, raw=True)
        self._count(data)
        self.updates += 1
        self.dirty = False
        self.new_chars = 0
        for c in self.columns:
            if c.response is not None:
                c.shown_done = True
        self.last_update = time.monotonic()

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.columns]

    def finish(self, responses: list[Response]) -> None:
        """The final view: complete columns and the metrics table."""
        for col, r in zip(self.columns, responses):
            col.response = r
        if self.rich:
            self.dirty = True
            self.flush(force=True)
            return
        if not self.live:
            for col in self.columns:
                self._print_block(col)
        print(text_table(HEADERS, metrics_rows(responses, self.labels)), flush=True)

    def _count(self, data: dict) -> None:
        size = sum(len(v) for v in data.values())
        self.last_size = size
        self.bytes += size

    def _print_block(self, col: _Column) -> None:
        r = col.response
        print(f"\n── {self._title(col)} ({status(r)}, {seconds(r.latency) or '-'}) " + "─" * 20, flush=True)
        if r.text:
            from .redact import scrub
            print(scrub(r.text.rstrip("\n")), flush=True)
        if r.error is not None:
            print(f"✗ {r.error.line()}", flush=True)

    # ---- rendering ----
    def live_rows(self) -> list[list[str]]:
        now = time.monotonic()
        rows = []
        for col in self.columns:
            if col.response is not None:
                rows.extend(metrics_rows([col.response], [col.label]))
                continue
            ttft = None if col.first is None else col.first - self.start_time
            word = col.note or ("streaming…" if col.parts else "waiting…")
            rows.append([col.label, seconds(ttft), seconds(now - self.start_time), "", "", "", word])
        return rows

    def bundle(self) -> dict[str, str]:
        from .redact import scrub  # a known secret echoed by a model is masked in the columns too
        return {"text/html": scrub(self.html()), "text/plain": scrub(self.text())}

    def html(self) -> str:
        """Columns as a CSS grid (no table row to flash on hover) that wraps at narrow widths; each column
        scrolls past a max height. Streaming columns show their last WINDOW characters as text; finished
        ones their whole answer rendered as Markdown (when mistune is installed; escaped text otherwise)."""
        mono = "font-family:var(--jp-code-font-family,monospace);" if self.fmt in ("code", "json", "html") else ""
        cols = []
        for col in self.columns:
            cols.append(
                "<div class='jupyter-llm-column' style='min-width:0;border:1px solid var(--jp-border-color2,#8884);"
                "border-radius:3px;display:flex;flex-direction:column'>"
                "<div class='jupyter-llm-column-head' style='padding:4px 8px;font-weight:600;"
                "border-bottom:1px solid var(--jp-border-color2,#8884);overflow-wrap:anywhere'>"
                f"{html.escape(self._title(col))} <span style='font-weight:normal;opacity:.75'>"
                f"{html.escape(self._state(col))}</span></div>"
                f"<div class='jupyter-llm-column-body' style='padding:6px 8px;max-height:28em;overflow:auto;"
                f"overflow-wrap:anywhere;{mono}'>{self._body(col)}</div></div>")
        return ("<div class='jupyter-llm-compare'>"
                "<div class='jupyter-llm-columns' style='display:grid;gap:8px;margin-bottom:8px;"
                "grid-template-columns:repeat(auto-fit,minmax(min(100%,260px),1fr))'>"
                f"{''.join(cols)}</div><div class='jupyter-llm-metrics' style='overflow-x:auto;max-width:100%'>"
                f"{html_table(HEADERS, self.live_rows())}</div></div>")

    @staticmethod
    def _title(col: _Column) -> str:
        same = col.label == col.target or col.target.startswith(col.label + "/")  # local:8081 -> local:8081/alias
        return col.label if same else f"{col.label} ({col.target})"

    def _state(self, col: _Column) -> str:
        r = col.response
        if r is None:
            return col.note or ("streaming…" if col.parts else "waiting…")
        return status(r)

    def _body(self, col: _Column) -> str:
        from .footer import ERROR, WARN
        r = col.response
        if r is None:
            left, text = col.window()
            more = (f"<div style='opacity:.6'>… {left:,} earlier characters (all of them at the end)</div>"
                    if left else "")
            body = (more + f"<div style='white-space:pre-wrap'>{html.escape(text)}</div>") if text \
                else "<span style='opacity:.5'>…</span>"
        else:
            body = _answer_html(r.text, self.fmt) if r.text else ""
        if r is not None and r.error is not None:
            body += f"<div style='{ERROR};white-space:normal'>✗ {html.escape(r.error.line())}</div>"
        elif r is not None and r.incomplete:
            why = "interrupted" if r.finish_reason == "interrupted" else "cut"
            body += f"<div style='{WARN};white-space:normal'>⚠ incomplete ({why}): the text so far is kept</div>"
        return body

    def text(self) -> str:
        parts = []
        for col in self.columns:
            r = col.response
            parts.append(f"── {self._title(col)} ({self._state(col)})")
            if r is not None:
                text = r.text
            else:
                left, text = col.window(PLAIN_WINDOW)
                text = (f"… {left:,} earlier characters\n" if left else "") + text
            if text:
                parts.append(text.rstrip("\n"))
            if r is not None and r.error is not None:
                parts.append(f"✗ {r.error.line()}")
        parts.append(text_table(HEADERS, self.live_rows()))
        return "\n".join(parts)


def _answer_html(text: str, fmt: str) -> str:
    """A finished column: Markdown rendered (raw HTML in the answer escaped), else escaped pre-wrapped text."""
    if fmt == "markdown":
        md = _markdown()
        if md is not None:
            return f"<div class='jupyter-llm-md'>{md(text)}</div>"
    return f"<div style='white-space:pre-wrap'>{html.escape(text)}</div>"


_MD: list = []


def _markdown():
    """mistune (ships with nbconvert in most Jupyter installs) with raw HTML escaped; None without it."""
    if not _MD:
        try:
            import mistune
            _MD.append(mistune.create_markdown(escape=True, plugins=["table", "strikethrough"]))
        except Exception:
            _MD.append(None)
    return _MD[0]


def _pump(view: CompareView, events: queue.SimpleQueue, n: int) -> None:
    """Consume worker events in this (the main) thread until every column is done."""
    done = 0
    while done < n:
        timeout = view.due_in() if view.dirty and view.live else 1.0
        try:
            index, ev = events.get(timeout=max(timeout, 0.001))
        except queue.Empty:
            view.flush()
            continue
        if isinstance(ev, _Done):
            done += 1
        view.apply(index, ev)
        view.flush()


def _drain(view: CompareView, events: queue.SimpleQueue) -> None:
    """Take what has already arrived, without waiting."""
    while True:
        try:
            index, ev = events.get_nowait()
        except queue.Empty:
            return
        view.apply(index, ev)


def run_compare(session, prompt: str, targets: list[str], *, fmt: str = "markdown", new: bool = False,
                cache: bool | None = None, shell=None, system: str | None = None, temperature: float | None = None,
                max_tokens: int | None = None, rich: bool | None = None, content: list | None = None,
                schema: Any = None, stream: bool = True) -> Comparison:
    """Send `prompt` to every target concurrently, stream the answers side by side, show the metrics table.

    `new` sends the prompt without the conversation (which is never changed); `rich` None detects a
    kernel; `stream` False shows the columns once, when every answer is in (--no-stream). Returns the
    Responses in target order; Ctrl-C stops waiting, keeps every column's text so
    far and then raises UsageError.
    """
    parsed = _parse_all(session, list(targets))
    with session.router.collector_paused(parsed):   # a first cloud cell: no collection before the sends
        return _run_parsed(session, prompt, parsed, targets, fmt=fmt, new=new, cache=cache, shell=shell,
                           system=system, temperature=temperature, max_tokens=max_tokens, rich=rich,
                           content=content, schema=schema, stream=stream)


def _run_parsed(session, prompt: str, parsed: list, targets: list[str], *, fmt: str, new: bool,
                cache: bool | None, shell, system: str | None, temperature: float | None, max_tokens: int | None,
                rich: bool | None, content: list | None, schema: Any, stream: bool) -> Comparison:
    """`run_compare` for targets already parsed."""
    if content is not None:  # images in the prompt (media.py): every target must take them
        from .media import require_images
        require_images(session, parsed)
    params = {k: v for k, v in (("system", system), ("temperature", temperature), ("max_tokens", max_tokens))
              if v is not None}
    session.check_budget(parsed, session.build_request(prompt, **params, context=not new))
    session.router, session.store  # build the shared collaborators here, not racing in the workers
    session.router.preload(parsed)  # SDK imports happen here, one at a time: concurrent imports race
    if shell is not None:   # the frame's pandas loads while the answers stream
        from .inflight import import_after_send
        import_after_send("pandas")
    if rich is None:
        from .render import in_kernel
        rich = in_kernel()
    view = CompareView([str(t) for t in parsed], fmt, labels=[str(t).strip() for t in targets], rich=rich,
                       live=stream)
    events: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()
    kwargs = dict(params, cache=cache, context=not new)
    kwargs.update({k: v for k, v in (("content", content), ("schema", schema)) if v is not None})
    view.start()
    for i, t in enumerate(parsed):
        threading.Thread(target=_worker, args=(session, i, t, prompt, events, stop, kwargs),
                         name=f"llm-compare-{i}", daemon=True).start()
    interrupted = False
    try:
        _pump(view, events, len(parsed))
    except KeyboardInterrupt:
        stop.set()
        interrupted = True
        _drain(view, events)
    results = Comparison(view.responses())
    results.quiet = shell is not None
    view.finish(results)
    if shell is not None:
        shell.user_ns["_llm_compare"] = to_frame(results, view.labels)
    if interrupted:
        from IPython.core.error import UsageError
        kept = sum(len(r.text) for r in results)
        raise UsageError(f"interrupted: the {kept} characters received so far are kept in the columns above "
                         "and in _llm_compare (text column)")
    return results
