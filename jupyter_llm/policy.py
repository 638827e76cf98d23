"""What may leave the machine: local-only mode (`%llm offline`, config `cloud = false`) and providers
switched off in config (`enabled = false`). One check, `enforce`, that the router runs before every
request (single cells, compare, maps, fallbacks) and the session runs before model lists and health checks.

"Local" is decided by where the endpoint is, never by the provider's name: an endpoint whose base URL
host is a loopback address (127.0.0.0/8, ::1, localhost) or this machine's wildcard address is local.
"""
from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .errors import LLMError

if TYPE_CHECKING:
    from .config import Config
    from .targets import Target

SWITCH_HINT = "local-only mode is on (%llm offline on, or cloud = false in the config); turn it off with %llm offline off"


def is_loopback_host(host: str | None) -> bool:
    """True for 127.x.x.x, ::1, localhost (and *.localhost), 0.0.0.0 / :: (this machine)."""
    if not host:
        return False
    host = host.strip().strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if getattr(ip, "ipv4_mapped", None) is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def url_host(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return urlsplit(url if "://" in url else f"http://{url}").hostname
    except ValueError:
        return None


def endpoint_host(provider: str, config: "Config", base_url: str | None = None) -> str | None:
    """The host a request to `provider` goes to (`base_url`: a credential's override, e.g. a gateway)."""
    from .providers import spec_for
    spec = spec_for(provider, config)
    if base_url:
        return url_host(base_url)
    if spec.kind == "llamacpp":
        return config.local_host or "127.0.0.1"
    return url_host(spec.base_url)


def is_local(provider: str, config: "Config", base_url: str | None = None) -> bool:
    """Does a request to `provider` stay on this machine?"""
    try:
        return is_loopback_host(endpoint_host(provider, config, base_url))
    except LLMError:
        return False


def offline(config: "Config") -> bool:
    """Local-only mode: the session's `%llm offline on|off` if given, else the config's `cloud = false`."""
    runtime = getattr(config, "offline", None)
    if runtime is not None:
        return bool(runtime)
    return getattr(config, "cloud", True) is False


def mode(config: "Config") -> str:
    return "local-only" if offline(config) else "cloud allowed"


def enabled(provider: str, config: "Config") -> bool:
    return (config.providers.get(provider) or {}).get("enabled", True) is not False


def enforce(provider: str, config: "Config", base_url: str | None = None, *, what: str = "request",
            target: "Target | str | None" = None) -> None:
    """Raise BLOCKED if a `what` (request, model list, health check) to `provider` may not be sent."""
    name = str(target) if target is not None else provider
    if not enabled(provider, config):
        raise LLMError("BLOCKED", f"provider {provider!r} is disabled (enabled = false under [providers.{provider}] "
                       f"in the config); the {what} to {name} was not sent",
                       hint=f"set enabled = true under [providers.{provider}] and run %llm config reload")
    if offline(config) and not is_local(provider, config, base_url):
        host = None
        try:
            host = endpoint_host(provider, config, base_url)
        except LLMError:
            pass
        where = f" ({host})" if host else ""
        raise LLMError("BLOCKED", f"local-only mode: the {what} to {name}{where} would leave this machine; nothing was sent",
                       hint=SWITCH_HINT)


def visible_providers(ids: list[str], config: "Config") -> list[str]:
    """Providers to offer in the panel and pickers: those not switched off in config."""
    return [p for p in ids if enabled(p, config)]
