"""Remaining quota from the last response's rate-limit headers (OpenAI/Groq `x-ratelimit-*`,
Anthropic `anthropic-ratelimit-*`), kept per provider so `%llm status` can say what is left."""
from __future__ import annotations

import re
import threading
import time
from typing import Any, Mapping

_lock = threading.Lock()
_last: dict[str, dict[str, Any]] = {}

# header -> (kind, field): kind is requests | tokens | input-tokens | output-tokens
_OPENAI = re.compile(r"^x-ratelimit-(remaining|limit|reset)-(requests|tokens)$")
_ANTHROPIC = re.compile(r"^anthropic-ratelimit-(requests|tokens|input-tokens|output-tokens)-(remaining|limit|reset)$")


def parse(headers: Mapping[str, str] | None) -> dict[str, dict[str, str]]:
    """{kind: {remaining, limit, reset}} from rate-limit headers; {} when the provider sent none."""
    out: dict[str, dict[str, str]] = {}
    if not headers:
        return out
    try:
        items = list(headers.items())
    except Exception:
        return out
    for name, value in items:
        low = str(name).lower()
        m = _OPENAI.match(low)
        if m:
            out.setdefault(m.group(2), {})[m.group(1)] = str(value)
            continue
        m = _ANTHROPIC.match(low)
        if m:
            out.setdefault(m.group(1), {})[m.group(2)] = str(value)
    return out


def capture(provider: str, headers: Mapping[str, str] | None) -> None:
    """Remember the quota a response reported (a response without rate-limit headers changes nothing)."""
    found = parse(headers)
    if found:
        with _lock:
            _last[provider] = {"at": time.time(), "limits": found}


def last(provider: str) -> dict[str, Any] | None:
    with _lock:
        return _last.get(provider)


def describe(provider: str) -> str:
    """`requests 499/500 (reset 120ms), tokens 149k/150k` for `%llm status`; "" when unknown."""
    info = last(provider)
    if not info:
        return ""
    parts = []
    for kind, v in info["limits"].items():
        if "remaining" not in v:
            continue
        text = f"{kind} {v['remaining']}" + (f"/{v['limit']}" if "limit" in v else "")
        if v.get("reset"):
            text += f" (reset {v['reset']})"
        parts.append(text)
    age = time.time() - info["at"]
    return ", ".join(parts) + (f"; as of {age:.0f} s ago" if parts else "")
