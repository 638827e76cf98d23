"""Record and replay: `%llm record PATH` appends every exchange to a JSONL file (the request as sent,
minus secrets; the answer; usage; who answered, with the GGUF file name, size and hash for llama.cpp);
`%llm replay PATH [--strict]` answers matching requests from it with no network and no key.

It sits in front of the router (Router.tap), so single cells, compare, maps and fallbacks are all
recorded and replayed the same way. A request matches on the asked-for target and the request's
cache-key parts (messages, system, sampling parameters): what would change the answer.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .errors import LLMError
from .events import Attempt, Event, Finish, ReasoningDelta, Request, StreamError, TextDelta, Usage

if TYPE_CHECKING:
    from .targets import Target

VERSION = 1
_SAMPLE = 1 << 20  # bytes hashed from each end of a GGUF (a full hash of a 5 GB file would stall a cell)


def request_key(target: "Target | str", request: Request) -> str:
    from .store import Store
    return Store.cache_key(str(target), request.cache_key_parts())


def _sanitize(value: Any) -> Any:
    """JSON-safe copy (request parts are plain data; anything odd becomes its str)."""
    return json.loads(json.dumps(value, default=str, ensure_ascii=False))


def gguf_identity(path: str | None) -> dict[str, Any]:
    """File name, and where the file is readable here: size and sha256 over its first and last MiB."""
    if not path:
        return {}
    out: dict[str, Any] = {"gguf": os.path.basename(path)}
    try:
        st = os.stat(path)
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            h.update(fh.read(_SAMPLE))
            if st.st_size > 2 * _SAMPLE:
                fh.seek(st.st_size - _SAMPLE)
            h.update(fh.read(_SAMPLE))
        out.update(gguf_size=st.st_size, gguf_sha256_ends=h.hexdigest())
    except OSError:
        pass
    return out


def llamacpp_props(host: str, port: int, timeout: float = 2.0) -> dict[str, Any]:
    """The model identity a llama.cpp server reports on /props (model_path, alias, context, build)."""
    props = llamacpp_props_raw(host, port, timeout)
    if not props:
        return {}
    gen = props.get("default_generation_settings") or {}
    out = {"model_path": props.get("model_path"), "model_alias": props.get("model_alias"),
           "n_ctx": gen.get("n_ctx"), "build": props.get("build_info")}
    out.update(gguf_identity(props.get("model_path")))
    return {k: v for k, v in out.items() if v is not None}


def llamacpp_props_raw(host: str, port: int, timeout: float = 2.0) -> dict[str, Any]:
    """GET /props of a llama.cpp server as a dict ({} when it does not answer one)."""
    import http.client
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/props", headers={"Accept": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            return {}
        props = json.loads(body)
    except (OSError, ValueError, http.client.HTTPException):
        return {}
    finally:
        conn.close()
    return props if isinstance(props, dict) else {}


class Tap:
    """Router.tap: replays recorded answers and records live ones. One per session."""

    def __init__(self, session):
        self.session = session
        self.record_path: Path | None = None
        self.replay_path: Path | None = None
        self.strict = False
        self._entries: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._props: dict[tuple[str, int], tuple[float, dict]] = {}
        self.hits = self.misses = self.recorded = 0

    @property
    def active(self) -> bool:
        return self.record_path is not None or self.replay_path is not None

    # ---- switching ----
    def start_recording(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            with open(p, "a", encoding="utf-8"):
                pass
        except OSError as exc:
            raise LLMError("BAD_ARGUMENT", f"cannot write the recording {p}: {exc}") from None
        self.record_path = p.resolve()
        return self.record_path

    def stop_recording(self) -> None:
        self.record_path = None

    def start_replay(self, path: str | Path, strict: bool = False) -> int:
        p = Path(path).expanduser()
        entries = load(p)
        with self._lock:
            self._entries = entries
            self.replay_path, self.strict = p.resolve(), strict
            self.hits = self.misses = 0
        return len(entries)

    def stop_replay(self) -> None:
        with self._lock:
            self.replay_path, self._entries, self.strict = None, {}, False

    # ---- the router hook ----
    def stream(self, chain: Callable[..., Iterator[Event]], target: "Target", request: Request,
               fallback: list) -> Iterator[Event]:
        key = request_key(target, request)
        if self.replay_path is not None:
            with self._lock:
                entry = self._entries.get(key)
            if entry is not None:
                self.hits += 1
                yield from _replay(entry)
                return
            self.misses += 1
            if self.strict:
                yield StreamError(LLMError(
                    "BLOCKED", f"replay --strict: {self.replay_path.name} has no answer for this request to {target}; "
                    "nothing was sent", hint="record it with %llm record PATH, or replay without --strict"))
                return
        if self.record_path is None:
            yield from chain(target, request, fallback)
            return
        yield from self._recording(chain, target, request, fallback, key)

    def _recording(self, chain, target, request, fallback, key) -> Iterator[Event]:
        text, reasoning, answered, usage, finish, error = [], [], str(target), None, None, None
        started = time.perf_counter()
        ttft = None
        events = chain(target, request, fallback)
        try:
            for ev in events:
                if isinstance(ev, TextDelta):
                    if ttft is None:
                        ttft = time.perf_counter() - started
                    text.append(ev.text)
                elif isinstance(ev, ReasoningDelta):
                    reasoning.append(ev.text)
                elif isinstance(ev, Attempt):
                    answered = ev.target
                elif isinstance(ev, Usage):
                    usage = ev
                elif isinstance(ev, Finish):
                    finish = ev.reason
                elif isinstance(ev, StreamError):
                    error = ev.error
                yield ev
        finally:
            events.close()
        if error is not None or finish is None or finish == "interrupted":
            return  # only whole answers are worth replaying
        entry = {"v": VERSION, "key": key, "time": time.time(), "target": str(target), "answered_by": answered,
                 "request": _sanitize(request.cache_key_parts()), "answer": "".join(text),
                 "reasoning": "".join(reasoning) or None, "finish_reason": finish,
                 "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                           "reasoning_tokens": getattr(usage, "reasoning_tokens", 0)} if usage else None,
                 "latency": round(time.perf_counter() - started, 4), "ttft": None if ttft is None else round(ttft, 4),
                 "model": self._identity(answered)}
        from .cellinfo import current
        info = current()
        if info is not None and getattr(info, "cell_id", None):
            entry["cell_id"] = info.cell_id
        self._append(entry)

    def _append(self, entry: dict) -> None:
        line = json.dumps(entry, ensure_ascii=False, default=str)
        path = self.record_path
        if path is None:
            return
        with self._lock:
            try:
                with open(path, "a", encoding="utf-8") as fh:
                    fh.write(line + "\n")
                self.recorded += 1
            except OSError as exc:
                import logging
                logging.getLogger("jupyter_llm").warning("jupyter-llm: could not append to %s: %s", path, exc)
            if self.replay_path is not None and path == self.replay_path:
                self._entries[entry["key"]] = entry  # replaying and recording one file: known at once

    def _identity(self, answered: str) -> dict[str, Any]:
        """Who answered: provider and model; for llama.cpp also what /props says about the GGUF."""
        from .targets import parse_target
        try:
            t = parse_target(answered, self.session.config)
            spec = self.session._spec(t)
        except LLMError:
            return {"target": answered}
        out: dict[str, Any] = {"provider": t.provider, "model": t.model or spec.default_model}
        if spec.kind == "llamacpp":
            port = t.port
            if port is None:
                try:
                    port = self.session.provider(t).resolve(t).port
                except Exception:
                    port = None
            if port is not None:
                host = self.session.config.local_host or "127.0.0.1"
                out["port"] = port
                cached = self._props.get((host, port))
                if cached is None or time.monotonic() - cached[0] > 30:
                    cached = (time.monotonic(), llamacpp_props(host, port))
                    self._props[(host, port)] = cached
                out.update(cached[1])
        else:
            out["base_url"] = spec.base_url
        return out

    def describe(self) -> str:
        parts = []
        if self.record_path is not None:
            parts.append(f"recording to {self.record_path} ({self.recorded} this session)")
        if self.replay_path is not None:
            parts.append(f"replaying {self.replay_path}{' (strict)' if self.strict else ''}: "
                         f"{len(self._entries)} answers, {self.hits} hits, {self.misses} misses")
        return "; ".join(parts) or "off"


def _replay(entry: dict) -> Iterator[Event]:
    yield Attempt(entry.get("answered_by") or entry.get("target") or "", 1, replayed=True)
    if entry.get("reasoning"):
        yield ReasoningDelta(entry["reasoning"])
    if entry.get("answer"):
        yield TextDelta(entry["answer"])
    u = entry.get("usage") or {}
    yield Usage(int(u.get("input_tokens") or 0), int(u.get("output_tokens") or 0), int(u.get("reasoning_tokens") or 0))
    yield Finish(entry.get("finish_reason") or "stop")


def load(path: Path) -> dict[str, dict]:
    """key -> entry (the latest recording of a request wins). A bad line is skipped, a bad file is an error."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise LLMError("BAD_ARGUMENT", f"no recording at {path}", hint="make one with %llm record PATH") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LLMError("BAD_ARGUMENT", f"cannot read the recording {path}: {exc}") from None
    entries: dict[str, dict] = {}
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            e = json.loads(line)
            if not isinstance(e, dict) or "key" not in e or "answer" not in e:
                raise ValueError
        except ValueError:
            bad += 1
            continue
        entries[e["key"]] = e
    if bad and not entries:
        raise LLMError("BAD_ARGUMENT", f"{path} is not a jupyter-llm recording ({bad} unreadable lines)")
    return entries


def tap(session) -> Tap:
    """The session's Tap, installed on its router on first use."""
    t = getattr(session, "_tap", None)
    if t is None:
        t = Tap(session)
        session._tap = t
    session.router.tap = t
    return t


def cmd_record(magics, rest: list[str]) -> None:
    """`%llm record PATH` | `%llm record off` | `%llm record` (state)."""
    t = tap(magics.session)
    if not rest:
        print(t.describe())
        return
    if len(rest) != 1:
        raise LLMError("BAD_ARGUMENT", "usage: %llm record PATH  |  %llm record off")
    if rest[0] == "off":
        t.stop_recording()
        magics.session._record_event("record", {"action": "off"})
        print(f"recording off ({t.recorded} exchanges recorded this session)")
        return
    path = t.start_recording(rest[0])
    magics.session._record_event("record", {"action": "on", "path": str(path)})
    print(f"recording every exchange to {path}")


def cmd_replay(magics, rest: list[str]) -> None:
    """`%llm replay PATH [--strict]` | `%llm replay off` | `%llm replay` (state)."""
    from .magics import _Parser
    t = tap(magics.session)
    if not rest:
        print(t.describe())
        return
    if rest == ["off"]:
        t.stop_replay()
        magics.session._record_event("replay", {"action": "off"})
        print("replay off")
        return
    p = _Parser(prog="%llm replay", add_help=False)
    p.add_argument("path")
    p.add_argument("--strict", action="store_true")
    args = p.parse_args(rest)
    n = t.start_replay(args.path, args.strict)
    magics.session._record_event("replay", {"action": "on" + (" strict" if args.strict else ""), "path": str(t.replay_path)})
    miss = "a miss is an error (BLOCKED)" if args.strict else "a miss goes to the live target"
    print(f"replaying {n} recorded answers from {args.path}; {miss}")
