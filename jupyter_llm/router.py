"""Reliability in one place: retries with backoff and jitter honouring Retry-After, per-provider
token buckets, per-target circuit breakers, the fallback chain and credential refresh on 401."""
from __future__ import annotations

import random
import threading
import time
from contextlib import nullcontext
from dataclasses import field, replace
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator

from .errors import FALLBACK_ON, LLMError
from .events import Attempt, Event, Notice, Request, StreamError, TextDelta
from .records import record
from .targets import Target

if TYPE_CHECKING:
    from .config import Config
    from .credentials import CredentialStore

# A server asking us to wait longer than this gets an immediate RATE_LIMITED instead of a frozen cell.
MAX_RETRY_AFTER = 30.0
_HINT_FALLBACK = "switch to local with %llm use local, or set a fallback with %llm fallback TARGET"


@record
class CircuitBreaker:
    """Opens after `threshold` consecutive failures; after `cooldown` s lets one trial through."""
    threshold: int
    cooldown: float
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_at: float | None = None
    trial_running: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.cooldown else "open"

    def allow(self) -> float | None:
        """None if a request may go; else seconds until the next trial."""
        with self.lock:
            if self.opened_at is None or self.threshold <= 0:
                return None
            left = self.cooldown - (self.clock() - self.opened_at)
            if left > 0:
                return left
            if self.trial_running:
                return 0.0
            self.trial_running = True
            return None

    def success(self) -> None:
        with self.lock:
            self.failures, self.opened_at, self.trial_running = 0, None, False

    def failure(self) -> None:
        with self.lock:
            self.failures += 1
            self.trial_running = False
            if self.threshold > 0 and (self.failures >= self.threshold or self.opened_at is not None):
                self.opened_at = self.clock()


class TokenBucket:
    """Requests- and tokens-per-minute limiter for one provider; `take` blocks until allowed."""

    def __init__(self, rpm: float | None, tpm: float | None, clock: Callable[[], float] = time.monotonic):
        self.rates = {"req": (rpm or 0) / 60.0, "tok": (tpm or 0) / 60.0}
        # A bucket must hold at least one request, else a rate below 1/min would wait forever.
        self.caps = {"req": max(rpm, 1.0) if rpm else 0, "tok": tpm or 0}
        self.level = dict(self.caps)
        self.clock = clock
        self.stamp = clock()
        self.lock = threading.Lock()

    def wait_time(self, tokens: int) -> float:
        with self.lock:
            now = self.clock()
            for k in self.level:
                self.level[k] = min(self.caps[k], self.level[k] + (now - self.stamp) * self.rates[k])
            self.stamp = now
            need = {"req": 1.0, "tok": float(min(tokens, self.caps["tok"]))}
            waits = [(need[k] - self.level[k]) / self.rates[k]
                     for k in self.level if self.caps[k] and self.level[k] < need[k]]
            if waits:
                return max(waits)
            for k in self.level:
                if self.caps[k]:
                    self.level[k] -= need[k]
            return 0.0

    def take(self, tokens: int, sleep: Callable[[float], None]) -> None:
        while (wait := self.wait_time(tokens)) > 0:
            sleep(wait)


class Router:
    """Sends a Request to a target and, on failure, to the fallback chain; yields one event stream.

    Terminal failures end the stream with a StreamError event (after any text already received),
    so consumers never lose partial text. A chain is only walked before any text has arrived.
    """

    def __init__(self, config: "Config", credentials: "CredentialStore", *,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None):
        self.config = config
        self.credentials = credentials
        self.sleep = sleep
        self.clock = clock
        self.rng = rng or random.Random()
        self.breakers: dict[str, CircuitBreaker] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def breaker(self, target: Target) -> CircuitBreaker:
        with self._lock:
            key = str(target)
            if key not in self.breakers:
                rel = self.config.reliability
                self.breakers[key] = CircuitBreaker(rel.circuit_failures, rel.circuit_cooldown, self.clock)
            return self.breakers[key]

    def bucket(self, provider: str) -> TokenBucket | None:
        limits = self.config.limits.get(provider)
        if not limits:
            return None
        with self._lock:
            if provider not in self.buckets:
                self.buckets[provider] = TokenBucket(limits.get("rpm"), limits.get("tpm"), self.clock)
            return self.buckets[provider]

    # A `recording.Tap` when `%llm record` / `%llm replay` is on: it sees every request first.
    tap = None

    def stream(self, target: Target, request: Request, fallback: list[Target] = ()) -> Iterator[Event]:
        tap = self.tap
        if tap is not None:
            return tap.stream(self._chain, target, request, list(fallback))
        return self._chain(target, request, fallback)

    def _chain(self, target: Target, request: Request, fallback: list[Target] = ()) -> Iterator[Event]:
        chain = [target] + [t for t in fallback if str(t) != str(target)]
        first_error: LLMError | None = None
        if request.deadline and request.deadline_at is None:  # one deadline for every attempt and fallback
            request = replace(request, deadline_at=time.monotonic() + request.deadline)
        for i, t in enumerate(chain):
            got_text = False
            if i and _left(request) is not None and _left(request) <= 0:
                yield StreamError(self._with_chain_note(first_error, first_error, 0))
                return
            try:
                sent, note = request, None
                if request.schema is not None:  # it goes as instructions to a model without structured output
                    from .capcheck import adapt
                    sent, note = adapt(self.config, t, request)
                if note:
                    yield Notice(note)
                for ev in self._stream_one(t, sent):
                    if isinstance(ev, TextDelta):
                        got_text = True
                    elif isinstance(ev, Attempt) and first_error is not None and ev.n == 1:
                        ev = replace(ev, fallback_reason=f"{chain[0]}: {first_error.line()}")
                    yield ev
                return
            except LLMError as exc:
                first_error = first_error or exc
                last = i == len(chain) - 1
                if got_text or last or exc.code not in FALLBACK_ON:
                    yield StreamError(self._with_chain_note(exc, first_error, i))
                    return

    @staticmethod
    def _with_chain_note(exc: LLMError, first: LLMError, index: int) -> LLMError:
        if index == 0 or exc is first:
            return exc
        return LLMError(exc.code, f"{exc.message}; the fallback chain is exhausted (first failure: {first.code})",
                        hint=exc.hint, retry_after=exc.retry_after, status=exc.status, retryable=exc.retryable)

    def preload(self, targets: "list[Target]", *, quiet: bool = False) -> None:
        """Import the SDKs of `targets` not loaded yet, one at a time (concurrent imports race: see
        SDKAdapter.preload), while a helper process reads their keyring entries (keyring_prefetch): on a
        kernel's first cloud cell keyring's import then overlaps the SDK's instead of adding to it.
        `quiet`: an SDK that fails to import is left for the client to report, with its install hint."""
        from .providers import get_provider, spec_for
        self._preload([(spec_for(t.provider, self.config), get_provider(t.provider, self.config)) for t in targets],
                      quiet=quiet)

    def collector_paused(self, targets: "list[Target]") -> ContextManager[None]:
        """A block whose requests to `targets` import an SDK (a kernel's first cloud cell) runs with the garbage
        collector paused until a reply has begun (gc_pause); when every SDK is loaded, nothing is paused.
        Never raises: a target that cannot be resolved is for the request to report."""
        from .providers import get_provider
        try:
            cold = any(_cold(get_provider(t.provider, self.config)) for t in targets)
        except Exception:   # an unknown provider, a plugin that fails to load: the request reports it
            cold = False
        return _paused(cold)

    def _preload(self, pairs: list[tuple], *, quiet: bool) -> None:
        """`preload` for (spec, provider) pairs already looked up."""
        cold = [(spec, provider) for spec, provider in pairs if _cold(provider)]
        if not cold:
            return
        self.credentials.prefetch([spec for spec, _ in cold])
        for _, provider in cold:
            try:
                provider.preload()
            except Exception:
                if not quiet:
                    raise

    def _stream_one(self, target: Target, request: Request) -> Iterator[Event]:
        from .policy import enforce
        from .providers import get_provider, spec_for
        enforce(target.provider, self.config, target=target)  # local-only mode, disabled providers
        from .sensitive import check_request
        check_request(target, request, self.config)  # protected values stay on this machine
        spec = spec_for(target.provider, self.config)
        provider = get_provider(target.provider, self.config)
        breaker = self.breaker(target)
        wait = breaker.allow()
        if wait is not None:
            raise LLMError("NETWORK_ERROR", f"circuit open for {target} after {breaker.failures} consecutive failures; "
                           f"next try in {wait:.0f} s", hint=_HINT_FALLBACK, retryable=False)
        with _paused(_cold(provider)):   # e.g. a fallback to a provider not used yet
            self._preload([(spec, provider)], quiet=True)
            yield from self._attempts(target, request, spec, provider, breaker)

    def _attempts(self, target: Target, request: Request, spec: Any, provider: Any,
                  breaker: CircuitBreaker) -> Iterator[Event]:
        """`_stream_one` once the SDK is loaded: the credentials, then the attempts with retry and backoff."""
        from .policy import enforce
        auth = self.credentials.resolve(spec)
        if auth is not None and getattr(auth, "base_url", None):
            enforce(target.provider, self.config, auth.base_url, target=target)  # a gateway's own URL
        refreshed = False
        retries = self.config.reliability.retries
        attempt = 0
        bucket = self.bucket(target.provider)
        while True:
            attempt += 1
            left = _left(request)
            if left is not None and left <= 0:
                from .providers._guard import Limits, deadline_error
                raise deadline_error(str(target), Limits.of(request))
            if bucket is not None:
                bucket.take(_estimate_tokens(request), self.sleep)
            yield Attempt(str(target), attempt)
            got_text = False
            try:
                for ev in provider.stream(target, request, auth):
                    if isinstance(ev, TextDelta):
                        got_text = True
                    yield ev
                breaker.success()
                return
            except LLMError as exc:
                if exc.code == "INVALID_CREDENTIALS" and auth.method == "command" and not refreshed and not got_text:
                    auth, refreshed = self.credentials.refresh(spec), True
                    continue
                if exc.code in ("NETWORK_ERROR", "TIMEOUT") or (exc.code == "PROVIDER_ERROR" and exc.retryable):
                    breaker.failure()
                else:
                    breaker.success()  # the target answered; it is up
                if got_text or not exc.retryable:
                    raise
                if attempt > retries:  # say what was tried: the limit that applied is the retry count
                    if attempt == 1:
                        raise
                    raise LLMError(exc.code, f"{exc.message} (after {attempt} attempts; retries = {retries})",
                                   hint=exc.hint, retry_after=exc.retry_after, status=exc.status,
                                   retryable=exc.retryable) from None
                delay = self._delay(attempt, exc)
                if delay is None:
                    raise
                left = _left(request)
                if left is not None and delay >= left:  # a retry would start past the answer's deadline
                    raise LLMError(exc.code, f"{exc.message}; no retry within the {request.deadline:g}s deadline "
                                   f"(deadline; {attempt} attempt{'s' if attempt > 1 else ''} made)",
                                   hint=exc.hint, retry_after=exc.retry_after, status=exc.status,
                                   retryable=False) from None
                self.sleep(delay)
            except GeneratorExit:
                breaker.success()
                raise

    def _delay(self, attempt: int, exc: LLMError) -> float | None:
        """Backoff before retry `attempt`+1: the server's Retry-After if given, else full jitter."""
        if exc.retry_after is not None:
            return None if exc.retry_after > MAX_RETRY_AFTER else max(0.0, exc.retry_after)
        rel = self.config.reliability
        cap = min(rel.max_backoff, rel.backoff * (2 ** (attempt - 1)))
        return self.rng.uniform(cap / 2, cap)


def _cold(provider: Any) -> bool:
    """Whether `provider` has an SDK still to import."""
    return hasattr(provider, "preload") and not provider.loaded()


def _paused(cold: bool) -> ContextManager[None]:
    """The garbage collector paused for a block that imports an SDK (gc_pause); nothing otherwise."""
    if not cold:
        return nullcontext()
    from .gc_pause import paused_until_reply
    return paused_until_reply()


def _left(request: Request) -> float | None:
    """Seconds left before the answer's deadline, or None when it has none."""
    return None if request.deadline_at is None else request.deadline_at - time.monotonic()


def _estimate_tokens(request: Request) -> int:
    from .events import text_of
    chars = sum(len(text_of(m.get("content", ""))) for m in request.messages) + len(request.system or "")
    return chars // 4 + (request.max_tokens or 256)
