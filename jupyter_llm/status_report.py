"""What the session reports about itself and its providers (status, provider table, health, model catalogue), kept out of the coordinating Session."""
from __future__ import annotations

from typing import Any

from .errors import LLMError
from .targets import Target


def check(session, target: Target):
    """Live health check of `target` (policy first: local-only mode and disabled providers send nothing)."""
    from .providers import Health
    spec = session._spec(target)
    try:
        from .policy import enforce
        enforce(target.provider, session.config, target=target, what="health check")
        auth = session.credentials.resolve(spec)
        if auth is not None and getattr(auth, "base_url", None):
            enforce(target.provider, session.config, auth.base_url, target=target, what="health check")
        return session.provider(target).health(target, auth)
    except LLMError as exc:
        return Health(False, exc.line())


def models(session, provider: str | None = None):
    """The models of `provider` (default: the active one) with their prices; the built-in list when local-only."""
    target = Target(provider.lower()) if provider else Target(session.active.provider)
    spec = session._spec(target)
    from .budget import with_prices
    from .policy import enforce, offline
    auth = session.credentials.lookup(spec)
    try:
        enforce(target.provider, session.config, getattr(auth, "base_url", None), what="model list")
    except LLMError:
        if not (offline(session.config) and spec.needs_key):
            raise
        auth = None  # local-only mode: the built-in catalogue, nothing sent
    return with_prices(session, target, session.provider(target).list_models(auth))


def providers(session, *, probe: bool = True) -> list[dict[str, Any]]:
    """One row per provider: configured?, auth method, credential source, masked key, health."""
    from concurrent.futures import ThreadPoolExecutor
    from .providers import provider_ids
    from .policy import enabled, is_local, offline
    rows = []
    for pid in provider_ids(session.config):
        spec = session._spec(Target(pid))
        on, here = enabled(pid, session.config), is_local(pid, session.config)
        auth = session.credentials.lookup(spec, run_command=False) if spec.needs_key else None
        rows.append({"provider": pid, "kind": spec.kind, "configured": (not spec.needs_key) or auth is not None,
                     "auth": auth.method if auth else spec.auth, "source": auth.source if auth else ("-" if spec.needs_key else "none needed"),
                     "key": auth.masked if auth and auth.secret else "", "enabled": on, "local": here,
                     "health": "" if on and (here or not offline(session.config)) else
                     ("disabled in config" if not on else "blocked (local-only mode)")})
    if probe:
        for r in rows:
            if not r["configured"] and not r["health"]:
                r["health"] = "no key"
        todo = [r for r in rows if r["configured"] and not r["health"]]
        session.router.preload([Target(r["provider"]) for r in todo])  # SDK imports one at a time, not racing
        with ThreadPoolExecutor(max_workers=8) as pool:
            for row, health in zip(todo, pool.map(lambda r: session.check(Target(r["provider"])), todo)):
                row["health"] = health_word(health)
    return rows


def status(session, *, probe: bool = True) -> dict[str, Any]:
    """The active target, its credential (masked), endpoint, usage, budget, settings, mode, quota and health."""
    from .redact import safe_url
    target = session.active
    spec = session._spec(target)
    auth = session.credentials.lookup(spec, run_command=False) if spec.needs_key else None
    total = session.usage.summary()
    tap = getattr(session, "_tap", None)
    info = {"target": str(target), "provider": target.provider,
            "model": target.model or spec.default_model or "",
            "auth": auth.method if auth else ("none" if not spec.needs_key else "missing"),
            "source": auth.source if auth else ("-" if spec.needs_key else "none needed"),
            "key": auth.masked if auth and auth.secret else "",
            "base_url": safe_url((auth.base_url if auth and auth.base_url else None) or base_url(session, target, spec)),
            "conversation": len(session.conversation) // 2, "requests": total["requests"],
            "input_tokens": total["input_tokens"], "output_tokens": total["output_tokens"],
            "cost": total["cost"], "budget": session.budget, "budget_left": session.budget_left,
            "fallback": [str(t) for t in session.fallback], "settings": dict(session.settings),
            "last_latency": session.last.latency if session.last else None, "health": "",
            "mode": session.mode, "quota": quota(target.provider),
            "recording": tap.describe() if tap is not None and tap.active else ""}
    if probe:
        info["health"] = "no key" if spec.needs_key and auth is None else health_word(session.check(target))
    return info


def base_url(session, target: Target, spec) -> str:
    """The endpoint `target` is sent to when no credential names one (a local target without a port: the scan range)."""
    if target.is_local:
        if target.port is None:
            lo, hi = session.config.local_scan
            return f"http://{session.config.local_host}:{{first server on ports {lo}-{hi}}}/v1"
        return f"http://{session.config.local_host}:{target.port}/v1"
    return spec.base_url or ""


def health_word(health) -> str:
    """`ok (...)`, `no key (...)` when the only problem is a missing credential, else `down (...)`."""
    word = "ok" if health.ok else ("no key" if str(health.detail).startswith("MISSING_CREDENTIALS") else "down")
    return word + (f" ({health.detail})" if health.detail else "")


def quota(provider: str) -> str:
    """The provider's last-seen rate-limit headroom (quota.py), or ""."""
    from .quota import describe
    return describe(provider)
