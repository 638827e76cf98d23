"""Token counts and context windows per target, measured the cheapest way that is still right.

- llama.cpp (`local`): the server's own `POST /tokenize` and `n_ctx` per slot from `GET /props`, plus
  the chat template's per-message overhead measured once per server with `POST /apply-template`.
- Anthropic: `messages.count_tokens`; Gemini: `models.count_tokens` (both through the official SDKs).
  Counting is a network round trip, so it is done only when it matters: in a dry run, or when the
  estimate says the request would fill more than half of what the window leaves free.
- Everything else, and whenever a count endpoint fails: an estimate of one token per 3 characters
  plus 4 tokens per message. English runs ~4 characters per token on current tokenizers, so this
  overstates by about a third: the margin that keeps a fitted request inside the window.
- Windows of cloud models come from the price catalogue (genai-prices, `pricing.context_window`).

Counts are cached per (meter, text): a conversation's old exchanges are measured once per target,
and a cell only pays for its new prompt (and the answer before it).
"""
from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .targets import Target

CHARS_PER_TOKEN = 3.0         # estimate: deliberately fewer characters per token than real tokenizers
TOKENS_PER_MESSAGE = 4        # estimate: role markers and separators around a chat message
LLAMA_MESSAGE_OVERHEAD = 8    # when /apply-template is missing: ChatML spends 5 tokens around a message
# Measuring must never hold a cell up: each call waits at most this long (less when the cell's own
# timeout is shorter), a timeout is not retried, and a server that just failed is not asked again for
# DOWN_TTL seconds (the request is then fitted by the estimate, and the send itself reports the server).
MEASURE_TIMEOUT = 2.0
DOWN_TTL = 10.0
_down: dict[tuple[str, int], float] = {}
PROPS_TTL = 5.0               # seconds a llama.cpp /props answer (n_ctx) is trusted
_CACHE_SIZE = 20_000


def estimate(text: str) -> int:
    """Estimated tokens of one text (no message overhead)."""
    return math.ceil(len(text or "") / CHARS_PER_TOKEN)


class _LRU:
    def __init__(self, size: int = _CACHE_SIZE):
        self.size, self.data, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key):
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        return None

    def put(self, key, value) -> None:
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)


_counts = _LRU()                                  # (meter key, kind, text...) -> tokens
_props: dict[tuple[str, int], tuple[float, dict]] = {}
_overhead: dict[str, int] = {}
_lock = threading.Lock()


class Meter:
    """Measures texts for one target. `key` names the tokenizer (cache key); `exact` says whether the
    counts come from the target's own tokenizer; `window` is the context size (None: unknown)."""
    key = "estimate"
    exact = False
    window: int | None = None
    label = "estimate"
    per_message = TOKENS_PER_MESSAGE
    counts_lazily = False   # True: exact counts cost a round trip, only worth it near the window

    def text(self, text: str) -> int:
        return estimate(text)

    def message(self, text: str) -> int:
        """Tokens of one chat message with this content, its overhead included."""
        found = _counts.get((self.key, "m", text))
        if found is None:
            found = self.text(text) + self.per_message
            _counts.put((self.key, "m", text), found)
        return found

    def exchange(self, prompt: str, answer: str) -> int:
        return self.message(prompt) + self.message(answer)

    def base(self, system: str | None, prompt: str) -> int:
        """The request without history: system text, the current prompt, and the reply's priming."""
        return (self.message(system) if system else 0) + self.message(prompt) + self.per_message


class EstimateMeter(Meter):
    def __init__(self, window: int | None = None, label: str = "estimate"):
        self.window, self.label = window, label


class LlamaMeter(Meter):
    """A llama.cpp server: n_ctx from /props; counts by rendering messages with the model's own chat
    template (/apply-template) and tokenizing the result (/tokenize), so template tokens and merges at
    message boundaries are counted as the server will count them. An exchange is measured as the
    difference it makes before a fixed one-message tail, so BOS, default system prompts and the
    generation prompt cancel out. Servers without /apply-template: content tokens plus a measured
    per-message overhead and a 10% margin."""
    exact = True
    label = "llama.cpp /tokenize"
    _TAIL = ({"role": "user", "content": "x"},)

    def __init__(self, host: str, port: int, api_key: str | None = None, timeout: float = MEASURE_TIMEOUT):
        self.host, self.port, self.api_key, self.timeout = host, port, api_key, timeout
        props = llama_props(host, port, api_key, timeout)
        gen = props.get("default_generation_settings") or {}
        self.window = gen.get("n_ctx") or props.get("n_ctx") or None
        model = props.get("model_path") or props.get("model_alias") or ""
        self.key = f"llama:{host}:{port}:{model}"
        with _lock:
            self.templated = _overhead.get(self.key + ":templated")
        if self.templated is None:
            try:
                self._render(self._TAIL)
                self.templated = True
            except Exception:
                self.templated = False
                self.label = "llama.cpp /tokenize (no /apply-template: +10%)"
            with _lock:
                _overhead[self.key + ":templated"] = self.templated

    def _post(self, path: str, body: dict) -> Any:
        return _http_json(self.host, self.port, "POST", path, body, self.api_key, self.timeout)

    def text(self, text: str) -> int:
        if not text:
            return 0
        found = _counts.get((self.key, "t", text))
        if found is None:
            found = len(self._post("/tokenize", {"content": text, "add_special": False}).get("tokens") or [])
            _counts.put((self.key, "t", text), found)
        return found

    def _render(self, messages: tuple) -> int:
        """Tokens of `messages` as the server will see them (template, specials, generation prompt)."""
        key = (self.key, "r", tuple((m["role"], m["content"]) for m in messages))
        found = _counts.get(key)
        if found is None:
            prompt = self._post("/apply-template", {"messages": list(messages)}).get("prompt")
            if not isinstance(prompt, str):
                raise ValueError("/apply-template gave no prompt")
            found = len(self._post("/tokenize", {"content": prompt, "add_special": True,
                                                 "parse_special": True}).get("tokens") or [])
            _counts.put(key, found)
        return found

    def exchange(self, prompt: str, answer: str) -> int:
        if not self.templated:
            return math.ceil(1.1 * (self.message(prompt) + self.message(answer)))
        pair = ({"role": "user", "content": prompt}, {"role": "assistant", "content": answer})
        return max(1, self._render(pair + self._TAIL) - self._render(self._TAIL))

    def base(self, system: str | None, prompt: str) -> int:
        if not self.templated:
            return math.ceil(1.1 * super().base(system, prompt))
        head = ({"role": "system", "content": system},) if system else ()
        return self._render(head + ({"role": "user", "content": prompt},))

    @property
    def per_message(self) -> int:  # only used without /apply-template
        return LLAMA_MESSAGE_OVERHEAD


class _CountingMeter(Meter):
    """A cloud with a token-count endpoint. Exchanges are estimated; `calibrate` asks the endpoint twice
    (the request with and without its history) and scales the estimates to the exact total, so a long
    conversation costs two round trips, not one per exchange. Falls back to the estimate on failure."""
    counts_lazily = True

    def __init__(self, provider: Any, model: str, auth: Any, window: int | None, target: Any = None,
                 config: Any = None):
        self.provider, self.model, self.auth, self.window = provider, model, auth, window
        self.target, self.config = target, config
        self.key = f"{provider.id}:{model}"

    def _allowed(self, system: str | None, messages: list[dict]) -> bool:
        """A count sends the text to the provider: only when the request itself could be sent (the
        router's checks: local-only mode, disabled providers, protected values stay on this machine)."""
        if self.config is None or self.target is None:
            return True
        try:
            from .events import Request
            from .policy import enforce
            from .sensitive import check_request
            enforce(self.target.provider, self.config, target=self.target)
            check_request(self.target, Request(messages=list(messages), system=system), self.config)
        except Exception:
            return False
        return True

    def count(self, system: str | None, messages: list[dict]) -> int | None:
        """The endpoint's count for a whole request (cached), or None when it cannot be had."""
        key = (self.key, "r", system, tuple((m["role"], m["content"]) for m in messages))
        found = _counts.get(key)
        if found is None:
            if not self._allowed(system, messages):
                return None
            try:
                found = self._call(messages, system)
            except Exception:
                return None
            _counts.put(key, found)
        return found

    def calibrate(self, system: str | None, prompt: str, history: list) -> tuple[int, float] | None:
        """(exact base tokens, factor turning estimated exchange sizes into exact ones), or None."""
        last = {"role": "user", "content": prompt}
        base = self.count(system, [last])
        if base is None:
            return None
        if not history:
            return base, 1.0
        total = self.count(system, [m for e in history for m in e.messages()] + [last])
        if total is None:
            return None
        estimated = sum(Meter.exchange(self, e.prompt, e.answer) for e in history)
        self.label = f"{self.provider.id} count_tokens"
        return base, max(0.0, total - base) / estimated if estimated else 1.0


class AnthropicMeter(_CountingMeter):
    def _call(self, messages, system):
        client = self.provider._client(self.auth, 10.0, 30.0)
        kwargs = {"system": system} if system else {}
        return int(client.messages.count_tokens(model=self.model, messages=messages, **kwargs).input_tokens)


class GeminiMeter(_CountingMeter):
    def _call(self, messages, system):
        client = self.provider._client(self.auth, 30.0)
        contents = [{"role": "user", "parts": [{"text": system}]}] if system else []
        contents += [{"role": "model" if m["role"] == "assistant" else "user", "parts": [{"text": m["content"]}]}
                     for m in messages]
        return int(client.models.count_tokens(model=self.model, contents=contents).total_tokens)


def meter_for(session: Any, target: "Target") -> Meter:
    """The meter for a target; never raises (an unreachable server gets an estimate with no window)."""
    from . import pricing
    try:
        spec = session._spec(target)
    except Exception:
        return EstimateMeter()
    if spec.kind == "llamacpp":
        try:
            auth = session.credentials.lookup(spec, run_command=False)
            provider = session.provider(target)
            if target.port is None:
                port = provider._server_for_chat(target, auth).port
            else:
                port = target.port
            limit = session.settings.get("timeout") or MEASURE_TIMEOUT
            return LlamaMeter(provider.host, port, auth.secret if auth else None, min(MEASURE_TIMEOUT, limit))
        except Exception:
            return EstimateMeter(label="estimate (server not reachable)")
    model = target.model or spec.default_model or ""
    window = pricing.context_window(target.provider, model)
    if window is None:
        from .providers.catalogue import _CONTEXT
        window = _CONTEXT.get(model)
    if window is None and model:
        window = _config_window(session, target.provider)
    if spec.kind == "ollama":  # its /v1 API runs every model at the server's num_ctx, not the model's own size
        window = _config_window(session, target.provider) or OLLAMA_CONTEXT
    if spec.kind in ("anthropic", "gemini") and model:
        try:
            auth = session.credentials.lookup(spec, run_command=False)
            provider = session.provider(target)
            cls = AnthropicMeter if spec.kind == "anthropic" else GeminiMeter
            return cls(provider, model, auth, window, target, session.config)
        except Exception:
            pass
    return EstimateMeter(window)


# Ollama's default context length (OLLAMA_CONTEXT_LENGTH) since 0.6: what an OpenAI-compatible request gets.
OLLAMA_CONTEXT = 4096


def _config_window(session: Any, provider_id: str) -> int | None:
    value = (session.config.providers.get(provider_id) or {}).get("context")
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


def llama_props(host: str, port: int, api_key: str | None = None, timeout: float = MEASURE_TIMEOUT) -> dict:
    """GET /props of a llama.cpp server, cached for PROPS_TTL seconds."""
    now = time.monotonic()
    with _lock:
        hit = _props.get((host, port))
    if hit is not None and now - hit[0] < PROPS_TTL:
        return hit[1]
    props = _http_json(host, port, "GET", "/props", None, api_key, timeout)
    with _lock:
        _props[(host, port)] = (now, props)
    return props


_conns = threading.local()


def _http_json(host: str, port: int, method: str, path: str, body: dict | None, api_key: str | None,
               timeout: float = MEASURE_TIMEOUT) -> dict:
    """One JSON request on a kept-alive connection of this thread; raises on anything but 200."""
    import http.client
    with _lock:
        failed = _down.get((host, port))
    if failed is not None and time.monotonic() - failed < DOWN_TTL:
        raise OSError(f"{host}:{port} did not answer a moment ago")
    conns = getattr(_conns, "map", None)
    if conns is None:
        conns = _conns.map = {}
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = None if body is None else json.dumps(body).encode()
    for attempt in (0, 1):  # a kept-alive connection the server closed: reconnect once
        conn = conns.get((host, port))
        if conn is None:
            conn = conns[(host, port)] = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            conns.pop((host, port), None)
            stale = isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError))
            if attempt or not stale:  # only a kept-alive connection the server closed is worth a second try
                with _lock:
                    _down[(host, port)] = time.monotonic()
                raise
            continue
        if resp.status != 200:
            raise OSError(f"{method} {path}: HTTP {resp.status}")
        out = json.loads(raw)
        if not isinstance(out, dict):
            raise ValueError(f"{method} {path}: not a JSON object")
        return out
    raise OSError("unreachable")
