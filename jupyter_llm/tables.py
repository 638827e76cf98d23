"""Small tables for magic output: HTML in notebooks, aligned text in the terminal, one code path."""
from __future__ import annotations

import html
from typing import Any, Sequence


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> str:
    head = "".join(f"<th style='text-align:left'>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape('' if c is None else str(c))}</td>"
                                     for c in r) + "</tr>" for r in rows)
    cap = f"<caption style='text-align:left'>{html.escape(caption)}</caption>" if caption else ""
    return f"<table class='jupyter-llm'>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def show_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> None:
    """Display a table: rich HTML where the front end renders it, text otherwise."""
    from IPython.display import display
    from .redact import scrub_deep
    rows, caption = scrub_deep([list(r) for r in rows]), scrub_deep(caption)  # no known secret is shown
    text = text_table(headers, rows)
    if caption:
        text = caption + "\n" + text
    display({"text/html": html_table(headers, rows, caption), "text/plain": text}, raw=True)


def money(usd: float | None) -> str:
    if usd is None:
        return "?"
    return f"${usd:.4f}" if usd < 100 else f"${usd:,.2f}"


def seconds(s: float | None) -> str:
    return "" if s is None else (f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s")
