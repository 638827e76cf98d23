"""Config at runtime: aliases set or deleted now and saved to the file with its comments kept (tomlkit),
the effective config shown with secrets masked, and `reload` without a kernel restart (a bad file keeps
the config in force and says why in one CONFIG_ERROR line)."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import LLMError

if TYPE_CHECKING:
    from .config import Config

_ALIAS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_SECRET_KEY = re.compile(r"(secret|token|password|api_key|apikey|authorization|bearer)", re.I)
# A value that looks like a credential inside a longer string (a command with a token in it, a URL with a key).
_SECRET_VALUE = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|[A-Za-z0-9_\-]{32,})")


def _tomlkit():
    try:
        import tomlkit
    except ImportError:  # pragma: no cover - a dependency; say what to do if a broken install lacks it
        raise LLMError("CONFIG_ERROR", "saving the config needs the tomlkit package",
                       hint="pip install tomlkit") from None
    return tomlkit


def _path(config: "Config") -> Path:
    if config.path is not None:
        return Path(config.path)
    from .config import config_path
    return config_path()


def _write(path: Path, text: str) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a config."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".toml", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _edit(path: Path, change) -> None:
    tomlkit = _tomlkit()
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        doc = tomlkit.parse(text)
    except OSError as exc:
        raise LLMError("CONFIG_ERROR", f"{path}: cannot read: {exc}") from None
    except Exception as exc:  # tomlkit's parse errors
        raise LLMError("CONFIG_ERROR", f"{path}: {exc}; not changed", hint="fix the file, then %llm config reload") from None
    change(doc, tomlkit)
    try:
        _write(path, tomlkit.dumps(doc))
    except OSError as exc:
        raise LLMError("CONFIG_ERROR", f"{path}: cannot write: {exc}") from None


def set_alias(session, name: str, target: str) -> str:
    """Make `name` stand for `target` now and in the config file; returns the target as parsed."""
    from .providers import provider_ids
    if not _ALIAS_RE.match(name or ""):
        raise LLMError("BAD_ARGUMENT", f"alias name {name!r} must be a word (letters, digits, _ . -)")
    if name.lower() in provider_ids(session.config) or name.lower() == "local":
        raise LLMError("BAD_ARGUMENT", f"alias {name!r} would hide the provider of the same name",
                       hint="choose another name")
    if target == name:
        raise LLMError("BAD_ARGUMENT", f"alias {name!r} cannot stand for itself")
    parsed = session.parse(target)  # refuse a target that does not parse or names no provider
    aliases = session.config.aliases
    old = aliases.get(name)

    def change(doc, tomlkit):
        table = doc.get("aliases")
        if table is None:
            table = tomlkit.table()
            doc["aliases"] = table
        table[name] = target

    aliases[name] = target
    try:
        from .targets import parse_target
        parse_target(name, session.config)  # catches a loop through other aliases
        _edit(_path(session.config), change)
    except LLMError:  # a loop, or a file that cannot be written: the alias is as it was
        if old is None:
            aliases.pop(name, None)
        else:
            aliases[name] = old
        raise
    session._record_event("alias", {"name": name, "target": target})
    session.notify("settings")
    return str(parsed)


def delete_alias(session, name: str) -> None:
    aliases = session.config.aliases
    if name not in aliases:
        raise LLMError("BAD_ARGUMENT", f"no alias {name!r}", hint="%llm alias lists them")

    def change(doc, tomlkit):
        table = doc.get("aliases")
        if table is not None and name in table:
            del table[name]

    _edit(_path(session.config), change)
    del aliases[name]
    session._record_event("alias", {"name": name, "target": None})
    session.notify("settings")


def reload(session) -> "Config":
    """Re-read the config file into the running session; a bad file raises CONFIG_ERROR and changes nothing."""
    from .config import load_config
    old = session.config
    new = load_config(_path(old), strict=True)
    new.known = old.known            # servers found or started this session
    new.offline = old.offline        # `%llm offline` outlives a reload
    session.config = new
    if session._credentials is not None:
        session._credentials.config = new
    if session._router is not None:
        session._router.config = new
        session._router.buckets.clear()  # limits may have changed
    if getattr(new, "budget_caps", None) != getattr(old, "budget_caps", None) and hasattr(session, "caps"):
        from .budget import SpendCaps
        session.caps = SpendCaps.from_config(new)  # the file's caps changed: they replace this kernel's
    session.settings.update(new.defaults)
    fallback = []
    for text in new.reliability.fallback:
        fallback.append(session.parse(text))
    session.fallback = fallback
    session._record_event("config", {"action": "reload", "path": str(new.path)})
    session.notify("settings")
    return new


def _mask_value(key: str, value: Any) -> Any:
    from .providers import mask
    if isinstance(value, dict):
        return {k: _mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_value(key, v) for v in value]
    if isinstance(value, str):
        if _SECRET_KEY.search(key):
            return mask(value)
        return _SECRET_VALUE.sub(lambda m: mask(m.group(0)), value)
    return value


def effective(session) -> dict[str, Any]:
    """The config in force, as nested dicts, with anything secret masked; credentials by source."""
    from .policy import enabled, is_local, mode
    from .providers import provider_ids, spec_for
    cfg = session.config
    rel = cfg.reliability
    providers = {}
    for pid in provider_ids(cfg):
        try:
            spec = spec_for(pid, cfg)
        except LLMError as exc:
            providers[pid] = {"error": exc.line()}
            continue
        auth = session.credentials.lookup(spec, run_command=False) if spec.needs_key else None
        row = {k: v for k, v in (cfg.providers.get(pid) or {}).items()}
        row.update({"kind": spec.kind, "base_url": spec.base_url or (f"http://{cfg.local_host}:PORT/v1" if pid == "local" else None),
                    "model": spec.default_model, "enabled": enabled(pid, cfg), "local": is_local(pid, cfg),
                    "credential": (f"{auth.method} from {auth.source}" + (f" ({auth.masked})" if auth.secret else ""))
                    if auth else ("none needed" if not spec.needs_key else "missing")})
        providers[pid] = _mask_value(pid, row)
    return {"path": str(_path(cfg)), "exists": _path(cfg).exists(), "mode": mode(cfg), "cloud": cfg.cloud,
            "default": cfg.default, "local": {"host": cfg.local_host, "ports": dict(cfg.local_ports),
                                              "scan": list(cfg.local_scan)},
            "providers": providers, "aliases": dict(cfg.aliases),
            "reliability": {"retries": rel.retries, "timeout": rel.timeout, "connect_timeout": rel.connect_timeout,
                            "backoff": rel.backoff, "max_backoff": rel.max_backoff,
                            "circuit_failures": rel.circuit_failures, "circuit_cooldown": rel.circuit_cooldown,
                            "fallback": list(rel.fallback)},
            "limits": dict(cfg.limits), "budget": {"session_usd": cfg.budget_usd, "caps": {
                f"{p or 'all providers'} {period}": usd for (p, period), usd in getattr(cfg, "budget_caps", {}).items()}},
            "defaults": _mask_value("defaults", dict(cfg.defaults)),
            "error": cfg.error.line() if cfg.error is not None else None}
