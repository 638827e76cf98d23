"""`%llm panel`: one compact ipywidgets control panel over the Session (imported only when shown).

Every button calls the same Session method the magics call (Switch is `Session.use`, like `%llm use`).
The panel observes the session, so a change made anywhere shows here; callbacks arriving on other
threads are moved to the kernel's main loop. A secret typed into the key field is taken out of the
widget at once (held in kernel memory until "Save key" writes it to the keyring), so it never stays
in widget state and cannot be saved into the .ipynb. Slow look-ups (server scan, model lists,
health checks) run with short time limits and are cached until the refresh button is pressed.
"""
from __future__ import annotations

import html
import logging
import threading
from typing import Any, Callable

import ipywidgets as w
from traitlets import Unicode

from .errors import LLMError
from .providers import mask, provider_ids, spec_for
from .tables import money, seconds
from .panel_local import LocalRows, on_main as _on_main
from .targets import Target

log = logging.getLogger("jupyter_llm")

LIST_TIMEOUT = 3.0     # seconds a model list may take before the panel shows what it has
CHECK_TIMEOUT = 8.0    # seconds for "Test connection"
SCAN_TIMEOUT = 0.3     # per-port probe when scanning for llama.cpp servers
METHODS = ("api_key", "gateway", "command")
PLACEHOLDER = {"api_key": "API key", "gateway": "bearer token", "command": "command that prints a token"}

_live: dict[str, "Panel"] = {}   # session id -> the panel on show (a new one closes the old one)


class SecretField(w.Password):
    """A password box whose typed value is never echoed over iopub: ipywidgets 8 sends every value a
    frontend sets back to all frontends (`echo_update`) unless the trait opts out, as this one does."""
    value = Unicode("", help="the typed secret (taken out at once; never echoed)").tag(sync=True, echo_update=False)


class QuietText(w.Text):
    """A text box not echoed over iopub either (a gateway URL may carry user:password)."""
    value = Unicode("", help="the typed text (never echoed)").tag(sync=True, echo_update=False)


def show_panel(session) -> None:
    """Display the control panel for `session` (closing any earlier one of the same session)."""
    from IPython.display import display
    old = _live.pop(session.id, None)
    if old is not None:
        old.close()
    panel = Panel(session)
    _live[session.id] = panel
    display(panel.root)


def current_panel(session) -> "Panel | None":
    """The panel on show for `session`, if any."""
    return _live.get(session.id)


def _bounded(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    """Run `fn` in a daemon thread and wait at most `timeout` seconds, so a dead host cannot freeze the kernel."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="llm-panel", daemon=True).start()
    if not done.wait(timeout):
        raise LLMError("TIMEOUT", f"{what} took longer than {timeout:g} s", hint="press ⟳ to try again")
    if "error" in box:
        raise box["error"]
    return box["value"]


class Panel(LocalRows):
    """The widgets, their handlers and a cache of slow look-ups; `root` is what gets displayed."""

    def __init__(self, session):
        self.session = session
        self._lock = threading.RLock()
        self._syncing = False           # True while the panel itself sets widget values
        self._pending: str | None = None  # a secret taken out of the widget, waiting for "Save key"
        self._servers: list | None = None
        self._ollama: int | None = None   # models a running Ollama has (None: not probed yet)
        self._models: dict[str, list[tuple[str, str]]] = {}
        self._health: dict[str, bool] = {}
        self._queued: set[str] = set()
        self._build()
        self._unsubscribe = session.observe(self._on_session)
        self.root.observe(self._on_comm, names="comm")
        self._sync_all()

    # ---- layout ----
    def _build(self) -> None:
        wide = {"description_width": "initial"}
        self.provider = w.Dropdown(description="provider", style=wide, layout=w.Layout(width="230px"))
        self.model = w.Dropdown(description="model", style=wide, layout=w.Layout(width="340px"))
        self.refresh = w.Button(icon="refresh", tooltip="scan servers, reload model lists and credentials",
                                layout=w.Layout(width="36px"))
        self.temperature = w.Text(description="temperature", placeholder="default", continuous_update=False,
                                  style=wide, layout=w.Layout(width="160px"))
        self.max_tokens = w.Text(description="max tokens", placeholder="default", continuous_update=False,
                                 style=wide, layout=w.Layout(width="160px"))
        self.switch = w.Button(description="Switch", button_style="primary", icon="exchange",
                               tooltip="use this target from now on (like %llm use)")
        self.test = w.Button(description="Test connection", icon="plug", tooltip="live health check of this target")
        self.method = w.Dropdown(options=METHODS, value="api_key", description="auth", style=wide,
                                 layout=w.Layout(width="160px"))
        self.secret = SecretField(placeholder=PLACEHOLDER["api_key"], continuous_update=False,
                                 layout=w.Layout(width="260px"))
        self.gateway_url = QuietText(placeholder="gateway base URL", layout=w.Layout(width="220px", display="none"))
        self.save = w.Button(description="Save key", icon="key", tooltip="store in the OS keyring; the field is cleared")
        self.status = w.HTML()
        self.message = w.HTML()
        self.start_path = w.Text(placeholder="path/to/model.gguf", description="Start model…", style=wide,
                                 continuous_update=False, layout=w.Layout(width="340px", max_width="100%"))
        self.start = w.Button(description="Start", icon="play", tooltip="start llama.cpp on this model (like %llm serve)")
        row = lambda *children: w.HBox(list(children), layout=w.Layout(flex_flow="row wrap", max_width="100%"))
        self.key_row = row(self.method, self.secret, self.gateway_url, self.save)
        self.start_row = row(self.start_path, self.start)
        self.root = w.VBox([
            row(self.provider, self.model, self.refresh),
            row(self.temperature, self.max_tokens, self.switch, self.test),
            self.key_row, self.start_row,
            self.status, self.message,
        ], layout=w.Layout(border="1px solid #8884", padding="4px", width="fit-content", max_width="100%"))
        self.root.add_class("jupyter-llm-panel")
        self.provider.observe(self._on_provider, names="value")
        self.method.observe(self._on_method, names="value")
        self.secret.observe(self._on_secret, names="value")
        self.temperature.observe(lambda c: self._on_setting("temperature", c), names="value")
        self.max_tokens.observe(lambda c: self._on_setting("max_tokens", c), names="value")
        self.switch.on_click(self._guard(self._do_switch))
        self.test.on_click(self._guard(self._do_test))
        self.save.on_click(self._guard(self._do_save))
        self.refresh.on_click(self._guard(self._do_refresh))
        self.start.on_click(self._guard(self._do_start))
        self.model.observe(self._on_model, names="value")
        self._confirm: str | None = None  # a target the user was warned about (no credential): next Switch goes

    def widgets(self) -> list:
        """Every widget of the panel (for tests and for closing)."""
        out, todo = [], [self.root]
        while todo:
            x = todo.pop()
            out.append(x)
            todo.extend(getattr(x, "children", ()))
        return out

    def close(self) -> None:
        """Stop observing the session and close every widget."""
        self._stop()
        for x in self.widgets():
            x.close()

    def _stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._pending = None
        if _live.get(self.session.id) is self:
            _live.pop(self.session.id, None)

    def _on_comm(self, change) -> None:
        if change["new"] is None:  # the root widget was closed
            self._stop()

    # ---- messages ----
    def _guard(self, fn: Callable[[], None]) -> Callable[[Any], None]:
        """A click handler that shows errors in the panel instead of raising them into the kernel log."""
        def handler(_button=None) -> None:
            try:
                fn()
            except LLMError as exc:
                self._say(exc.line(), error=True)
            except Exception as exc:
                log.debug("panel action failed", exc_info=True)
                self._say(f"{type(exc).__name__}: {exc}", error=True)
        return handler

    def _say(self, text: str, *, error: bool = False, warn: bool = False) -> None:
        color = "var(--jp-error-color1, #d32f2f)" if error else ("var(--jp-warn-color1, #b26a00)" if warn else "inherit")
        mark = "✗ " if error else ""
        from .redact import scrub
        self.message.value = f"<span style='color:{color}'>{html.escape(scrub(mark + text))}</span>" if text else ""

    # ---- reading the session (slow parts cached) ----
    def _scan(self, force: bool = False) -> list:
        if self._servers is None or force:
            try:
                self._servers = _bounded(lambda: self.session.discover(timeout=SCAN_TIMEOUT, notify=False), 3.0, "the server scan")
            except LLMError as exc:
                self._say(exc.line(), error=True)
                self._servers = []
        return self._servers

    def _mark(self, pid: str) -> str:
        """`✓ openai`, `✗ anthropic (no key)`, `● local (2 servers)`: credential and last known health.
        A missing credential is shown as "no key", never as "down"."""
        spec = spec_for(pid, self.session.config)
        has_key = self._has_key(pid) if spec.needs_key else True
        if has_key is False:
            return f"✗ {pid} (no key)"
        if self._health.get(pid) is False:
            return f"✗ {pid} (down)"
        if pid == "local":
            n = sum(1 for s in self._scan() if s.state == "ok")
            return f"● local ({n} server{'s' if n != 1 else ''})" if n else "○ local (none found)"
        if pid == "ollama":
            if self._ollama is None:
                from .local_servers import ollama_models
                self._ollama = len(ollama_models(self.session)) if spec.base_url else 0
            n = self._ollama
            return f"● ollama ({n} model{'s' if n != 1 else ''})" if n else "○ ollama (not running)"
        if not spec.needs_key:
            return f"● {pid}"
        return f"✓ {pid}" if has_key else f"? {pid} (keyring unavailable)"

    def _has_key(self, pid: str) -> bool | None:
        """Whether a credential is set for `pid` (None: the keyring cannot be read)."""
        try:
            return self.session.credentials.lookup(spec_for(pid, self.session.config), run_command=False) is not None
        except LLMError:
            return None

    def _model_options(self, pid: str, force: bool = False) -> list[tuple[str, str]]:
        if pid in self._models and not force:
            return self._models[pid]
        if pid == "local":
            options = self._local_options(force)
        else:
            options = self._cloud_options(pid)
        self._models[pid] = options
        return options

    def _cloud_options(self, pid: str) -> list[tuple[str, str]]:
        try:
            models = _bounded(lambda: self.session.models(pid), LIST_TIMEOUT, f"the {pid} model list")
        except LLMError as exc:
            self._say(exc.line(), error=True)
            models = []
        options = []
        for m in models:
            price = ""
            if m.input_price is not None and m.output_price is not None:
                price = f" (${m.input_price:g}/${m.output_price:g} per M)"
            options.append((m.id + price, f"{pid}:{m.id}"))
        default = spec_for(pid, self.session.config).default_model
        if default and f"{pid}:{default}" not in {v for _, v in options}:
            options.insert(0, (default, f"{pid}:{default}"))
        return options

    def _value_for(self, target: Target) -> str:
        """The model-dropdown value that stands for `target`."""
        if target.is_local and target.port is not None:
            return f"local:{target.port}"
        return str(target)

    # ---- writing the widgets (only ever on the main thread) ----
    def _sync_all(self) -> None:
        with self._lock:
            self._syncing = True
            try:
                active = self.session.active
                self._mark_providers(active.provider)
                self._show_key_row(active.provider)
                self._fill_models(active.provider, select=self._value_for(active))
                self._sync_settings()
                self._sync_status()
            finally:
                self._syncing = False

    def _mark_providers(self, select: str | None) -> None:
        """Relabel the provider dropdown (marks may have changed) keeping `select` chosen."""
        from .policy import visible_providers
        ids = visible_providers(provider_ids(self.session.config), self.session.config)
        self.provider.options = [(self._mark(p), p) for p in ids]
        self.provider.value = select if select in ids else self.session.active.provider

    def _fill_models(self, pid: str, select: str | None = None, force: bool = False) -> None:
        options = list(self._model_options(pid, force))
        if select is not None and select not in {v for _, v in options}:
            options.insert(0, (select, select))
        self.model.options = options
        if select is not None:
            self.model.value = select
        elif options:
            self.model.value = options[0][1]

    def _sync_settings(self) -> None:
        s = self.session.settings
        self.temperature.value = "" if s.get("temperature") is None else f"{s['temperature']:g}"
        self.max_tokens.value = "" if s.get("max_tokens") is None else str(s["max_tokens"])

    def _sync_status(self) -> None:
        s = self.session
        total = s.usage.summary()
        last = s.last
        parts = [f"<b>{html.escape(str(s.active))}</b>",
                 f"last {seconds(last.latency)}" if last is not None and last.latency is not None else "no request yet",
                 f"{total['requests']} requests", f"{total['input_tokens'] + total['output_tokens']} tokens",
                 money(total["cost"])]
        if s.budget is not None:
            parts.append(f"{money(s.budget_left)} budget left")
        parts.append(f"conversation {len(s.conversation) // 2}")
        if s.mode == "local-only":
            parts.insert(1, "<b>local only</b>")
        self.status.value = "<span class='jupyter-llm-status'>" + " · ".join(parts) + "</span>"

    def _on_session(self, change: str) -> None:
        """Session observer (any thread): queue the change and apply it on the main thread, coalesced."""
        with self._lock:
            first = not self._queued
            self._queued.add(change)
        if first:
            _on_main(self._apply_queued)

    def _apply_queued(self) -> None:
        with self._lock:
            changes, self._queued = self._queued, set()
            if self._unsubscribe is None:
                return
            self._syncing = True
            try:
                if "target" in changes:
                    active = self.session.active
                    self.provider.value = active.provider
                    self._show_key_row(active.provider)
                    self._reset_switch()
                    if html.escape(str(active)) not in self.message.value:
                        self._say("")  # a message about the previous target is stale now
                    self._fill_models(active.provider, select=self._value_for(active))
                if "servers" in changes:  # %llm serve / stop: rescan and refill the local list
                    self._servers = None
                    self._models.pop("local", None)
                    self._mark_providers(self.provider.value)
                    if self.provider.value == "local":
                        self._fill_models("local", select=self.model.value)
                if "credentials" in changes:
                    self._mark_providers(self.provider.value)
                if "settings" in changes:
                    self._sync_settings()
                self._sync_status()
            except Exception:
                log.debug("panel refresh failed", exc_info=True)
            finally:
                self._syncing = False

    # ---- user actions ----
    def _on_provider(self, change) -> None:
        if self._syncing or change["new"] is None:
            return
        pid = change["new"]
        self._say("")  # a message about the previous provider is stale now
        self._show_key_row(pid)
        with self._lock:
            self._syncing = True  # filling the models is not the user choosing one
            try:
                self._guard(lambda: self._fill_models(pid, select=self._value_for(self.session.active)
                                                      if self.session.active.provider == pid else None))()
            finally:
                self._syncing = False
        self._reset_switch()

    def _show_key_row(self, pid: str) -> None:
        """The credential row only for providers that take one (not for local servers or Ollama)."""
        self.key_row.layout.display = None if spec_for(pid, self.session.config).needs_key else "none"

    def _on_model(self, change) -> None:
        if not self._syncing:
            self._reset_switch()
            self._say("")

    def _reset_switch(self) -> None:
        self._confirm = None
        self.switch.description = "Switch"

    def _on_method(self, change) -> None:
        self.secret.placeholder = PLACEHOLDER[change["new"]]
        self.gateway_url.layout.display = None if change["new"] == "gateway" else "none"

    def _on_secret(self, change) -> None:
        """Take a typed secret out of the widget at once: only kernel memory holds it until saved."""
        value = change["new"]
        if not value:
            return
        from .redact import register
        register(value)              # masked by value everywhere from now on
        self._pending = value
        self.secret.value = ""
        self._say(f"key received ({mask(value)}): press Save key to store it in the keyring")

    def _on_setting(self, key: str, change) -> None:
        if self._syncing:
            return
        text = (change["new"] or "").strip()
        try:
            self.session.set(**{key: text or None})
            self._say(f"{key} = {text or 'default'}")
        except LLMError as exc:
            self._say(exc.line(), error=True)
            with self._lock:
                self._syncing = True
                try:
                    self._sync_settings()
                finally:
                    self._syncing = False

    def _do_switch(self) -> None:
        value = self.model.value
        if not value:
            raise LLMError("BAD_ARGUMENT", f"no model to switch to for {self.provider.value}", hint="press ⟳ to rescan")
        target = self.session.parse(value)
        spec = spec_for(target.provider, self.session.config)
        if spec.needs_key and self._has_key(target.provider) is False and self._confirm != value:
            self._confirm = value
            self.switch.description = "Switch anyway"
            self._say(f"⚠ {target.provider} has no key yet: requests will fail with MISSING_CREDENTIALS. Save a key "
                      f"below first, or press Switch anyway.", warn=True)
            return
        self._confirm = None
        self.switch.description = "Switch"
        target = self.session.use(value)
        self._say(f"using {target}")

    def _do_test(self) -> None:
        value = self.model.value or str(self.session.active)
        self._say(f"checking {value}…")
        health = _bounded(lambda: self.session.check(value), CHECK_TIMEOUT, f"the health check of {value}")
        pid = self.session.parse(value).provider
        self._health[pid] = health.ok
        with self._lock:
            self._syncing = True
            try:
                self._mark_providers(self.provider.value)
            finally:
                self._syncing = False
        took = f" ({seconds(health.latency)})" if health.latency is not None else ""
        self._say((f"✓ {value}: {health.detail}" if health.ok else f"{value}: {health.detail}") + took, error=not health.ok)

    def _do_save(self) -> None:
        secret, self._pending = (self._pending or self.secret.value), None
        self.secret.value = ""  # whatever happens next, the widget holds no secret
        provider = self.provider.value
        if not secret:
            raise LLMError("BAD_ARGUMENT", f"type the {PLACEHOLDER[self.method.value]} first, then press Save key")
        extra = {}
        if self.method.value == "gateway" and self.gateway_url.value.strip():
            extra["base_url"] = self.gateway_url.value.strip()
            self.gateway_url.value = ""   # it may hold user:password; the keyring has it now
        verdict = self.session.login(provider, secret, method=self.method.value, check=True, **extra)
        self._health.pop(provider, None)
        self._models.pop(provider, None)
        checked = f"; {verdict[0]}: {verdict[1]}" if verdict else ""
        self._say(f"stored the {provider} credential in the OS keyring ({self.method.value}, {mask(secret)}){checked}",
                  warn=bool(verdict) and verdict[0] != "valid")

    def _do_refresh(self) -> None:
        pid = self.provider.value
        self._servers = None
        self._ollama = None
        self._models.clear()
        self._health.clear()
        self._say("")
        self._sync_all()
        if pid != self.session.active.provider:
            self.provider.value = pid  # the user's choice stays; its observer refills the models
