"""The kernel-resident Session: the coordinator every face calls (active target, conversation, settings, usage, budget, observers), none talking to a provider.

Features live in modules beside it (exchange.py, status_report.py, login.py, context.py, budget.py, policy.py, ...).
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable, Iterable

from .config import Config, coerce_setting, load_config
from .errors import LLMError
from .events import Event, Request, Response
from .targets import Target, parse_target
from .usage import UsageLedger

log = logging.getLogger("jupyter_llm")

Observer = Callable[[str], None]
CHANGES = ("target", "usage", "settings", "conversation", "credentials", "servers")
_NULLABLE = ("temperature", "max_tokens", "top_p", "system")  # settings whose default is None


class Session:
    """One per kernel (see `jupyter_llm.session()`); also usable standalone in scripts and tests."""

    def __init__(self, config: Config | None = None):
        self.config = config if config is not None else load_config()
        self.id = os.urandom(6).hex()  # not uuid: it imports `platform`, 1.5-5 ms of %load_ext
        from .context import Conversation
        self.chat = Conversation()  # exchanges keyed by cell (context.py); `conversation` is its messages
        self.settings: dict[str, Any] = {"temperature": None, "max_tokens": None, "top_p": None, "system": None,
                                         "timeout": self.config.reliability.timeout,
                                         "stall_timeout": self.config.reliability.stall_timeout,
                                         "deadline": self.config.reliability.deadline, "format": "markdown",
                                         "cache": False, "footer": True, "table_rows": 20,
                                         "context": "auto"}
        self.settings.update(self.config.defaults)
        self.usage = UsageLedger()
        from .budget import SpendCaps
        self.caps = SpendCaps.from_config(self.config)  # session/daily/monthly caps, overall and per provider
        self.last: Response | None = None
        self._observers: list[Observer] = []
        self._lock = threading.RLock()
        self._credentials = None
        self._store = None
        self._router = None
        self.active = self._initial_target()
        self.fallback: list[Target] = self._initial_fallback()

    # ---- lazily built collaborators (keep %load_ext fast) ----
    @property
    def credentials(self):
        if self._credentials is None:
            from .credentials import CredentialStore
            self._credentials = CredentialStore(self.config)
        return self._credentials

    @property
    def store(self):
        if self._store is None:
            with self._lock:   # exchange.warm_history may build it from another thread
                if self._store is None:
                    from .store import default_store
                    self._store = default_store()
        return self._store

    @property
    def router(self):
        if self._router is None:
            from .router import Router
            self._router = Router(self.config, self.credentials)
        return self._router

    def _initial_target(self) -> Target:
        try:
            target = parse_target(self.config.default, self.config)
            self._spec(target)
            return target
        except LLMError as exc:
            if self.config.error is None:
                self.config.error = LLMError("CONFIG_ERROR", f"{self.config.path}: default: {exc.message}")
            return Target("local")

    def _initial_fallback(self) -> list[Target]:
        out = []
        for text in self.config.reliability.fallback:
            try:
                out.append(self.parse(text))
            except LLMError as exc:
                if self.config.error is None:
                    self.config.error = LLMError("CONFIG_ERROR", f"{self.config.path}: reliability.fallback: {exc.message}")
        return out

    # ---- observers ----
    def observe(self, callback: Observer) -> Callable[[], None]:
        """Call `callback(change)` after every change (see CHANGES); returns the unsubscribe function."""
        with self._lock:
            self._observers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._observers:
                    self._observers.remove(callback)
        return unsubscribe

    def notify(self, change: str) -> None:
        with self._lock:
            observers = list(self._observers)
        for cb in observers:
            try:
                cb(change)
            except Exception:  # a broken face must not break a cell
                log.debug("observer failed", exc_info=True)

    # ---- targets ----
    def parse(self, text: str | Target) -> Target:
        """Parse and validate a target (provider known)."""
        target = text if isinstance(text, Target) else parse_target(text, self.config)
        self._spec(target)
        return target

    def _spec(self, target: Target):
        from .providers import spec_for
        return spec_for(target.provider, self.config)

    def provider(self, target: Target):
        from .providers import get_provider
        return get_provider(target.provider, self.config)

    def use(self, text: str | Target, *, check: bool = False) -> Target:
        """Switch the active target at once; the conversation is kept. `check` refuses a dead target."""
        target = self.parse(text)
        from .policy import enabled, enforce
        if not enabled(target.provider, self.config):
            enforce(target.provider, self.config, target=target, what="switch")
        if check:
            health = self.check(target)
            if not health.ok:
                raise LLMError("NETWORK_ERROR", f"{target} failed its health check: {health.detail}; still using {self.active}",
                               hint="start the server or fix the credentials, or switch without --check")
        with self._lock:
            previous, self.active = self.active, target
        self._record_event("switch", {"from": str(previous), "to": str(target)})
        self.notify("target")
        return target

    def set_fallback(self, targets: Iterable[str | Target]) -> list[Target]:
        self.fallback = [self.parse(t) for t in targets]
        return self.fallback

    def known_targets(self) -> list[str]:
        """Targets worth offering in a picker: active, local servers (configured, found, served), Ollama's
        models, aliases, then every cloud provider's models (default first)."""
        from .local_servers import known_targets
        return known_targets(self)

    # ---- settings ----
    def set(self, **values: Any) -> dict[str, Any]:
        """Validate and store settings; None puts temperature/max_tokens/top_p/system back to the default."""
        clean = {k: None if v is None and k in _NULLABLE else coerce_setting(k, v) for k, v in values.items()}
        self.settings.update(clean)
        self.notify("settings")
        return clean

    @property
    def conversation(self) -> list[dict[str, str]]:
        """Every exchange as user/assistant messages, in conversation order (a copy)."""
        return self.chat.messages()

    def reset(self) -> None:
        self.chat.clear()
        self.notify("conversation")

    # ---- context (context.py, dryrun.py) ----
    def context(self, target: str | Target | None = None):
        """What the next request would carry to `target` (default: active): a ContextReport."""
        from .dryrun import context_report
        return context_report(self, self.active if target is None else self.parse(target))

    def dry_run(self, prompt: str, targets: Iterable[str | Target] | None = None, **params: Any):
        """Measure `prompt` (with the conversation) for each target without sending: a DryRun table."""
        from .dryrun import dry_run
        return dry_run(self, prompt, targets, **params)

    def forget(self, n: int):
        """Drop exchange `n` (1-based as `%llm context` numbers them; -1 the last); returns it."""
        dropped = self.chat.forget(n)
        self.notify("conversation")
        return dropped

    def keep_cells(self, cell_ids: Iterable[str], removed: Iterable[str] | None = None) -> int:
        """The frontend's cells in notebook order: exchanges of deleted cells go (see Conversation.keep_cells)."""
        gone = self.chat.keep_cells(cell_ids, removed)
        self.notify("conversation")
        return gone

    @property
    def mode(self) -> str:
        """"local-only" (nothing leaves the machine) or "cloud allowed"; see policy.py."""
        from .policy import mode
        return mode(self.config)

    def set_offline(self, on: bool) -> str:
        """`%llm offline on|off`: local-only mode for this session (overrides config `cloud`)."""
        before = self.mode
        self.config.offline = bool(on)
        self._record_event("mode", {"from": before, "to": self.mode})
        self.notify("settings")
        return self.mode

    def set_budget(self, usd: float | None, period: str = "session", provider: str | None = None) -> None:
        """Set (None: remove) a spend cap for this kernel: session (default), daily or monthly, of every
        provider or of one."""
        if usd is not None:
            from .config import check_number
            usd = check_number("budget", usd)
        if provider is not None:
            provider = self._spec(Target(provider.lower())).id
        self.caps.set(usd, period, provider)
        self._record_event("budget", {"usd": usd, "period": period, "provider": provider})
        self.notify("usage")

    @property
    def budget(self) -> float | None:
        """The session cap over every provider (None: off)."""
        return self.caps.get("session")

    @property
    def budget_left(self) -> float | None:
        return None if self.budget is None else max(0.0, self.budget - self.usage.cost)

    # ---- credentials (login.py) ----
    def login(self, provider: str, secret: str, method: str = "api_key", *, check: bool = False,
              **extra: Any) -> tuple[str, str] | None:
        """Store a credential for a known provider; `check` validates it live first (see login.py)."""
        from .login import login
        return login(self, provider, secret, method, check=check, **extra)

    def logout(self, provider: str) -> bool:
        from .login import logout
        return logout(self, provider)

    def auth_for(self, target: Target):
        return self.credentials.lookup(self._spec(target))

    # ---- information (status_report.py, local_servers.py) ----
    def check(self, target: str | Target | None = None):
        """Live health check of a target (default: the active one)."""
        from .status_report import check
        return check(self, self.active if target is None else self.parse(target))

    def discover(self, ports: tuple[int, int] | None = None, host: str | None = None, timeout: float = 0.5,
                 notify: bool = True):
        """llama.cpp servers on the scan range (or `ports`); local ones are remembered (see local_servers.py)."""
        from .local_servers import discover
        return discover(self, ports, host, timeout, notify)

    def models(self, provider: str | None = None):
        from .status_report import models
        return models(self, provider)

    def providers(self, *, probe: bool = True) -> list[dict[str, Any]]:
        """One row per provider: configured?, auth method, credential source, masked key, health."""
        from .status_report import providers
        return providers(self, probe=probe)

    def status(self, *, probe: bool = True) -> dict[str, Any]:
        from .status_report import status
        return status(self, probe=probe)

    def _base_url(self, target: Target, spec) -> str:
        from .status_report import base_url
        return base_url(self, target, spec)

    def history(self, n: int = 10) -> list[dict[str, Any]]:
        return self.store.history(n)

    # ---- asking ----
    def build_request(self, prompt: str, *, system: str | None = None, temperature: float | None = None,
                      max_tokens: int | None = None, top_p: float | None = None, new: bool = False,
                      context: bool = True, history: list[dict[str, str]] | None = None) -> Request:
        """The request for `prompt`: `history` (fitted messages) when given, else the whole conversation."""
        s = self.settings
        from .config import check_number
        temperature, max_tokens, top_p = (None if v is None else check_number(k, v) for k, v in
                                          (("temperature", temperature), ("max_tokens", max_tokens), ("top_p", top_p)))
        if history is None:
            history = [] if (new or not context) else self.conversation
        return Request(messages=list(history) + [{"role": "user", "content": prompt}],
                       system=system if system is not None else s.get("system"),
                       temperature=temperature if temperature is not None else s.get("temperature"),
                       max_tokens=max_tokens if max_tokens is not None else s.get("max_tokens"),
                       top_p=top_p if top_p is not None else s.get("top_p"),
                       timeout=s.get("timeout") or self.config.reliability.timeout,
                       stall_timeout=s.get("stall_timeout") or self.config.reliability.stall_timeout,
                       deadline=s.get("deadline") or self.config.reliability.deadline)

    def ask(self, prompt: str, *, target: str | Target | None = None, on_event: Callable[[Event], None] | None = None,
            new: bool = False, no_history: bool = False, cache: bool | None = None, fallback: bool = True,
            content: list | None = None, schema: Any = None, on_response: Callable[[Response], None] | None = None,
            **params: Any) -> Response:
        """Send one prompt, streaming events to `on_event`; returns the Response (never raises LLMError
        for provider failures: they are on `Response.error`). Bad arguments and the budget raise.
        `content` (text and image parts, media.render) replaces the prompt as the message sent, the text
        staying in the conversation; `schema` (a schema.Schema) asks for structured output and puts the
        parsed object on `Response.value` (INVALID_OUTPUT when the answer does not match).
        `on_response` gets the answer (after the conversation) before the history row is written."""
        target = self.active if target is None else self.parse(target)
        with self.router.collector_paused([target]):   # a first cloud cell: no collection before the send
            return self._ask(prompt, target, on_event, new=new, no_history=no_history, cache=cache,
                             fallback=fallback, content=content, schema=schema, on_response=on_response, **params)

    def _ask(self, prompt: str, target: Target, on_event: Callable[[Event], None] | None, *, new: bool,
             no_history: bool, cache: bool | None, fallback: bool, content: list | None, schema: Any,
             on_response: Callable[[Response], None] | None, **params: Any) -> Response:
        """`ask` for a parsed target."""
        if new:
            self.reset()
        from .context import fit_for
        from .cellinfo import current
        cell = current()
        fitted = fit_for(self, target, prompt, cell, remember=True, **params)
        request = self.build_request(prompt, **params, history=fitted.messages(prompt)[:-1])
        if content is not None:
            request.messages[-1] = {"role": "user", "content": content}
        if schema is not None:
            request.schema = schema.request
        use_cache = self.settings.get("cache") if cache is None else cache
        response = Response(target=str(target), answered_by=str(target))
        response.context = fitted.note()
        cache_key = hit = None
        if use_cache:
            from .store import Store
            cache_key = Store.cache_key(str(target), request.cache_key_parts())
            hit = self.store.cache_get(cache_key)
        if hit:  # a cached answer costs nothing: no budget check
            self._from_cache(response, hit, on_event)
        else:
            self.check_budget([target], request, hold=True)
            chain = self.caps.allowed_fallback(self, request, self.fallback) if fallback else []
            self._stream(target, request, response, on_event, chain)
        if schema is not None:
            from .schema import apply
            apply(schema, response)
        charged = self._account(target, prompt, response)
        if not no_history and response.text:
            self.chat.record(prompt, response.text, response.answered_by or str(target), cell)
            self.notify("conversation")
        self.last = response
        if on_response is not None:
            on_response(response)  # e.g. `_llm`: the answer is the user's before any disk write
        self._record(prompt, response, cache_key if response.ok and not response.incomplete else None, charged)
        return response

    def _record(self, prompt: str, response: Response, cache_key: str | None, charged: tuple[str, str]) -> None:
        """Queue the history row (and cache entry), releasing this request's budget hold (exchange.py)."""
        from .exchange import record
        record(self, prompt, response, cache_key, charged)

    def check_budget(self, targets: list[Target], request: Request, *, hold: bool = False) -> None:
        """Refuse before anything is sent when sending `request` to every target (one ask, or a whole
        compare) could pass any spend cap, or a capped target has no known price (see budget.py);
        `hold` keeps the estimate counted until the exchange is recorded."""
        self.caps.check(self, targets, request, hold=hold)

    # ---- one exchange's internals (exchange.py; mapping.py, pool.py and batch.py use them too) ----
    def _from_cache(self, response: Response, hit: dict, on_event) -> None:
        from .exchange import from_cache
        from_cache(response, hit, on_event)

    def _stream(self, target: Target, request: Request, response: Response, on_event, fallback) -> None:
        from .exchange import stream
        stream(self, target, request, response, on_event, fallback)

    def _account(self, target: Target, prompt: str, response: Response) -> tuple[str, str]:
        """Cost and usage of `response`; returns (provider, model) charged (the history row is `_record`'s)."""
        from .exchange import account
        return account(self, target, prompt, response)

    def _record_event(self, kind: str, detail: dict) -> None:
        try:  # queued: a locked history database never holds up a switch or a login
            store = self.store
            store.submit("event", lambda: store.record_event(kind, detail, session_id=self.id))
        except Exception:
            log.debug("could not record event", exc_info=True)


_MOVED = {"health_word": ("status_report", "health_word"), "_quota": ("status_report", "quota"),
          "_approx_tokens": ("exchange", "approx_tokens"), "_approx_tokens_text": ("exchange", "approx_tokens_text")}


def __getattr__(name: str):
    """`from jupyter_llm.kernel_session import health_word` (and the other moved helpers) still works, lazily."""
    if name in _MOVED:
        from importlib import import_module
        module, attr = _MOVED[name]
        return getattr(import_module(f".{module}", __package__), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
