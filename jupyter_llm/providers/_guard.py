"""Stream integrity and deadlines for the SDK adapters: what a 200 reply must look like before it is
streamed, and a watchdog that closes the HTTP response when an answer stalls or passes its deadline.

SDK read timeouts restart with every byte, so SSE keep-alive comments or a trickling server could hold
an answer open forever; the watchdog counts only real progress (text, reasoning, usage, finish) and
shuts the socket, which makes the SDK's blocked read return at once. Imports no SDK.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

from ..errors import LLMError
from ..records import record

DEFAULT_TIMEOUT = 60.0
# Longest silence allowed once an answer has started, when the request names none (a stall_timeout
# of None falls back to the request's timeout).
MAX_BODY = 8 * 1024 * 1024  # a non-stream JSON body larger than this is not an answer we read


class NonStreamBody(Exception):
    """The server answered a streaming request with one JSON document (a whole completion or an error)."""

    def __init__(self, data: Any, content_type: str):
        super().__init__("non-stream body")
        self.data = data
        self.content_type = content_type


@record(frozen=True)
class Limits:
    """The limits one attempt runs under (seconds; `deadline_at` is a time.monotonic() instant)."""
    timeout: float          # until the answer starts (connect, headers, first piece)
    stall: float            # longest silence between pieces once started
    deadline: float | None  # the per-answer deadline the user set (for messages)
    deadline_at: float | None

    @classmethod
    def of(cls, request: Any, settings: dict | None = None) -> "Limits":
        settings = settings or {}
        # A provider's own `timeout` ([providers.X] timeout) wins over the session's.
        timeout = _positive(settings.get("timeout")) or _positive(getattr(request, "timeout", None)) or DEFAULT_TIMEOUT
        stall = _positive(getattr(request, "stall_timeout", None)) or timeout
        deadline = _positive(getattr(request, "deadline", None))
        deadline_at = getattr(request, "deadline_at", None)
        if deadline_at is None and deadline is not None:
            deadline_at = time.monotonic() + deadline
        return cls(timeout, stall, deadline, deadline_at)

    def remaining(self) -> float | None:
        return None if self.deadline_at is None else self.deadline_at - time.monotonic()

    def first_wait(self) -> float:
        """The SDK read timeout for this attempt: never longer than the timeout or what the deadline leaves."""
        waits = [self.timeout, self.stall]
        left = self.remaining()
        if left is not None:
            waits.append(max(0.05, left))
        return max(0.05, min(waits))


def _positive(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value > 0 and value == value and value != float("inf") else None


def deadline_error(name: str, limits: Limits) -> LLMError:
    return LLMError("TIMEOUT", f"the answer from {name} passed its {limits.deadline or 0:g}s deadline (deadline)",
                    hint="raise it with %llm set deadline=SECONDS, or ask for less", retryable=False)


class Watchdog:
    """Closes the armed HTTP response when the answer does not start within `timeout`, goes silent for
    `stall` seconds after it started, or passes `deadline_at`. `expired` then says which limit applied.
    One shared thread (`_REAPER`) watches every open stream, so a request costs no thread start."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.started = False
        self.expired: str | None = None   # first | stall | deadline
        self._begin = self._last = time.monotonic()
        self._response: Any = None
        self._lock = threading.Lock()
        _REAPER.add(self)

    def arm(self, response: Any) -> None:
        """The HTTP response to shut when a limit passes (closed at once if one already has)."""
        with self._lock:
            self._response = response
            late = self.expired is not None
        if late:
            _shut(response)

    def progress(self, content: bool = True) -> None:
        """Something real arrived; `content` (text or reasoning) means the answer has started."""
        self._last = time.monotonic()  # plain stores: the reaper only ever reads them
        if content:
            self.started = True

    def stop(self) -> None:
        with self._lock:
            self._response = None
        _REAPER.remove(self)

    def due(self) -> tuple[float, str]:
        lim = self.limits
        due, why = ((self._last + lim.stall, "stall") if self.started else (self._begin + lim.timeout, "first"))
        if lim.deadline_at is not None and lim.deadline_at <= due:
            due, why = lim.deadline_at, "deadline"
        return due, why

    def expire(self, why: str) -> None:
        with self._lock:
            self.expired = why
            response, self._response = self._response, None
        if response is not None:
            _shut(response)

    def error(self, name: str, *, mid_stream: bool) -> LLMError | None:
        """The TIMEOUT that states the limit which applied, or None when no limit passed."""
        lim = self.limits
        if self.expired == "deadline":
            return deadline_error(name, lim)
        if self.expired == "stall":
            return LLMError("TIMEOUT", f"{name} sent no answer for {lim.stall:g}s mid-answer (stall_timeout)",
                            hint="raise it with %llm set stall_timeout=SECONDS, or set a fallback with %llm fallback TARGET",
                            retryable=not mid_stream)
        if self.expired == "first":
            return first_byte_error(name, lim)
        return None


class _Reaper:
    """The one thread that expires watchdogs: it sleeps until the earliest due time (or until a stream
    is added), and not at all while no stream is open."""

    def __init__(self):
        self._cond = threading.Condition()
        self._dogs: set[Watchdog] = set()
        self._thread: threading.Thread | None = None

    def add(self, dog: Watchdog) -> None:
        with self._cond:
            self._dogs.add(dog)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="llm-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()

    def remove(self, dog: Watchdog) -> None:
        with self._cond:
            self._dogs.discard(dog)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                fire, wake = [], None
                for dog in list(self._dogs):
                    due, why = dog.due()
                    if due <= now:
                        fire.append((dog, why))
                        self._dogs.discard(dog)
                    else:
                        wake = due if wake is None else min(wake, due)
                if not fire:
                    self._cond.wait(None if wake is None else min(wake - now, 5.0) + 0.005)
                    continue
            for dog, why in fire:  # outside the lock: shutting a socket is a system call
                dog.expire(why)


_REAPER = _Reaper()


def first_byte_error(name: str, limits: Limits) -> LLMError:
    # Not retried on the same target: a server that let `timeout` pass will likely do so again, and the
    # user asked for an answer within that time. The fallback chain still runs.
    return LLMError("TIMEOUT", f"{name} did not start answering within {limits.timeout:g}s (timeout)",
                    hint="raise it with %llm set timeout=SECONDS, or set a fallback with %llm fallback TARGET",
                    retryable=False)


def _shut(response: Any) -> None:
    """Shut the socket under an httpx/httpx2 response (wakes a blocked read), then close the response."""
    try:
        stream = (getattr(response, "extensions", None) or {}).get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain method: leave TLS state alone
    except Exception:
        pass
    try:
        response.close()
    except Exception:
        pass


def content_type(response: Any) -> str:
    headers = getattr(response, "headers", None) or {}
    return str(headers.get("content-type") or "").split(";")[0].strip().lower()


def check_reply(response: Any, name: str) -> None:
    """A 200 reply to a streaming request must be an event stream. One JSON document raises NonStreamBody
    (the adapter parses it as a whole answer or an error); HTML or other content is PROVIDER_ERROR."""
    kind = content_type(response)
    if not kind or "event-stream" in kind:
        return
    if kind.endswith("json"):
        raw = response.read()
        if len(raw) > MAX_BODY:
            raise LLMError("PROVIDER_ERROR", f"{name} answered a streaming request with {len(raw)} bytes of {kind}")
        try:
            data = json.loads(raw)
        except ValueError:
            raise LLMError("PROVIDER_ERROR", f"{name} answered with {kind} that is not valid JSON",
                           hint="is the base URL right? see %llm status", retryable=False) from None
        raise NonStreamBody(data, kind)
    raise LLMError("PROVIDER_ERROR", f"{name} answered HTTP 200 with {kind} instead of an event stream",
                   hint="is the base URL right (a login page or proxy in between)? see %llm status", retryable=False)


def not_a_completion(name: str, kind: str) -> LLMError:
    return LLMError("PROVIDER_ERROR", f"{name} answered with {kind} that is not a completion",
                    hint="is the base URL right? see %llm status", retryable=False)


def malformed(name: str, exc: BaseException) -> LLMError:
    return LLMError("PROVIDER_ERROR", f"{name} sent malformed data mid-answer ({type(exc).__name__})",
                    hint="try again, or set a fallback with %llm fallback TARGET")


def unfinished(name: str, got_text: bool = True) -> LLMError:
    return LLMError("NETWORK_ERROR", f"the stream from {name} ended before the answer finished",
                    hint=("the text so far is kept; " if got_text else "") + "try again, or set a fallback with %llm fallback TARGET")


class CommentFilter:
    """A sync byte stream minus SSE comment lines (`: keep-alive`): google-genai parses every non-`data:`
    line as JSON, so a proxy's keep-alive would break it. Wraps `response.stream` of httpx/httpx2."""

    def __init__(self, inner: Any):
        self._inner = inner
        self._pending = b""

    def __iter__(self):
        for chunk in self._inner:
            data = self._pending + chunk
            lines = data.split(b"\n")
            self._pending = lines.pop()
            kept = [ln for ln in lines if not ln.startswith(b":")]
            if kept:
                yield b"\n".join(kept) + b"\n"
        if self._pending and not self._pending.startswith(b":"):
            yield self._pending
        self._pending = b""

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


_FILTERS: dict[type, type] = {}


def drop_comments(response: Any) -> None:
    """Replace `response.stream` by a CommentFilter that is also the library's SyncByteStream (httpx and
    httpx2 check the type before reading)."""
    import importlib
    lib = importlib.import_module(type(response).__module__.split(".")[0])
    base = getattr(lib, "SyncByteStream", None)
    if base is None or not isinstance(response.stream, base):
        return
    cls = _FILTERS.get(base)
    if cls is None:
        cls = _FILTERS[base] = type("CommentFilter", (CommentFilter, base), {})
    response.stream = cls(response.stream)
