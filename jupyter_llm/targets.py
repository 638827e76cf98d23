"""Targets: `provider:model`, `local:PORT[/alias]`, `local:NAME` (a configured port) and aliases."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .errors import LLMError
from .records import record

if TYPE_CHECKING:
    from .config import Config

_PROVIDER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


@record(frozen=True)
class Target:
    """A provider and a model. For `local`, `port` addresses the llama.cpp server (None: discover)
    and `model` is an optional alias for display."""
    provider: str
    model: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        if self.provider == "local":
            if self.port is None:
                return "local" if not self.model else f"local:{self.model}"
            return f"local:{self.port}" + (f"/{self.model}" if self.model else "")
        return self.provider if not self.model else f"{self.provider}:{self.model}"

    @property
    def is_local(self) -> bool:
        return self.provider == "local"


def parse_target(text: str, config: "Config | None" = None, *, _depth: int = 0) -> Target:
    """Parse what the user typed into a Target, resolving config aliases and named local ports.

    Raises LLMError(BAD_ARGUMENT) for anything malformed; unknown providers are checked by the
    provider registry, which knows the configured ones.
    """
    raw = (text or "").strip()
    if not raw:
        raise LLMError("BAD_ARGUMENT", "empty target", hint="write PROVIDER:MODEL, e.g. openai:gpt-4o-mini or local:8081")
    if any(c.isspace() for c in raw):
        raise LLMError("BAD_ARGUMENT", f"target {raw!r} contains spaces", hint="write PROVIDER:MODEL")
    aliases = config.aliases if config is not None else {}
    if raw in aliases:
        if _depth > 8:
            raise LLMError("CONFIG_ERROR", f"alias {raw!r} refers to itself")
        return parse_target(aliases[raw], config, _depth=_depth + 1)
    provider, sep, rest = raw.partition(":")
    if not _PROVIDER_RE.match(provider):
        raise LLMError("BAD_ARGUMENT", f"malformed target {raw!r}", hint="write PROVIDER:MODEL, e.g. openai:gpt-4o-mini or local:8081")
    if sep and not rest:
        raise LLMError("BAD_ARGUMENT", f"target {raw!r} names no model", hint=f"write {provider}:MODEL or just {provider}")
    provider = provider.lower()
    if provider != "local":
        return Target(provider, rest or None)
    return _parse_local(raw, rest, config)


def _parse_local(raw: str, rest: str, config: "Config | None") -> Target:
    if not rest:
        return Target("local")
    head, slash, alias = rest.partition("/")
    if slash and not alias:
        raise LLMError("BAD_ARGUMENT", f"target {raw!r} has an empty alias after '/'")
    if head.isdigit():
        port = int(head)
        if not 0 < port < 65536:
            raise LLMError("BAD_ARGUMENT", f"port {port} in {raw!r} is out of range 1-65535")
        named = config.local_name(port) if config is not None else None
        return Target("local", alias or named, port)
    names = config.local_names() if config is not None else {}
    if head == "pool" and not slash and head not in names:  # [local] pool: see pool.py
        if config is not None and not config.local_pool:
            raise LLMError("BAD_ARGUMENT", f"{raw!r} needs a [local] pool in the config",
                           hint='add [local] pool = ["127.0.0.1:8080", "other-host:8080"]')
        return Target("local", "pool")
    if head in names and not slash:
        return Target("local", head, names[head])
    known = ", ".join(f"local:{n}" for n in names) or "none yet"
    raise LLMError("BAD_ARGUMENT", f"unknown local server {head!r} in {raw!r}",
                   hint=f"use local:PORT, a name from [local].ports or %llm serve --alias ({known}); see %llm discover")
