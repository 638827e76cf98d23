"""A wire-level OpenAI / Anthropic / Gemini fake on 127.0.0.1: scripted streams, faults, recorded requests.

Routes (PREFIX is any name but `anthropic`, `gemini`, `_emulator`; all of them speak OpenAI):
  POST /PREFIX/v1/chat/completions      GET /PREFIX/v1/models
  POST /anthropic/v1/messages           GET /anthropic/v1/models
  POST /gemini/v1beta/models/M:generateContent | :streamGenerateContent?alt=sse    GET /gemini/v1beta/models
  POST /anthropic/v1/messages/count_tokens  POST /gemini/v1beta/models/M:countTokens   (token counts:
       one per whitespace-separated word plus 3 per message, so tests can tell them from estimates)
  POST /_emulator/{reset,script,fault,expect_key}  GET /_emulator/requests   (control from another process)
  Batch APIs (batches.py): /PREFIX/v1/files, /PREFIX/v1/batches, /anthropic/v1/messages/batches,
  /gemini/v1beta/models/M:batchGenerateContent, /gemini/v1beta/batches/ID; POST /_emulator/{batch_config,finish_batches}

Model-name triggers (work from any process; combine with `+`, e.g. `gpt-4o+slow-1+drop-after-3`):
  fault-401 fault-403 fault-404 fault-500 fault-503 fault-529 fault-context fault-leak fault-hangup
  fault-429[-SECONDS] (Retry-After, default 1)   slow-SECONDS (first token)   hang-SECONDS (before headers)
  delay-SECONDS (between tokens)   tokens-N   stall-after-K[-for-SECONDS] (default 30)
  drop-after-K (connection cut)   error-after-K (error event in the stream)   flaky-N-CODE (first N calls fail)
  think-N (N reasoning words first: OpenAI `reasoning_content`, Anthropic thinking block, Gemini thought parts)
  no-end (the stream closes cleanly without its terminal event)   no-done (OpenAI: finish chunk, no [DONE])
  no-finish (OpenAI: [DONE] but no finish_reason)   garbage-after-K (`data: not json` after K tokens)   json-200 (a whole JSON completion to a stream request)
  html-200 (an HTML page with HTTP 200)   keepalive-after-K[-for-SECONDS] (only keep-alives, default 30 s)
  fault-context-llama (llama.cpp's context error)   fault-litellm-model fault-litellm-deployments
  fault-openrouter-model (gateway 400s for an unknown model)
Other shapes: `drop_models_route(prefix)` (no GET /models: 404), `SilentServer` (accepts, never answers).

Structured output (OpenAI `response_format` json_schema or llama.cpp `json_schema`, Anthropic
`output_config.format`, Gemini `generationConfig.responseJsonSchema`): unless a reply is scripted, the
answer is a small schema-valid JSON value whose strings echo the prompt (protocols.instance).
"""
from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import asdict, dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from . import batches as _batches
from .protocols import GATEWAY_MODEL_ERRORS, STATUS_FAULTS, WIRES, Wire, instance

GATEWAY_KINDS = set(GATEWAY_MODEL_ERRORS) | {"context-llama"}

STREAM_FAULTS = {"slow", "hang", "stall", "drop", "error", "hangup", "garbage", "keepalive", "json-200", "html-200",
                 "no-end", "no-done", "no-finish"}
HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>Sign in - Corporate Proxy</title></head>\n"
             b"<body><form action=\"/login\"><input name=\"user\"></form></body></html>\n")
DEFAULT_MODELS = {
    "openai": ["gpt-5.4-mini", "gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"],
    "anthropic": ["claude-haiku-5-5", "claude-sonnet-5-5", "claude-haiku-4-5"],
    "gemini": ["gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro"],
}


@dataclass
class Script:
    """How the next replies look. `reply` None: "Hello from P M: you said ..."; `tokens`: with a reply,
    split it into that many chunks, without one, answer that many words."""
    reply: str | None = None
    tokens: int | None = None
    delay: float = 0.0              # seconds between tokens
    first_token_delay: float = 0.0  # seconds after the headers, before the first token
    finish: str = "stop"            # stop | length | content_filter (mapped to each wire's word)
    reasoning: str | None = None    # reasoning text streamed before the answer (split into words)


@dataclass
class Fault:
    """One injected failure. Status kinds: 401 403 404 429 500 503 529 context leak; stream kinds:
    slow (first token after `seconds`), hang (no headers for `seconds`), stall (pause `seconds` after
    `after` tokens), drop (cut the connection after `after` tokens), error (error event after `after`
    tokens), hangup (close without any reply)."""
    kind: str
    retry_after: float | str | None = None   # Retry-After header: seconds or an HTTP date
    retry_after_ms: float | None = None      # retry-after-ms header (OpenAI style)
    after: int = 0
    seconds: float = 30.0
    times: int = 1
    on: str = "any"                 # chat | models | any (stream kinds only ever hit chat)
    provider: str | None = None     # only requests under this URL prefix
    every: int = 0                  # > 0: hit only every Nth matching request (spread faults through a run)
    seen: int = 0                   # matching requests so far (for `every`)


@dataclass
class Recorded:
    """One request as received."""
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]          # lower-case names
    body: Any
    provider: str                    # URL prefix: openai, groq, anthropic, gemini, ...
    wire: str                        # openai | anthropic | gemini
    route: str                       # chat | models | count | other
    model: str = ""
    stream: bool = False
    outcome: str = "pending"         # complete | status:CODE | dropped | error-event | hangup | client-gone


class Emulator:
    """The server plus its per-test state; see the module docstring for routes and triggers."""

    def __init__(self, port: int = 0):
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.emulator = self  # type: ignore[attr-defined]
        self.httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None
        self.reset()

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> "Emulator":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="llm-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release()
        self.httpd.shutdown()
        self.httpd.server_close()

    def reset(self) -> None:
        """Forget requests, faults, scripts, keys and counters; release stalled replies."""
        self._release()
        with self._lock:
            self._requests: list[Recorded] = []
            self._faults: list[Fault] = []
            self._script = Script()
            self._keys: dict[str, str] = {}
            self._models = {k: list(v) for k, v in DEFAULT_MODELS.items()}
            self._seen: dict[str, int] = {}
            self.batches = _batches.Batches()
            self.batch_rows = 0             # rows received inside batch jobs since the reset
            self._no_models: dict[str, int] = {}
            self._reply_headers: dict[str, dict[str, str]] = {}

    def _release(self) -> None:
        old, self._wake = self._wake, threading.Event()
        old.set()

    def sleep(self, seconds: float) -> None:
        """Wait, but wake early when the test ends (reset)."""
        if seconds > 0:
            self._wake.wait(seconds)

    # what tests call -----------------------------------------------------------------------------
    def url(self, provider: str = "openai") -> str:
        """Base URL to give the SDK: /openai/v1 (any OpenAI-compatible name works), /anthropic, /gemini."""
        if provider == "anthropic":
            return f"{self.base}/anthropic"
        if provider in ("gemini", "google"):
            return f"{self.base}/gemini"
        return f"{self.base}/{provider}/v1"

    def script(self, reply: str | None = None, *, tokens: int | None = None, delay: float = 0.0,
               first_token_delay: float = 0.0, finish: str = "stop", reasoning: str | None = None) -> None:
        """Set how every following reply looks (until reset)."""
        with self._lock:
            self._script = Script(reply, tokens, delay, first_token_delay, finish, reasoning)

    def fault(self, kind: str | int, **options: Any) -> Fault:
        """Queue a failure for the next matching request(s); options are Fault fields."""
        kind = str(kind)
        if kind not in STATUS_FAULTS and kind not in STREAM_FAULTS:
            raise ValueError(f"unknown fault kind {kind!r}")
        f = Fault(kind, **options)
        with self._lock:
            self._faults.append(f)
        return f

    def expect_key(self, key: str | None, provider: str | None = None) -> None:
        """Reject requests whose auth header does not carry `key` (per URL prefix, or all when None)."""
        with self._lock:
            if key is None:
                self._keys.pop(provider or "*", None)
            else:
                self._keys[provider or "*"] = key

    def drop_models_route(self, provider: str, status: int = 404) -> None:
        """GET /models under this URL prefix answers `status` (many gateways have no model list)."""
        with self._lock:
            self._no_models[provider] = status

    def reply_headers(self, provider: str, headers: dict[str, str]) -> None:
        """Extra headers on every successful reply under a URL prefix (e.g. rate-limit headers)."""
        with self._lock:
            self._reply_headers[provider] = dict(headers)

    def _headers_for(self, provider: str) -> dict[str, str]:
        with self._lock:
            return dict(self._reply_headers.get(provider, {}))

    def set_models(self, wire: str, ids: list[str]) -> None:
        with self._lock:
            self._models[wire] = list(ids)

    def batch_config(self, seconds: float | None = None) -> None:
        """How long a batch job takes from submit to ended (rows finish in order over that time)."""
        self.batches.config(seconds)

    def finish_batches(self) -> None:
        """Every running batch job ends now."""
        self.batches.finish_all()

    def _note_batch(self, rows: list) -> None:
        with self._lock:
            self.batch_rows += len(rows)

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def calls(self, provider: str | None = None, route: str | None = "chat") -> list[Recorded]:
        """Recorded requests, filtered by URL prefix and route (chat | models | None for all)."""
        return [r for r in self.requests
                if (provider is None or r.provider == provider) and (route is None or r.route == route)]

    def last(self, provider: str | None = None) -> Recorded:
        found = self.calls(provider, None)
        if not found:
            raise AssertionError(f"no request recorded for {provider or 'any provider'}")
        return found[-1]

    def secret_locations(self, secret: str) -> list[str]:
        """Where `secret` appeared in recorded requests, as `provider:header:NAME`, `provider:body`, ..."""
        out = []
        for r in self.requests:
            out += [f"{r.provider}:header:{k}" for k, v in r.headers.items() if secret in v]
            if secret in json.dumps(r.body):
                out.append(f"{r.provider}:body")
            if secret in r.path or any(secret in v for v in r.query.values()):
                out.append(f"{r.provider}:url")
        return sorted(set(out))

    # used by the handler ---------------------------------------------------------------------------
    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self._requests.append(rec)

    def _expected_key(self, provider: str) -> str | None:
        with self._lock:
            return self._keys.get(provider, self._keys.get("*"))

    def _take_fault(self, rec: Recorded) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.provider not in (None, rec.provider):
                    continue
                if f.kind in STREAM_FAULTS and rec.route != "chat":
                    continue
                if f.on not in ("any", rec.route):
                    continue
                if f.every > 0:
                    f.seen += 1
                    if f.seen % f.every:
                        continue
                f.times -= 1
                if f.times <= 0:
                    self._faults.remove(f)
                return f
        return None

    def _plan(self, rec: Recorded) -> tuple[Script, list[Fault]]:
        """The script and faults for one chat request: queued faults first, then model-name triggers."""
        with self._lock:
            script = replace(self._script)
            self._seen[rec.model] = n = self._seen.get(rec.model, 0) + 1
        faults = [f for f in [self._take_fault(rec)] if f]
        for part in rec.model.split("+"):
            script, fault = _trigger(part, script, n)
            if fault:
                faults.append(fault)
        return script, faults


_NUM = r"(\d+(?:\.\d+)?)"


def _trigger(part: str, script: Script, n: int) -> tuple[Script, Fault | None]:
    """Read one `+`-separated model-name segment into script changes or a fault."""
    if m := re.fullmatch(r"fault-(429|503|529)-" + _NUM, part):
        return script, Fault(m[1], retry_after=float(m[2]))
    if m := re.fullmatch(r"think-(\d+)", part):
        return replace(script, reasoning=" ".join(f"step{i}" for i in range(int(m[1])))), None
    if part in ("no-end", "no-done", "no-finish", "json-200", "html-200"):
        return script, Fault(part)
    if m := re.fullmatch(r"garbage-after-(\d+)", part):
        return script, Fault("garbage", after=int(m[1]))
    if m := re.fullmatch(r"keepalive-after-(\d+)(?:-for-" + _NUM + ")?", part):
        return script, Fault("keepalive", after=int(m[1]), seconds=float(m[2] or 30))
    if m := re.fullmatch(r"fault-([\w-]+)", part):
        if m[1] in STATUS_FAULTS:
            return script, Fault(m[1], retry_after=1.0 if m[1] == "429" else None)
        if m[1] == "hangup":
            return script, Fault("hangup")
    if m := re.fullmatch(r"(slow|hang)-" + _NUM, part):
        return script, Fault(m[1], seconds=float(m[2]))
    if m := re.fullmatch(r"delay-" + _NUM, part):
        return replace(script, delay=float(m[1])), None
    if m := re.fullmatch(r"tokens-(\d+)", part):
        return replace(script, tokens=int(m[1])), None
    if m := re.fullmatch(r"stall-after-(\d+)(?:-for-" + _NUM + ")?", part):
        return script, Fault("stall", after=int(m[1]), seconds=float(m[2] or 30))
    if m := re.fullmatch(r"(drop|error)-after-(\d+)", part):
        return script, Fault(m[1], after=int(m[2]))
    if m := re.fullmatch(r"flaky-(\d+)-(\w+)", part):
        if n <= int(m[1]) and m[2] in STATUS_FAULTS:
            return script, Fault(m[2], retry_after=1.0 if m[2] == "429" else None)
    return script, None


def _tokens(script: Script, default: str) -> list[str]:
    if script.reply is None:
        words = re.findall(r"\S+\s*", default)
        if script.tokens:
            words = (words + [f"w{i} " for i in range(script.tokens)])[:script.tokens]
        return words
    text, n = script.reply, script.tokens
    if not n:
        return re.findall(r"\S+\s*|\s+", text) or [text]
    size = -(-len(text) // n)
    return [text[i:i + size] for i in range(0, len(text), size)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "llm-emulator/1"

    def log_message(self, format, *args):  # quiet
        pass

    @property
    def emu(self) -> Emulator:
        return self.server.emulator  # type: ignore[attr-defined]

    def do_GET(self):
        self._guarded(self._dispatch, "GET")

    def do_POST(self):
        self._guarded(self._dispatch, "POST")

    def _guarded(self, fn, *args):
        self._rec: Recorded | None = None
        try:
            fn(*args)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError):
            self.close_connection = True
            if self._rec is not None:
                self._rec.outcome = "client-gone"

    # routing --------------------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        prefix, _, rest = url.path.lstrip("/").partition("/")
        if prefix == "v1":
            prefix, rest = "openai", url.path.lstrip("/")
        batch_wire = prefix if prefix in ("anthropic", "gemini") else "openai"
        batch_route = _batches.route(batch_wire, method, rest) if prefix != "_emulator" else None
        if batch_route is not None:
            rec = Recorded(method, url.path, query, {k.lower(): v for k, v in self.headers.items()},
                           {"bytes": len(raw)}, prefix, batch_wire, "batch")
            self.emu._record(rec)
            self._rec = rec
            key = self.emu._expected_key(prefix)
            if key is not None and not WIRES[batch_wire].key_ok(rec.headers, query, key):
                status, error = WIRES[batch_wire].bad_key(self._sent_key(rec))
                rec.outcome = f"status:{status}"
                return self._json(status, error)
            rec.outcome = "complete"
            return _batches.handle(self, batch_route, batch_wire, prefix, rest, raw)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            if prefix == "_emulator" or self._route("anthropic" if prefix == "anthropic" else
                                                    "gemini" if prefix == "gemini" else "openai", method, rest)[0] != "other":
                return self._json(400, {"error": {"message": "invalid JSON body"}})
            body = {"bytes": len(raw)}  # no such route: answered 404 below, as a real server would
        prefix, _, rest = url.path.lstrip("/").partition("/")
        if prefix == "_emulator":
            return self._control(method, rest, body)
        if prefix == "v1":  # bare OpenAI-compatible server at the root
            prefix, rest = "openai", url.path.lstrip("/")
        wire_name = prefix if prefix in ("anthropic", "gemini") else "openai"
        wire = WIRES[wire_name]
        route, api = self._route(wire_name, method, rest)
        rec = Recorded(method, url.path, query, {k.lower(): v for k, v in self.headers.items()}, body,
                       prefix, wire_name, route)
        if route == "chat":
            rec.model = wire.model(api, body)
            rec.stream = wire.wants_stream(api, query, body)
        self.emu._record(rec)
        self._rec = rec
        if route == "other":
            return self._json(404, {"error": {"message": f"emulator has no route {method} {url.path}"}})
        key = self.emu._expected_key(prefix)
        if key is not None and not wire.key_ok(rec.headers, query, key):
            status, error = wire.bad_key(self._sent_key(rec))
            rec.outcome = f"status:{status}"
            return self._json(status, error)
        if route == "count":
            messages = body.get("messages") if wire_name == "anthropic" else body.get("contents")
            _, text = wire.prompt(body)
            n = len(text.split()) + 3 * len(messages or [])
            rec.outcome = "complete"
            return self._json(200, {"input_tokens": n} if wire_name == "anthropic" else {"totalTokens": n})
        if route == "models":
            gone = self.emu._no_models.get(prefix)
            if gone:
                rec.outcome = f"status:{gone}"
                return self._json(gone, {"detail": "Not Found"} if gone == 404 else {"detail": "Method Not Allowed"})
            fault = self.emu._take_fault(rec)
            if fault and fault.kind in STATUS_FAULTS:
                return self._status_fault(wire, fault, rec)
            rec.outcome = "complete"
            return self._json(200, wire.models(self.emu._models.get(wire_name, []), rec.query))
        return self._chat(wire, rec)

    @staticmethod
    def _route(wire: str, method: str, rest: str) -> tuple[str, str]:
        if wire == "gemini":
            version, _, api = rest.partition("/")
            if method == "GET" and api == "models":
                return "models", api
            if method == "POST" and re.fullmatch(r"models/[^/]+:(generateContent|streamGenerateContent)", api):
                return "chat", api
            if method == "POST" and re.fullmatch(r"models/[^/]+:countTokens", api):
                return "count", api
            return "other", api
        if method == "GET" and rest == "v1/models":
            return "models", rest
        if wire == "anthropic" and method == "POST" and rest == "v1/messages/count_tokens":
            return "count", rest
        if method == "POST" and rest == ("v1/messages" if wire == "anthropic" else "v1/chat/completions"):
            return "chat", rest
        return "other", rest

    @staticmethod
    def _sent_key(rec: Recorded) -> str | None:
        auth = rec.headers.get("authorization", "")
        return rec.headers.get("x-api-key") or rec.headers.get("x-goog-api-key") or auth.removeprefix("Bearer ") or None

    # replies --------------------------------------------------------------------------------------
    def _chat(self, wire: Wire, rec: Recorded) -> None:
        script, faults = self.emu._plan(rec)
        stream_faults = {}
        for f in faults:
            if f.kind in STATUS_FAULTS:
                return self._status_fault(wire, f, rec)
            stream_faults[f.kind] = f
        if "hangup" in stream_faults:
            rec.outcome = "hangup"
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if "hang" in stream_faults:
            self.emu.sleep(stream_faults["hang"].seconds)
        last_user, everything = wire.prompt(rec.body)
        wanted = wire.schema(rec.body)
        if wanted is not None and script.reply is None:  # structured output: a schema-valid answer
            script = replace(script, reply=json.dumps(instance(wanted, last_user)))
        tokens = _tokens(script, f"Hello from {rec.provider} {rec.model}: you said {last_user}")
        finish = script.finish
        limit = wire.max_tokens(rec.body)
        if limit and len(tokens) > limit:
            tokens, finish = tokens[:limit], "length"
        inp, out = max(1, len(everything.split())), len(tokens)
        thoughts = re.findall(r"\S+\s*", script.reasoning or "")
        if not rec.stream or "json-200" in stream_faults:
            rec.outcome = "complete"
            return self._json(200, wire.complete(rec.model, "".join(tokens), inp, out, finish, "".join(thoughts)),
                              self.emu._headers_for(rec.provider))
        if "html-200" in stream_faults:
            rec.outcome = "html"
            return self._raw(200, "text/html; charset=utf-8", HTML_PAGE)
        self.send_response(200)
        self.send_header("Content-Type", wire.stream_content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in self.emu._headers_for(rec.provider).items():
            self.send_header(k, v)
        self.end_headers()
        for frame in wire.head(rec.model, inp):
            self._chunk(frame)
        first = stream_faults["slow"].seconds if "slow" in stream_faults else script.first_token_delay
        self.emu.sleep(first)
        for frame in wire.thinking(rec.model, thoughts):
            self._chunk(frame)
        index = 1 if thoughts else 0
        if wire.kind == "anthropic":
            self._chunk(wire.text_start(index))
        for i, text in enumerate(tokens):
            if self._interrupt(wire, stream_faults, i):
                return
            if i and script.delay:
                self.emu.sleep(script.delay)
            self._chunk(wire.token(rec.model, text, i, index) if wire.kind == "anthropic" else wire.token(rec.model, text, i))
        if self._interrupt(wire, stream_faults, len(tokens)):
            return
        end = next((e for e in ("no-end", "no-done", "no-finish") if e in stream_faults), "full")
        extra = {"index": index} if wire.kind == "anthropic" else {}
        for frame in wire.tail(rec.model, inp, out, finish, rec.body, len(thoughts), end, **extra):
            self._chunk(frame)
        rec.outcome = "complete" if end == "full" else end  # before the last byte: the client may look at once
        self.wfile.write(b"0\r\n\r\n")

    def _interrupt(self, wire: Wire, faults: dict[str, Fault], i: int) -> bool:
        """Apply a mid-stream fault due before token `i`; True when the reply ends here."""
        if "stall" in faults and faults["stall"].after == i:
            self.emu.sleep(faults["stall"].seconds)
        if "keepalive" in faults and faults["keepalive"].after == i:  # alive, but saying nothing
            until, wake = time.monotonic() + faults["keepalive"].seconds, self.emu._wake
            while time.monotonic() < until and not wake.is_set():
                self._chunk(wire.keepalive())
                wake.wait(0.2)
        if "garbage" in faults and faults["garbage"].after == i:
            self._chunk(wire.garbage())
            self.wfile.write(b"0\r\n\r\n")
            self._rec.outcome = "garbage"
            return True
        if "error" in faults and faults["error"].after == i:
            self._chunk(wire.stream_error())
            self.wfile.write(b"0\r\n\r\n")
            self._rec.outcome = "error-event"
            return True
        if "drop" in faults and faults["drop"].after == i:
            self._rec.outcome = "dropped"
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return True
        return False

    def _status_fault(self, wire: Wire, fault: Fault, rec: Recorded) -> None:
        if fault.kind in GATEWAY_KINDS:
            status, body = wire.gateway_error(fault.kind, rec.model)
            rec.outcome = f"status:{status}"
            return self._json(status, body)
        retry_after = fault.retry_after
        if fault.kind == "429" and retry_after is None and fault.retry_after_ms is None:
            retry_after = 1.0
        numeric = retry_after if isinstance(retry_after, (int, float)) else None
        status, body = wire.error(fault.kind, rec.model, sent_key=self._sent_key(rec), retry_after=numeric)
        rec.outcome = f"status:{status}"
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}" if numeric is not None else str(retry_after)
        if fault.retry_after_ms is not None:
            headers["retry-after-ms"] = f"{fault.retry_after_ms:g}"
        self._json(status, body, headers)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _raw(self, status: int, content_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _control(self, method: str, action: str, body: dict) -> None:
        emu = self.emu
        if method == "GET" and action == "requests":
            return self._json(200, [asdict(r) for r in emu.requests])
        if method == "POST" and action in ("reset", "script", "fault", "expect_key", "batch_config", "finish_batches"):
            try:
                getattr(emu, action)(**body)
            except (TypeError, ValueError) as exc:
                return self._json(400, {"error": {"message": str(exc)}})
            return self._json(200, {"ok": True})
        return self._json(404, {"error": {"message": f"no control action {action!r}"}})


class SilentServer:
    """A port on 127.0.0.1 that accepts TCP connections and never answers (a wedged server or proxy)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, name="silent-server", daemon=True).start()

    def url(self, path: str = "/v1") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.accepted.append(conn)  # held open, never read, never answered

    def stop(self) -> None:
        self._stop.set()
        for conn in self.accepted:
            conn.close()
        self.sock.close()


__all__ = ["Emulator", "Fault", "Recorded", "Script", "SilentServer"]
