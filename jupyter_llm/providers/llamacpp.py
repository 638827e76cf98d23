"""The `local` provider: llama.cpp servers on 127.0.0.1 addressed by port; finds them by scanning
ports (/health, /v1/models, /props) and chats through the OpenAI-compatible adapter."""
from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Iterable, Iterator

from ..errors import LLMError
from ..events import Event, Request
from ..targets import Target, parse_target
from ._wire import SDKAdapter
from .base import Auth, Health, ModelInfo

if TYPE_CHECKING:
    from ..config import Config
    from . import ProviderSpec

START_HINT = ("start one with `%llm serve MODEL.gguf`, or find one on other ports with "
              "`%llm discover --ports FIRST-LAST`")
PROBE_TTL = 5.0  # seconds a healthy probe is trusted before the next chat probes again
_NO_KEY = "sk-no-key-required"  # llama-server ignores the key unless started with --api-key


@dataclass
class ServerInfo:
    """What one port answered: a llama.cpp (or other OpenAI-compatible) server and its state."""
    port: int
    host: str = "127.0.0.1"
    state: str = "error"              # ok | loading | error
    model: str | None = None          # /v1/models id (the server's --alias, else the file name)
    aliases: list[str] = field(default_factory=list)
    n_ctx: int | None = None          # context per slot (what one request may use)
    n_ctx_train: int | None = None
    slots: int | None = None          # /props total_slots
    server: str = "llama.cpp"         # llama.cpp | openai-compatible (no /props)
    name: str | None = None           # the name config [local].ports gives this port
    latency: float | None = None      # seconds for the /health answer
    detail: str = ""                  # why state is not ok, or a note (API key required)

    @property
    def target(self) -> str:
        return f"local:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def serves(self, model: str) -> bool:
        return model == self.model or model in self.aliases or model == self.name

    def to_dict(self) -> dict:
        return {"port": self.port, "target": self.target, "model": self.model or "", "ctx": self.n_ctx,
                "slots": self.slots, "state": self.state, "name": self.name or "", "server": self.server,
                "latency_ms": None if self.latency is None else round(self.latency * 1000, 1),
                "detail": self.detail}

    def __str__(self) -> str:
        parts = [f"{self.target}", self.state]
        if self.model:
            parts.append(f"model {self.model}")
        if self.n_ctx:
            parts.append(f"ctx {self.n_ctx}")
        if self.slots:
            parts.append(f"{self.slots} slot{'s' if self.slots != 1 else ''}")
        if self.detail:
            parts.append(self.detail)
        return ", ".join(parts)


def parse_ports(text: str | Iterable[int]) -> list[int]:
    """`"8080-8092"`, `"8080,8085-8086"` or ints into a sorted port list; BAD_ARGUMENT if malformed."""
    if not isinstance(text, str):
        ports = list(text)
    else:
        ports = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, dash, hi = part.partition("-")
            try:
                first, last = int(lo), int(hi) if dash else int(lo)
            except ValueError:
                raise LLMError("BAD_ARGUMENT", f"bad port range {part!r}", hint="write e.g. 8080-8092 or 8080,8085") from None
            if first > last:
                raise LLMError("BAD_ARGUMENT", f"bad port range {part!r}: first port is after the last")
            ports += range(first, last + 1)
    for p in ports:
        if not isinstance(p, int) or not 0 < p < 65536:
            raise LLMError("BAD_ARGUMENT", f"port {p!r} is out of range 1-65535")
    if len(set(ports)) > 4096:
        raise LLMError("BAD_ARGUMENT", f"{len(set(ports))} ports is too many to scan", hint="at most 4096")
    return sorted(set(ports))


def _describe(ports: list[int]) -> str:
    """`8080-8092` or `8080-8092, 9000` for messages."""
    runs, start = [], None
    for i, p in enumerate(ports):
        if start is None:
            start = p
        if i + 1 == len(ports) or ports[i + 1] != p + 1:
            runs.append(f"{start}-{p}" if p != start else str(p))
            start = None
    return ", ".join(runs) or "(none)"


class _Closed(Exception):
    """Nothing listens on the port (refused, unreachable, connect timeout)."""


def _get(conn, path: str, headers: dict) -> tuple[int, object]:
    """(status, JSON or None) of one GET on a kept-alive connection."""
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    try:
        return resp.status, json.loads(body)
    except ValueError:
        return resp.status, None


def _error_message(body: object) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message") or "")
    return ""


def probe(host: str, port: int, timeout: float = 0.5, api_key: str | None = None,
          props: bool = True) -> ServerInfo | None:
    """Ask one port what it serves (/health, /v1/models, then /props unless `props` is False); None when
    nothing listens there."""
    import http.client

    headers = {"Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    info = ServerInfo(port=port, host=host)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    t0 = time.perf_counter()
    try:
        try:
            conn.connect()
        except OSError as exc:  # refused, unreachable, connect timeout: nobody home
            raise _Closed from exc
        status, body = _get(conn, "/health", headers)
        info.latency = time.perf_counter() - t0
        if status == 503:
            info.state, info.detail = "loading", _error_message(body) or "loading model"
            return info
        if status == 200:
            info.state = "ok"
        models_status, models = _get(conn, "/v1/models", headers)
        if models_status == 200 and isinstance(models, dict):
            data = models.get("data") or []
            if data and isinstance(data[0], dict):
                info.model = data[0].get("id")
                info.aliases = list(data[0].get("aliases") or [])
                meta = data[0].get("meta") or {}
                info.n_ctx = meta.get("n_ctx")
                info.n_ctx_train = meta.get("n_ctx_train")
            if info.state != "ok":  # no /health, but it speaks the OpenAI API
                info.state, info.server = "ok", "openai-compatible"
        elif models_status == 401:
            info.detail = "API key required"
        elif models_status == 503:
            info.state, info.detail = "loading", _error_message(models) or "loading model"
        if info.state == "error":
            info.detail = f"not a llama.cpp server (GET /health: HTTP {status})"
            return info
        if not props:
            return info
        props_status, props_body = _get(conn, "/props", headers)
        if props_status == 200 and isinstance(props_body, dict):
            gen = props_body.get("default_generation_settings") or {}
            info.n_ctx = gen.get("n_ctx") or info.n_ctx
            info.slots = props_body.get("total_slots")
            info.model = info.model or props_body.get("model_alias") or None
        elif info.server == "llama.cpp" and props_status == 404:
            info.server = "openai-compatible"
        return info
    except _Closed:
        return None
    except (OSError, http.client.HTTPException) as exc:
        if info.state == "error":
            info.detail = f"no HTTP answer ({type(exc).__name__}: {exc})" if str(exc) else f"no HTTP answer ({type(exc).__name__})"
            if isinstance(exc, (socket.timeout, TimeoutError)):
                info.detail = f"no answer within {timeout:g} s"
        return info
    finally:
        conn.close()


class LlamaCppProvider(SDKAdapter):
    """Provider `local`: discovery and health against llama.cpp's own endpoints, chat via OpenAI compat."""

    sdk_modules = ("openai",)  # chat goes through the OpenAI-compatible adapter

    def __init__(self, spec: "ProviderSpec", config: "Config"):
        super().__init__(spec)
        self.config = config
        self._chat: dict[str, object] = {}
        self._healthy: dict[int | None, tuple[float, ServerInfo]] = {}  # port (None: discovered) -> last good probe
        self._lock = threading.Lock()

    # ---- where to look ----
    @property
    def host(self) -> str:
        return self.config.local_host or "127.0.0.1"

    def _default_port(self) -> int | None:
        """The port of config `default` when it is a local target with one."""
        try:
            target = parse_target(self.config.default, self.config)
        except LLMError:
            return None
        return target.port if target.is_local else None

    def scan_ports(self) -> list[int]:
        """The scan range, plus configured ports, servers this session found or started, and the default's port."""
        lo, hi = self.config.local_scan
        ports = set(range(lo, hi + 1)) | set(self.config.local_ports) | set(self.config.known.ports())
        if (default := self._default_port()) is not None:
            ports.add(default)
        return sorted(ports)

    # ---- discovery ----
    def discover(self, host: str | None = None, ports: Iterable[int] | str | None = None,
                 timeout: float = 0.5, auth: Auth | None = None) -> list[ServerInfo]:
        """Probe all ports at once (threads) and return what answered, by port; closed ports are left out."""
        from concurrent.futures import ThreadPoolExecutor

        host = host or self.host
        port_list = self.scan_ports() if ports is None else parse_ports(ports)
        key = auth.secret if auth is not None else None
        if not port_list:
            return []
        with ThreadPoolExecutor(max_workers=min(64, len(port_list)), thread_name_prefix="llm-discover") as pool:
            found = [s for s in pool.map(lambda p: probe(host, p, timeout, key), port_list) if s is not None]
        if host == self.host:
            for s in found:
                s.name = self.config.local_name(s.port)
        return found

    def resolve(self, target: Target, auth: Auth | None = None) -> ServerInfo:
        """The server a port-less local target means: the default port, configured ports, then the lowest
        healthy scanned port (matching target.model when given). Raises NETWORK_ERROR when none runs."""
        ports = self.scan_ports()
        servers = self.discover(ports=ports, auth=auth)
        ok = [s for s in servers if s.state == "ok"]
        if target.model:
            matching = [s for s in ok if s.serves(target.model)]
            if not matching and ok:
                found = ", ".join(f"{s.target} {s.model or '?'}" for s in ok)
                raise LLMError("MODEL_NOT_FOUND", f"no local server serves {target.model!r} (found: {found})",
                               hint="use local:PORT, or %llm discover")
            ok = matching
        rank: dict[int, int] = {}
        for p in (self._default_port(), *self.config.local_ports, *self.config.known.ports()):
            if p is not None:
                rank.setdefault(p, len(rank))
        ok.sort(key=lambda s: (rank.get(s.port, len(rank)), s.port))
        if ok:
            return ok[0]
        loading = [s for s in servers if s.state == "loading"]
        if loading:
            raise self._loading_error(loading[0])
        raise LLMError("NETWORK_ERROR", f"no llama.cpp server found on {self.host} ports {_describe(ports)}",
                       hint=START_HINT, retryable=False)

    def _loading_error(self, info: ServerInfo) -> LLMError:
        return LLMError("PROVIDER_ERROR", f"llama.cpp server at {info.host}:{info.port} is still loading its model",
                        hint="try again in a moment", status=503, retry_after=1.0, retryable=True)

    def _refused(self, port: int) -> LLMError:
        # Refused on this machine is definitive: fail (or fall back) at once instead of backing off.
        return LLMError("NETWORK_ERROR", f"no llama.cpp server answers at {self.host}:{port} (connection refused)",
                        hint=f"start one there with `%llm serve MODEL.gguf --port {port}`, find running ones with "
                             "`%llm discover`, or set a fallback",
                        retryable=False)

    def _server(self, target: Target, auth: Auth | None, props: bool = True, limit: float | None = None) -> ServerInfo:
        """Probe the target's server (or find one) and fail with a clear LLMError if it cannot take requests.
        `limit` caps the probe's wait (the request's timeout or what its deadline leaves)."""
        if target.port is None:
            return self.resolve(target, auth)
        timeout = max(0.5, min(self.config.reliability.connect_timeout, 10.0))
        if limit is not None:
            timeout = max(0.05, min(timeout, limit))
        info = probe(self.host, target.port, timeout, auth.secret if auth else None, props)
        if info is None:
            raise self._refused(target.port)
        if info.state == "loading":
            raise self._loading_error(info)
        if info.state != "ok":
            if info.detail.startswith("no answer"):
                # Accepted the connection but said nothing: not retried on the same port (the fallback runs).
                raise LLMError("TIMEOUT", f"llama.cpp server at {self.host}:{target.port} accepted the connection but "
                               f"did not answer within {timeout:.3g}s" + (" (timeout)" if limit is not None and timeout >= limit else ""),
                               hint="is it stuck? see %llm discover; or raise %llm set timeout=SECONDS, or set a fallback",
                               retryable=False)
            raise LLMError("PROVIDER_ERROR", f"{self.host}:{target.port}: {info.detail}",
                           hint="is this port really a llama-server? see %llm discover")
        return info

    # ---- Provider protocol ----
    def _server_for_chat(self, target: Target, auth: Auth | None, limit: float | None = None) -> ServerInfo:
        """The probed server, reusing a healthy probe for PROBE_TTL seconds (a probe costs ~1 ms per ask)."""
        with self._lock:
            hit = self._healthy.get(target.port)
        if hit is not None and time.monotonic() - hit[0] < PROBE_TTL and (not target.model or hit[1].serves(target.model)):
            return hit[1]
        info = self._server(target, auth, props=False, limit=limit)
        with self._lock:
            self._healthy[target.port] = (time.monotonic(), info)
        return info

    def stream(self, target: Target, request: Request, auth: Auth | None) -> Iterator[Event]:
        """Chat with the target's server through the OpenAI-compatible adapter, naming host:port on failure."""
        if target.port is None and target.model == "pool" and self.config.local_pool:  # [local] pool
            from ..pool import stream
            yield from stream(self.config, request, auth)
            return
        from ._guard import Limits, deadline_error
        limits = Limits.of(request, self.spec.settings)
        try:
            info = self._server_for_chat(target, auth, limits.first_wait())
        except LLMError as exc:
            left = limits.remaining()
            if exc.code == "TIMEOUT" and left is not None and left <= 0.1:
                raise deadline_error(f"llama.cpp at {self.host}:{target.port}", limits) from None
            raise
        model = self._model_for(target, info)
        chat = self._chat_provider(info.port)
        if auth is not None and auth.secret:  # a configured key ([providers.local] auth); the URL stays the port's
            inner_auth = replace(auth, base_url=None)
        else:
            inner_auth = Auth(secret=_NO_KEY, method="none", source="none")
        try:
            yield from chat.stream(Target("local", model, info.port), request, inner_auth)
        except LLMError as exc:
            with self._lock:
                self._healthy.pop(target.port, None)  # probe afresh next time
            if exc.code != "NETWORK_ERROR" or f"{self.host}:{info.port}" in exc.message:
                raise
            raise LLMError("NETWORK_ERROR", f"llama.cpp server at {self.host}:{info.port}: {exc.message}",
                           hint=exc.hint or "is it still running? see %llm discover; or set a fallback",
                           retry_after=exc.retry_after, status=exc.status, retryable=exc.retryable) from None

    @staticmethod
    def _model_for(target: Target, info: ServerInfo) -> str:
        """The model name to send: the target's when the server knows it, else the server's own id."""
        if target.model and (info.serves(target.model) or not info.model):
            return target.model
        return info.model or target.model or "local"

    def _chat_provider(self, port: int):
        base_url = f"http://{self.host}:{port}/v1"
        with self._lock:
            chat = self._chat.get(base_url)
            if chat is None:
                from .openai_compat import OpenAICompatProvider
                chat = OpenAICompatProvider(replace(self.spec, kind="openai-compatible", base_url=base_url))
                self._chat[base_url] = chat
            return chat

    def health(self, target: Target, auth: Auth | None) -> Health:
        """/health plus /props: ok with model and context, 'loading' on 503, the reason otherwise."""
        t0 = time.perf_counter()
        if target.port is None and target.model == "pool" and self.config.local_pool:
            from ..pool import Pool
            pool = Pool.from_config(self.config)
            live = pool.refresh()
            return Health(bool(live), f"{len(live)} of {len(pool.members)} pool servers healthy, "
                          f"{sum(m.slots for m in live)} slots", time.perf_counter() - t0)
        try:
            info = self._server(target, auth)
        except LLMError as exc:
            detail = "loading" if exc.status == 503 else exc.message
            return Health(False, detail, time.perf_counter() - t0)
        detail = f"ok, model {info.model or '?'}"
        if info.n_ctx:
            detail += f", ctx {info.n_ctx}"
        if info.slots and info.slots > 1:
            detail += f", {info.slots} slots"
        if target.port is None:
            detail += f", port {info.port}"
        if info.detail:
            detail += f" ({info.detail})"
        return Health(True, detail, info.latency, model=info.model)

    def list_models(self, auth: Auth | None) -> list[ModelInfo]:
        """One entry per discovered server: `local:PORT`, its context, free."""
        out = []
        for s in self.discover(auth=auth):
            if s.state not in ("ok", "loading"):
                continue
            out.append(ModelInfo(id=s.target, context=s.n_ctx, input_price=0.0, output_price=0.0, source="server",
                                 extra={"alias": s.model, "aliases": s.aliases, "port": s.port, "name": s.name,
                                        "state": s.state, "slots": s.slots, "server": s.server}))
        return out
