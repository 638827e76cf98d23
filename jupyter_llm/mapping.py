"""Prompting over data: one template over the rows of a DataFrame, Series, list or dict, sent concurrently
through the router, cached per row (a re-run resumes), estimated and budget-checked first, assembled into
a DataFrame on the input's index. `--compare` makes it an evaluation grid (every row on every target).

Row building (template → one Request per row) is rows.py and knows nothing of sending, so batch jobs and
pools can reuse it; `MapRun` here sends rows with a thread pool per target. Worker threads only send
and cache; the calling thread alone updates the progress display.
"""
from __future__ import annotations

import queue
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .errors import LLMError
from .events import Request, Response
from .rows import IMAGE_TOKENS, Plan, Row, RowView, build_rows, cache_key, row_tokens  # noqa: F401  (re-exported)

CLOUD_WORKERS = 4
MAX_WORKERS = 64
STATS = ("input_tokens", "output_tokens", "cost", "latency", "answered_by")
COLUMNS = ("status", "error") + STATS


# ---------------------------------------------------------------- estimate and budget

@dataclass
class Estimate:
    target: str
    rows: int            # rows that will be sent
    cached: int          # rows answered from the cache
    input_tokens: int
    output_tokens: int   # upper bound: max_tokens (or the default assumption) per row
    cost: float | None   # USD, None when the price is unknown

    def as_row(self) -> dict[str, Any]:
        return {"target": self.target, "rows": self.rows, "cached": self.cached, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "cost": self.cost}


def _pending(session, plan: Plan, target, use_cache: bool) -> list[Row]:
    rows = [r for r in plan.rows if r.request is not None]
    if not use_cache:
        return rows
    store = session.store
    return [r for r in rows if store.cache_get(cache_key(target, r.request)) is None]


def estimate(session, plan: Plan, targets: list, *, use_cache: bool = True) -> list[Estimate]:
    """Per target: rows still to send (not cached), their estimated tokens and cost."""
    from . import pricing
    from .events import Usage
    out = []
    for t in targets:
        pending = _pending(session, plan, t, use_cache)
        inp = outp = 0
        for r in pending:
            i, o = row_tokens(r.request)
            inp, outp = inp + i, outp + o
        from .budget import price_args
        model = t.model or session._spec(t).default_model or ""
        cost = 0.0 if t.is_local or not pending else pricing.cost(t.provider, model, Usage(inp, outp),
                                                                    **price_args(session, t))
        n_ok = sum(1 for r in plan.rows if r.request is not None)
        out.append(Estimate(str(t), len(pending), n_ok - len(pending), inp, outp, cost))
    return out


def check_budget(session, plan: Plan, targets: list, estimates: list[Estimate]) -> None:
    """Refuse the whole map before its first row when it could pass a spend cap (session.check_budget sees
    one request standing for every row still to send: their text, and max_tokens for all of them). The
    estimate is held (other kernels count it) until `release_budget` after the map."""
    pending = max(estimates, key=lambda e: e.rows)
    if not pending.rows:
        return
    from . import pricing
    inp = max(e.input_tokens for e in estimates)
    outp = max(e.output_tokens for e in estimates)
    chars = max(0, inp - pricing.TOKENS_PER_MESSAGE) * pricing.CHARS_PER_TOKEN
    standing = Request(messages=[{"role": "user", "content": "x" * chars}], max_tokens=max(1, outp))
    try:
        session.check_budget(targets, standing, hold=True)
    except LLMError as exc:
        if exc.code != "BUDGET_EXCEEDED":
            raise
        raise LLMError("BUDGET_EXCEEDED", f"map of {pending.rows} rows to {len(targets)} target"
                       f"{'s' if len(targets) != 1 else ''} refused before the first row: {exc.message}",
                       hint=exc.hint) from None


def release_budget(session) -> None:
    """Drop the map's held estimate (its rows are recorded as they are spent)."""
    caps = getattr(session, "caps", None)
    if caps is not None:
        caps.release_own(session)


# ---------------------------------------------------------------- sending

def default_workers(session, target) -> int:
    """4 for clouds; a llama.cpp server's slot count from /props (1 if it does not say)."""
    if not target.is_local:
        return CLOUD_WORKERS
    try:
        provider = session.provider(target)
        if target.port is None:
            info = provider.resolve(target)
        else:
            from .providers.llamacpp import probe
            info = probe(provider.host, target.port, timeout=2.0)
        return max(1, int(info.slots or 1)) if info is not None else 1
    except LLMError:
        return 1


@dataclass
class RowResult:
    status: str                      # ok | an error code | cancelled
    error: str = ""
    response: Response | None = None
    value: Any = None                # the parsed schema object, when there is a schema

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _cancelled(why: str) -> RowResult:
    return RowResult("cancelled", why)


def execute_row(session, target, row: Row, *, schema: Any = None, use_cache: bool = True, fallback: list = (),
                stop: threading.Event | None = None) -> tuple[RowResult, str | None]:
    """Send one row (or take it from the cache); returns the result and the cache key to store it under
    (None when it must not be cached). Never raises for provider failures."""
    from .schema import apply
    if row.request is None:
        return RowResult(row.error.code, row.error.line()), None
    key = cache_key(target, row.request) if use_cache else None
    response = Response(target=str(target), answered_by=str(target))
    hit = session.store.cache_get(key) if key else None
    if hit:
        session._from_cache(response, hit, None)
        response.cost = 0.0  # answered before: nothing is spent (and no history row is added) this time
    else:
        def on_event(ev) -> None:
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt  # Session._stream closes the stream and marks the row interrupted
        session._stream(target, row.request, response, on_event, list(fallback))
        if response.finish_reason == "interrupted":
            session._account(target, row.prompt, response)  # what was received is history and usage too
            return _cancelled("interrupted mid-answer"), None
    if schema is not None:
        apply(schema, response)
    if not response.cached:
        session._account(target, row.prompt, response)
    if response.error is not None:
        return RowResult(response.error.code, response.error.line(), response), None
    if response.incomplete:
        return RowResult("PROVIDER_ERROR", "the answer was cut off", response), None
    return RowResult("ok", "", response, response.value), (key if not response.cached else None)


class MapRun:
    """Sends a Plan to one or more targets: a pool of `workers[target]` threads each, all at once."""

    def __init__(self, session, plan: Plan, targets: list, *, workers: dict[str, int], stop_on_error: bool = False,
                 use_cache: bool = True, fallback: bool = True, progress=None):
        self.session = session
        self.plan = plan
        self.targets = targets
        self.workers = workers
        self.stop_on_error = stop_on_error
        self.use_cache = use_cache
        first = next((r.request for r in plan.rows if r.request is not None), None)
        self.fallback = (session.caps.allowed_fallback(session, first, session.fallback)
                         if fallback and first is not None and session.fallback else [])
        self.progress = progress
        self.results: dict[str, list[RowResult | None]] = {str(t): [None] * len(plan) for t in targets}
        self.stop = threading.Event()
        self.commit = threading.Lock()   # a row is cached and reported, or discarded, atomically with stop
        self.done_queue: queue.SimpleQueue = queue.SimpleQueue()
        self.interrupted = False
        self.stopped_by: str | None = None
        self.started = time.monotonic()

    def _worker(self, target, todo: queue.SimpleQueue) -> None:
        while not self.stop.is_set():
            try:
                row = todo.get_nowait()
            except queue.Empty:
                return
            try:
                result, key = execute_row(self.session, target, row, schema=self.plan.schema, use_cache=self.use_cache,
                                          fallback=self.fallback, stop=self.stop)
            except LLMError as exc:
                result, key = RowResult(exc.code, exc.line()), None
            except Exception as exc:  # a bug in an adapter must not kill the other rows
                result, key = RowResult("PROVIDER_ERROR", f"PROVIDER_ERROR: {type(exc).__name__}: {exc}"), None
            with self.commit:
                if self.stop.is_set():
                    return  # finished after the stop: not kept (nor cached), reported as cancelled, re-sent later
                if key is not None:
                    self.session.store.cache_put(key, result.response.to_record())
                # Stored here, under the lock, not by the caller: a Ctrl-C landing in the caller between
                # taking a result and keeping it would lose a row that is already cached.
                self.results[str(target)][row.position] = result
                self.done_queue.put((str(target), row.position, result))

    def run(self) -> dict[str, list[RowResult]]:
        """Send every row; returns results per target (in row order). Ctrl-C stops at once and keeps the
        finished rows; unfinished ones are `cancelled`."""
        session = self.session
        session.router, session.store  # build the shared collaborators here, not racing in the workers
        with session.router.collector_paused(self.targets):   # no collection before the first sends
            session.router.preload(self.targets)  # SDK imports one at a time, before the workers
            return self._send_all()

    def _send_all(self) -> dict[str, list[RowResult]]:
        """`run` once the SDKs are loaded: the workers, and the wait for every row."""
        total = len(self.plan) * len(self.targets)
        threads = []
        for t in self.targets:
            todo: queue.SimpleQueue = queue.SimpleQueue()
            for row in self.plan.rows:
                todo.put(row)
            n = max(1, min(self.workers.get(str(t), CLOUD_WORKERS), len(self.plan)))
            for i in range(n):
                th = threading.Thread(target=self._worker, args=(t, todo), name=f"llm-map-{t}-{i}", daemon=True)
                threads.append(th)
        for th in threads:
            th.start()
        received = 0
        try:
            while received < total:
                try:
                    tname, pos, result = self.done_queue.get(timeout=self._wait())
                except queue.Empty:
                    if self.stop.is_set() and not any(th.is_alive() for th in threads):
                        break
                    self._tick()
                    continue
                received += 1
                if self.progress is not None:
                    self.progress.add(result)
                if self.stop_on_error and not result.ok:
                    self.stopped_by = f"row {self.plan.rows[pos].label!r} on {tname} failed ({result.status})"
                    with self.commit:
                        self.stop.set()
                    self._drain()
                    break
                self._tick()
        except KeyboardInterrupt:
            self.interrupted = True
            with self.commit:
                self.stop.set()
            self._drain()
        why = ("not sent: the map was interrupted" if self.interrupted else
               f"not sent: {self.stopped_by} (--stop-on-error)")
        out = {}
        for t, rows in self.results.items():
            out[t] = [r if r is not None else _cancelled(why) for r in rows]
        return out

    def _wait(self) -> float:
        return 0.25 if self.progress is None else max(0.01, self.progress.due_in())

    def _tick(self) -> None:
        if self.progress is not None:
            self.progress.refresh()

    def _drain(self) -> None:
        while True:
            try:
                tname, pos, result = self.done_queue.get_nowait()
            except queue.Empty:
                return
            if self.progress is not None:
                self.progress.add(result)


# ---------------------------------------------------------------- the result frame

def _row_values(plan: Plan, result: RowResult) -> dict[str, Any]:
    from .schema import as_columns
    r = result.response
    if plan.schema is not None:
        fields = plan.schema.fields or ["answer"]
        values = as_columns(plan.schema, result.value) if result.ok else {f: None for f in fields}
    else:
        values = {"answer": r.text if r is not None and (r.text or result.ok) else None}
    values.update(status=result.status, error=result.error or None,
                  input_tokens=r.usage.input_tokens if r is not None else 0,
                  output_tokens=r.usage.output_tokens if r is not None else 0,
                  cost=r.cost if r is not None else None,
                  latency=r.latency if r is not None else None,
                  answered_by=(r.answered_by or r.target) if r is not None else None)
    return values


def summary(plan: Plan, results: list[RowResult]) -> dict[str, Any]:
    """ok rate, schema-valid rate, median latency, tokens and cost of one target's rows."""
    n = len(results)
    ok = sum(1 for r in results if r.ok)
    answered = [r for r in results if r.status in ("ok", "INVALID_OUTPUT")]
    latencies = [r.response.latency for r in results if r.ok and r.response.latency is not None and not r.response.cached]
    costs = [r.response.cost for r in results if r.response is not None and r.response.cost is not None]
    return {"rows": n, "ok": ok, "failed": sum(1 for r in results if not r.ok and r.status != "cancelled"),
            "cancelled": sum(1 for r in results if r.status == "cancelled"),
            "cached": sum(1 for r in results if r.response is not None and r.response.cached),
            "ok_rate": ok / n if n else 0.0,
            "schema_valid_rate": ((ok / len(answered)) if answered else 0.0) if plan.schema is not None else None,
            "median_latency": statistics.median(latencies) if latencies else None,
            "input_tokens": sum(r.response.usage.input_tokens for r in results if r.response is not None),
            "output_tokens": sum(r.response.usage.output_tokens for r in results if r.response is not None),
            "cost": sum(costs) if costs else 0.0}


def to_frame(plan: Plan, results: dict[str, list[RowResult]], labels: dict[str, str] | None = None, grid: bool = False):
    """The result DataFrame (pandas imported now): the input's index; answer or schema fields, status,
    error, tokens, cost, latency, answered_by; a column group per target for a grid. `attrs["summary"]`
    holds per-target figures as plain dicts (DataFrames in attrs break pandas.concat)."""
    import pandas as pd
    labels = labels or {t: t for t in results}
    frames = {}
    for t, rows in results.items():
        frame = pd.DataFrame([_row_values(plan, r) for r in rows])
        frame.index = plan.index if isinstance(plan.index, pd.Index) else pd.Index(plan.index)
        frames[labels[t]] = frame
    if grid:
        frame = pd.concat(frames, axis=1, names=["target", None])
    else:
        frame = next(iter(frames.values()))
    frame.attrs["summary"] = {labels[t]: summary(plan, rows) for t, rows in results.items()}
    return frame


def summary_line(plan: Plan, results: dict[str, list[RowResult]], elapsed: float,
                 labels: dict[str, str] | None = None) -> str:
    """`1000 rows in 12.3 s: 998 ok, 2 failed (RATE_LIMITED 2), 40 cached, 51k tokens, $0.0123`."""
    from collections import Counter
    from .tables import money
    parts = []
    for t, rows in results.items():
        s = summary(plan, rows)
        codes = Counter(r.status for r in rows if not r.ok and r.status != "cancelled")
        fail = f", {s['failed']} failed ({', '.join(f'{c} {n}' for c, n in codes.most_common())})" if s["failed"] else ""
        extra = (f", {s['cancelled']} cancelled" if s["cancelled"] else "") + (f", {s['cached']} cached" if s["cached"] else "")
        prefix = f"{(labels or {}).get(t, t)}: " if len(results) > 1 else ""
        parts.append(f"{prefix}{s['ok']} ok{fail}{extra}, {s['input_tokens'] + s['output_tokens']:,} tokens, {money(s['cost'])}")
    return f"{len(plan)} rows in {elapsed:.1f} s: " + "; ".join(parts)


# ---------------------------------------------------------------- the Python API

def map_rows(session, template: str, data: Any, target=None, schema: Any = None, workers: int | None = None,
             compare: list | None = None, *, namespace: Mapping[str, Any] | None = None, system: str | None = None,
             temperature: float | None = None, max_tokens: int | None = None, top_p: float | None = None,
             attach: Iterable[str] = (), stop_on_error: bool = False, cache: bool | None = None,
             progress: bool | None = None, dry_run: bool = False):
    """Everything `%%llm --map` does, as a function: returns the DataFrame (or, with `dry_run`, the
    estimate table). Raises LLMError for bad inputs and budget refusals (nothing sent); a Ctrl-C ends it
    with the finished rows kept in the returned frame (`attrs["interrupted"]` is True)."""
    from .progress import MapProgress
    if compare and target is not None:
        raise LLMError("BAD_ARGUMENT", "give targets after --compare only, not before it")
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= MAX_WORKERS):
        raise LLMError("BAD_ARGUMENT", f"--workers must be between 1 and {MAX_WORKERS}, got {workers!r}")
    if compare:
        from .compare import _parse_all
        targets = _parse_all(session, list(compare))
        labels = {str(t): str(text).strip() for t, text in zip(targets, compare)}
    else:
        targets = [session.active if target is None else session.parse(target)]
        labels = {str(targets[0]): str(targets[0])}
    plan = build_rows(session, template, data, namespace=namespace, schema=schema, system=system,
                      temperature=temperature, max_tokens=max_tokens, top_p=top_p, attach=attach)
    if plan.images:
        from .media import require_images
        require_images(session, targets)
    use_cache = True if cache is None else bool(cache)
    estimates = estimate(session, plan, targets, use_cache=use_cache)
    if dry_run:
        return DryRun(plan, estimates)
    check_budget(session, plan, targets, estimates)
    from .pool import is_pool
    if len(targets) == 1 and is_pool(targets[0]):  # [local] pool: rows spread over its servers by slots
        from .pool import map_plan
        return map_plan(session, plan, targets[0], use_cache=use_cache, labels=labels, progress=progress)
    try:
        pool = {str(t): workers or default_workers(session, t) for t in targets}
        bar = MapProgress(len(plan) * len(targets), rich=progress) if progress is not False else None
        runner = MapRun(session, plan, targets, workers=pool, stop_on_error=stop_on_error, use_cache=use_cache,
                        fallback=not compare, progress=bar)
        if bar is not None:
            bar.start()
        results = runner.run()
    finally:
        release_budget(session)
    from .capcheck import schema_note
    line = summary_line(plan, results, time.monotonic() - runner.started, labels) + schema_note(
        session.config, targets, plan.schema)
    if runner.interrupted:
        line += " (interrupted: re-run to send the rest)"
    elif runner.stopped_by:
        line += f" (stopped: {runner.stopped_by})"
    if bar is not None:
        bar.finish(line)
    session.notify("usage")
    frame = to_frame(plan, results, labels, grid=bool(compare))
    frame.attrs.update(summary_line=line, interrupted=runner.interrupted, workers=pool)
    return frame


@dataclass
class DryRun:
    """What a map would send: the first rendered prompt and, per target, rows, tokens and cost."""
    plan: Plan
    estimates: list[Estimate] = field(default_factory=list)

    def rows(self) -> list[list[str]]:
        from .tables import money
        return [[e.target, f"{e.rows}", f"{e.cached}", f"~{e.input_tokens:,}", f"≤ {e.output_tokens:,}",
                 "unknown price" if e.cost is None else f"≤ {money(e.cost)}"] for e in self.estimates]

    HEADERS = ["target", "rows to send", "cached", "input tokens", "output tokens", "cost"]

    def first_prompt(self) -> str:
        first = next((r for r in self.plan.rows if r.request is not None), None)
        return first.prompt if first is not None else ""

    def text(self) -> str:
        from .tables import text_table
        return (f"dry run: nothing was sent. {len(self.plan)} rows; first prompt:\n"
                f"{self.first_prompt()}\n\n" + text_table(self.HEADERS, self.rows()))

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        import html
        from .tables import html_table
        return (f"<div><b>dry run</b>: nothing was sent. {len(self.plan)} rows; first prompt:"
                f"<pre style='white-space:pre-wrap'>{html.escape(self.first_prompt())}</pre>"
                + html_table(self.HEADERS, self.rows()) + "</div>")

