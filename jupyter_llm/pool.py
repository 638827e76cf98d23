"""A pool of llama.cpp servers (`[local] pool = ["host:port", ...]`, target `local:pool`): rows spread over
every healthy server weighted by its slots (`/props` total_slots); a server that fails mid-run is dropped
and its rows are retried on the others. The scale-out path for local models without a gateway."""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from .errors import LLMError

POOL_NAME = "pool"
SERVER_DOWN = {"NETWORK_ERROR", "TIMEOUT"}   # codes that take a server out of the pool (the row is retried)
MAX_SLOTS = 64


def parse_member(entry: Any, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """`"host:port"`, `"port"` or an int into (host, port); ValueError with a readable message otherwise."""
    if isinstance(entry, int) and not isinstance(entry, bool):
        host, port = default_host, entry
    elif isinstance(entry, str) and entry.strip():
        text = entry.strip().removeprefix("http://").rstrip("/")
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = default_host, text
        host = host.strip("[]") or default_host
        if not port_text.isdigit():
            raise ValueError(f"{entry!r} is not host:port")
        port = int(port_text)
    else:
        raise ValueError(f"{entry!r} is not host:port")
    if not 0 < port < 65536:
        raise ValueError(f"{entry!r}: port out of range 1-65535")
    if any(c.isspace() or c in "/?#@" for c in host):
        raise ValueError(f"{entry!r}: malformed host")
    return host, port


def is_pool(target) -> bool:
    return getattr(target, "is_local", False) and target.port is None and target.model == POOL_NAME


@dataclass
class Member:
    host: str
    port: int
    state: str = "unknown"        # ok | down | loading | unknown
    slots: int = 1
    model: str | None = None
    detail: str = ""
    rows: int = 0                 # rows answered in the current run
    failed_at: float | None = None

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


class Pool:
    """The configured servers; `refresh()` probes them, `run(items, fn)` spreads work over the healthy ones."""

    def __init__(self, members: Iterable[tuple[str, int]], *, timeout: float = 2.0, api_key: str | None = None):
        self.members = [Member(h, p) for h, p in members]
        if not self.members:
            raise LLMError("CONFIG_ERROR", "no [local] pool configured",
                           hint='add [local] pool = ["127.0.0.1:8080", "other-host:8080"] to the config file')
        self.timeout = timeout
        self.api_key = api_key
        self._lock = threading.Lock()
        self._chat: dict[str, Any] = {}

    @classmethod
    def from_config(cls, config, **kwargs) -> "Pool":
        return cls(config.local_pool, **kwargs)

    def refresh(self) -> list[Member]:
        """Probe every member at once (/health, /v1/models, /props); returns the healthy ones."""
        from concurrent.futures import ThreadPoolExecutor
        from .providers.llamacpp import probe

        def one(m: Member) -> None:
            info = probe(m.host, m.port, self.timeout, self.api_key)
            if info is None:
                m.state, m.detail = "down", "connection refused"
            else:
                m.state = info.state if info.state in ("ok", "loading") else "down"
                m.slots = max(1, min(MAX_SLOTS, int(info.slots or 1)))
                m.model, m.detail = info.model, info.detail
        with ThreadPoolExecutor(max_workers=min(32, len(self.members))) as ex:
            list(ex.map(one, self.members))
        return self.healthy()

    def healthy(self) -> list[Member]:
        return [m for m in self.members if m.state == "ok"]

    def health_rows(self) -> list[tuple]:
        return [(m.name, m.state, m.model or "", m.slots, m.detail) for m in self.members]

    def run(self, items: Sequence[Any], fn: Callable[[Member, Any], Any], *,
            failed: Callable[[Any], str | None] | None = None, on_result: Callable[[int, Any], None] | None = None,
            stop: threading.Event | None = None, tick: Callable[[], None] | None = None) -> list[Any]:
        """Call `fn(member, item)` for every item, `slots` threads per healthy member. When `fn` raises an
        LLMError, or `failed(result)` returns a code, in SERVER_DOWN, that member leaves the pool and the
        item goes back to the queue for the others. Items left when no member is healthy get the last
        server error (raised as LLMError from `fn`'s place: returned as the exception object)."""
        if not self.healthy():
            self.refresh()
        live = self.healthy()
        if not live:
            states = ", ".join(f"{m.name} {m.state}" for m in self.members)
            raise LLMError("NETWORK_ERROR", f"no server of the pool is healthy ({states})",
                           hint="start them, or check %llm servers")
        results: list[Any] = [None] * len(items)
        todo: queue.SimpleQueue = queue.SimpleQueue()
        for i in range(len(items)):
            todo.put(i)
        remaining = [len(items)]
        done = threading.Event()
        if not items:
            return results
        last_error: list[LLMError | None] = [None]

        def finish(i: int, value: Any) -> None:
            results[i] = value
            if on_result is not None:
                on_result(i, value)
            with self._lock:
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set()

        def worker(m: Member) -> None:
            while not done.is_set() and m.state == "ok" and not (stop is not None and stop.is_set()):
                try:
                    i = todo.get(timeout=0.05)
                except queue.Empty:
                    continue
                if m.state != "ok":
                    todo.put(i)
                    return
                try:
                    value = fn(m, items[i])
                    code = failed(value) if failed is not None else None
                    err = None
                except LLMError as exc:
                    value, code, err = exc, exc.code, exc
                if code in SERVER_DOWN:
                    with self._lock:
                        if m.state == "ok":
                            m.state, m.failed_at = "down", time.time()
                            m.detail = (err.line() if err is not None else code) + " (mid-run; its rows went to the others)"
                        last_error[0] = err or LLMError(code, f"server {m.name} failed")
                        alive = any(x.state == "ok" for x in self.members)
                    if alive:
                        todo.put(i)
                        return
                    finish(i, value)
                    drain(value)
                    return
                m.rows += 1
                finish(i, value)

        def drain(value: Any) -> None:
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                finish(i, last_error[0] or value)

        for m in self.members:
            m.rows = 0
        threads = [threading.Thread(target=worker, args=(m,), name=f"llm-pool-{m.name}-{k}", daemon=True)
                   for m in live for k in range(m.slots)]
        for t in threads:
            t.start()
        try:
            while not done.wait(0.1):
                if tick is not None:
                    tick()
                if stop is not None and stop.is_set():
                    break
                if not any(t.is_alive() for t in threads):
                    drain(last_error[0] or LLMError("NETWORK_ERROR", "every server of the pool failed"))
                    break
        except KeyboardInterrupt:
            if stop is not None:
                stop.set()
            done.set()
            raise
        if tick is not None:
            tick()
        return results

    # ---- sending one request to one member ----
    def chat_provider(self, m: Member):
        from dataclasses import replace
        from .providers import BUILTIN
        with self._lock:
            chat = self._chat.get(m.name)
            if chat is None:
                from .providers.openai_compat import OpenAICompatProvider
                chat = OpenAICompatProvider(replace(BUILTIN["local"], kind="openai-compatible", base_url=m.base_url))
                self._chat[m.name] = chat
            return chat


def send(session, pool: Pool, m: Member, request, target_text: str = "local:pool"):
    """One request to one pool member, as a Response (a server-level failure is raised as LLMError so the
    pool retries the row elsewhere; any other failure is on `Response.error`)."""
    from .events import Finish, Response, StreamError, TextDelta, Usage
    from .providers.base import Auth
    from .targets import Target
    response = Response(target=target_text, answered_by=f"local:{m.name}")
    chat = pool.chat_provider(m)
    auth = Auth(secret=pool.api_key or "no-key", method="none", source="none")
    start = time.perf_counter()
    try:
        for ev in chat.stream(Target("local", m.model or "local", m.port), request, auth):
            if isinstance(ev, TextDelta):
                if response.ttft is None:
                    response.ttft = time.perf_counter() - start
                response.chunks.append(ev.text)
            elif isinstance(ev, Usage):
                response.usage = ev
            elif isinstance(ev, Finish):
                response.finish_reason = ev.reason
    except LLMError as exc:
        if exc.code in SERVER_DOWN:
            raise
        response.error = exc
    response.latency = time.perf_counter() - start
    response.text = "".join(response.chunks)
    response.truncated = response.finish_reason == "length"
    response.cost = 0.0
    return response


def map_prompts(session, prompts: Any, *, system: str | None = None, temperature: float | None = None,
                max_tokens: int | None = None, top_p: float | None = None, use_cache: bool = True, pool: Pool | None = None):
    """Prompt texts (list, dict or Series) over the pool as independent rows: the interactive map's frame
    (answer, status, error, tokens, cost, latency, answered_by), cached per row under `local:pool`."""
    import pandas as pd
    from .store import Store
    pool = pool or Pool.from_config(session.config)
    if hasattr(prompts, "items"):
        keys, texts = (list(x) for x in zip(*prompts.items())) if len(prompts) else ([], [])
    else:
        texts, keys = list(prompts), list(range(len(prompts)))
    index = prompts.index if (type(prompts).__module__ or "").startswith("pandas") else pd.Index(keys)
    requests = [session.build_request(str(p), system=system, temperature=temperature, max_tokens=max_tokens,
                                      top_p=top_p, context=False) for p in texts]
    store = session.store
    keys_c = [Store.cache_key("local:pool", r.cache_key_parts()) for r in requests]
    records: list[dict | None] = [None] * len(requests)
    todo = []
    for i, k in enumerate(keys_c):
        hit = store.cache_get(k) if use_cache else None
        if hit:
            records[i] = _row(hit.get("text", ""), "ok", None, hit.get("usage") or {}, 0.0, 0.0, hit.get("answered_by"))
        else:
            todo.append(i)

    def fn(m: Member, i: int):
        return send(session, pool, m, requests[i])

    results = pool.run(todo, fn)
    for i, r in zip(todo, results):
        if isinstance(r, LLMError):
            records[i] = _row(None, r.code, r.line(), {}, None, None, None)
            continue
        usage = {"input_tokens": r.usage.input_tokens, "output_tokens": r.usage.output_tokens}
        if r.error is not None:
            records[i] = _row(r.text or None, r.error.code, r.error.line(), usage, 0.0, r.latency, r.answered_by)
            continue
        store.record_response(r, str(texts[i]), session_id=session.id, provider="local", model="pool")
        if use_cache:
            store.cache_put(keys_c[i], r.to_record())
        records[i] = _row(r.text, "ok", None, usage, 0.0, r.latency, r.answered_by)
    frame = pd.DataFrame(records)
    frame.index = index
    frame.attrs["servers"] = {m.name: m.rows for m in pool.members}
    return frame


def _row(answer, status, error, usage: dict, cost, latency, answered_by) -> dict:
    return {"answer": answer, "status": status, "error": error, "input_tokens": usage.get("input_tokens", 0),
            "output_tokens": usage.get("output_tokens", 0), "cost": cost, "latency": latency, "answered_by": answered_by}


def _account(session, m: Member, prompt: str, response) -> None:
    """History and session usage of one pool row (free: local servers cost nothing)."""
    session.usage.add("local", m.name, response.usage.input_tokens, response.usage.output_tokens, 0.0)
    session.store.record_response(response, prompt, session_id=session.id, provider="local", model=m.name)


def map_plan(session, plan, target, *, use_cache: bool = True, labels: dict | None = None,
             progress: bool | None = None, pool: Pool | None = None):
    """`%%llm --map DATA local:pool`: a mapping Plan over the pool, as the interactive map's frame (rows
    cached under `local:pool`, schema answers parsed and validated, one progress bar)."""
    import queue as _queue
    from .mapping import RowResult, summary_line, to_frame
    from .progress import MapProgress
    from .rows import cache_key
    from .schema import apply
    pool = pool or Pool.from_config(session.config)
    results: list = [None] * len(plan)
    todo = []
    for row in plan.rows:
        if row.request is None:
            results[row.position] = RowResult(row.error.code, row.error.line())
            continue
        hit = session.store.cache_get(cache_key(target, row.request)) if use_cache else None
        if hit:
            from .events import Response
            r = Response(target=str(target), answered_by=str(target))
            session._from_cache(r, hit, None)
            r.cost = 0.0
            if plan.schema is not None:
                apply(plan.schema, r)
            results[row.position] = RowResult("ok", "", r, r.value)
        else:
            todo.append(row)
    bar = MapProgress(len(plan), rich=progress) if progress is not False else None
    done_q: _queue.SimpleQueue = _queue.SimpleQueue()
    if bar is not None:
        bar.start()
        for r in results:
            if r is not None:
                bar.add(r)

    def fn(m: Member, row):
        response = send(session, pool, m, row.request, str(target))
        if plan.schema is not None:
            apply(plan.schema, response)
        _account(session, m, row.prompt, response)
        if response.error is not None:
            return RowResult(response.error.code, response.error.line(), response)
        if use_cache:
            session.store.cache_put(cache_key(target, row.request), response.to_record())
        return RowResult("ok", "", response, response.value)

    def tick() -> None:
        if bar is None:
            return
        while True:
            try:
                bar.add(done_q.get_nowait())
            except _queue.Empty:
                break
        bar.refresh()

    started = time.monotonic()
    out = pool.run(todo, fn, on_result=lambda i, v: done_q.put(v if not isinstance(v, LLMError) else RowResult(v.code, v.line())),
                   tick=tick)
    for row, r in zip(todo, out):
        results[row.position] = r if not isinstance(r, LLMError) else RowResult(r.code, r.line())
    labels = labels or {str(target): str(target)}
    line = summary_line(plan, {str(target): results}, time.monotonic() - started, labels)
    line += " over " + ", ".join(f"{m.name} {m.rows} rows" + ("" if m.state == "ok" else f" ({m.state})")
                                 for m in pool.members)
    if bar is not None:
        bar.finish(line)
    session.notify("usage")
    frame = to_frame(plan, {str(target): results}, labels)
    frame.attrs.update(summary_line=line, interrupted=False, servers={m.name: m.rows for m in pool.members})
    return frame


# ---- one interactive request (`%%llm local:pool`, `%llm use local:pool`) ----

_SHARED: dict[tuple, tuple[float, Pool]] = {}
_SHARED_LOCK = threading.Lock()
_inflight: dict[str, int] = {}


def shared(config, ttl: float = 5.0) -> Pool:
    """The config's pool, probed at most every `ttl` seconds (one per distinct member list)."""
    key = tuple(config.local_pool)
    with _SHARED_LOCK:
        hit = _SHARED.get(key)
        if hit is not None and time.monotonic() - hit[0] < ttl:
            return hit[1]
    pool = Pool(key)
    pool.refresh()
    with _SHARED_LOCK:
        _SHARED[key] = (time.monotonic(), pool)
    return pool


def stream(config, request, auth=None):
    """Events of one request on the least busy healthy server (in-flight requests per slot); a server that
    refuses or times out before the first token is dropped and the next one tried."""
    from .events import TextDelta
    from .providers.base import Auth
    from .targets import Target
    pool = shared(config)
    tried: set[str] = set()
    while True:
        live = [m for m in pool.healthy() if m.name not in tried]
        if not live:
            states = ", ".join(f"{m.name} {m.state}" for m in pool.members)
            raise LLMError("NETWORK_ERROR", f"no server of the pool is healthy ({states})",
                           hint="start them, or check %llm servers", retryable=False)
        with _SHARED_LOCK:
            m = min(live, key=lambda x: _inflight.get(x.name, 0) / x.slots)
            _inflight[m.name] = _inflight.get(m.name, 0) + 1
        tried.add(m.name)
        started = False
        try:
            inner = Auth(secret=(auth.secret if auth is not None and auth.secret else "no-key"), method="none", source="none")
            for ev in pool.chat_provider(m).stream(Target("local", m.model or "local", m.port), request, inner):
                started = started or isinstance(ev, TextDelta)
                yield ev
            return
        except LLMError as exc:
            if exc.code not in SERVER_DOWN or started:
                raise
            m.state, m.detail = "down", exc.line()
        finally:
            with _SHARED_LOCK:
                _inflight[m.name] -= 1
