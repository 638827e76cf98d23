"""The TOML config file (SPEC 8): where it lives, what it may hold, and errors that name file:line:key."""
from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import LLMError
# Re-exported so `from jupyter_llm.config import X` keeps working for every name that lived here.
from .config_checks import (MAX_PRICE, MAX_USD, _Checker, _check_url, _finite, _is_number,  # noqa: F401
                            _price, _seconds, _usd)
from .settings import _SETTINGS, FORMATS, MAX_SECONDS, coerce_setting  # noqa: F401
from .validation import (_DAY, _HOST, _NONZERO_MIN, FALLBACK, NUMBERS, Num, _pattern,  # noqa: F401
                         _unencodable, check_host, check_number, numeric_spec)

if TYPE_CHECKING:
    from .local_servers import KnownServers

APP = "jupyter-llm"
DEFAULT_SCAN = (8080, 8092)


def config_path() -> Path:
    """`JUPYTER_LLM_CONFIG`, else the platform config dir (~/.config/jupyter-llm/config.toml)."""
    env = os.environ.get("JUPYTER_LLM_CONFIG")
    if env:
        return Path(env).expanduser()
    import platformdirs
    return Path(platformdirs.user_config_dir(APP, appauthor=False)) / "config.toml"


def data_dir() -> Path:
    """Where history and cache live: `JUPYTER_LLM_DATA_DIR`, else the platform data dir."""
    env = os.environ.get("JUPYTER_LLM_DATA_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs
    return Path(platformdirs.user_data_dir(APP, appauthor=False))


@dataclass
class Reliability:
    retries: int = 3
    timeout: float = 60.0          # seconds one attempt may wait for the answer to start
    stall_timeout: float = 60.0    # seconds of silence allowed once it started (keep-alives do not count)
    deadline: float = 600.0        # seconds for a whole answer: retries and the fallback chain included
    connect_timeout: float = 10.0
    backoff: float = 0.5           # first retry wait, doubled each time, with full jitter
    max_backoff: float = 20.0
    circuit_failures: int = 5      # consecutive failures that open a target's circuit
    circuit_cooldown: float = 30.0  # seconds before a half-open trial
    fallback: list[str] = field(default_factory=list)


@dataclass
class Config:
    path: Path | None = None
    default: str = "local"
    local_host: str = "127.0.0.1"
    local_ports: dict[int, str] = field(default_factory=dict)
    local_scan: tuple[int, int] = DEFAULT_SCAN
    local_pool: list[tuple[str, int]] = field(default_factory=list)  # [local] pool: (host, port) of each server
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    reliability: Reliability = field(default_factory=Reliability)
    limits: dict[str, dict[str, float]] = field(default_factory=dict)  # provider -> {rpm, tpm}
    budget_usd: float | None = None   # the session cap ([budget] session_usd), kept for older callers
    budget_caps: dict[tuple[str | None, str], float] = field(default_factory=dict)  # (provider|None, period) -> USD
    defaults: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens, system, format, cache...
    error: LLMError | None = None  # set when the file was bad and defaults were used instead
    cloud: bool = True  # `cloud = false`: local-only mode (policy.py)
    offline: bool | None = field(default=None, compare=False)  # not from the file: `%llm offline on|off`
    # Not from the file: local servers found or started in this session (see local_servers.py).
    known: "KnownServers" = field(default_factory=lambda: _known(), compare=False, repr=False)

    def local_name(self, port: int) -> str | None:
        """The name `local:NAME` of a port: from [local].ports, else given by `%llm serve --alias`."""
        if port in self.local_ports:
            return self.local_ports[port]
        entry = self.known.get(port)
        return entry.name if entry is not None else None

    def local_names(self) -> dict[str, int]:
        """Every `local:NAME` name and its port (configured names win)."""
        names = self.known.names()
        names.update({name: port for port, name in self.local_ports.items()})
        return names


def _known():
    from .local_servers import KnownServers
    return KnownServers()


def load_config(path: Path | None = None, *, strict: bool = False) -> Config:
    """Read the config. A bad file gives CONFIG_ERROR naming file, line and key; unless `strict`,
    the error is kept on `Config.error` and defaults are used, so the extension still loads."""
    path = config_path() if path is None else Path(path)
    try:
        cfg = _load(path)
    except LLMError as exc:
        if strict:
            raise
        return Config(path=path, error=exc)
    return cfg


def _load(path: Path) -> Config:
    cfg = Config(path=path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return cfg
    except (OSError, ValueError) as exc:
        raise LLMError("CONFIG_ERROR", f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, socket or device)"
        raise LLMError("CONFIG_ERROR", f"{path}: is {what}; it was not read",
                       hint="point JUPYTER_LLM_CONFIG at a TOML file")
    if st.st_size > 1_000_000:
        raise LLMError("CONFIG_ERROR", f"{path}: is {st.st_size} bytes; a config file is at most 1 MB")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LLMError("CONFIG_ERROR", f"{path}: cannot read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise LLMError("CONFIG_ERROR", f"{path}: {exc or 'nested too deeply'}") from None
    check = _Checker(path, text)

    known = {"default", "cloud", "local", "providers", "aliases", "reliability", "budget", "limits", "defaults"}
    for key in data:
        if key not in known:
            check.fail(key, f"unknown key {key!r} (known: {', '.join(sorted(known))})")
    if "default" in data:
        cfg.default = check.typed("default", data["default"], str)
    if "cloud" in data:
        cfg.cloud = check.typed("cloud", data["cloud"], bool)

    local = check.table("local", data.get("local", {}))
    for key, value in local.items():
        if key == "host":
            cfg.local_host = check.typed("local.host", value, str)
            try:
                check_host(cfg.local_host, what="local.host")
            except LLMError as exc:
                check.fail("local.host", exc.message.split(": ", 1)[-1])
        elif key == "ports":
            for port, name in check.table("local.ports", value).items():
                if not re.fullmatch(r"[0-9]{1,5}", str(port)):
                    check.fail(f"local.ports.{port}", f"{port!r} is not a port number (1-65535)")
                check.num(f"local.ports.{port}", int(port))
                cfg.local_ports[int(port)] = check.typed(f"local.ports.{port}", name, str)
        elif key == "scan":
            rng = value
            if not isinstance(rng, list) or len(rng) != 2:
                check.fail("local.scan", "must be [first_port, last_port], ports 1-65535")
            for i, p in enumerate(rng):
                if isinstance(p, str):
                    check.fail("local.scan", f"ports must be numbers, got {p!r}")
                check_number(f"local.scan.{i}", p, where=check.where("local.scan"))
            if rng[0] > rng[1]:
                check.fail("local.scan", "must be [first_port, last_port] with first <= last")
            cfg.local_scan = (rng[0], rng[1])
        elif key == "pool":
            from .pool import parse_member
            if not isinstance(value, list) or not value:
                check.fail("local.pool", 'must be a list of "host:port" (or port) entries, e.g. ["127.0.0.1:8080"]')
            for entry in value:
                try:
                    member = parse_member(entry, cfg.local_host)
                except ValueError as exc:
                    check.fail("local.pool", str(exc))
                if member in cfg.local_pool:
                    check.fail("local.pool", f"{entry!r} is listed twice")
                cfg.local_pool.append(member)
        else:
            check.fail(f"local.{key}", f"unknown key {key!r} in [local] (known: host, ports, scan, pool)")

    for name, spec in check.table("providers", data.get("providers", {})).items():
        spec = check.table(f"providers.{name}", spec)
        for key, value in spec.items():
            if key not in _PROVIDER_KEYS:
                check.fail(f"providers.{name}.{key}", f"unknown key {key!r} (known: {', '.join(sorted(_PROVIDER_KEYS))})")
            if key == "ttl":
                check.number(f"providers.{name}.ttl", value, float, minimum=0)
            elif key in ("timeout", "connect_timeout"):
                _seconds(check, f"providers.{name}.{key}", value)
            elif key == "price":
                _price(check, f"providers.{name}.price", value)
            elif numeric_spec(f"providers.{name}.{key}") is not None:
                check.num(f"providers.{name}.{key}", value)
            else:
                check.typed(f"providers.{name}.{key}", value, _PROVIDER_KEYS[key])
        if spec.get("base_url") is not None:
            _check_url(check, f"providers.{name}.base_url", spec["base_url"])
        if spec.get("max_tokens_param") is not None and not re.fullmatch(r"[A-Za-z_][\w]*", spec["max_tokens_param"]):
            check.fail(f"providers.{name}.max_tokens_param", f"must be a parameter name such as max_tokens or "
                       f"max_completion_tokens, got {spec['max_tokens_param']!r}")
        if spec.get("free") is True and "price" in spec:
            check.fail(f"providers.{name}.free", "give either free = true or a price, not both")
        if spec.get("kind") is not None and not re.fullmatch(r"[A-Za-z][\w.-]*", spec["kind"]):
            check.fail(f"providers.{name}.kind", f"malformed kind {spec['kind']!r} (openai-compatible, anthropic, "
                       "gemini, or an installed jupyter_llm.providers entry point)")
        if spec.get("auth") not in (None, "api_key", "gateway", "command", "none"):
            check.fail(f"providers.{name}.auth", f"unknown auth {spec['auth']!r} (api_key, gateway, command, none)")
        if "capabilities" in spec:
            from .capabilities import validate_override
            validate_override(spec["capabilities"], check.where(f"providers.{name}.capabilities"))
        cfg.providers[name.lower()] = dict(spec)

    for name, target in check.table("aliases", data.get("aliases", {})).items():
        cfg.aliases[name] = check.typed(f"aliases.{name}", target, str)

    rel = check.table("reliability", data.get("reliability", {}))
    for key, value in rel.items():
        if key == "fallback":
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                check.fail("reliability.fallback", "must be a list of targets")
            cfg.reliability.fallback = list(value)
        elif (numeric_spec(f"reliability.{key}") is not None or _is_number(getattr(cfg.reliability, key, None))):
            kind = type(getattr(cfg.reliability, key, 0.0))
            setattr(cfg.reliability, key, check.num(f"reliability.{key}", value, kind=kind))
        else:
            check.fail(f"reliability.{key}", f"unknown key {key!r} in [reliability]")

    for name, lim in check.table("limits", data.get("limits", {})).items():
        lim = check.table(f"limits.{name}", lim)
        for key, value in lim.items():
            if key not in ("rpm", "tpm"):
                check.fail(f"limits.{name}.{key}", "known keys: rpm, tpm")
            lim[key] = check.num(f"limits.{name}.{key}", value)
        cfg.limits[name.lower()] = {k: float(v) for k, v in lim.items()}

    budget = check.table("budget", data.get("budget", {}))
    for key, value in budget.items():
        if key == "providers":
            for name, caps in check.table("budget.providers", value).items():
                caps = check.table(f"budget.providers.{name}", caps)
                known = {*_builtin_providers(), *cfg.providers}
                if name.lower() not in known:
                    check.fail(f"budget.providers.{name}", f"unknown provider {name!r} (known: {', '.join(sorted(known))})")
                for cap_key, usd in caps.items():
                    if cap_key not in BUDGET_KEYS:
                        check.fail(f"budget.providers.{name}.{cap_key}", f"unknown key {cap_key!r} (known: {', '.join(BUDGET_KEYS)})")
                    cfg.budget_caps[(name.lower(), BUDGET_KEYS[cap_key])] = _usd(check, f"budget.providers.{name}.{cap_key}", usd)
        elif key in BUDGET_KEYS:
            cfg.budget_caps[(None, BUDGET_KEYS[key])] = _usd(check, f"budget.{key}", value)
        else:
            check.fail(f"budget.{key}", f"unknown key {key!r} in [budget] (known: {', '.join(BUDGET_KEYS)}, providers)")
    cfg.budget_usd = cfg.budget_caps.get((None, "session"))

    for key, value in check.table("defaults", data.get("defaults", {})).items():
        cfg.defaults[key] = coerce_setting(key, value, where=check.where(f"defaults.{key}"))
    return cfg


# Every key the provider adapters and the credential store read from `spec.settings`.
_PROVIDER_KEYS = {"kind": str, "base_url": str, "model": str, "auth": str, "env": str,
                  "organization": str, "project": str, "command": str, "models": list,
                  "api_version": str, "ttl": float, "timeout": float, "connect_timeout": float,
                  "stream_usage": bool, "max_tokens_param": str, "price": dict, "free": bool, "enabled": bool,
                  "capabilities": dict, "context": int}
BUDGET_KEYS = {"session_usd": "session", "daily_usd": "daily", "monthly_usd": "monthly"}


def _builtin_providers() -> tuple[str, ...]:
    from .providers import BUILTIN
    return tuple(BUILTIN)
