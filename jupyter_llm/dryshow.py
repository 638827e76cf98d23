"""`%%llm --dry-run --show`: print exactly what each target would receive (the request body its adapter
would hand the SDK, images shortened), and whether policy would let it go; nothing is sent."""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from .errors import LLMError


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


def payload(session, target, request) -> dict[str, Any]:
    """The body the target's adapter would build for `request` (normalized messages where it has no builder)."""
    spec = session._spec(target)
    adapter = session.provider(target)
    model = target.model or spec.default_model
    if spec.kind == "llamacpp":
        from .providers.openai_compat import OpenAICompatProvider
        adapter = OpenAICompatProvider(replace(spec, kind="openai-compatible", base_url="http://127.0.0.1/v1"))
        model = target.model or "(the server's model)"
    builder = getattr(adapter, "_params", None)
    if builder is not None and model:
        try:
            return _shorten(json.loads(json.dumps(builder(model, request), default=str)))
        except LLMError:
            raise
        except Exception:
            pass
    body = {"model": model, "system": request.system, "messages": request.messages,
            "temperature": request.temperature, "max_tokens": request.max_tokens, "top_p": request.top_p}
    return _shorten(json.loads(json.dumps({k: v for k, v in body.items() if v is not None}, default=str)))


def verdict(session, target, request) -> str:
    """"would send" or the BLOCKED line policy would give (local-only, disabled, protected values)."""
    from .policy import enforce
    from .sensitive import check_request
    try:
        enforce(target.provider, session.config, target=target)
        check_request(target, request, session.config)
    except LLMError as exc:
        return exc.line()
    return "would send"


def show_cell(magics, args, cell: str):
    from .mapcell import cell_extras
    from .sensitive import mark_content
    session = magics.session
    prompt, extra = cell_extras(magics, args, cell)
    prompt, extra = mark_content(prompt, extra, cell, magics.shell.user_ns)
    names = list(args.compare or ([args.target] if args.target else []))
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
