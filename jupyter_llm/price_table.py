"""A compact, verified copy of the genai-prices entries this machine has used, kept in the data dir, so a
kernel's first cloud cell reads a small JSON file (about a millisecond) instead of importing genai-prices.

Each entry answers for one (provider, model) pair: the context window and, where the price is a plain
function of input and output tokens (flat or tiered by input size, fixed until a known date), the prices
themselves. An entry is only kept after its arithmetic reproduced genai-prices' own result exactly at
probe points around every tier, so the copy never disagrees with the catalogue; anything else (time-of-day
prices, units we do not model) is marked `exact: false` and priced by genai-prices itself. The file is keyed
by the installed genai-prices data file (size and mtime): upgrading genai-prices starts a new table. An
entry that carries `until` (the date a scheduled price change starts) is looked up again from that day.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT = 1
FILE = "price-table.json"
_MTOK = Decimal(1_000_000)
_KREQ = Decimal(1_000)
_ABSENT = object()

_lock = threading.Lock()
_entries: dict[str, Any] | None = None     # this process's view of the file (with what it added)
_source: str | None = None


def _today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


def source_id() -> str | None:
    """Which genai-prices data this table copies: its data file's path, size and mtime (None: not installed).
    Found without importing genai-prices."""
    import importlib.util
    try:
        spec = importlib.util.find_spec("genai_prices")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(list(spec.submodule_search_locations)[0]) / "data.py"
    try:
        st = data.stat()
    except OSError:
        return None
    return f"{data}|{st.st_size}|{st.st_mtime_ns}|{FORMAT}"


def path() -> Path:
    from .config import data_dir
    return data_dir() / FILE


def _read(source: str | None) -> dict[str, Any]:
    if source is None:
        return {}
    try:
        doc = json.loads(path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("source") != source or not isinstance(doc.get("entries"), dict):
        return {}
    return doc["entries"]


def _table() -> dict[str, Any]:
    global _entries, _source
    if _entries is None:
        _source = source_id()
        _entries = dict(_read(_source))
    return _entries


def reset() -> None:
    """Forget this process's copy: the next lookup reads the file again (tests; a table replaced on disk)."""
    global _entries, _source
    with _lock:
        _entries, _source = None, None


def _fresh(entry: Any) -> bool:
    return not (isinstance(entry, dict) and entry.get("until") and _today() >= entry["until"])


def entry(provider_id: str, model: str) -> dict[str, Any] | None:
    """The table's entry for (provider, model), computed from genai-prices and kept on a miss; None when
    genai-prices does not know the model."""
    key = f"{provider_id}|{model}"
    with _lock:
        found = _table().get(key, _ABSENT)
    if found is not _ABSENT and _fresh(found):
        return found
    computed = _compute(provider_id, model)
    _remember(key, computed)
    return computed


def _remember(key: str, value: dict[str, Any] | None) -> None:
    with _lock:
        table = _table()
        table[key] = value
        source = _source
        snapshot = dict(table)
    if source is None:
        return
    try:  # merge with what other kernels added since, then replace the file in one step
        merged = {**_read(source), **snapshot}
        target = path()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({"format": FORMAT, "source": source, "entries": merged}, separators=(",", ":")),
                       encoding="utf-8")
        os.replace(tmp, target)
    except OSError:
        log.debug("could not save the price table", exc_info=True)


# ---------------------------------------------------------------- arithmetic (as genai-prices does it)

def _price_at(price: Any, input_tokens: int) -> Decimal:
    """A flat price, or the tier a request of `input_tokens` falls in (the whole request pays that tier)."""
    if isinstance(price, dict):
        chosen = Decimal(price["base"])
        for start, tier_price in reversed(price["tiers"]):
            if input_tokens > start:
                chosen = Decimal(tier_price)
                break
        return chosen
    return Decimal(price)


def total(e: dict[str, Any], input_tokens: int, output_tokens: int) -> Decimal:
    """USD of one request under an exact entry."""
    input_tokens, output_tokens = max(int(input_tokens), 0), max(int(output_tokens), 0)
    tiered = any(isinstance(e.get(k), dict) for k in ("in", "out"))
    threshold = input_tokens if tiered else 0
    result = Decimal(0)
    if e.get("in") is not None:
        result += _price_at(e["in"], threshold) * Decimal(input_tokens) / _MTOK
    if e.get("out") is not None:
        result += _price_at(e["out"], threshold) * Decimal(output_tokens) / _MTOK
    if e.get("req") is not None:
        result += Decimal(e["req"]) / _KREQ
    return result


# ---------------------------------------------------------------- building an entry (imports genai-prices)

def _plain(value: Any) -> Any:
    """A genai-prices price as JSON: a decimal string, or {"base", "tiers": [[start, price], ...]}."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return str(value)
    base, tiers = getattr(value, "base", None), getattr(value, "tiers", None)
    if isinstance(base, Decimal) and isinstance(tiers, list):
        return {"base": str(base), "tiers": [[int(t.start), str(t.price)] for t in sorted(tiers, key=lambda t: t.start)]}
    raise TypeError(f"unmodelled price {value!r}")


def _schedule(info: Any) -> tuple[bool, str | None]:
    """(prices depend only on the date, the next date a scheduled price starts or None)."""
    prices = getattr(info, "prices", None)
    if not isinstance(prices, list):
        return True, None
    today = _today()
    upcoming = []
    for conditional in prices:
        constraint = getattr(conditional, "constraint", None)
        if constraint is None:
            continue
        start = getattr(constraint, "start_date", None)
        if start is None:       # a time-of-day price (off-peak hours): genai-prices decides per request
            return False, None
        if start.isoformat() > today:
            upcoming.append(start.isoformat())
    return True, min(upcoming) if upcoming else None


def _compute(provider_id: str, model: str) -> dict[str, Any] | None:
    from . import pricing
    where = pricing._where(provider_id, model)
    if where is None:
        return None
    from genai_prices import Usage as GUsage, calc_price
    try:
        calc = calc_price(GUsage(input_tokens=1, output_tokens=1), where[1], provider_id=where[0])
    except (LookupError, ValueError):
        return None
    info = calc.model
    e: dict[str, Any] = {"ctx": getattr(info, "context_window", None)}
    dated, until = _schedule(info)
    try:
        mp = calc.model_price
        spec = {"in": _plain(getattr(mp, "input_mtok", None)), "out": _plain(getattr(mp, "output_mtok", None)),
                "req": _plain(getattr(mp, "requests_kcount", None))}
    except (AttributeError, TypeError):
        spec = None
    if not dated or spec is None or isinstance(spec["req"], dict) or not _verified(spec, where, calc_price, GUsage):
        e["exact"] = False
        return e
    e.update({k: v for k, v in spec.items() if v is not None})
    e["exact"] = True
    if until:
        e["until"] = until
    return e


def _verified(spec: dict[str, Any], where: tuple, calc_price, GUsage) -> bool:
    """True when `total` reproduces genai-prices exactly at probes on both sides of every tier boundary."""
    starts = {0, 1, 999, 123_457, 1_000_001}
    for value in (spec["in"], spec["out"]):
        if isinstance(value, dict):
            for start, _ in value["tiers"]:
                starts.update({start, start + 1})
    for inp in sorted(starts):
        for out in (0, 1, 98_765):
            try:
                expected = calc_price(GUsage(input_tokens=inp, output_tokens=out), where[1], provider_id=where[0])
            except (LookupError, ValueError):
                return False
            if total(spec, inp, out) != expected.total_price:
                return False
    return True
