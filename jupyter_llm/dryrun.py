"""What a request would carry and cost, without sending it: `%llm context` and `%%llm --dry-run`.

`context_report` lists the exchanges the next request to a target carries (trimmed ones marked) with
their tokens against the target's window. `dry_run` measures one prompt for each target: messages,
input tokens (exact from the target's tokenizer, or ~estimated), max output, a cost range (input
only .. input plus max output, from genai-prices; local is free), the window and whether it fits.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from .context import Fit, fit_for, tokens_text
from .errors import LLMError
from .tables import html_table, money, text_table

COLUMNS = ["target", "messages", "input_tokens", "counted", "max_output", "cost_low_usd", "cost_high_usd",
           "window", "fits", "note"]
HEADERS = ["target", "messages", "input tokens", "max output", "cost", "window", "fits", "note"]


def _head(text: str, width: int = 50) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


@dataclass
class ContextReport:
    """The exchanges the next request carries to `target`, as rows; `fit` has the numbers."""
    target: str
    fit: Fit
    rows: list[dict[str, Any]] = field(default_factory=list)

    def caption(self) -> str:
        f = self.fit
        tok = tokens_text(f.input_tokens, f.exact)
        how = "exact" if f.exact else "estimated"
        window = f"{f.window:,}-token window" if f.window else "an unknown window"
        mode = "" if f.mode == "auto" else f", context = {f.mode}"
        return (f"next request to {self.target}: {f.kept} of {f.total} exchanges, {tok} tokens ({how}, {f.how}) "
                f"+ {f.reserve:,} reserved for the answer, of {window}{mode}")

    def table_rows(self) -> list[list[Any]]:
        return [[r["n"], r["cell"], r["target"], r["prompt"], tokens_text(r["tokens"], self.fit.exact) if r["tokens"] else "",
                 r["status"]] for r in self.rows]

    HEADERS = ["#", "cell", "target", "prompt", "tokens", "status"]

    def __repr__(self) -> str:
        if not self.rows:
            return self.caption() + "\n(the conversation is empty)"
        return self.caption() + "\n" + text_table(self.HEADERS, self.table_rows())

    def _repr_html_(self) -> str:
        return html_table(self.HEADERS, self.table_rows(), self.caption())

    def to_frame(self):
        try:
            import pandas as pd
        except ImportError:
            return list(self.rows)
        return pd.DataFrame(self.rows, columns=["n", "cell", "cell_id", "target", "prompt", "tokens", "status"])


def context_report(session: Any, target: Any) -> ContextReport:
    """What the next request from a new cell would carry to `target` (prompt not yet known: empty)."""
    f = fit_for(session, target, "", None, precise=True, measure_all=True)
    kept = {id(e) for e in f.history}
    rows = []
    for i, (e, tokens) in enumerate(zip(f.available, f.tokens), 1):
        rows.append({"n": i, "cell": f"In [{e.execution_count}]" if e.execution_count is not None else "",
                     "cell_id": e.cell_id, "target": e.target, "prompt": _head(e.prompt), "tokens": tokens,
                     "status": "sent" if id(e) in kept else "trimmed"})
    return ContextReport(str(target), f, rows)


class DryRun(list):
    """Rows (dicts with COLUMNS) of a dry run, shown as a table; `to_frame()` gives a DataFrame."""

    def _display_rows(self) -> list[list[Any]]:
        out = []
        for r in self:
            tok = "" if r["input_tokens"] is None else (f"{r['input_tokens']:,}" if r["counted"] == "exact"
                                                      else f"~{r['input_tokens']:,}")
            if r["cost_low_usd"] is None:
                cost = "?" if r["input_tokens"] is not None else ""
            elif r["cost_high_usd"] == r["cost_low_usd"]:
                cost = money(r["cost_low_usd"])
            else:
                cost = f"{money(r['cost_low_usd'])}–{money(r['cost_high_usd'])}"
            fits = {True: "yes", False: "no", None: "?"}[r["fits"]]
            out.append([r["target"], r["messages"], tok + (f" ({r['counted']})" if tok else ""), r["max_output"] or "",
                        cost, f"{r['window']:,}" if r["window"] else "unknown", fits, r["note"]])
        return out

    def __repr__(self) -> str:
        return "dry run: nothing was sent\n" + text_table(HEADERS, self._display_rows())

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        return html_table(HEADERS, self._display_rows(), "dry run: nothing was sent")

    def to_frame(self):
        try:
            import pandas as pd
        except ImportError:
            return self
        return pd.DataFrame(list(self), columns=COLUMNS)


def dry_run(session: Any, prompt: str, targets: Iterable[Any] | None = None, *, system: str | None = None,
            max_tokens: int | None = None, new: bool = False, context: bool = True, frame: bool = True,
            **_params: Any):
    """Measure `prompt` for every target (default: the active one) and send nothing. Returns a DataFrame
    when pandas is importable and `frame`, else a DryRun."""
    from .cellinfo import current
    from .targets import Target
    names = list(targets) if targets else [session.active]
    parsed = [t if isinstance(t, Target) else session.parse(t) for t in names]
    cell = current()
    rows = DryRun()
    for label, t in zip(names, parsed):
        rows.append(_row(session, str(label).strip() if isinstance(label, str) else str(t), t, prompt, cell,
                         system, max_tokens, new, context))
    return rows.to_frame() if frame else rows


def _row(session, label, target, prompt, cell, system, max_tokens, new, context) -> dict[str, Any]:
    row = dict.fromkeys(COLUMNS)
    row.update(target=label, note="")
    try:
        f = fit_for(session, target, prompt, cell, system=system, max_tokens=max_tokens, new=new,
                    context=context, precise=True)
        too_long = None
    except LLMError as exc:
        if exc.code != "CONTEXT_TOO_LONG":
            row.update(note=exc.line())
            return row
        too_long = exc
        from .context import fit as fit_
        from .tokencount import meter_for
        f = fit_(meter_for(session, target), target, [], prompt, system if system is not None else
                 session.settings.get("system"), max_tokens if max_tokens is not None else
                 session.settings.get("max_tokens"), strict=False, precise=True)
    has_system = bool(system if system is not None else session.settings.get("system"))
    row.update(messages=2 * f.kept + 1 + int(has_system), input_tokens=f.input_tokens,
               counted="exact" if f.exact else "estimate", max_output=f.reserve, window=f.window)
    row["fits"] = False if too_long is not None else f.fits
    low, high = _cost_range(session, target, f.input_tokens, f.reserve)
    row.update(cost_low_usd=low, cost_high_usd=high)
    notes = []
    if too_long is not None:
        notes.append(too_long.message.replace("; nothing was sent", ""))
    elif f.trimmed:
        notes.append(f"{f.total - f.kept} older exchange{'s' if f.total - f.kept != 1 else ''} left out "
                     f"({f.kept} of {f.total} kept)")
    if not max_tokens and not session.settings.get("max_tokens"):
        notes.append("max output: default reserve")
    if f.window is None:
        notes.append("window unknown: not fitted")
    if not f.exact:
        notes.append(f"tokens: {f.how}")
    try:
        request = session.build_request(prompt, system=system, max_tokens=f.reserve, history=f.messages(prompt)[:-1])
        session.check_budget([target], request)
    except LLMError as exc:
        if exc.code == "BUDGET_EXCEEDED":
            notes.append("over the budget: would be refused")
    row["note"] = "; ".join(notes)
    return row


def _cost_range(session, target, input_tokens: int, output_tokens: int) -> tuple[float | None, float | None]:
    """USD for the input alone .. input plus the whole max output (genai-prices; local $0; None unknown)."""
    from . import pricing
    from .events import Usage
    if target.is_local:
        return 0.0, 0.0
    try:
        model = target.model or session._spec(target).default_model or ""
    except LLMError:
        return None, None
    low = pricing.cost(target.provider, model, Usage(input_tokens, 0))
    high = pricing.cost(target.provider, model, Usage(input_tokens, output_tokens))
    return low, high
