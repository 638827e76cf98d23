"""Provider batch jobs: rows already built as Requests go to OpenAI / Anthropic / Gemini batch APIs at
batch prices, with the job recorded in the history DB before anything waits, so an interrupt or a kernel
restart loses nothing; collecting fills the response cache under the interactive keys and returns the
same DataFrame shape as an interactive map. Wire details are in batch_wire.py."""
from __future__ import annotations

import base64
import json
import os
import pickle
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .errors import LLMError
from .events import Request, Response, Usage
from .targets import Target

BATCH_DISCOUNT = 0.5        # OpenAI, Anthropic and Gemini document batch prices at 50% of standard
DISCOUNTED = {"openai", "anthropic", "gemini"}
POLL_RETRIES = 5           # consecutive failed status polls before collect gives up (the job goes on)
COLUMNS = ("answer", "status", "error", "input_tokens", "output_tokens", "cost", "latency", "answered_by")


@dataclass
class Job:
    id: str
    provider_job_id: str
    target: str
    rows: int          # rows in the job's frame
    sent: int          # rows submitted (the rest came from the cache)
    estimate: float | None
    state: str

    def __repr__(self) -> str:
        cost = "unknown" if self.estimate is None else f"≤ ${self.estimate:.4f}"
        return (f"<batch job {self.id} on {self.target}: {self.sent} of {self.rows} rows submitted, {self.state}, "
                f"{cost}; collect with %llm collect {self.id}>")


# ---------------------------------------------------------------- prices

def _model(session, target: Target) -> str:
    return target.model or session._spec(target).default_model or ""


def batch_cost(session, target: Target, usage: Usage) -> float | None:
    """USD of `usage` at batch prices: the catalogue's batch price where genai-prices has one, else the
    provider's documented 50% discount (OpenAI, Anthropic, Gemini), else the standard (configured) price."""
    from . import pricing
    from .budget import price_args
    args = price_args(session, target)
    standard = pricing.cost(target.provider, _model(session, target), usage, **args)
    if not standard or pricing.configured_price(args.get("settings")) is not None:
        return standard
    where = pricing._where(target.provider, _model(session, target))
    if where is not None:
        try:
            from genai_prices import Usage as GUsage, calc_price
            price = calc_price(GUsage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens), where[1],
                               provider_id=where[0], price_context={"processing": "batch"})
            if float(price.total_price) < standard:
                return float(price.total_price)
        except (LookupError, ValueError, TypeError):
            pass
    return standard * BATCH_DISCOUNT if target.provider in DISCOUNTED else standard


def _row_tokens(request: Request) -> tuple[int, int]:
    try:
        from .rows import row_tokens  # images and schemas counted as an interactive map counts them
        return row_tokens(request)
    except ImportError:
        from . import pricing
        return pricing.estimate_tokens(request)


def check_budget(session, target: Target, est: float | None, n: int) -> None:
    """Refuse (BUDGET_EXCEEDED) before submitting when the job's batch-price estimate could pass a cap,
    or a capped target has no known price."""
    from .budget import _over, _unpriced
    caps = session.caps.caps()
    relevant = [c for c in caps if c.covers(target.provider)]
    if not relevant or not n:
        return
    if est is None:
        raise _unpriced(target, relevant[0])
    spent, held = session.caps._amounts(session, relevant)
    # jobs submitted but not collected yet: their spend reaches the history only when collected
    waiting = [j for j in session.store.jobs(10_000) if not j.get("collected") and j["state"] != "failed"]
    for cap in relevant:
        pending = sum(j["estimate"] or 0.0 for j in waiting if cap.covers(j["provider"])
                      and (cap.period != "session" or j["session_id"] == session.id))
        if est > 0 and spent[cap] + held[cap] + pending + est > cap.usd + 1e-9:
            err = _over(cap, spent[cap], held[cap] + pending, est, [target])
            raise LLMError("BUDGET_EXCEEDED", f"batch job of {n} rows refused before submitting: {err.message}",
                           hint=err.hint)


# ---------------------------------------------------------------- submit

def _items(rows: Iterable) -> list[tuple[Any, Request, Any]]:
    out = []
    for item in rows:
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3) or not isinstance(item[1], (Request, LLMError)):
            raise LLMError("BAD_ARGUMENT", "batch rows are (row key, Request) or (row key, Request, target) tuples")
        out.append((item[0], item[1], item[2] if len(item) == 3 else None))
    return out


def submit(session, rows: Iterable, target: str | Target | None = None, *, use_cache: bool = True,
           prompts: list[str] | None = None, index: Any = None) -> Job:
    """Submit rows ((key, Request[, target]) tuples, one target; an LLMError in place of the Request is a row
    that failed before sending, kept with its code) as one provider batch job; rows already in
    the response cache are not sent. Estimates and budget-checks first (nothing sent on refusal); the job
    goes to the history DB before the provider call and again with its id after it."""
    from .batch_wire import LIMITS, backend
    from .store import Store
    from .sensitive import check_request
    from .capcheck import adapt
    items = _items(rows)
    if not items:
        raise LLMError("BAD_ARGUMENT", "a batch job needs at least one row")
    named = {str(t) for _, _, t in items if t is not None}
    if len(named) > 1:
        raise LLMError("BAD_ARGUMENT", f"one batch job goes to one target; got {', '.join(sorted(named))}")
    target = session.parse(target if target is not None else (next(iter(named)) if named else session.active))
    wire = backend(session, target)
    store = session.store
    spec_rows, pending, inp, outp = [], [], 0, 0
    for n, (key, request, _) in enumerate(items):
        if isinstance(request, LLMError):
            spec_rows.append([_jsonable(key), None, request.line(), prompts[n] if prompts else ""])
            continue
        try:
            check_request(target, request, session.config)  # protected values stay on this machine
        except LLMError as exc:  # that row is BLOCKED, as in an interactive map; the others may go
            spec_rows.append([_jsonable(key), None, exc.line(), prompts[n] if prompts else ""])
            continue
        ckey = Store.cache_key(str(target), request.cache_key_parts())
        hit = use_cache and store.cache_get(ckey) is not None
        cid = None if hit else f"row-{n}"
        if cid:
            pending.append((cid, adapt(session.config, target, request)[0]))  # a schema as instructions where needed
            i, o = _row_tokens(request)
            inp, outp = inp + i, outp + o
        prompt = prompts[n] if prompts else _prompt_text(request)
        spec_rows.append([_jsonable(key), ckey, cid, prompt])
    limit = LIMITS[session._spec(target).kind]
    if len(pending) > limit:
        raise LLMError("BAD_ARGUMENT", f"{len(pending):,} rows is more than one {target.provider} batch job takes "
                       f"({limit:,}); split the data")
    est = batch_cost(session, target, Usage(inp, outp)) if pending else 0.0
    check_budget(session, target, est, len(pending))
    job_id = "j" + os.urandom(4).hex()
    from . import cellinfo
    spec = {"rows": spec_rows, "schema": next((getattr(r, "schema", None) for _, r, _ in items
                                               if isinstance(r, Request)), None),
            "index": _pickle(index), "model": _model(session, target), "input_tokens": inp, "output_tokens": outp}
    record = dict(id=job_id, provider_job_id="", provider=target.provider, target=str(target), time=time.time(),
                  n_rows=len(items), n_sent=len(pending), estimate=est, session_id=session.id,
                  notebook=cellinfo.current().notebook or cellinfo.notebook_path(), spec=spec)
    if not pending:
        store.job_put(**record, state="ended", detail="every row was in the response cache", finished=time.time())
        return Job(job_id, "", str(target), len(items), 0, est, "ended")
    if not store.job_put(**record, state="submitting"):
        raise LLMError("CONFIG_ERROR", f"the history database {store.path} cannot be written, so a batch job "
                       "would be lost with this kernel; nothing was submitted",
                       hint="set JUPYTER_LLM_DATA_DIR to a writable folder, or run the map without --batch")
    try:
        provider_id = wire.submit(pending)
    except BaseException as exc:
        store.job_put(id=job_id, state="failed", detail=exc.line() if isinstance(exc, LLMError) else repr(exc),
                      finished=time.time())
        raise
    store.job_put(id=job_id, provider_job_id=provider_id, state="pending")
    session._record_event("batch_submit", {"job": job_id, "provider_job": provider_id, "target": str(target),
                                           "rows": len(pending), "estimate": est})
    return Job(job_id, provider_id, str(target), len(items), len(pending), est, "pending")


def submit_prompts(session, prompts: Any, target: str | Target | None = None, *, system: str | None = None,
                   temperature: float | None = None, max_tokens: int | None = None, top_p: float | None = None,
                   use_cache: bool = True) -> Job:
    """Submit prompt texts (a list, dict or pandas Series: its keys/index become the frame's index) as one
    batch job, each with the session's settings and no conversation, exactly as an interactive row."""
    if hasattr(prompts, "items") and not isinstance(prompts, (str, bytes)):
        keys, texts = zip(*prompts.items()) if len(prompts) else ((), ())
    else:
        texts = list(prompts)
        keys = range(len(texts))
    index = prompts.index if (type(prompts).__module__ or "").startswith("pandas") else None
    rows = [(k, session.build_request(str(p), system=system, temperature=temperature, max_tokens=max_tokens,
                                      top_p=top_p, context=False)) for k, p in zip(keys, texts)]
    return submit(session, rows, target, use_cache=use_cache, prompts=[str(p) for p in texts], index=index)


# ---------------------------------------------------------------- status, wait, collect, cancel

def get(session, ref: str) -> dict:
    job = session.store.job_get(str(ref).strip())
    if job is None:
        raise LLMError("BAD_ARGUMENT", f"no batch job {ref!r} in the history", hint="%llm jobs lists them")
    return job


def refresh(session, job: dict):
    """Ask the provider for the job's status and store the new state; returns the JobStatus."""
    from .batch_wire import FINAL, backend
    if job["state"] in FINAL and job.get("finished"):
        from .batch_wire import JobStatus
        return JobStatus(job["state"], job["n_sent"], job["n_sent"], None, job.get("detail") or "")
    status = backend(session, session.parse(job["target"])).status(job["provider_job_id"])
    update = {"state": status.state, "detail": status.detail}
    if status.state in FINAL:
        update["finished"] = time.time()
    session.store.job_put(id=job["id"], **update)
    job.update(update)
    return status


def wait(session, ref: str, *, on_status: Callable | None = None, first: float = 1.0, most: float = 30.0,
         timeout: float | None = None) -> dict:
    """Poll the provider with backoff (first, x1.5, at most `most` seconds) until the job is final."""
    from .batch_wire import FINAL
    job = get(session, ref)
    if not job["provider_job_id"] and job["state"] not in FINAL:
        raise LLMError("PROVIDER_ERROR", f"batch job {job['id']} was never accepted by the provider ({job['state']})")
    delay, start, errors = first, time.monotonic(), 0
    while True:
        try:
            status = refresh(session, job)
            errors = 0
        except LLMError as exc:  # a status poll hit a 429/5xx/network blip: the job is fine, ask again later
            errors += 1
            if not exc.retryable or errors > POLL_RETRIES:
                raise
            time.sleep(max(delay, exc.retry_after or 0.0))
            delay = min(most, delay * 1.5)
            continue
        if on_status is not None:
            on_status(job, status)
        if status.state in FINAL:
            return job
        if timeout is not None and time.monotonic() - start > timeout:
            raise LLMError("TIMEOUT", f"batch job {job['id']} is still {status.state} after {timeout:g} s",
                           hint=f"%llm collect {job['id']} later")
        time.sleep(delay)
        delay = min(most, delay * 1.5)


def cancel(session, ref: str) -> dict:
    from .batch_wire import FINAL, backend
    job = get(session, ref)
    if job["state"] in FINAL:
        raise LLMError("BAD_ARGUMENT", f"batch job {job['id']} has already {job['state']}")
    backend(session, session.parse(job["target"])).cancel(job["provider_job_id"])
    session.store.job_put(id=job["id"], state="cancelling")
    refresh(session, job)
    return job


def collect(session, ref: str, *, schema: Any = None, **wait_args: Any):
    """Wait for the job if needed, then its rows as the interactive map's DataFrame: answer, status, error,
    tokens, cost (batch price), latency, answered_by on the input's index. Finished rows go to the response
    cache and (the first time) to the history and the session's usage."""
    from .batch_wire import backend, cancelled_row, expired_row, Outcome
    job = wait(session, ref, **wait_args)
    target = session.parse(job["target"])
    spec = job["spec"]
    first = not job.get("collected")
    outcomes: dict[str, Outcome] = {}
    if job["provider_job_id"] and job["state"] != "failed":
        outcomes = dict(backend(session, target).results(job["provider_job_id"]))
    missing = {"expired": expired_row, "cancelled": cancelled_row}.get(job["state"])
    store, records = session.store, []
    schema = _schema(spec.get("schema"), schema)
    for key, ckey, cid, prompt in spec["rows"]:
        response = Response(target=str(target), answered_by=str(target))
        if ckey is None:  # the template failed on this row: never sent
            records.append(_values(None, cid.split(":", 1)[0], cid, schema))
            continue
        if cid is None:
            hit = store.cache_get(ckey)
            if hit:
                session._from_cache(response, hit, None)
                response.cost = 0.0
                status, error = _validate(schema, response)
                records.append(_values(response, status, error, schema))
                continue
            records.append(_values(None, "PROVIDER_ERROR", "PROVIDER_ERROR: the cached answer is gone; re-submit", schema))
            continue
        out = outcomes.get(cid)
        if out is None:
            out = missing() if missing else Outcome("PROVIDER_ERROR", error=(
                f"PROVIDER_ERROR: batch job {job['state']}" + (f": {job.get('detail')}" if job.get("detail") else "")
                if job["state"] == "failed" else "PROVIDER_ERROR: the provider returned no result for this row"))
        if out.status == "cancelled" or (out.status != "ok" and not out.text):
            records.append(_values(None, out.status, out.error, schema))
            continue
        response.text, response.chunks, response.usage = out.text, [out.text], out.usage
        response.finish_reason = out.finish
        response.truncated = out.finish == "length"
        response.cost = batch_cost(session, target, out.usage)
        status, error = _validate(schema, response)
        if first:
            session.usage.add(target.provider, spec.get("model") or "", out.usage.input_tokens,
                              out.usage.output_tokens, response.cost)
            store.record_response(response, prompt, session_id=session.id, provider=target.provider,
                                  model=spec.get("model"))
        if status == "ok":  # as an interactive row: only answers that passed are cached
            store.cache_put(ckey, response.to_record())
        records.append(_values(response, status, error, schema))
    store.job_put(id=job["id"], collected=time.time())
    session.notify("usage")
    return _frame(records, spec, job)


def _schema(stored: dict | None, given: Any) -> Any:
    """The schema.Schema to parse answers with: the one given (the map's pydantic class or dataclass), else
    the JSON schema stored with the job (after a restart: plain JSON values)."""
    if given is not None:
        from .schema import resolve
        return resolve(given)
    if not stored:
        return None
    from .schema import resolve
    return resolve(stored["schema"], stored.get("name"))


def _validate(schema: Any, response: Response) -> tuple[str, str]:
    if schema is None:
        return "ok", ""
    from .schema import apply
    apply(schema, response)
    if response.error is not None:
        return response.error.code, response.error.line()
    return "ok", ""


def _values(r: Response | None, status: str, error: str, schema: Any = None) -> dict[str, Any]:
    if schema is not None and schema.fields:
        from .schema import as_columns
        head = as_columns(schema, r.value) if (r is not None and status == "ok") else {f: None for f in schema.fields}
    else:
        head = {"answer": (r.value if schema is not None and status == "ok" else r.text) if r is not None else None}
    return {**head, "status": status, "error": error or None,
            "input_tokens": r.usage.input_tokens if r is not None else 0,
            "output_tokens": r.usage.output_tokens if r is not None else 0,
            "cost": r.cost if r is not None else None, "latency": r.latency if r is not None else None,
            "answered_by": (r.answered_by or r.target) if r is not None else None}


def _frame(records: list[dict], spec: dict, job: dict):
    import pandas as pd
    frame = pd.DataFrame(records)
    index = _unpickle(spec.get("index"))
    frame.index = index if hasattr(index, "__len__") and len(index) == len(frame) else pd.Index([r[0] for r in spec["rows"]])
    counts = frame["status"].value_counts().to_dict()
    frame.attrs.update(job=job["id"], state=job["state"], summary_line=(
        f"batch job {job['id']} ({job['target']}, {job['state']}): {len(frame)} rows, "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        + f", ${float(frame['cost'].fillna(0).sum()):.4f}"))
    return frame


# ---------------------------------------------------------------- helpers

def _prompt_text(request: Request) -> str:
    content = request.messages[-1].get("content") if request.messages else ""
    if isinstance(content, list):  # text and image parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def _jsonable(key: Any) -> Any:
    try:
        json.dumps(key)
        return key
    except (TypeError, ValueError):
        return str(key)


def _pickle(index: Any) -> str | None:
    if index is None:
        return None
    try:
        return base64.b64encode(pickle.dumps(index)).decode()
    except Exception:
        return None


def _unpickle(text: str | None) -> Any:
    if not text:
        return None
    try:
        return pickle.loads(base64.b64decode(text))  # written by this package into the user's own history file
    except Exception:
        return None


# ---------------------------------------------------------------- %%llm --map DATA --batch

def map_batch(session, template: str, data: Any, target: Any = None, schema: Any = None, *,
              namespace: Any = None, system: str | None = None, temperature: float | None = None,
              max_tokens: int | None = None, top_p: float | None = None, attach: Iterable[str] = (),
              cache: bool | None = None, dry_run: bool = False, wait: bool = True, on_status: Callable | None = None):
    """The map's rows (same template rendering, parameters and schema as an interactive map) as one provider
    batch job: returns the DataFrame once the job ends (`wait`), else the Job; `dry_run` the estimate table
    at batch prices. A Ctrl-C while waiting leaves the job running (collect it later)."""
    from .batch_wire import backend
    from .rows import build_rows
    t = session.active if target is None else session.parse(target)
    backend(session, t)  # no batch API (local...), or no credential: say so before rendering 10,000 rows
    plan = build_rows(session, template, data, namespace=namespace, schema=schema, system=system,
                      temperature=temperature, max_tokens=max_tokens, top_p=top_p, attach=attach)
    if plan.images:
        from .media import require_images
        require_images(session, [t])
    use_cache = True if cache is None else bool(cache)
    if dry_run:
        from .mapping import DryRun, estimate
        estimates = estimate(session, plan, [t], use_cache=use_cache)
        for e in estimates:
            e.target = f"{e.target} (batch)"
            e.cost = batch_cost(session, t, Usage(e.input_tokens, e.output_tokens)) if e.rows else 0.0
        return DryRun(plan, estimates)
    rows = [(r.label, r.request if r.request is not None else r.error) for r in plan.rows]
    job = submit(session, rows, t, use_cache=use_cache, prompts=[r.prompt for r in plan.rows], index=plan.index)
    if not wait:
        return job
    return collect(session, job.id, schema=plan.schema, on_status=on_status)
