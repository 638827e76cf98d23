"""`%%llm --dry-run --show`: print exactly what each target would receive (the request body its adapter
would hand the SDK, images shortened), and whether policy would let it go; nothing is sent."""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from .errors import LLMError
from .events import image_parts


def _shorten(value: Any) -> Any:
    """Image data as `<N base64 characters>` so the listing stays readable; everything else as is."""
    if isinstance(value, dict):
        return {k: (f"<{len(v)} base64 characters>" if isinstance(v, str) and len(v) > 200 and k in ("data", "url", "image_url")
                    else _shorten(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shorten(v) for v in value]
    if isinstance(value, str) and value.startswith("data:") and len(value) > 200:
        return f"<data URL, {len(value)} characters>"
    return value


def _wire(body: dict[str, Any], batch: bool = False) -> dict[str, Any]:
    """The JSON the SDK puts on the wire: `extra_body` fields merged in; for a batch job, without streaming."""
    body = dict(body)
    body.update(body.pop("extra_body", None) or {})
    if batch:
        body.pop("stream", None)
        body.pop("stream_options", None)
    return body


def payload(session, target, request, *, batch: bool = False) -> dict[str, Any]:
    """The body the target's adapter would build for `request` (normalized messages where it has no builder),
    after the capability checks' choices (a schema as instructions for a model without structured output)."""
    from .capcheck import adapt
    request = adapt(session.config, target, request)[0]
    spec = session._spec(target)
    adapter = session.provider(target)
    model = target.model or spec.default_model
    if spec.kind == "llamacpp":
        from .providers.openai_compat import OpenAICompatProvider
        adapter = OpenAICompatProvider(replace(spec, kind="openai-compatible", base_url="http://127.0.0.1/v1"))
        model = target.model or "(the server's model)"
    builder = getattr(adapter, "_params", None)
    if builder is None and hasattr(adapter, "_contents") and hasattr(adapter, "_config"):  # Gemini
        def builder(m, r):
            return {"model": m, "contents": adapter._contents(r), "config": adapter._config(r, m)}
    if builder is not None and model:
        try:
            return _shorten(json.loads(json.dumps(_wire(builder(model, request), batch), default=str)))
        except LLMError:
            raise
        except Exception:
            pass
    body = {"model": model, "system": request.system, "messages": request.messages,
            "temperature": request.temperature, "max_tokens": request.max_tokens, "top_p": request.top_p,
            "schema": request.schema}
    return _shorten(json.loads(json.dumps({k: v for k, v in body.items() if v is not None}, default=str)))


def refusal(session, target, images: bool = False, batch: bool = False) -> str | None:
    """The line that refuses a whole target before anything is sent (local-only mode, a disabled provider,
    images it cannot take, no batch API for --batch), or None. One /props call at most for a llama.cpp
    target with images."""
    from .policy import enforce
    try:
        enforce(target.provider, session.config, target=target)
        if batch:
            from .batch_wire import backend
            backend(session, target)   # a provider without a batch API, or no credential: as --batch says
    except LLMError as exc:
        return exc.line()
    if images:
        from .capcheck import vision
        ok, why = vision(session, target)
        if not ok:
            return LLMError("BAD_ARGUMENT", f"{target} cannot take images: {why}").line()
    return None


def _blocked(session, target, request) -> str | None:
    """The BLOCKED line when `request` carries protected values and `target` is not local, else None."""
    from .sensitive import check_request
    try:
        check_request(target, request, session.config)
    except LLMError as exc:
        return exc.line()
    return None


def row_verdict(session, target, request, refused: str | None = None) -> str:
    """"would send" (noting a schema sent as instructions) or the line that refuses this request."""
    from .capcheck import adapt
    line = refused or _blocked(session, target, request)
    if line:
        return line
    if adapt(session.config, target, request)[1]:
        return f"would send (the schema as instructions: {target} has no structured output)"
    return "would send"


def verdict(session, target, request) -> str:
    """"would send" or the line policy or a capability check would give (local-only, disabled, protected
    values, images the model cannot take)."""
    images = any(image_parts(m.get("content")) for m in request.messages if isinstance(m, dict))
    return row_verdict(session, target, request, refusal(session, target, images))


def show_cell(magics, args, cell: str):
    from .mapcell import cell_extras
    from .sensitive import mark_content
    session = magics.session
    prompt, extra = cell_extras(magics, args, cell)
    prompt, extra = mark_content(prompt, extra, cell, magics.shell.user_ns)
    names = list(args.compare or ([args.target] if args.target else []))
    if args.compare:
        from .compare import _parse_all
        targets = _parse_all(session, names)
    else:
        targets = [session.parse(t) for t in names] or [session.active]
    request = session.build_request(prompt, system=args.system, temperature=args.temperature,
                                    max_tokens=args.max_tokens, context=not args.new)
    if extra.get("content") is not None:
        request.messages[-1] = {"role": "user", "content": extra["content"]}
    if extra.get("schema") is not None:
        request.schema = extra["schema"].request
    shown: dict[str, dict[str, Any]] = {}
    for t in targets:
        body = payload(session, t, request)
        status = verdict(session, t, request)
        shown[str(t)] = {"status": status, "request": body}
        print(f"── {t}: {status} ──")
        print(json.dumps(body, indent=1, ensure_ascii=False))
    print("(dry run: nothing was sent)")
    magics.shell.user_ns["_llm_dry_run"] = shown
    return None


SHOW_ROWS = 3   # rows of a map whose requests are printed in full; the rest follow the same template


def show_map(magics, args, cell: str, data: Any, schema: Any):
    """`%%llm --map DATA --dry-run --show`: per target, the exact requests of the first SHOW_ROWS rows and a
    verdict count over every row (protected values are checked row by row); nothing is sent."""
    from collections import Counter
    from .rows import build_rows
    session = magics.session
    batch = args.batch is not None
    if args.compare and (args.target or batch):   # the same refusals as the map itself
        raise LLMError("BAD_ARGUMENT", "--compare takes every target after it, and --batch sends to one target: "
                       "give targets after --compare only, without --batch")
    if isinstance(args.batch, str) and args.target:
        raise LLMError("BAD_ARGUMENT", f"two targets: {args.target} and --batch {args.batch}; give one")
    if args.compare:
        from .compare import _parse_all
        targets = _parse_all(session, list(args.compare))
    else:
        name = args.batch if isinstance(args.batch, str) else args.target
        targets = [session.parse(name) if name else session.active]
    plan = build_rows(session, cell, data, namespace=magics.shell.user_ns, schema=schema, system=args.system,
                      temperature=args.temperature, max_tokens=args.max_tokens, attach=args.attach or ())
    head = plan.rows[:SHOW_ROWS]
    shown: dict[str, dict[str, Any]] = {}
    for t in targets:
        refused = refusal(session, t, plan.images, batch)   # once per target: policy, images, a batch API
        counts: Counter = Counter()
        for row in plan.rows:
            line = row.error.line() if row.request is None else (refused or _blocked(session, t, row.request))
            counts[line.split(":", 1)[0] if line else "would send"] += 1
        verdicts = ", ".join(f"{n} {word}" for word, n in counts.most_common())
        print(f"══ {t}: {len(plan)} row{'s' if len(plan) != 1 else ''}: {verdicts} ══")
        rows_out = []
        for row in head:
            if row.request is None:
                status, body = row.error.line(), None
            else:
                status, body = row_verdict(session, t, row.request, refused), payload(session, t, row.request, batch=batch)
            rows_out.append({"row": row.label, "status": status, "request": body})
            print(f"── row {row.label!r}: {status} ──")
            if body is not None:
                print(json.dumps(body, indent=1, ensure_ascii=False))
        shown[str(t)] = {"rows": len(plan), "verdicts": dict(counts), "shown": rows_out}
    rest = len(plan) - len(head)
    print(f"(dry run: nothing was sent. {len(plan)} row{'s' if len(plan) != 1 else ''} in all"
          + (f"; the other {rest} follow the same template with their own values)" if rest > 0 else ")"))
    magics.shell.user_ns["_llm_dry_run"] = shown
    return None
