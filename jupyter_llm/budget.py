"""Spend caps (per session, calendar day and month; overall and per provider) summed from the history
DB so they hold across kernels and restarts; a request that could pass one is refused before it is sent.

Money is never spent unseen: under a cap, a target whose price nobody knows (no genai-prices entry,
no configured `price`, not `free`, not on loopback) is refused, and so is a fallback that would be.
Imports only the standard library at load time (pricing and the store come in when a cap is used).
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .errors import LLMError

if TYPE_CHECKING:
    from .events import Request
    from .kernel_session import Session
    from .targets import Target

__all__ = ["Cap", "SpendCaps", "PERIODS", "WARN_AT", "parse_usd", "period_bounds", "price_args", "report"]

log = logging.getLogger("jupyter_llm")

PERIODS = ("session", "daily", "monthly")
WARN_AT = 0.8                    # one warning line when a cap first passes this share
HOLD_TTL = 900.0                 # seconds a request in flight holds its estimate (a killed kernel's expire)
MAX_USD = 10_000_000.0           # keep in step with config_checks.MAX_USD
_EPS = 1e-12
_PERIOD_WORDS = {"session": "this session", "daily": "today", "monthly": "this month"}


@dataclass(frozen=True)
class Cap:
    period: str                  # session | daily | monthly
    provider: str | None         # None: every provider together
    usd: float

    @property
    def name(self) -> str:
        """How the user names it: `daily`, `openai monthly` (as typed after %llm budget)."""
        return f"{self.provider} {self.period}" if self.provider else self.period

    @property
    def title(self) -> str:
        """`daily cap (today, all kernels)`, `openai session cap (this kernel)`."""
        scope = "this kernel" if self.period == "session" else "all kernels"
        return f"{self.name} cap ({_PERIOD_WORDS[self.period]}, {scope})"

    def covers(self, provider: str) -> bool:
        return self.provider is None or self.provider == provider


def usd(value: float | None) -> str:
    """Money with enough digits for small requests: $0.000150, $0.0421, $2.00, $1,250.00."""
    if value is None:
        return "?"
    if value >= 1 or abs(value - round(value, 2)) < 1e-9:
        return f"${value:,.2f}"
    return f"${value:.4f}" if value >= 0.001 else f"${value:.6f}"


def parse_usd(text: Any) -> float:
    """A cap typed by the user ("5", "$2.50"): finite, >= 0, <= MAX_USD, else BAD_ARGUMENT."""
    raw = str(text).strip()
    try:
        value = float(raw.removeprefix("$").replace(",", "")) if not isinstance(text, (int, float)) else float(text)
    except ValueError:
        raise LLMError("BAD_ARGUMENT", f"a budget is a number of USD or off, got {raw!r}") from None
    if not math.isfinite(value) or value < 0 or value > MAX_USD:
        raise LLMError("BAD_ARGUMENT", f"a budget must be between $0 and ${MAX_USD:,.0f}, got {raw!r}")
    return value


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """[start, end) of the local calendar day or month containing `now` (unix seconds)."""
    here = dt.datetime.fromtimestamp(now)
    if period == "daily":
        start = here.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + dt.timedelta(days=1)
    elif period == "monthly":
        start = here.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    else:
        raise ValueError(period)
    # Midnight of a DST-change day exists in local time; timestamp() resolves it through the OS rules.
    return start.timestamp(), end.timestamp()


def _period_key(period: str, now: float, session_id: str) -> str:
    if period == "session":
        return f"session {session_id}"
    here = dt.datetime.fromtimestamp(now)
    return here.strftime("%Y-%m-%d" if period == "daily" else "%Y-%m")


def price_args(session: "Session", target: "Target") -> dict[str, Any]:
    """What pricing needs beyond provider and model: the endpoint's base URL (loopback is free) and
    the provider's config (a configured `price` or `free`)."""
    try:
        spec = session._spec(target)
    except LLMError:
        return {}
    base_url = None if target.is_local else spec.base_url
    return {"base_url": base_url, "settings": spec.settings}


def _model(session: "Session", target: "Target") -> str:
    if target.is_local:
        return target.model or str(target.port or "")
    return target.model or session._spec(target).default_model or ""


def estimate(session: "Session", target: "Target", request: "Request") -> float | None:
    """Upper-bound USD for sending `request` to `target`; 0.0 free, None when the price is unknown."""
    from . import pricing
    return pricing.estimate(target.provider, _model(session, target), request, **price_args(session, target))


def with_prices(session: "Session", target: "Target", models: list) -> list:
    """ModelInfos priced as the budget prices them: a configured `price`, `free`, a loopback endpoint."""
    from . import pricing
    args = price_args(session, target)
    if pricing.configured_price(args.get("settings")) is None and not pricing.is_loopback(args.get("base_url")):
        return models
    for m in models:
        found = pricing.prices(target.provider, m.id, **args)
        if found is not None:
            m.input_price, m.output_price = found
    return models


class SpendCaps:
    """The caps a session enforces: set from config, changed by `%llm budget`, checked before sending."""

    def __init__(self, caps: dict[tuple[str | None, str], float] | None = None,
                 clock: Callable[[], float] = time.time):
        self._caps: dict[tuple[str | None, str], float] = dict(caps or {})
        self.clock = clock               # injectable, for calendar boundaries in tests
        self._warned: set[tuple[str, str, float]] = set()
        self._lock = threading.RLock()
        self._local = threading.local()  # this thread's holds: the request it has in flight
        self._settled: dict[tuple, dict[str, float]] = {}  # spend of month days that can no longer change
        self.emit: Callable[[str], None] = _stderr_line

    @classmethod
    def from_config(cls, config) -> "SpendCaps":
        caps = dict(getattr(config, "budget_caps", {}) or {})
        if getattr(config, "budget_usd", None) is not None:
            caps.setdefault((None, "session"), float(config.budget_usd))
        return cls(caps)

    # ---- the caps ----
    def get(self, period: str = "session", provider: str | None = None) -> float | None:
        return self._caps.get((provider, period))

    def set(self, amount: float | None, period: str = "session", provider: str | None = None) -> None:
        """Set (or with None remove) one cap for this kernel."""
        if period not in PERIODS:
            raise LLMError("BAD_ARGUMENT", f"a cap period is session, daily or monthly, got {period!r}")
        with self._lock:
            if amount is None:
                self._caps.pop((provider, period), None)
            else:
                self._caps[(provider, period)] = parse_usd(amount)

    def clear(self, provider: str | None = None, *, everything: bool = False) -> int:
        """Remove every cap (`everything`) or every cap of one provider; returns how many went."""
        with self._lock:
            gone = [k for k in self._caps if everything or k[0] == provider]
            for k in gone:
                del self._caps[k]
            return len(gone)

    def caps(self) -> list[Cap]:
        with self._lock:
            items = list(self._caps.items())
        order = {p: i for i, p in enumerate(PERIODS)}
        return sorted((Cap(period, provider, amount) for (provider, period), amount in items),
                      key=lambda c: (c.provider or "", order[c.period]))

    def __bool__(self) -> bool:
        return bool(self._caps)

    # ---- what is spent ----
    def spent(self, session: "Session", caps: Iterable[Cap] | None = None) -> dict[Cap, float]:
        """USD spent against each cap: this kernel's ledger for session caps; the history DB (every
        kernel, every restart) for daily and monthly, plus anything this kernel spent that the DB
        could not record."""
        return self._amounts(session, caps)[0]

    def _amounts(self, session: "Session", caps: Iterable[Cap] | None = None
                 ) -> tuple[dict[Cap, float], dict[Cap, float]]:
        """(spent, held) per cap; held is what requests in flight may still add (their estimates)."""
        caps = list(self.caps() if caps is None else caps)
        if not caps:
            return {}, {}
        now = self.clock()
        store = session.store
        in_flight = time.time() - HOLD_TTL       # holds carry real time, whatever the clock says
        ledger: dict[str, float] = {}
        for provider, _model_name, tally in session.usage.rows():
            ledger[provider] = ledger.get(provider, 0.0) + tally.cost
        by_period: dict[str, dict[str, float]] = {"session": ledger}
        holds: dict[str, dict[str, float]] = {"session": store.held(since=in_flight, session_id=session.id)}
        periods = {c.period for c in caps} - {"session"}
        if periods:
            recorded = store.spend(session_id=session.id)
            unrecorded = {p: ledger[p] - recorded.get(p, 0.0) for p in ledger if ledger[p] - recorded.get(p, 0.0) > _EPS}
            held = store.held(since=in_flight)
            for period in periods:
                by_period[period] = _plus(self._period_spend(store, period, now), unrecorded)
                holds[period] = held

        def total(sums: dict[str, float], cap: Cap) -> float:
            return sum(v for p, v in sums.items() if cap.covers(p))
        return ({cap: total(by_period[cap.period], cap) for cap in caps},
                {cap: total(holds[cap.period], cap) for cap in caps})

    def _period_spend(self, store, period: str, now: float) -> dict[str, float]:
        """Spend per provider in the calendar day or month around `now`. A month's days before today
        (less the longest a request can take to be recorded) are summed once and kept, so a check
        reads only today's rows however busy the month was."""
        since, until = period_bounds(period, now)
        if period != "monthly":
            return store.spend(since=since, until=until)
        settled_until = max(since, period_bounds("daily", now)[0] - HOLD_TTL)
        key = (str(store.path), since, settled_until)
        settled = self._settled.get(key) if settled_until > since else {}
        if settled is None:
            settled = store.spend(since=since, until=settled_until)
            with self._lock:
                self._settled = {key: settled}
        return _plus(settled, store.spend(since=settled_until, until=until))

    # ---- before sending ----
    def check(self, session: "Session", targets: list["Target"], request: "Request", *, hold: bool = False) -> None:
        """Refuse (BUDGET_EXCEEDED, nothing sent) when sending `request` to every target could pass any
        cap, or when a capped target has no known price. No caps: no work at all.

        `hold` (an ask about to send): check and record the estimate as held in one write transaction
        of the history file, so kernels checking at the same moment see each other's request; the
        hold goes when the exchange is recorded (`after_spend`)."""
        if hold:
            self.release_own(session)
        caps = self.caps()
        if not caps:
            return
        costs: list[tuple["Target", float]] = []
        for t in targets:
            relevant = [c for c in caps if c.covers(t.provider)]
            if not relevant:
                continue
            est = estimate(session, t, request)
            if est is None:
                raise _unpriced(t, relevant[0])
            costs.append((t, est))
        holding = hold and any(est > 0 for _, est in costs)
        with session.store.transaction() if holding else nullcontext():
            spent, held = self._amounts(session, caps)
            for cap in caps:
                add = sum(est for t, est in costs if cap.covers(t.provider))
                if add > 0 and spent[cap] + held[cap] + add > cap.usd + _EPS:
                    raise _over(cap, spent[cap], held[cap], add, targets)
            if holding:
                self._local.holds = [session.store.hold(est, t.provider, session.id) for t, est in costs if est > 0]
        self._warn(session, spent)

    def take_own_holds(self) -> list[int]:
        """This thread's holds, handed over (to the queued write that records the exchange and then
        drops them, so a request counts as held until its row is in the history)."""
        ids = getattr(self._local, "holds", None) or []
        self._local.holds = None
        return list(ids)

    def release_own(self, session: "Session") -> None:
        """Drop the hold of this thread's last request (it has been recorded, or it never went)."""
        ids = getattr(self._local, "holds", None)
        if ids:
            self._local.holds = None
            session.store.release(*ids)

    def allowed_fallback(self, session: "Session", request: "Request", chain: list["Target"]) -> list["Target"]:
        """The fallback chain without targets this request may not reach under the caps (each one
        dropped says so in one log line); the whole chain when there are no caps."""
        if not self or not chain:
            return list(chain)
        kept = []
        for t in chain:
            try:
                self.check(session, [t], request)
            except LLMError as exc:
                log.warning("jupyter-llm: fallback %s skipped: %s", t, exc.message)
                continue
            kept.append(t)
        return kept

    # ---- after spending ----
    def after_spend(self, session: "Session") -> None:
        """Release this thread's hold; say once (per cap and period, across kernels) that a cap has passed 80%."""
        self.release_own(session)
        if not self:
            return
        try:
            self._warn(session, self.spent(session))
        except Exception:  # a warning must never break a cell
            log.debug("budget warning failed", exc_info=True)

    def _warn(self, session: "Session", spent: dict[Cap, float]) -> None:
        now = self.clock()
        for cap, amount in spent.items():
            if cap.usd <= 0 or amount < WARN_AT * cap.usd:
                continue
            mark = (cap.name, _period_key(cap.period, now, session.id), cap.usd)
            with self._lock:
                if mark in self._warned:
                    continue
                self._warned.add(mark)
            detail = {"cap": mark[0], "period": mark[1], "usd": cap.usd}   # a raised cap may warn again
            if cap.period != "session" and session.store.has_event("budget_warning", detail):
                continue  # another kernel (or this one before a restart) already said it
            try:
                session.store.record_event("budget_warning", detail, session_id=session.id)
            except Exception:
                log.debug("could not record the budget warning", exc_info=True)
            share = amount / cap.usd
            self.emit(f"jupyter-llm budget: {share:.0%} of the {cap.title} is spent ({usd(amount)} of {usd(cap.usd)}); "
                      "a request that could pass it will be refused")

    # ---- for %llm budget / %llm usage / status ----
    def report(self, session: "Session") -> list[dict[str, Any]]:
        """One row per cap: cap, period, limit, spent, left, percent."""
        spent = self.spent(session)
        rows = []
        for cap in self.caps():
            amount = spent.get(cap, 0.0)
            rows.append({"cap": cap.name, "period": _PERIOD_WORDS[cap.period], "limit": cap.usd, "spent": amount,
                         "left": max(0.0, cap.usd - amount),
                         "percent": (amount / cap.usd * 100) if cap.usd else (100.0 if amount else 0.0)})
        return rows


def report(session: "Session | None" = None) -> list[dict[str, Any]]:
    """Every cap of `session` (default: the kernel's) with limit, spent, left and percent."""
    if session is None:
        import jupyter_llm
        session = jupyter_llm.session()
    return session.caps.report(session)


def _plus(*sums: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in sums:
        for provider, amount in part.items():
            out[provider] = out.get(provider, 0.0) + amount
    return out


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _unpriced(target: "Target", cap: Cap) -> LLMError:
    return LLMError("BUDGET_EXCEEDED",
                    f"{target} has no known price, so the {cap.title} cannot bound it; nothing was sent",
                    hint=f"set [providers.{target.provider}] price = {{ input = USD, output = USD }} per million "
                         f"tokens, or free = true, in the config; or %llm budget off")


def _over(cap: Cap, spent: float, held: float, add: float, targets: list["Target"]) -> LLMError:
    what, way_out = ((f"this request to {targets[0]}", "switch to local") if len(targets) == 1
                     else ("this compare", "compare fewer targets"))
    setting = f"%llm budget {cap.name} USD" if cap.period != "session" or cap.provider else "%llm budget USD"
    return LLMError("BUDGET_EXCEEDED",
                    f"the {cap.title} would be passed: {what} could cost up to {usd(add)} and {usd(spent)} of "
                    f"{usd(cap.usd)} is spent" + (f" with {usd(held)} more held by requests in flight" if held > _EPS
                                                  else "") + "; nothing was sent",
                    hint=f"raise it with {setting}, lower --max-tokens, or {way_out}")
