"""`%llm budget` and `%llm usage`: set and show spend caps, and break spend down by day, month or notebook."""
from __future__ import annotations

import datetime as dt
from typing import Any

from .budget import PERIODS, parse_usd, period_bounds, usd
from .errors import LLMError

_PERIOD_ALIASES = {"session": "session", "daily": "daily", "day": "daily", "today": "daily",
                   "monthly": "monthly", "month": "monthly"}
BUDGET_USAGE = ("usage: %llm budget [PROVIDER] [session|daily|monthly] USD|off, e.g. %llm budget 5, "
                "%llm budget daily 2, %llm budget openai monthly 10, %llm budget off")


def _is_amount(word: str) -> bool:
    try:
        float(word.removeprefix("$").replace(",", ""))
    except ValueError:
        return False
    return True


def cmd_budget(magics, rest: list[str]) -> None:
    """%llm budget [PROVIDER] [PERIOD] USD|off; no arguments shows every cap and what is spent against it."""
    session = magics.session
    words = list(rest)
    if not words:
        return show_caps(session)
    if len(words) > 3:
        raise LLMError("BAD_ARGUMENT", f"too many words for %llm budget: {' '.join(words)!r}", hint=BUDGET_USAGE)
    value = words.pop()
    provider = period = None
    for word in words:
        low = word.lower()
        if low in _PERIOD_ALIASES and period is None:
            period = _PERIOD_ALIASES[low]
        elif provider is None and not _is_amount(word):
            try:
                provider = session.parse(low).provider
            except LLMError:
                raise LLMError("BAD_ARGUMENT", f"{word!r} is neither a provider nor session, daily or monthly",
                               hint=BUDGET_USAGE) from None
        else:
            raise LLMError("BAD_ARGUMENT", f"unexpected {word!r} in %llm budget", hint=BUDGET_USAGE)
    if value.lower() == "off":
        if period is None:
            if provider is None:
                session.caps.clear(everything=True)
            else:
                session.caps.clear(provider)
            session._record_event("budget", {"usd": None, "period": "all", "provider": provider})
            session.notify("usage")
        else:
            session.set_budget(None, period, provider)
    elif value.lower() in _PERIOD_ALIASES or not _is_amount(value):
        raise LLMError("BAD_ARGUMENT", f"a budget is a number of USD or off, got {value!r}", hint=BUDGET_USAGE)
    else:
        session.set_budget(parse_usd(value), period or "session", provider)
    return show_caps(session)


def show_caps(session) -> None:
    from .tables import show_table
    rows = session.caps.report(session)
    if not rows:
        print("budget off: no spend caps (set one with %llm budget USD, %llm budget daily USD, "
              "%llm budget monthly USD or %llm budget PROVIDER PERIOD USD)")
        return
    table = [(r["cap"], r["period"], usd(r["limit"]), usd(r["spent"]), usd(r["left"]), f"{r['percent']:.0f}%")
             for r in rows]
    show_table(["cap", "period", "limit", "spent", "left", "used"], table,
               caption="spend caps: session counts this kernel; daily and monthly count every kernel "
                       f"and restart sharing {session.store.path}")


def cmd_usage(magics, rest: list[str]) -> None:
    """%llm usage [--today | --month] [--notebook [PATH]]: tokens and cost by provider and model."""
    from .magics import _Parser
    p = _Parser(prog="%llm usage", add_help=False)
    when = p.add_mutually_exclusive_group()
    when.add_argument("--today", action="store_true")
    when.add_argument("--month", action="store_true")
    p.add_argument("--notebook", nargs="?", const="", default=None)
    args = p.parse_args(rest)
    session = magics.session
    if not (args.today or args.month or args.notebook is not None):
        return _session_usage(session)
    return _history_usage(session, today=args.today, month=args.month, notebook=args.notebook)


def usage_rows(session, *, today: bool = False, month: bool = False, notebook: str | None = None,
               now: float | None = None) -> tuple[list[dict[str, Any]], str]:
    """Rows from the history DB (provider, model, requests, cached, tokens, cost) and a caption saying
    which period and notebook they cover. `notebook` "" means this kernel's notebook."""
    now = session.caps.clock() if now is None else now
    since = until = None
    scope = "all time"
    if today or month:
        since, until = period_bounds("daily" if today else "monthly", now)
        here = dt.datetime.fromtimestamp(now)
        scope = f"today ({here:%Y-%m-%d})" if today else f"this month ({here:%Y-%m})"
    if notebook == "":
        from . import cellinfo
        notebook = cellinfo.current().notebook or cellinfo.notebook_path()
        if not notebook:
            raise LLMError("BAD_ARGUMENT", "this kernel does not know its notebook's path",
                           hint="name it: %llm usage --notebook PATH")
    rows = session.store.usage(since=since, until=until, notebook=notebook)
    caption = f"spend {scope}, every kernel sharing the history" + (f", notebook {notebook}" if notebook else "")
    return rows, caption


def _history_usage(session, *, today: bool, month: bool, notebook: str | None) -> None:
    from .tables import show_table
    rows, caption = usage_rows(session, today=today, month=month, notebook=notebook)
    table = [(r["provider"], r["model"], r["requests"], r["cached"], r["input_tokens"], r["output_tokens"],
              usd(r["cost"]) + (" +?" if r["unpriced"] else "")) for r in rows]
    table.append(("total", "", sum(r["requests"] for r in rows), sum(r["cached"] for r in rows),
                  sum(r["input_tokens"] for r in rows), sum(r["output_tokens"] for r in rows),
                  usd(sum(r["cost"] for r in rows))))
    show_table(["provider", "model", "requests", "cached", "input tokens", "output tokens", "cost"], table,
               caption=caption + _caps_line(session))


def _session_usage(session) -> None:
    from .tables import show_table
    rows = [(p, m, t.requests, t.input_tokens, t.output_tokens, usd(t.cost) + (" +?" if t.unpriced else ""))
            for p, m, t in session.usage.rows()]
    total = session.usage.summary()
    rows.append(("total", "", total["requests"], total["input_tokens"], total["output_tokens"], usd(total["cost"])))
    show_table(["provider", "model", "requests", "input tokens", "output tokens", "cost"], rows,
               caption="this session" + (_caps_line(session) or "; budget: off"))


def caps_summary(session) -> str:
    """'session $0.12 of $5.00, daily $1.70 of $2.00', or 'off' (for %llm status)."""
    return _caps_line(session).removeprefix("; budget: ") or "off"


def _caps_line(session) -> str:
    """'; budget: session $0.12 of $5.00, daily $1.70 of $2.00' (empty with no caps)."""
    rows = session.caps.report(session)
    if not rows:
        return ""
    return "; budget: " + ", ".join(f"{r['cap']} {usd(r['spent'])} of {usd(r['limit'])}" for r in rows)


__all__ = ["cmd_budget", "cmd_usage", "show_caps", "usage_rows", "caps_summary", "PERIODS"]
