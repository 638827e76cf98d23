"""The outcome of one `%%llm --compare`: the `Comparison` the cell returns, its metrics table, and the
`_llm_compare` frame (numbers, the resolved targets and the texts)."""
from __future__ import annotations

from typing import Any

from .events import Response
from .tables import money, seconds

HEADERS = ["target", "TTFT", "total time", "output tokens", "tokens/s", "cost", "status"]
FRAME_COLUMNS = ["target", "resolved", "ttft_s", "total_s", "output_tokens", "tokens_per_s", "cost_usd", "status", "text",
                 "error"]


class Comparison(list):
    """The Responses of one compare, in target order; shown as one short line per target, not the texts.

    The cell that ran the compare already shows the table, so its own Out[] stays empty (`quiet` once);
    showing the value again later prints the short lines."""

    quiet = False

    def _ipython_display_(self) -> None:
        if self.quiet:
            self.quiet = False
            return
        from IPython.display import display
        display({"text/plain": repr(self)}, raw=True)

    def __repr__(self) -> str:
        lines = [f"[{i}] {r.target}  {status(r)}  {r.usage.output_tokens} tokens  {seconds(r.latency)}"
                 for i, r in enumerate(self)]
        return "\n".join([f"<Comparison of {len(self)} responses; table in _llm_compare>"] + lines)

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(repr(self))


def status(r: Response) -> str:
    """One word for a response: ok, cached, interrupted, an error code, plus `incomplete`."""
    if r.error is not None:
        word = r.error.code
    elif r.finish_reason == "interrupted":
        word = "interrupted"
    else:
        word = "cached" if r.cached else "ok"
    if r.incomplete and word != "interrupted":
        word += " (incomplete)"
    return word


def metrics_rows(responses: list[Response], labels: list[str] | None = None) -> list[list[str]]:
    """The metrics table as display strings, one row per response (`labels`: the targets as typed)."""
    rows = []
    for label, r in zip(labels or [r.target for r in responses], responses):
        tps = r.tokens_per_second
        cost = "" if r.cost is None and not r.usage.output_tokens else money(r.cost)
        rows.append([label, seconds(r.ttft), seconds(r.latency), str(r.usage.output_tokens),
                     "" if tps is None else f"{tps:.1f}", cost, status(r)])
    return rows


def records(responses: list[Response], labels: list[str] | None = None) -> list[dict[str, Any]]:
    """The table as numbers (seconds, USD), with the resolved target and each answer's text: `_llm_compare`."""
    return [dict(zip(FRAME_COLUMNS, (label, r.target, r.ttft, r.latency, r.usage.output_tokens,
                                     r.tokens_per_second, r.cost, status(r), r.text,
                                     r.error.line() if r.error is not None else None)))
            for label, r in zip(labels or [r.target for r in responses], responses)]


def to_frame(responses: list[Response], labels: list[str] | None = None) -> Any:
    """A pandas DataFrame of `records` (pandas imported only now), or the records if pandas is missing."""
    rows = records(responses, labels)
    try:
        import pandas as pd
    except ImportError:
        return rows
    return pd.DataFrame(rows, columns=FRAME_COLUMNS)
