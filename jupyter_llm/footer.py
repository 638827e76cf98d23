"""What an answer says about itself under (and above) its text: the muted footer, the truncation,
interrupt and incomplete lines, provider notes and the collapsed reasoning.

Everything here is a pure function of a Response, so the kernel renderer, the terminal and tests
agree on the words.
"""
from __future__ import annotations

import html
from typing import Any

from .events import Response

FOOTER_CLASS = "jupyter-llm-footer"
# Muted but readable in light and dark themes alike: the warning and error colours are mixed with the
# theme's main text colour (JupyterLab's --jp-content-font-color1, else the inherited colour), so they darken
# on a light background and lighten on a dark one (at least 4.5:1 in both, checked in a browser test); a
# browser without color-mix keeps the plain colour before it.
MUTED = "color:var(--jp-ui-font-color2,#616161);font-size:var(--jp-ui-font-size1,0.9em);margin-top:2px"
WARN = "color:#a84300;color:color-mix(in srgb,#ef6c00 55%,var(--jp-content-font-color1,currentColor))"
ERROR = "color:#b71c1c;color:color-mix(in srgb,#e53935 55%,var(--jp-content-font-color1,currentColor))"


def _num(n: float) -> str:
    return f"{n:,.0f}" if n >= 100 else f"{n:.1f}"


def _cost(r: Response) -> str:
    if r.cached:
        return "$0"
    if r.cost is None:
        return "price unknown"
    if r.cost == 0:
        return "$0"
    if r.cost < 0.01:
        return "$" + f"{r.cost:.6f}".rstrip("0")
    return f"${r.cost:.4f}" if r.cost < 1 else f"${r.cost:.2f}"


def footer_parts(r: Response) -> list[str]:
    """The footer's items: who answered, tokens, seconds, tokens/s, cost, and cached / fallback."""
    parts = [r.answered_by or r.target]
    out = r.usage.output_tokens
    if out:
        parts.append(f"{out:,} token" + ("" if out == 1 else "s"))
    timed = not r.cached and not getattr(r, "replayed", False)  # a cached or replayed answer took no real time
    if r.latency is not None and timed:
        parts.append(f"{r.latency:.1f} s")
    tps = r.tokens_per_second
    if tps and timed:
        parts.append(f"{_num(tps)} tok/s")
    parts.append(_cost(r))
    if r.cached:
        parts.append("cached")
    if getattr(r, "replayed", False):
        parts.append("replayed")
    if r.answered_by and r.target and r.answered_by != r.target:
        parts.append(f"fallback from {r.target}")
    return parts


def footer_text(r: Response) -> str:
    return " · ".join(footer_parts(r))


def is_truncated(r: Response) -> bool:
    return bool(r.truncated or (r.finish_reason == "length" and r.error is None))


def status_lines(r: Response) -> list[tuple[str, str]]:
    """(kind, text) lines that say how the answer ended when it did not simply finish:
    kind is "warn" (truncated, cut), "note" (interrupted by the user, provider notes)."""
    lines: list[tuple[str, str]] = []
    for note in getattr(r, "notes", None) or ():
        lines.append(("note", str(note)))
    if r.finish_reason == "interrupted":
        lines.append(("note", f"stopped: {len(r.text):,} characters kept"))
    elif is_truncated(r):
        n = f" ({r.max_tokens:,})" if r.max_tokens else ""
        lines.append(("warn", f"stopped at max_tokens{n}: %llm continue carries on"))
    elif r.incomplete and r.error is not None:
        lines.append(("warn", f"incomplete ({r.error.code}): the {len(r.text):,} characters received are kept"))
    return lines


def reasoning_html(reasoning: str) -> str:
    n = len(reasoning)
    return (f"<details class='jupyter-llm-reasoning' style='{MUTED}'><summary>reasoning ({n:,} characters)</summary>"
            f"<pre style='white-space:pre-wrap;margin:4px 0'>{html.escape(reasoning)}</pre></details>")


def reasoning_bundle(reasoning: str) -> dict[str, Any]:
    return {"text/html": reasoning_html(reasoning), "text/plain": f"[reasoning: {len(reasoning):,} characters]"}


def thinking_bundle(chars: int) -> dict[str, Any]:
    line = f"thinking… {chars:,} characters"
    return {"text/html": f"<div style='{MUTED}'>{line}</div>", "text/plain": line}


def end_bundle(r: Response, *, footer: bool = True) -> dict[str, Any] | None:
    """The lines under an answer (status lines, then the footer when on), or None when there are none."""
    lines = status_lines(r)
    if not lines and not footer:
        return None
    rows_html, rows_text = [], []
    for kind, text in lines:
        style = WARN if kind == "warn" else ""
        mark = "⚠ " if kind == "warn" else ""
        rows_html.append(f"<div style='{style}'>{mark}{html.escape(text)}</div>")
        rows_text.append(f"{mark}{text}")
    if footer:
        rows_html.append(f"<div>{html.escape(footer_text(r))}</div>")
        rows_text.append(footer_text(r))
    return {"text/html": f"<div class='{FOOTER_CLASS}' style='{MUTED}'>{''.join(rows_html)}</div>",
            "text/plain": "\n".join(rows_text)}
