"""Validate a credential before it is stored: one cheap authenticated call (the model list, or a
1-token request where the provider has no list). The secret is used for that call only."""
from __future__ import annotations

from typing import Any

from .errors import LLMError

VALID, INVALID, UNCHECKED = "valid", "invalid", "unchecked"
_NO_LIST = {"MODEL_NOT_FOUND"}  # a 404 on the list route: the endpoint has no model list


def check(session, provider: str, secret: str, method: str = "api_key", **extra: Any) -> tuple[str, str]:
    """(`valid` | `invalid` | `unchecked`, one-line detail). Never stores anything, never shows the secret."""
    from .events import Request
    from .policy import enforce
    from .providers import Auth
    from .targets import Target
    target = Target(provider.lower())
    spec = session._spec(target)
    if method == "command":
        return UNCHECKED, "a command's token is checked when it is first used"
    try:
        enforce(spec.id, session.config, extra.get("base_url"), what="credential check")
    except LLMError as exc:
        return UNCHECKED, exc.line()
    auth = Auth(secret=secret, method=method, source="new", base_url=extra.get("base_url"),
                organization=extra.get("organization"), project=extra.get("project"))
    adapter = session.provider(target)
    if hasattr(adapter, "preload"):
        adapter.preload()
    from .providers._wire import no_model_list
    live = getattr(adapter, "_live_ids", None)  # the raw list call: list_models falls back to the catalogue
    try:
        models = live(auth) if live is not None else adapter.list_models(auth)
        return VALID, f"the {spec.id} model list answered ({len(models)} models)"
    except NotImplementedError:
        pass
    except LLMError as exc:
        verdict = _verdict(exc)
        if verdict is not None or not (exc.code in _NO_LIST or no_model_list(exc)):
            return verdict or UNCHECKED, exc.line()
    try:  # no model list here: the smallest real request
        model = Target(spec.id, spec.default_model) if spec.default_model else target
        events = adapter.stream(model, Request(messages=[{"role": "user", "content": "hi"}], max_tokens=1,
                                               timeout=15), auth)
        for _ in events:
            pass
        return VALID, f"a 1-token request to {model} was answered"
    except LLMError as exc:
        return _verdict(exc) or UNCHECKED, exc.line()


def _verdict(exc: LLMError) -> str | None:
    if exc.code in ("INVALID_CREDENTIALS", "MISSING_CREDENTIALS"):
        return INVALID
    if exc.code == "RATE_LIMITED":
        return VALID  # the key was accepted; the provider only asks us to wait
    return None
