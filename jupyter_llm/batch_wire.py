"""Provider batch APIs through the official SDKs: OpenAI `/v1/batches` (JSONL through the files API),
Anthropic Message Batches and Gemini batch mode (inlined requests). Each backend submits rows already
built as `events.Request`s, with the same wire parameters as an interactive row (the adapters' own
`_params`/`_contents`/`_config`), reads the job's status, and turns its results into per-row outcomes."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterator

from .errors import LLMError
from .events import Request, Usage
from .targets import Target

# Our job states; provider words are mapped onto these.
ACTIVE = ("pending", "running", "finalizing", "cancelling")
FINAL = ("ended", "expired", "cancelled", "failed")
LIMITS = {"openai-compatible": 50_000, "anthropic": 100_000, "gemini": 50_000}  # rows per job (providers' documented caps)


@dataclass
class JobStatus:
    state: str                      # one of ACTIVE or FINAL
    total: int | None = None        # rows the provider counts (None: it does not say)
    done: int | None = None         # rows finished (ok or failed)
    failed: int | None = None
    detail: str = ""                # the provider's own word, or its job-level error


@dataclass
class Outcome:
    """One row's result inside a job: text and usage, or a coded failure (`status` an errors.CODES code,
    or `cancelled`)."""
    status: str = "ok"
    text: str = ""
    usage: Usage = field(default_factory=Usage)
    finish: str | None = None
    error: str = ""


def _failure(exc: LLMError) -> Outcome:
    return Outcome(exc.code, error=exc.line())


def expired_row() -> Outcome:
    return Outcome("TIMEOUT", error="TIMEOUT: the batch job expired before this row was processed "
                                      "(provider batch window, usually 24 h)")


def cancelled_row() -> Outcome:
    return Outcome("cancelled", error="cancelled: the batch job was cancelled before this row was processed")


class Backend:
    """One provider's batch API for one target; SDK errors become LLMError through the adapter's mapping."""

    def __init__(self, session, target: Target):
        from .policy import enforce
        from .providers import _wire
        enforce(target.provider, session.config, target=target, what="batch job")  # local-only mode, disabled
        self.session = session
        self.target = target
        self.spec = session._spec(target)
        self.adapter = session.provider(target)
        self.model = _wire.model_for(self.spec, target)
        self.auth = session.credentials.resolve(self.spec)
        if getattr(self.auth, "base_url", None):
            enforce(target.provider, session.config, self.auth.base_url, target=target, what="batch job")
        self.connect, self.read = _wire.timeouts(self.spec, None)
        self.read = max(self.read, 120.0)  # uploads and result files are large

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LLMError:
            raise
        except Exception as exc:
            err = self.adapter._error(exc, self.model, self.auth, self.read, False)
            if isinstance(err, LLMError):
                raise err from None
            raise LLMError("PROVIDER_ERROR", f"{self.spec.id} batch call failed: {type(exc).__name__}: {exc}") from None

    # interface
    def submit(self, items: list[tuple[str, Request]]) -> str: ...
    def status(self, job_id: str) -> JobStatus: ...
    def results(self, job_id: str) -> Iterator[tuple[str, Outcome]]: ...
    def cancel(self, job_id: str) -> None: ...


# ---------------------------------------------------------------- OpenAI and compatible endpoints

_OPENAI_STATES = {"validating": "pending", "in_progress": "running", "finalizing": "finalizing",
                  "completed": "ended", "failed": "failed", "expired": "expired", "cancelling": "cancelling",
                  "cancelled": "cancelled"}


class OpenAIBatch(Backend):
    endpoint = "/v1/chat/completions"

    def _client(self):
        return self.adapter._client(self.auth, self.connect, self.read)

    def body(self, request: Request) -> dict[str, Any]:
        params = self.adapter._params(self.model, request)
        params.pop("stream", None)
        params.pop("stream_options", None)
        return params

    def submit(self, items):
        lines = "\n".join(json.dumps({"custom_id": cid, "method": "POST", "url": self.endpoint, "body": self.body(r)},
                                     ensure_ascii=False) for cid, r in items) + "\n"
        client = self._client()
        try:
            upload = self._call(client.files.create, purpose="batch",
                                file=("jupyter-llm-batch.jsonl", lines.encode(), "application/jsonl"))
            batch = self._call(client.batches.create, input_file_id=upload.id, endpoint=self.endpoint,
                               completion_window="24h", metadata={"source": "jupyter-llm"})
        except LLMError as exc:
            if exc.status in (404, 405):  # the endpoint has no files/batches API at all
                raise LLMError("BAD_ARGUMENT", f"{self.spec.id} does not serve the OpenAI batch API "
                               f"(/v1/files, /v1/batches answered HTTP {exc.status})",
                               hint="run the map without --batch, or use a provider with a batch API") from None
            raise
        return batch.id

    def status(self, job_id):
        b = self._call(self._client().batches.retrieve, job_id)
        counts = b.request_counts
        detail = b.status
        if b.errors is not None and getattr(b.errors, "data", None):
            detail += ": " + "; ".join(f"{e.code}: {e.message}" for e in b.errors.data[:3])
        return JobStatus(_OPENAI_STATES.get(b.status, "running"), counts.total if counts else None,
                         (counts.completed + counts.failed) if counts else None, counts.failed if counts else None, detail)

    def results(self, job_id):
        from .providers import _wire
        client = self._client()
        b = self._call(client.batches.retrieve, job_id)
        for file_id in (b.output_file_id, b.error_file_id):
            if not file_id:
                continue
            text = self._call(client.files.content, file_id).text
            for line in text.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                cid = item.get("custom_id")
                resp = item.get("response") or {}
                err = item.get("error")
                if err and not resp:
                    code = (err.get("code") or "") if isinstance(err, dict) else ""
                    if code == "batch_expired":
                        yield cid, expired_row()
                    elif code == "batch_cancelled":
                        yield cid, cancelled_row()
                    else:
                        yield cid, _failure(LLMError("PROVIDER_ERROR", f"{_wire.display_name(self.spec.id)} batch row "
                                                                       f"failed: {_wire.scrub(err.get('message') if isinstance(err, dict) else err)}"))
                    continue
                body = resp.get("body") or {}
                status = int(resp.get("status_code") or 0)
                if status != 200:
                    message = (body.get("error") or {}).get("message", "") if isinstance(body, dict) else str(body)
                    yield cid, _failure(_wire.status_error(self.spec.id, status, message, model=self.model,
                                                           secret=self.auth.secret))
                    continue
                choice = (body.get("choices") or [{}])[0]
                usage = body.get("usage") or {}
                yield cid, Outcome("ok", (choice.get("message") or {}).get("content") or "",
                                   Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0),
                                   _wire.finish_reason(choice.get("finish_reason")))

    def cancel(self, job_id):
        self._call(self._client().batches.cancel, job_id)


# ---------------------------------------------------------------- Anthropic Message Batches

_ANTHROPIC_ERRORS = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
                     "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429, "api_error": 500,
                     "overloaded_error": 529}


class AnthropicBatch(Backend):
    def _client(self):
        return self.adapter._client(self.auth, self.connect, self.read)

    def body(self, request: Request) -> dict[str, Any]:
        params = self.adapter._params(self.model, request)
        params.pop("stream", None)
        params.update(params.pop("extra_body", None) or {})  # in a batch, params go as JSON as they are
        return params

    def submit(self, items):
        batch = self._call(self._client().messages.batches.create,
                           requests=[{"custom_id": cid, "params": self.body(r)} for cid, r in items])
        return batch.id

    def status(self, job_id):
        b = self._call(self._client().messages.batches.retrieve, job_id)
        c = b.request_counts
        total = c.processing + c.succeeded + c.errored + c.canceled + c.expired
        state = {"in_progress": "running", "canceling": "cancelling"}.get(b.processing_status, "ended")
        if state == "ended" and b.cancel_initiated_at is not None:
            state = "cancelled"
        elif state == "ended" and c.expired:  # the 24 h window passed with rows left
            state = "expired"
        return JobStatus(state, total, total - c.processing, c.errored + c.expired, b.processing_status)

    def results(self, job_id):
        from .providers import _wire
        for item in self._call(self._client().messages.batches.results, job_id):
            result = item.result
            kind = result.type
            if kind == "succeeded":
                m = result.message
                text = "".join(getattr(b, "text", "") for b in m.content if getattr(b, "type", "") == "text")
                yield item.custom_id, Outcome("ok", text, Usage(m.usage.input_tokens or 0, m.usage.output_tokens or 0),
                                              _wire.finish_reason(m.stop_reason))
            elif kind == "errored":
                inner = getattr(result.error, "error", None)
                etype = getattr(inner, "type", "") or ""
                message = getattr(inner, "message", "") or etype
                yield item.custom_id, _failure(_wire.status_error(self.spec.id, _ANTHROPIC_ERRORS.get(etype, 500), message,
                                                                  model=self.model, secret=self.auth.secret))
            elif kind == "expired":
                yield item.custom_id, expired_row()
            else:
                yield item.custom_id, cancelled_row()

    def cancel(self, job_id):
        self._call(self._client().messages.batches.cancel, job_id)


# ---------------------------------------------------------------- Gemini batch mode

_GEMINI_STATES = {"JOB_STATE_PENDING": "pending", "JOB_STATE_QUEUED": "pending", "JOB_STATE_RUNNING": "running",
                  "JOB_STATE_SUCCEEDED": "ended", "JOB_STATE_FAILED": "failed", "JOB_STATE_CANCELLING": "cancelling",
                  "JOB_STATE_CANCELLED": "cancelled", "JOB_STATE_EXPIRED": "expired",
                  "JOB_STATE_PARTIALLY_SUCCEEDED": "ended"}


class GeminiBatch(Backend):
    def _client(self):
        return self.adapter._client(self.auth, self.read)

    def inlined(self, cid: str, request: Request) -> dict[str, Any]:
        item: dict[str, Any] = {"contents": self.adapter._contents(request), "metadata": {"key": cid}}
        config = self.adapter._config(request)
        if config:
            item["config"] = config
        return item

    def submit(self, items):
        job = self._call(self._client().batches.create, model=self.model,
                         src=[self.inlined(cid, r) for cid, r in items],
                         config={"display_name": f"jupyter-llm {len(items)} rows"})
        return job.name

    def _job(self, job_id):
        return self._call(self._client().batches.get, name=job_id)

    def status(self, job_id):
        job = self._job(job_id)
        state = str(getattr(job.state, "value", job.state) or "")
        detail = state.removeprefix("JOB_STATE_").lower()
        if job.error is not None:
            detail += f": {getattr(job.error, 'message', '') or job.error}"
        return JobStatus(_GEMINI_STATES.get(state, "running"), detail=detail)

    def results(self, job_id):
        from .providers import _wire
        job = self._job(job_id)
        responses = (job.dest.inlined_responses if job.dest is not None else None) or []
        for n, item in enumerate(responses):
            cid = (item.metadata or {}).get("key") or f"row-{n}"
            if item.error is not None:
                status = int(getattr(item.error, "code", 0) or 500)
                status = {3: 400, 7: 403, 5: 404, 8: 429, 4: 504, 13: 500, 14: 503}.get(status, status)
                yield cid, _failure(_wire.status_error(self.spec.id, status if status >= 400 else 500,
                                                       getattr(item.error, "message", "") or "", model=self.model,
                                                       secret=self.auth.secret))
                continue
            r = item.response
            u = r.usage_metadata if r is not None else None
            cand = (r.candidates or [None])[0] if r is not None else None
            text = "".join(p.text or "" for p in (cand.content.parts or []) if not getattr(p, "thought", False)) \
                if cand is not None and cand.content is not None else ""
            yield cid, Outcome("ok", text, Usage((u.prompt_token_count or 0) if u else 0,
                                                 (u.candidates_token_count or 0) if u else 0),
                               _wire.finish_reason(cand.finish_reason if cand is not None else None))

    def cancel(self, job_id):
        self._call(self._client().batches.cancel, name=job_id)


def backend(session, target: Target) -> Backend:
    """The batch backend of a target's provider; BAD_ARGUMENT for providers with no batch API here."""
    kind = session._spec(target).kind
    if target.is_local or kind not in ("openai-compatible", "anthropic", "gemini"):
        raise LLMError("BAD_ARGUMENT", f"{target} has no provider batch API; --batch works with OpenAI and "
                       "OpenAI-compatible endpoints that serve /v1/batches, Anthropic and Gemini",
                       hint="for local models use a pool: [local] pool = [...] and target local:pool")
    return {"openai-compatible": OpenAIBatch, "anthropic": AnthropicBatch, "gemini": GeminiBatch}[kind](session, target)
