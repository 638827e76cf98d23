"""The providers' batch protocols for the emulator: OpenAI files + `/v1/batches`, Anthropic Message Batches,
Gemini `:batchGenerateContent` + `batches/{id}` operations.

Jobs progress with time: a job of N rows takes `seconds` (default 2, `Emulator.batch_config(seconds=..)`
or the model-name trigger `batch-secs-N`) and rows finish in order. Triggers in the model name:
`batch-expire` (the window passes with half the rows done: expired), `batch-fail` (the job fails
validation). A row whose prompt contains `[fail]` fails on its own (HTTP 400 inside the job: partial
failure). `Emulator.finish_batches()` completes every running job at once.
"""
from __future__ import annotations

import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from .protocols import WIRES, instance

FAIL_MARK = "[fail]"
CANCEL_SECONDS = 0.3


@dataclass
class Job:
    id: str
    wire: str                       # openai | anthropic | gemini
    prefix: str
    model: str
    rows: list[tuple[str, dict]]    # (custom id, request body as the wire's chat endpoint takes it)
    created: float
    seconds: float
    expire: bool = False
    fail: bool = False
    cancelled_at: float | None = None
    files: dict[str, str] = field(default_factory=dict)
    retrieves: int = 0

    def done_rows(self, now: float) -> int:
        """Rows finished by `now` (or by the cancel)."""
        t = min(now, self.cancelled_at) if self.cancelled_at is not None else now
        frac = 1.0 if self.seconds <= 0 else max(0.0, min(1.0, (t - self.created) / self.seconds))
        if self.expire:
            frac = min(frac, 0.5)
        return int(len(self.rows) * frac)

    def state(self, now: float) -> str:
        """running | ended | expired | cancelled | failed (our words; each wire renders its own)."""
        if self.fail:
            return "failed"
        if self.cancelled_at is not None:  # providers take a moment to stop (OpenAI: up to 10 min)
            return "cancelling" if now - self.cancelled_at < CANCEL_SECONDS else "cancelled"
        if now - self.created >= self.seconds:
            return "expired" if self.expire else "ended"
        return "running"


class Batches:
    """Batch state of one emulator."""

    def __init__(self):
        self.lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self.files: dict[str, bytes] = {}
        self.seconds = 2.0

    def config(self, seconds: float | None = None) -> None:
        if seconds is not None:
            self.seconds = float(seconds)

    def finish_all(self) -> None:
        with self.lock:
            for job in self.jobs.values():
                job.created = min(job.created, time.time() - job.seconds)

    def add(self, wire: str, prefix: str, model: str, rows: list[tuple[str, dict]]) -> Job:
        seconds = self.seconds
        if m := re.search(r"batch-secs-(\d+(?:\.\d+)?)", model):
            seconds = float(m[1])
        prefix_id = {"openai": "batch_", "anthropic": "msgbatch_", "gemini": "batches/"}[wire]
        job = Job(prefix_id + secrets.token_hex(8), wire, prefix, model, rows, time.time(), seconds,
                  expire="batch-expire" in model, fail="batch-fail" in model)
        with self.lock:
            self.jobs[job.id] = job
        return job


def _answer(wire_name: str, model: str, body: dict, prefix: str) -> tuple[int, dict]:
    """(status, reply body) of one row as the interactive endpoint would answer it."""
    wire = WIRES[wire_name]
    last_user, everything = wire.prompt(body)
    if FAIL_MARK in everything:  # a plain 400 for this row alone, as each wire words it
        msg = "Invalid value for 'messages': the request was rejected (emulated [fail] row)."
        if wire_name == "anthropic":
            return 400, {"type": "error", "error": {"type": "invalid_request_error", "message": msg}}
        if wire_name == "gemini":
            return 400, {"error": {"code": 400, "message": msg, "status": "INVALID_ARGUMENT"}}
        return 400, {"error": {"message": msg, "type": "invalid_request_error", "param": "messages", "code": None}}
    wanted = wire.schema(body)
    if wanted is not None:  # structured output, as the interactive endpoint answers it
        text = json.dumps(instance(wanted, last_user))
        return 200, wire.complete(model, text, max(1, len(everything.split())), max(1, len(text.split())), "stop")
    words = re.findall(r"\S+\s*", f"Hello from {prefix} {model}: you said {last_user}")
    finish = "stop"
    limit = wire.max_tokens(body)
    if limit and len(words) > limit:
        words, finish = words[:limit], "length"
    return 200, wire.complete(model, "".join(words), max(1, len(everything.split())), len(words), finish)


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


# ---------------------------------------------------------------- routing

def route(wire: str, method: str, rest: str) -> str | None:
    """The batch route name for a request, or None when it is not a batch call."""
    if wire == "openai":
        for name, pattern in (("file_upload", r"v1/files"), ("file_content", r"v1/files/[^/]+/content"),
                              ("file_get", r"v1/files/[^/]+"), ("batch_list", r"v1/batches"),
                              ("batch_get", r"v1/batches/[^/]+"), ("batch_cancel", r"v1/batches/[^/]+/cancel")):
            if re.fullmatch(pattern, rest):
                if name in ("file_upload",) and method != "POST":
                    return None
                if name == "batch_list" and method == "POST":
                    return "batch_create"
                return name
        return None
    if wire == "anthropic":
        if rest == "v1/messages/batches":
            return "batch_create" if method == "POST" else "batch_list"
        if re.fullmatch(r"v1/messages/batches/[^/]+", rest):
            return "batch_get"
        if re.fullmatch(r"v1/messages/batches/[^/]+/(cancel|results)", rest):
            return "batch_" + rest.rsplit("/", 1)[1]
        return None
    version, _, api = rest.partition("/")
    if method == "POST" and re.fullmatch(r"models/[^/]+:batchGenerateContent", api):
        return "batch_create"
    if re.fullmatch(r"batches/[^/:]+:cancel", api):
        return "batch_cancel"
    if re.fullmatch(r"batches/[^/:]+", api):
        return "batch_get"
    if api == "batches":
        return "batch_list"
    return None


def handle(handler, name: str, wire: str, prefix: str, rest: str, raw: bytes) -> None:
    """Answer one batch call on `handler` (the emulator's request handler)."""
    store: Batches = handler.emu.batches
    fn = globals()[f"_{wire}_{name}"] if f"_{wire}_{name}" in globals() else None
    if fn is None:
        return handler._json(404, {"error": {"message": f"emulator has no batch route {name} for {wire}"}})
    status, body, *ctype = fn(handler, store, prefix, rest, raw)
    if ctype:
        data = body if isinstance(body, bytes) else body.encode()
        handler.send_response(status)
        handler.send_header("Content-Type", ctype[0])
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
        return
    handler._json(status, body)


def _job(store: Batches, job_id: str, wire: str) -> Job | None:
    with store.lock:
        job = store.jobs.get(job_id)
    return job if job is not None and job.wire == wire else None


def _not_found(wire: str, what: str):
    if wire == "anthropic":
        return 404, {"type": "error", "error": {"type": "not_found_error", "message": f"{what} not found"}}
    if wire == "gemini":
        return 404, {"error": {"code": 404, "message": f"{what} not found", "status": "NOT_FOUND"}}
    return 404, {"error": {"message": f"No such {what}", "type": "invalid_request_error", "param": None, "code": None}}


# ---------------------------------------------------------------- OpenAI

def _openai_file_upload(h, store, prefix, rest, raw):
    ctype = h.headers.get("Content-Type", "")
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw)
    fields = {}
    filename = "upload.jsonl"
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[name] = part.get_payload(decode=True)
        if name == "file":
            filename = part.get_filename() or filename
    if "file" not in fields or fields.get("purpose", b"").decode() != "batch":
        return 400, {"error": {"message": "a file and purpose=batch are required", "type": "invalid_request_error",
                               "param": None, "code": None}}
    fid = "file-" + secrets.token_hex(8)
    with store.lock:
        store.files[fid] = fields["file"]
    return 200, _file_obj(fid, filename, len(fields["file"]), "batch")


def _file_obj(fid, filename, size, purpose):
    return {"id": fid, "object": "file", "bytes": size, "created_at": int(time.time()), "filename": filename,
            "purpose": purpose, "status": "processed"}


def _openai_file_get(h, store, prefix, rest, raw):
    fid = rest.split("/")[2]
    with store.lock:
        data = store.files.get(fid)
    if data is None:
        return _not_found("openai", "file")
    return 200, _file_obj(fid, fid + ".jsonl", len(data), "batch_output")


def _openai_file_content(h, store, prefix, rest, raw):
    fid = rest.split("/")[2]
    with store.lock:
        data = store.files.get(fid)
    if data is None:
        return _not_found("openai", "file")
    return 200, data, "application/octet-stream"


def _openai_batch_create(h, store, prefix, rest, raw):
    body = json.loads(raw or b"{}")
    with store.lock:
        data = store.files.get(body.get("input_file_id", ""))
    if data is None:
        return _not_found("openai", "file")
    if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
        return 400, {"error": {"message": "endpoint must be /v1/chat/completions and completion_window 24h here",
                               "type": "invalid_request_error", "param": None, "code": None}}
    rows, model, seen = [], "", set()
    for line in data.decode().splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        cid = item.get("custom_id")
        if not cid or cid in seen or item.get("url") != "/v1/chat/completions" or item.get("method") != "POST":
            return 400, {"error": {"message": f"invalid batch line (custom_id {cid!r} missing, repeated, or wrong url)",
                                   "type": "invalid_request_error", "param": None, "code": None}}
        seen.add(cid)
        model = model or item["body"].get("model", "")
        rows.append((cid, item["body"]))
    job = store.add("openai", prefix, model, rows)
    job.files["input"] = body["input_file_id"]
    h.emu._note_batch(rows)
    return 200, _openai_obj(store, job, polled=False)


def _openai_obj(store: Batches, job: Job, polled: bool = True) -> dict:
    """The batch object as OpenAI returns it. `polled`: a status request by the client (the create's own
    reply is not one), counted in job.retrieves."""
    now = time.time()
    state = job.state(now)
    done = job.done_rows(now)
    failed = sum(1 for _, b in job.rows[:done] if FAIL_MARK in WIRES["openai"].prompt(b)[1])
    status = {"running": "in_progress", "ended": "completed", "expired": "expired", "cancelled": "cancelled",
              "cancelling": "cancelling", "failed": "failed"}[state]
    if job.retrieves == 0 and state == "running":
        status = "validating"
    job.retrieves += 1 if polled else 0
    out: dict[str, Any] = {"id": job.id, "object": "batch", "endpoint": "/v1/chat/completions", "errors": None,
                           "input_file_id": job.files.get("input"), "completion_window": "24h", "status": status,
                           "output_file_id": None, "error_file_id": None, "created_at": int(job.created),
                           "in_progress_at": int(job.created), "expires_at": int(job.created + 86400),
                           "completed_at": None, "failed_at": None, "expired_at": None, "cancelled_at": None,
                           "request_counts": {"total": len(job.rows), "completed": 0 if state == "failed" else done - failed,
                                              "failed": 0 if state == "failed" else failed},
                           "metadata": {"source": "jupyter-llm"}}
    if state == "failed":
        out["errors"] = {"object": "list", "data": [{"code": "invalid_request", "message": "The batch failed validation "
                                                     "(emulated batch-fail)", "param": None, "line": 1}]}
        out["failed_at"] = int(now)
        return out
    if state == "cancelling":
        out["cancelling_at"] = int(job.cancelled_at)
    if state in ("running", "cancelling"):
        return out
    out[{"ended": "completed_at", "expired": "expired_at", "cancelled": "cancelled_at"}[state]] = int(now)
    if "output" not in job.files:
        ok_lines, err_lines = [], []
        for n, (cid, body) in enumerate(job.rows):
            if n >= done:
                if state == "expired":
                    err_lines.append({"id": f"batch_req_{n}", "custom_id": cid, "response": None,
                                      "error": {"code": "batch_expired", "message": "This request could not be executed "
                                                "before the completion window expired."}})
                continue
            status_code, reply = _answer("openai", body.get("model", ""), body, job.prefix)
            line = {"id": f"batch_req_{n}", "custom_id": cid,
                    "response": {"status_code": status_code, "request_id": f"req_{n}", "body": reply}, "error": None}
            (ok_lines if status_code == 200 else err_lines).append(line)
        with store.lock:
            for kind, lines in (("output", ok_lines), ("error", err_lines)):
                if lines:
                    fid = "file-" + secrets.token_hex(8)
                    store.files[fid] = ("\n".join(json.dumps(x) for x in lines) + "\n").encode()
                    job.files[kind] = fid
    out["output_file_id"] = job.files.get("output")
    out["error_file_id"] = job.files.get("error")
    return out


def _openai_batch_get(h, store, prefix, rest, raw):
    job = _job(store, rest.split("/")[2], "openai")
    return (200, _openai_obj(store, job)) if job else _not_found("openai", "batch")


def _openai_batch_cancel(h, store, prefix, rest, raw):
    job = _job(store, rest.split("/")[2], "openai")
    if job is None:
        return _not_found("openai", "batch")
    if job.state(time.time()) == "running":
        job.cancelled_at = time.time()
    out = _openai_obj(store, job)
    return 200, out


def _openai_batch_list(h, store, prefix, rest, raw):
    with store.lock:
        jobs = [j for j in store.jobs.values() if j.wire == "openai"]
    data = [_openai_obj(store, j) for j in jobs]
    return 200, {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                 "last_id": data[-1]["id"] if data else None, "has_more": False}


# ---------------------------------------------------------------- Anthropic

def _anthropic_obj(h, job: Job) -> dict:
    now = time.time()
    state, done = job.state(now), job.done_rows(now)
    failed = sum(1 for _, b in job.rows[:done] if FAIL_MARK in WIRES["anthropic"].prompt(b)[1])
    counts = {"processing": 0, "succeeded": done - failed, "errored": failed, "canceled": 0, "expired": 0}
    rest = len(job.rows) - done
    key = {"running": "processing", "cancelling": "processing", "cancelled": "canceled",
           "expired": "expired"}.get(state, "processing")
    counts[key] += rest
    ended = state not in ("running", "cancelling")
    return {"id": job.id, "type": "message_batch",
            "processing_status": "ended" if ended else ("canceling" if state == "cancelling" else "in_progress"),
            "request_counts": counts, "created_at": _iso(job.created), "expires_at": _iso(job.created + 86400),
            "ended_at": _iso(now) if ended else None, "archived_at": None,
            "cancel_initiated_at": _iso(job.cancelled_at),
            "results_url": f"{h.emu.base}/anthropic/v1/messages/batches/{job.id}/results" if ended else None}


def _anthropic_batch_create(h, store, prefix, rest, raw):
    body = json.loads(raw or b"{}")
    reqs = body.get("requests") or []
    ids = [r.get("custom_id") for r in reqs]
    if not reqs or len(set(ids)) != len(ids) or not all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", i or "") for i in ids):
        return 400, {"type": "error", "error": {"type": "invalid_request_error",
                                                "message": "requests: custom_id must be unique and match ^[a-zA-Z0-9_-]{1,64}$"}}
    rows = [(r["custom_id"], r["params"]) for r in reqs]
    job = store.add("anthropic", prefix, rows[0][1].get("model", ""), rows)
    h.emu._note_batch(rows)
    return 200, _anthropic_obj(h, job)


def _anthropic_batch_get(h, store, prefix, rest, raw):
    job = _job(store, rest.split("/")[3], "anthropic")
    return (200, _anthropic_obj(h, job)) if job else _not_found("anthropic", "message batch")


def _anthropic_batch_cancel(h, store, prefix, rest, raw):
    job = _job(store, rest.split("/")[3], "anthropic")
    if job is None:
        return _not_found("anthropic", "message batch")
    if job.state(time.time()) == "running":
        job.cancelled_at = time.time()
    return 200, _anthropic_obj(h, job)


def _anthropic_batch_list(h, store, prefix, rest, raw):
    with store.lock:
        jobs = [j for j in store.jobs.values() if j.wire == "anthropic"]
    data = [_anthropic_obj(h, j) for j in jobs]
    return 200, {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                 "last_id": data[-1]["id"] if data else None}


def _anthropic_batch_results(h, store, prefix, rest, raw):
    job = _job(store, rest.split("/")[3], "anthropic")
    if job is None:
        return _not_found("anthropic", "message batch")
    now = time.time()
    state, done = job.state(now), job.done_rows(now)
    if state in ("running", "cancelling"):
        return 400, {"type": "error", "error": {"type": "invalid_request_error", "message": "batch is still in progress"}}
    lines = []
    for n, (cid, params) in enumerate(job.rows):
        if n >= done:
            result = {"type": "canceled" if state == "cancelled" else "expired"}
        else:
            status, reply = _answer("anthropic", params.get("model", ""), params, job.prefix)
            result = ({"type": "succeeded", "message": reply} if status == 200 else
                      {"type": "errored", "error": {"type": "error", "error": reply["error"]}})
        lines.append(json.dumps({"custom_id": cid, "result": result}))
    return 200, "\n".join(lines) + "\n", "application/binary"


# ---------------------------------------------------------------- Gemini

def _gemini_obj(job: Job) -> dict:
    now = time.time()
    state, done = job.state(now), job.done_rows(now)
    words = {"running": "BATCH_STATE_RUNNING", "cancelling": "BATCH_STATE_RUNNING", "ended": "BATCH_STATE_SUCCEEDED", "expired": "BATCH_STATE_EXPIRED",
             "cancelled": "BATCH_STATE_CANCELLED", "failed": "BATCH_STATE_FAILED"}
    meta: dict[str, Any] = {"@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
                            "model": f"models/{job.model}", "displayName": "jupyter-llm", "name": job.id,
                            "createTime": _iso(job.created), "updateTime": _iso(now), "state": words[state],
                            "batchStats": {"requestCount": str(len(job.rows)),
                                           "pendingRequestCount": str(len(job.rows) - done)}}
    out: dict[str, Any] = {"name": job.id, "metadata": meta}
    if state in ("running", "cancelling"):
        return out
    out["done"] = True
    meta["endTime"] = _iso(now)
    if state == "ended":
        responses = []
        for cid, req in job.rows:
            status, reply = _answer("gemini", job.model, req, job.prefix)
            item = {"response": reply} if status == 200 else {"error": {"code": 3, "message": reply["error"]["message"]}}
            item["metadata"] = {"key": cid}
            responses.append(item)
        meta["output"] = {"inlinedResponses": {"inlinedResponses": responses}}
    elif state == "failed":
        out["error"] = {"code": 3, "message": "the batch failed validation (emulated batch-fail)"}
    return out


def _gemini_batch_create(h, store, prefix, rest, raw):
    body = json.loads(raw or b"{}")
    model = rest.partition("/")[2].split("/", 1)[1].rsplit(":", 1)[0]
    reqs = (((body.get("batch") or {}).get("inputConfig") or {}).get("requests") or {}).get("requests") or []
    if not reqs:
        return 400, {"error": {"code": 400, "message": "batch.inputConfig.requests is empty", "status": "INVALID_ARGUMENT"}}
    rows = [(((r.get("metadata") or {}).get("key") or f"row-{n}"), r.get("request") or {}) for n, r in enumerate(reqs)]
    job = store.add("gemini", prefix, model, rows)
    h.emu._note_batch(rows)
    return 200, _gemini_obj(job)


def _gemini_batch_get(h, store, prefix, rest, raw):
    job = _job(store, rest.partition("/")[2], "gemini")
    return (200, _gemini_obj(job)) if job else _not_found("gemini", "batch")


def _gemini_batch_cancel(h, store, prefix, rest, raw):
    job = _job(store, rest.partition("/")[2].removesuffix(":cancel"), "gemini")
    if job is None:
        return _not_found("gemini", "batch")
    if job.state(time.time()) == "running":
        job.cancelled_at = time.time()
    return 200, {}


def _gemini_batch_list(h, store, prefix, rest, raw):
    with store.lock:
        jobs = [j for j in store.jobs.values() if j.wire == "gemini"]
    return 200, {"operations": [_gemini_obj(j) for j in jobs]}
