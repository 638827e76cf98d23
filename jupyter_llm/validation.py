"""Every numeric setting, config key and option in one table (NUMBERS), and checks that refuse bad values."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import LLMError


@dataclass(frozen=True)
class Num:
    """One numeric key: its type, allowed range and unit; nan and inf are never allowed."""
    kind: type                 # int or float
    low: float
    high: float
    low_open: bool = False     # True: `low` itself is not allowed (strictly greater)
    unit: str = ""
    note: str = ""             # extra words for the error (e.g. what 0 means)


_DAY = 86400.0
# Every numeric setting, config key and option, in one table: a new numeric key is one line here.
# `*` matches one name (a provider). Keys read by `check_number`; config keys by the loader.
NUMBERS: dict[str, Num] = {
    "reliability.retries": Num(int, 0, 20),
    "reliability.circuit_failures": Num(int, 0, 1000, note="0 turns the breaker off"),
    "reliability.timeout": Num(float, 0, _DAY, low_open=True, unit="s"),
    "reliability.connect_timeout": Num(float, 0, 3600, low_open=True, unit="s"),
    "reliability.stall_timeout": Num(float, 0, _DAY, low_open=True, unit="s"),
    "reliability.deadline": Num(float, 0, _DAY, low_open=True, unit="s"),
    "reliability.backoff": Num(float, 0, 600, unit="s"),
    "reliability.max_backoff": Num(float, 0, 3600, unit="s"),
    "reliability.circuit_cooldown": Num(float, 0, _DAY, unit="s"),
    "limits.*.rpm": Num(float, 0, 1e7, note="0 means no limit; below 1 per minute is refused"),
    "limits.*.tpm": Num(float, 0, 1e12, note="0 means no limit"),
    "budget.session_usd": Num(float, 0, 1e7, unit="USD"),
    "budget.daily_usd": Num(float, 0, 1e7, unit="USD"),
    "budget.monthly_usd": Num(float, 0, 1e7, unit="USD"),
    "budget.providers.*.session_usd": Num(float, 0, 1e7, unit="USD"),
    "budget.providers.*.daily_usd": Num(float, 0, 1e7, unit="USD"),
    "budget.providers.*.monthly_usd": Num(float, 0, 1e7, unit="USD"),
    "providers.*.timeout": Num(float, 0, _DAY, low_open=True, unit="s"),
    "providers.*.connect_timeout": Num(float, 0, _DAY, low_open=True, unit="s"),
    "providers.*.price.input": Num(float, 0, 1e6, unit="USD per million tokens"),
    "providers.*.price.output": Num(float, 0, 1e6, unit="USD per million tokens"),
    "providers.*.ttl": Num(float, 0, 30 * _DAY, low_open=True, unit="s"),
    "local.ports.*": Num(int, 1, 65535),
    "local.scan.*": Num(int, 1, 65535),
    # session settings (`%llm set`, `[defaults]`, per-cell options)
    "temperature": Num(float, 0, 2),
    "top_p": Num(float, 0, 1, low_open=True),
    "max_tokens": Num(int, 1, 10_000_000),
    "timeout": Num(float, 0, _DAY, low_open=True, unit="s"),
    "stall_timeout": Num(float, 0, _DAY, low_open=True, unit="s"),
    "deadline": Num(float, 0, _DAY, low_open=True, unit="s"),
    "table_rows": Num(int, 1, 1_000_000),
    # magic arguments
    "budget": Num(float, 0, 1e7, unit="USD"),
    "history.n": Num(int, 1, 1_000_000),
    "discover.port": Num(int, 1, 65535),
    "port": Num(int, 1, 65535),            # any other port option (e.g. a server to start)
    "serve.ctx": Num(int, 0, 10_000_000, note="0 takes the model's own context size"),
    "serve.gpu_layers": Num(int, -1, 100_000, note="-1 offloads every layer"),
    "serve.timeout": Num(float, 0, 3600, low_open=True, unit="s"),
}
# Below 1 request per minute a bucket would wait minutes per request: refused rather than hanging.
_NONZERO_MIN = {"limits.*.rpm": 1.0}


def numeric_spec(key: str) -> Num | None:
    """The NUMBERS entry for a dotted key (a provider name matches `*`)."""
    if key in NUMBERS:
        return NUMBERS[key]
    parts = key.split(".")
    for pattern, spec in NUMBERS.items():
        pat = pattern.split(".")
        if len(pat) == len(parts) and all(a == "*" or a == b for a, b in zip(pat, parts)):
            return spec
    return None


def _pattern(key: str) -> str:
    parts = key.split(".")
    for pattern in NUMBERS:
        pat = pattern.split(".")
        if len(pat) == len(parts) and all(a == "*" or a == b for a, b in zip(pat, parts)):
            return pattern
    return key


# A numeric key someone forgot to put in NUMBERS still gets the basics: finite, >= 0, not absurd.
FALLBACK = {int: Num(int, 0, 10 ** 9), float: Num(float, 0, 1e9)}


def check_number(key: str, value, *, where: str = "", label: str | None = None, kind: type | None = None):
    """Validate `value` for numeric key `key` (see NUMBERS): a finite number of the right type within
    range, strings parsed. Raises BAD_ARGUMENT (or CONFIG_ERROR naming `where` = file:line: key).
    A key missing from the table is checked with FALLBACK[kind] when `kind` is given."""
    spec = numeric_spec(key) or (FALLBACK.get(kind) if kind is not None else None)
    if spec is None:
        raise KeyError(key)
    code = "CONFIG_ERROR" if where else "BAD_ARGUMENT"
    name = where or (label or key)
    kind = "an integer" if spec.kind is int else "a number"
    original = value
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            value = int(text) if spec.kind is int and re.fullmatch(r"[+-]?\d+", text) else float(text)
        except (ValueError, OverflowError):
            raise LLMError(code, f"{name} must be {kind}, got {original!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LLMError(code, f"{name} must be {kind}, got {original!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise LLMError(code, f"{name} must be a finite number, got {original!r}")
    if spec.kind is int:
        if isinstance(value, float):
            if value != int(value):
                raise LLMError(code, f"{name} must be a whole number, got {original!r}")
            value = int(value)
    else:
        value = float(value)
    unit = f" {spec.unit}" if spec.unit else ""
    low_ok = value > spec.low if spec.low_open else value >= spec.low
    if not low_ok or value > spec.high:
        span = (f"> {spec.low:g} and <= {spec.high:g}{unit}" if spec.low_open
                else f"between {spec.low:g} and {spec.high:g}{unit}")
        extra = f"; {spec.note}" if spec.note else ""
        shown = original if isinstance(original, str) and len(original) <= 40 else f"{value:g}"
        raise LLMError(code, f"{name} must be {span}, got {shown}{extra}")
    floor = _NONZERO_MIN.get(_pattern(key))
    if floor is not None and 0 < value < floor:
        raise LLMError(code, f"{name} must be 0 (no limit) or at least {floor:g}, got {value:g}",
                       hint="a rate below one request per minute is not supported")
    return value


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


def check_host(host: str, *, what: str = "--host") -> str:
    """A host name, IPv4 or IPv6 address (no scheme, port, path or spaces); BAD_ARGUMENT otherwise."""
    import ipaddress
    text = host.strip() if isinstance(host, str) else ""
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ipaddress.ip_address(bare)
        return bare
    except ValueError:
        pass
    if text and len(text) <= 253 and _HOST.fullmatch(text):
        return text
    raise LLMError("BAD_ARGUMENT", f"{what}: {host!r} is not a host name or IP address",
                   hint="e.g. 127.0.0.1, localhost or ::1; no scheme, port or spaces")
