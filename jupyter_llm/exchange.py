"""One exchange's internals (stream into a Response, cache replay, cost and usage, history row), kept out of the coordinating Session."""
from __future__ import annotations

import sys
import time
import weakref

from .events import Attempt, Finish, Notice, ReasoningDelta, Request, Response, StreamError, TextDelta, Usage
from .targets import Target, parse_target


def from_cache(response: Response, hit: dict, on_event) -> None:
    """Fill `response` from a cached record (no cost, no latency) and replay it to `on_event` as text then finish."""
    response.text = hit.get("text", "")
    response.chunks = [response.text]
    usage = hit.get("usage") or {}
    response.usage = Usage(usage.get("input_tokens", 0), usage.get("output_tokens", 0))
    response.finish_reason = hit.get("finish_reason")
    response.reasoning = hit.get("reasoning") or ""
    # rows cached before 0.2 carry only the finish reason: stopped at the limit all the same
    response.truncated = bool(hit.get("truncated")) or response.finish_reason == "length"
    response.max_tokens = hit.get("max_tokens") or (response.usage.output_tokens or None if response.truncated else None)
    response.answered_by = hit.get("answered_by") or response.target
    response.cached = True
    response.latency = response.ttft = 0.0
    if on_event:
        on_event(TextDelta(response.text))
        on_event(Finish(response.finish_reason or "stop"))


def stream(session, target: Target, request: Request, response: Response, on_event, fallback) -> None:
    """Stream `request` through the session's router into `response`, passing every event on; an interrupt or
    a cut stream keeps the text received (marked incomplete), and usage is approximated when none came."""
    start = time.perf_counter()
    warm_history(session)
    events = session.router.stream(target, request, fallback)
    try:
        for ev in events:
            if isinstance(ev, TextDelta):
                if response.ttft is None:
                    response.ttft = time.perf_counter() - start
                response.chunks.append(ev.text)
            elif isinstance(ev, ReasoningDelta):
                response.reasoning += ev.text
            elif isinstance(ev, Notice):
                response.notes.append(ev.text)
            elif isinstance(ev, Attempt):
                response.answered_by = ev.target
                response.fallback_reason = ev.fallback_reason or response.fallback_reason
                response.replayed = ev.replayed
            elif isinstance(ev, Usage):
                response.usage = ev
            elif isinstance(ev, Finish):
                response.finish_reason = ev.reason
            elif isinstance(ev, StreamError):
                response.error = ev.error
                response.finish_reason = "error"
            if on_event:
                on_event(ev)
    except KeyboardInterrupt:
        response.finish_reason = "interrupted"
        response.incomplete = True
    finally:
        events.close()
        response.latency = time.perf_counter() - start
        response.text = "".join(response.chunks)
    if response.error is not None and response.text:
        response.incomplete = True
    if response.finish_reason == "length":  # stopped at the output limit: say so, record it
        response.truncated = True
        response.max_tokens = request.max_tokens or response.usage.output_tokens or None
    if response.usage.output_tokens == 0 and response.text:
        response.usage = Usage(response.usage.input_tokens or approx_tokens(request), approx_tokens_text(response.text))


_WARMING: "weakref.WeakSet" = weakref.WeakSet()


def warm_history(session) -> None:
    """Until the history database is open: import the store and open it once the reply has begun
    (inflight.py), while a cloud model thinks, instead of after the answer, when the cell waits for its row."""
    store = getattr(session, "_store", None)
    if (store is not None and (store.is_open or not store.ok)) or session in _WARMING:
        return
    from . import inflight
    _WARMING.add(session)   # one warm-up at a time, however many map rows start together

    def warm() -> None:
        try:
            session.store.warm()
        finally:
            _WARMING.discard(session)
    inflight.after_send(warm, name="llm-history-warm", otherwise=lambda: _WARMING.discard(session))


def account(session, target: Target, prompt: str, response: Response) -> tuple[str, str]:
    """Cost and usage of `response`; returns (provider, model) charged (the history row is `record`'s)."""
    from . import pricing
    answered = parse_target(response.answered_by, session.config) if response.answered_by else target
    model = answered.model or session._spec(answered).default_model or ""
    if answered.is_local:
        model = answered.model or str(answered.port or "")
    if response.replayed:
        response.cost = 0.0  # nothing was sent
    elif not response.cached and (response.usage.input_tokens or response.usage.output_tokens):
        from .budget import price_args
        response.cost = pricing.cost(answered.provider, model, response.usage, **price_args(session, answered))
        session.usage.add(answered.provider, model, response.usage.input_tokens, response.usage.output_tokens, response.cost)
    elif response.cached:
        response.cost = 0.0
    if response.fallback_reason and response.answered_by != response.target:
        session._record_event("fallback", {"from": response.target, "to": response.answered_by,
                                           "reason": response.fallback_reason})
    session.notify("usage")
    return answered.provider, model


def record(session, prompt: str, response: Response, cache_key: str | None, charged: tuple[str, str]) -> None:
    """Queue the history row (and cache entry); say on stderr, every time, when a row is not recorded.
    This request's budget hold is dropped by the same queued write, once its row is in."""
    from .writequeue import report_write
    store = session.store
    if cache_key and not response.cached:
        entry = response.to_record()
        store.submit("cache entry", lambda: store.cache_put(cache_key, entry))
    ticket = store.submit_response(response, prompt, session_id=session.id, provider=charged[0], model=charged[1],
                                   release=session.caps.take_own_holds())
    note = report_write(store, ticket)
    if note:
        print(note, file=sys.stderr, flush=True)
    session.caps.after_spend(session)


def approx_tokens_text(text: str) -> int:
    """About four characters a token: the count when a server reports no usage."""
    return max(1, (len(text) + 3) // 4)


def approx_tokens(request: Request) -> int:
    """The approximate input tokens of `request` (messages and system prompt)."""
    from .events import text_of
    return approx_tokens_text("".join(text_of(m.get("content", "")) for m in request.messages) + (request.system or ""))
