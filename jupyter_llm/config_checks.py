"""Type and range checks for config-file values whose errors point at the offending file:line: key."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from .errors import LLMError
from .validation import _unencodable, check_number, numeric_spec

MAX_USD = 10_000_000.0          # a cap or price above this is a typo, not a budget
MAX_PRICE = 1_000_000.0         # USD per million tokens ($1 a token)


def _finite(check: "_Checker", dotted: str, value: Any, minimum: float, maximum: float) -> float:
    check.number(dotted, value, float, minimum=minimum)
    if not math.isfinite(value) or value > maximum:
        check.fail(dotted, f"must be a finite number between {minimum:g} and {maximum:g}, got {value!r}")
    return float(value)


def _usd(check: "_Checker", dotted: str, value: Any) -> float:
    return _finite(check, dotted, value, 0, MAX_USD)


def _seconds(check: "_Checker", dotted: str, value: Any) -> float:
    seconds = _finite(check, dotted, value, 0, 86_400)
    if seconds <= 0:
        check.fail(dotted, f"must be more than 0 seconds, got {value!r}")
    return seconds


def _price(check: "_Checker", dotted: str, value: Any) -> None:
    table = check.table(dotted, value)
    for key in table:
        if key not in ("input", "output"):
            check.fail(f"{dotted}.{key}", f"unknown key {key!r} (known: input, output, USD per million tokens)")
    for key in ("input", "output"):
        if key not in table:
            check.fail(dotted, f"needs {key} (USD per million {key} tokens), e.g. price = {{ input = 0.15, output = 0.6 }}")
        _finite(check, f"{dotted}.{key}", table[key], 0, MAX_PRICE)


def _check_url(check: "_Checker", dotted: str, url: str) -> None:
    """A base URL must be http(s)://HOST[:PORT][/path] with no spaces (the error never shows its secrets)."""
    from urllib.parse import urlsplit
    from .redact import register_url, safe_url
    register_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        check.fail(dotted, f"{safe_url(url)!r} is not a URL ({exc})")
    if parts.scheme not in ("http", "https") or not host or any(c.isspace() for c in url) or _unencodable(url):
        check.fail(dotted, f"{safe_url(url)!r} is not an http(s):// URL with a host")
    if port is not None and not 0 < port < 65536:
        check.fail(dotted, f"port {port} is not 1-65535")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Checker:
    """Type checks that point at the offending line of the file."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, dotted: str) -> int | None:
        """The line that defines `dotted` (a table header, a key, or a key inside an inline table)."""
        parts = dotted.split(".")
        header: list[str] = []
        for no, line in enumerate(self.lines, 1):
            s = line.strip()
            m = re.match(r"^\[\[?\s*([^\]]+?)\s*\]\]?", s)
            if m:
                header = [h.strip().strip("\"'") for h in m.group(1).split(".")]
                if header == parts:
                    return no
                continue
            if parts[:len(header)] != header or len(parts) == len(header):
                continue
            rest = parts[len(header):]
            if re.match(rf"^[\"']?{re.escape(rest[0])}[\"']?\s*[=.]", s) and all(
                    re.search(rf"(^|[{{,\s.\"']){re.escape(r)}[\"']?\s*[=.]", s) for r in rest):
                return no
        return None

    def where(self, dotted: str) -> str:
        line = self.line_of(dotted)
        return f"{self.path}:{line}: {dotted}" if line else f"{self.path}: {dotted}"

    def fail(self, dotted: str, message: str):
        raise LLMError("CONFIG_ERROR", f"{self.where(dotted)}: {message}")

    def typed(self, dotted: str, value: Any, kind: type) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(dotted, f"must be {kind.__name__}, got {value!r}")
        return value

    def table(self, dotted: str, value: Any) -> dict:
        return self.typed(dotted, value, dict)

    def num(self, dotted: str, value: Any, kind: type | None = None):
        """A numeric key checked against NUMBERS (strings are not numbers in a TOML file)."""
        if isinstance(value, str):
            self.fail(dotted, f"must be a number, got {value!r}")
        return check_number(dotted, value, where=self.where(dotted), kind=kind)

    def number(self, dotted: str, value: Any, kind: type, minimum: float | None = None):
        """Older form of `num`: a key in NUMBERS is checked by the table; any other still must be a
        finite number (never nan or inf), at least `minimum`, and not absurd (FALLBACK)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
            self.fail(dotted, f"must be a number, got {value!r}")
        if numeric_spec(dotted) is not None:
            return check_number(dotted, value, where=self.where(dotted))
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(dotted, f"must be a finite number, got {value!r}")
        if minimum is not None and value < minimum:
            self.fail(dotted, f"must be >= {minimum}, got {value!r}")
        if abs(value) > 1e12:
            self.fail(dotted, f"must be at most 1e12, got {value!r}")
        return value
