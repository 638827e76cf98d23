"""A readable audit: `%llm history` (exchanges, with fallback reasons and replay marks), `--events`
(switches, logins, logouts, budget, mode, alias and config changes, fallbacks) and `--json` export.

Events are written by the session as they happen (store.events); this module only reads and words
them. A secret never reaches the store (logins keep the masked key), and every field that could
hold one is masked again on the way out, so a hand-edited or older database cannot leak one either.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from .errors import CODES, LLMError

_SECRETISH = re.compile(r"(secret|token|key|password|authorization|api_key)", re.I)
_CODE = re.compile(r"\b(" + "|".join(CODES) + r")\b")


def _when(ts: float | None) -> str:
    try:   # a row another writer garbled shows "?" instead of crashing the table
        return dt.datetime.fromtimestamp(float(ts or 0)).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def reason_code(reason: str | None) -> str | None:
    """The error code inside a fallback reason line ("openai:gpt-4o-mini: NETWORK_ERROR: ...")."""
    m = _CODE.search(reason or "")
    return m.group(1) if m else None


def _mask(value: Any) -> str:
    from .providers import mask
    text = "" if value is None else str(value)
    return text if not text or text.startswith("****") else mask(text)


def clean_detail(detail: Any) -> Any:
    """The event detail with anything that looks like a credential masked (recursively)."""
    if isinstance(detail, dict):
        return {k: (_mask(v) if _SECRETISH.search(str(k)) and isinstance(v, str) else clean_detail(v))
                for k, v in detail.items()}
    if isinstance(detail, list):
        return [clean_detail(v) for v in detail]
    return detail


def describe(kind: str, detail: Any) -> str:
    """One line saying what an event did."""
    d = clean_detail(detail) if isinstance(detail, dict) else {}
    if kind == "switch":
        return f"{d.get('from')} → {d.get('to')}"
    if kind == "login":
        key = f", {d['key']}" if d.get("key") else ""
        return f"{d.get('provider')} ({d.get('method', 'api_key')}{key})"
    if kind == "logout":
        return f"{d.get('provider')} ({'credential removed' if d.get('removed') else 'nothing was stored'})"
    if kind == "budget":
        usd, period = d.get("usd"), d.get("period") or "session"
        who = f"{d['provider']} " if d.get("provider") else ""
        return f"{who}{period} budget off" if usd is None else f"{who}{period} budget ${float(usd):.2f}"
    if kind == "mode":
        return f"{d.get('from')} → {d.get('to')}"
    if kind == "fallback":
        code = reason_code(d.get("reason")) or "?"
        return f"{d.get('from')} → {d.get('to')} ({code})"
    if kind == "alias":
        return f"{d.get('name')} deleted" if d.get("target") is None else f"{d.get('name')} = {d.get('target')}"
    if kind == "config":
        return f"{d.get('action', 'reload')} {d.get('path') or ''}".strip() + (f": {d['error']}" if d.get("error") else "")
    if kind in ("record", "replay"):
        return f"{d.get('action', 'on')} {d.get('path') or ''}".strip()
    return json.dumps(clean_detail(detail), ensure_ascii=False, default=str) if detail is not None else ""


def event_rows(store, n: int, kind: str | None = None) -> list[dict[str, Any]]:
    """The last `n` events, newest last, as dicts with a masked detail and a `what` line."""
    rows = []
    for e in store.events(n, kind=kind):
        rows.append({"id": e.get("id"), "time": e.get("time"), "session_id": e.get("session_id"),
                     "kind": e.get("kind"), "what": describe(e.get("kind") or "", e.get("detail")),
                     "detail": clean_detail(e.get("detail"))})
    return rows


def exchange_status(h: dict) -> str:
    word = h.get("status") or "ok"
    if h.get("incomplete"):
        word += " (incomplete)"
    if h.get("cached"):
        word += " (cached)"
    if h.get("replayed"):
        word += " (replayed)"
    if h.get("fallback_reason"):
        word += f" (fallback after {reason_code(h['fallback_reason']) or 'an error'})"
    return word


def _frame(rows: list[dict]):
    try:
        import pandas as pd
    except ImportError:
        return rows
    frame = pd.DataFrame(rows)
    if "time" in frame:
        frame["time"] = pd.to_datetime(frame["time"], unit="s")
    return frame


def cmd_history(magics, rest: list[str]):
    """`%llm history [-n N] [--events [KIND]] [--json [PATH]]`; `_llm_history` gets the rows as a DataFrame."""
    from .magics import _Parser
    from .tables import money, seconds, show_table
    p = _Parser(prog="%llm history", add_help=False)
    p.add_argument("-n", default=None)
    p.add_argument("--events", nargs="?", const="*", default=None, metavar="KIND")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH")
    args = p.parse_args(rest)
    from .config import check_number   # nan, huge and negative counts are one BAD_ARGUMENT line
    n = check_number("history.n", args.n, label="%llm history -n") if args.n is not None else (20 if args.events else 10)
    session = magics.session
    if args.events:
        rows = event_rows(session.store, n, None if args.events == "*" else args.events)
    else:
        rows = [dict(h) for h in session.history(n)]
    if args.json is not None:
        text = json.dumps(rows, ensure_ascii=False, default=str, indent=1)
        if args.json == "-":
            print(text)
        else:
            from pathlib import Path
            path = Path(args.json).expanduser()
            try:
                path.write_text(text + "\n", encoding="utf-8")
            except OSError as exc:
                raise LLMError("BAD_ARGUMENT", f"cannot write {path}: {exc}") from None
            print(f"wrote {len(rows)} {'events' if args.events else 'exchanges'} to {path}")
    elif args.events:
        show_table(["time", "event", "what"], [(_when(r["time"]), r["kind"], r["what"]) for r in rows],
                   caption="" if rows else "no events recorded yet")
    else:
        table = []
        for h in rows:
            prompt = (h.get("prompt") or "").replace("\n", " ")
            via = h.get("answered_by")
            table.append((_when(h["time"]), h["target"] + (f" → {via}" if via and via != h["target"] else ""),
                          prompt[:60] + ("…" if len(prompt) > 60 else ""),
                          f"{h.get('input_tokens') or 0}/{h.get('output_tokens') or 0}", money(h.get("cost")),
                          seconds(h.get("latency")), exchange_status(h)))
        show_table(["time", "target", "prompt", "tokens in/out", "cost", "latency", "status"], table)
    if magics.shell is not None:
        magics.shell.user_ns["_llm_history"] = _frame(rows)
    return None
