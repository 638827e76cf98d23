"""What the SDK adapters share: HTTP status and transport failures to LLMError, Retry-After, finish
reasons, timeouts and a small client cache. Imports no SDK."""
from __future__ import annotations

import re
import sys
import threading
import time
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import urlsplit

from .. import inflight
from ..errors import LLMError
from ..events import Request
from ..targets import Target
from . import _guard
from .base import Auth, Health

# Yielded by an adapter's parse when the server sent its terminal event ([DONE], message_stop).
DONE = object()
# The guard (watchdog, display name) of the stream running in this thread: Gemini's response hook uses it.
_GUARD = threading.local()

NETWORK_HINT = "switch to local with %llm use local, or set a fallback with %llm fallback TARGET"
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0

_NAMES = {"openai": "OpenAI", "anthropic": "Anthropic", "gemini": "Gemini", "deepseek": "DeepSeek",
          "groq": "Groq", "together": "Together", "openrouter": "OpenRouter", "local": "llama.cpp", "ollama": "Ollama"}
# Context-window errors as real servers word them: OpenAI `context_length_exceeded`, llama.cpp "exceeds the
# available context size" (exceed_context_size_error), Anthropic "prompt is too long", Gemini "exceeds the
# maximum number of tokens", vLLM "maximum context length", Mistral/Groq "too many tokens".
# These patterns only ever see error text: `re` compiles them on first use (and caches them), not at import,
# which is on a kernel's first cell (about 1.2 ms).
_CONTEXT_RE = (r"context[ _-]?length|context[ _-]?window|maximum context|context[ _-]size|"
               r"exceed_context_size|too long|too many (input )?tokens|"
               r"exceeds the maximum number of tokens|input token count|reduce the length|"
               r"maximum number of tokens allowed|tokens? exceeds? (the )?(model'?s? )?(limit|maximum)")
# A gateway's 4xx for a model it does not serve: LiteLLM "Invalid model name passed in model=..." and "No
# healthy deployments for this model", OpenRouter "... is not a valid model ID", OpenAI `model_not_found`,
# vLLM/Ollama "model ... does not exist" / "model '...' not found", Groq "model_decommissioned".
_MODEL_RE = (r"no healthy deployments?|invalid model|model[ _]not[ _]found|model_decommissioned|"
             r"unknown model|not a valid model|no such model|no endpoints found for|"
             r"model\b[^.]{0,120}\b(does not exist|not found|is not (supported|available|served)|"
             r"(has been|was) decommissioned)|not_found_error")
_BAD_KEY_RE = r"api[ _-]?key (not valid|invalid|is invalid)|API_KEY_INVALID|invalid[ _-]api[ _-]key"
_KEYLIKE_RE = r"\b(sk-[A-Za-z0-9_\-]{6,}|AIza[0-9A-Za-z_\-]{10,}|Bearer\s+\S+)"
_TIMEOUT_NAMES = {"TimeoutException", "APITimeoutError", "TimeoutError", "timeout"}
_NETWORK_NAMES = {"TransportError", "NetworkError", "RemoteProtocolError", "ProtocolError", "ConnectError",
                  "ReadError", "WriteError", "APIConnectionError", "ConnectionError", "IncompleteRead"}
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "stop": "stop", "max_tokens": "length",
           "length": "length", "refusal": "content_filter", "content_filter": "content_filter",
           "safety": "content_filter", "recitation": "content_filter", "blocklist": "content_filter",
           "prohibited_content": "content_filter", "spii": "content_filter", "tool_use": "tool_calls",
           "tool_calls": "tool_calls", "function_call": "tool_calls"}


def display_name(provider_id: str) -> str:
    return _NAMES.get(provider_id, provider_id)


def scrub(text: Any, secret: str | None = None, limit: int = 160) -> str:
    """One short line of server text with the secret and anything key-like removed."""
    line = " ".join(str(text or "").split())
    if secret:
        line = line.replace(secret, "****")
    line = re.sub(_KEYLIKE_RE, "****", line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def where(base_url: str | None) -> str:
    """host[:port] of a base URL: never its user-info, path or query."""
    parts = urlsplit(base_url or "")
    return parts.hostname and (f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname) or "the server"


def retry_after(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    if not headers:
        return None
    get = headers.get
    ms = get("retry-after-ms") or get("Retry-After-Ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = get("retry-after") or get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def status_error(provider_id: str, status: int, server_message: Any = "", *, model: str | None = None,
                 secret: str | None = None, headers: Mapping[str, str] | None = None,
                 wait: float | None = None) -> LLMError:
    """The LLMError for an HTTP error reply (or an error event inside a 200 stream)."""
    name = display_name(provider_id)
    text = scrub(server_message, secret)
    wait = retry_after(headers) if wait is None else wait
    if status in (401, 403) or (status == 400 and re.search(_BAD_KEY_RE, str(server_message), re.I)):
        what = "rejected the credential" if status != 403 else "refused access with this credential"
        return LLMError("INVALID_CREDENTIALS", f"{name} {what} (HTTP {status})",
                        hint=f"%llm login {provider_id}", status=status)
    if status == 404:
        return LLMError("MODEL_NOT_FOUND", f"{name} has no model {model!r} (HTTP 404)" if model else f"{name} answered HTTP 404",
                        hint=f"%llm models {provider_id}", status=status)
    if status == 429:
        when = f"retry in {_duration(wait)}" if wait is not None else "retry later"
        return LLMError("RATE_LIMITED", f"{name} rate limit reached, {when}", retry_after=wait, status=status,
                        hint="wait, or set a fallback with %llm fallback TARGET")
    if status == 413 or ((400 <= status < 500 or status == 200) and re.search(_CONTEXT_RE, str(server_message), re.I)):
        return LLMError("CONTEXT_TOO_LONG", f"the conversation is too long for {name} {model or ''}".rstrip()
                        + (f": {text}" if text else ""), hint="start afresh with %llm reset or --new", status=status,
                        retryable=False)
    if (400 <= status < 500 or status == 200) and re.search(_MODEL_RE, str(server_message), re.I):
        return LLMError("MODEL_NOT_FOUND", (f"{name} does not serve model {model!r}" if model else f"{name} does not know that model")
                        + (f" (HTTP {status})" if status != 200 else "") + f": {text}", hint=f"%llm models {provider_id}",
                        status=status, retryable=False)
    if 400 <= status < 500:
        return LLMError("PROVIDER_ERROR", f"{name} rejected the request (HTTP {status}): {text}", status=status,
                        retryable=False)
    if status >= 500:
        return LLMError("PROVIDER_ERROR", f"{name} server error (HTTP {status}): {text}", status=status,
                        retry_after=wait, retryable=True)
    return LLMError("PROVIDER_ERROR", f"{name} reported an error mid-answer: {text}", retryable=True)


def transport_kind(exc: BaseException) -> str | None:
    """'timeout', 'network' or None, by the exception (or its causes) class names: httpx, httpx2, SDKs."""
    seen = 0
    while exc is not None and seen < 6:
        names = {cls.__name__ for cls in type(exc).__mro__}
        if names & _TIMEOUT_NAMES or "Timeout" in type(exc).__name__:
            return "timeout"
        if names & _NETWORK_NAMES:
            return "network"
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return None


def transport_error(provider_id: str, kind: str, *, base_url: str | None, timeout: float | None,
                    mid_stream: bool) -> LLMError:
    name = display_name(provider_id)
    if kind == "timeout":
        message = (f"{name} stopped sending for {timeout:g}s mid-answer" if mid_stream
                   else f"{name} did not answer within {timeout:g}s") if timeout else f"{name} timed out"
        return LLMError("TIMEOUT", message, hint=NETWORK_HINT)
    message = (f"connection to {name} ({where(base_url)}) dropped mid-answer" if mid_stream
               else f"cannot reach {name} at {where(base_url)}")
    return LLMError("NETWORK_ERROR", message, hint=NETWORK_HINT)


def finish_reason(raw: Any) -> str:
    """stop | length | content_filter | tool_calls | the provider's own word, lower-case."""
    if raw is None:
        return "unknown"
    word = str(getattr(raw, "value", raw)).lower()
    word = word.removeprefix("finishreason.")
    return _FINISH.get(word, word)


def timeouts(spec: Any, request: Request | None) -> tuple[float, float]:
    """(connect, read) seconds for one attempt: read is what the attempt may wait for a byte (its timeout,
    stall timeout and what the deadline leaves, the least of them); connect never exceeds it. A provider's own
    `timeout` from config wins over the session's."""
    settings = getattr(spec, "settings", {}) or {}
    connect = float(settings.get("connect_timeout") or CONNECT_TIMEOUT)
    if request is None:
        return connect, float(settings.get("timeout") or READ_TIMEOUT)
    read = _guard.Limits.of(request, settings).first_wait()
    return min(connect, read), read


def model_for(spec: Any, target: Target) -> str:
    model = target.model or spec.default_model
    if not model:
        raise LLMError("BAD_ARGUMENT", f"no model given for {spec.id} and it has no default",
                       hint=f"write {spec.id}:MODEL, see %llm models {spec.id}")
    return model


def base_url(spec: Any, auth: Auth | None) -> str | None:
    return (auth.base_url if auth is not None and auth.base_url else None) or spec.base_url


def require_secret(spec: Any, auth: Auth | None) -> str | None:
    """The secret to send; MISSING_CREDENTIALS when the provider needs one and there is none."""
    secret = auth.secret if auth is not None else None
    if not secret and spec.needs_key:
        env = " or ".join(spec.env_vars) or "an API key"
        raise LLMError("MISSING_CREDENTIALS", f"no credential for {display_name(spec.id)}",
                       hint=f"%llm login {spec.id}, or set {env}")
    return secret


def check_health(spec: Any, auth: Auth | None, model: str | None, list_ids: Callable[[], list[str]]) -> Health:
    """Time one cheap model-list call; failures become Health(ok=False) with the error line."""
    start = time.monotonic()
    try:
        require_secret(spec, auth)
        ids = list_ids()
    except LLMError as exc:
        if no_model_list(exc):
            return Health(True, f"reachable; it has no model list (HTTP {exc.status})", time.monotonic() - start, model)
        return Health(False, exc.line(), time.monotonic() - start, model)
    latency = time.monotonic() - start
    listed = model is None or not ids or model in ids or f"models/{model}" in ids
    detail = f"{len(ids)} models" + ("" if listed else f"; {model} not listed")
    return Health(True, detail, latency, model)


def no_model_list(exc: LLMError, *, strict: bool = True) -> bool:
    """The server answered, but it has no model-list route (many gateways; Gemini behind a proxy): 404, 405
    or 501 there. Not `strict`: also a 200 that is not a model list (a web app's catch-all page), which
    is enough to show the catalogue but not to call the endpoint healthy."""
    if exc.status in (404, 405, 501) and exc.code in ("MODEL_NOT_FOUND", "PROVIDER_ERROR"):
        return True
    return not strict and exc.status == 200 and exc.code == "PROVIDER_ERROR"


class ClientCache:
    """SDK clients kept per key (base URL, secret, timeouts...), a handful at most."""

    def __init__(self, size: int = 16):
        self._size = size
        self._clients: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple, make: Callable[[], Any]) -> Any:
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                if len(self._clients) >= self._size:
                    self._clients.pop(next(iter(self._clients)))
                client = self._clients[key] = on_fresh_stack(make)   # a first client loads much of the SDK
            return client

    def __repr__(self) -> str:  # keys hold secrets
        return f"<ClientCache {len(self._clients)} clients>"


def on_fresh_stack(fn: Callable[[], Any]) -> Any:
    """fn() on a short-lived thread while this one waits: its result, or its exception raised here. Heavy
    first-use work (an SDK's import, its first client) ran 15 to 20 % slower from a cell's deep call stack
    on CPython 3.11 (see SDKAdapter.preload); a new thread starts on an empty one."""
    result: list[Any] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:   # re-raised in the caller, as if fn had run there
            failed.append(exc)
    worker = threading.Thread(target=run, name="llm-fresh-stack", daemon=True)
    worker.start()
    worker.join()
    if failed:
        raise failed[0].with_traceback(None)
    return result[0]


def settle_httpx() -> None:
    """Wait for a concurrent import of `httpx` to finish. The openai SDK reads sys.modules['httpx'] on
    every request; if google-genai is importing httpx in another thread (a compare column, a panel
    probe), openai would see a half-initialised module. A real import statement waits on its lock."""
    if "httpx" in sys.modules:
        import httpx  # noqa: F401


class SDKAdapter:
    """What the SDK adapters share: the spec's identity, a client cache, a secret-free repr, and
    the rule that models are listed live when a key is set and from the catalogue otherwise."""

    sdk_modules: tuple[str, ...] = ()

    def __init__(self, spec: Any):
        self.spec = spec
        self.id = spec.id
        self.kind = spec.kind
        self.env_vars = spec.env_vars
        self.default_model = spec.default_model
        self.needs_key = spec.needs_key
        self._clients = ClientCache()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.spec.base_url}>"

    def loaded(self) -> bool:
        """Whether this adapter's SDK is imported already."""
        return all(name in sys.modules for name in self.sdk_modules)

    def preload(self) -> None:
        """Import the SDK now, one at a time: Router.preload calls it before compare or map workers start,
        since SDKs imported concurrently can see each other's half-imported modules (openai reads
        sys.modules['httpx'], which google-genai may be importing at that moment).

        The import runs on a short-lived thread while this one waits, so it starts on an empty call stack.
        Its speed depends on the depth it starts at: on CPython 3.11 `import openai` measured 15 to 20 %
        slower 30 to 50 frames deep, where a cell's stack (IPython, the magic, the router's generators)
        is; about 100 ms of a kernel's first cloud cell (benchmarks/README.md, section 5)."""
        if self.loaded():
            return
        import importlib

        def load() -> None:
            for name in self.sdk_modules:
                importlib.import_module(name)
        on_fresh_stack(load)

    def _models(self, auth: Auth | None, live: Callable[[], list]) -> list:
        from .catalogue import catalogue
        if (auth is not None and auth.secret) or not self.needs_key:
            try:
                return live()
            except LLMError as exc:
                if not no_model_list(exc, strict=False):
                    raise
            # No model-list route: the catalogue is the best list there is.
        return catalogue(self.id, self.spec.settings.get("models"), self.default_model)

    def _live_ids(self, auth: Auth | None, read: float = 15.0) -> list[str]:
        raise NotImplementedError

    def _error(self, exc: Exception, model: str | None, auth: Auth | None, read: float | None,
               mid_stream: bool) -> Exception:
        raise NotImplementedError

    finish_is_terminal = True  # OpenAI and Gemini end with a finish reason; Anthropic with message_stop

    def _events(self, open_stream: Callable[[], Any], parse: Callable[[Any], Iterator], *, model: str,
                auth: Auth | None, request: Request | None, complete: Callable[[Any, str], Iterator] | None = None,
                response_of: Callable[[Any], Any] | None = None, cleanup: Callable[[], None] | None = None,
                notes: list[str] = ()) -> Iterator:
        """The shape every stream() shares: open the SDK stream under a watchdog (timeout to start, stall
        between pieces, the answer's deadline), refuse a 200 that is not an event stream (a whole JSON
        completion is parsed by `complete`), let `parse` turn chunks into TextDelta / ReasoningDelta / Usage /
        finish-reason strings / DONE, map any failure to an LLMError raised after the text already yielded,
        and only call the answer finished when the server said so (else NETWORK_ERROR, text kept)."""
        from ..events import Finish, Notice, ReasoningDelta, TextDelta, Usage
        name = display_name(self.id)
        limits = _guard.Limits.of(request, getattr(self.spec, "settings", {}))
        left = limits.remaining()
        if left is not None and left <= 0:
            raise _guard.deadline_error(name, limits)
        for note in notes:
            yield Notice(note)
        usage = finish = None
        done = started = False
        holder: list[Any] = []
        dog = _guard.Watchdog(limits)
        _GUARD.current = (dog, name)

        def items() -> Iterator:
            try:
                sdk_stream = open_stream()
                inflight.waiting()   # the request is out and answered: deferred work runs while the body comes
                holder.append(sdk_stream)
                _capture_quota(self.id, sdk_stream)
                response = response_of(sdk_stream) if response_of is not None else None
                if response is not None:
                    dog.arm(response)
                    _guard.check_reply(response, name)
                yield from parse(sdk_stream)
            except _guard.NonStreamBody as body:
                if complete is None:
                    raise _guard.not_a_completion(name, body.content_type) from None
                yield from complete(body.data, body.content_type)
        try:
            for item in items():
                if item is DONE:
                    done = True
                    continue
                content = isinstance(item, (TextDelta, ReasoningDelta))
                dog.progress(content)
                if content:
                    started = True
                    yield item
                elif isinstance(item, Usage):
                    usage = item
                elif item:
                    finish = item
        except Exception as exc:
            why = dog.expired
            if why is None and transport_kind(exc) == "timeout":
                left = limits.remaining()
                why = "deadline" if left is not None and left <= 0.1 else ("stall" if dog.started else "first")
                dog.expired = why
            error = dog.error(name, mid_stream=started) if why else self._error(exc, model, auth, limits.timeout, started)
            if error is exc and not isinstance(exc, LLMError):
                if isinstance(exc, ValueError) or "ResponseError" in type(exc).__name__:
                    error = _guard.malformed(name, exc)
            raise error from None
        finally:
            dog.stop()
            _GUARD.current = None
            for sdk_stream in holder:
                try:
                    sdk_stream.close()
                except Exception:
                    pass
            if cleanup is not None:
                cleanup()
        if not done and not (finish is not None and self.finish_is_terminal):
            if dog.expired:  # the read ended quietly after the watchdog shut the socket
                raise dog.error(name, mid_stream=started)
            raise _guard.unfinished(name, started)
        if usage is not None:
            yield usage
        yield Finish(finish_reason(finish))

    def _list_error(self, exc: Exception, auth: Auth | None, read: float) -> LLMError:
        """The LLMError for a failed model-list call; a reply the SDK could not parse (an HTML page from
        a proxy) is PROVIDER_ERROR, never a traceback."""
        error = self._error(exc, None, auth, read, False)
        if isinstance(error, LLMError):
            return error
        return LLMError("PROVIDER_ERROR", f"{display_name(self.id)} answered the model list with something "
                        f"that is not one ({type(exc).__name__})", hint="is the base URL right? see %llm status",
                        status=200)

    def list_models(self, auth: Auth | None) -> list:
        """Live from the provider's model list when a key is set (or none is needed), else the catalogue."""
        from .catalogue import model_info
        return self._models(auth, lambda: [model_info(self.id, m, "live") for m in self._live_ids(auth)])

    def health(self, target: Target, auth: Auth | None) -> Health:
        """A live model-list call: cheap, authenticated, and it tells whether the model exists."""
        return check_health(self.spec, auth, target.model or self.default_model, lambda: self._live_ids(auth, 10.0))


def _duration(seconds: float) -> str:
    """A wait as people read it: 1.5 s, 45 s, 12 min, 1 h 5 min."""
    if seconds < 10:
        return f"{seconds:.3g} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def _capture_quota(provider: str, sdk_stream: Any) -> None:
    """Keep the rate-limit headers of the response the SDK stream rides on (quota.py)."""
    headers = getattr(getattr(sdk_stream, "response", None), "headers", None)
    if headers is not None:
        from .. import quota
        quota.capture(provider, headers)
