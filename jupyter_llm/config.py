"""The TOML config file (SPEC 8): where it lives, what it may hold, and errors that name file:line:key."""
from __future__ import annotations

import math
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import LLMError

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


@dataclass(frozen=True)
class Num:
    """One numeric key: its type, allowed range and unit; nan and inf are never allowed."""
    kind: type                 # int or float
    low: float
    high: float
    low_open: bool = False     # True: `low` itself is not allowed (strictly greater)
    unit: str = ""
    note: str = ""             # extra words for the error (e.g. what 0 means)


_DAY = 86400.0
# Every numeric setting, config key and option, in one table: a new numeric key is one line here.
# `*` matches one name (a provider). Keys read by `check_number`; config keys by the loader.
NUMBERS: dict[str, Num] = {
    "reliability.retries": Num(int, 0, 20),
    "reliability.circuit_failures": Num(int, 0, 1000, note="0 turns the breaker off"),
    "reliability.timeout": Num(float, 0, _DAY, low_open=True, unit="s"),
    "reliability.connect_timeout": Num(float, 0, 3600, low_open=True, unit="s"),
    "reliability.stall_timeout": Num(float, 0, _DAY, low_open=True, unit="s"),
    "reliability.deadline": Num(float, 0, _DAY, low_open=True, unit="s"),
    "reliability.backoff": Num(float, 0, 600, unit="s"),
    "reliability.max_backoff": Num(float, 0, 3600, unit="s"),
    "reliability.circuit_cooldown": Num(float, 0, _DAY, unit="s"),
    "limits.*.rpm": Num(float, 0, 1e7, note="0 means no limit; below 1 per minute is refused"),
    "limits.*.tpm": Num(float, 0, 1e12, note="0 means no limit"),
    "budget.session_usd": Num(float, 0, 1e7, unit="USD"),
    "budget.daily_usd": Num(float, 0, 1e7, unit="USD"),
    "budget.monthly_usd": Num(float, 0, 1e7, unit="USD"),
    "budget.providers.*.session_usd": Num(float, 0, 1e7, unit="USD"),
    "budget.providers.*.daily_usd": Num(float, 0, 1e7, unit="USD"),
    "budget.providers.*.monthly_usd": Num(float, 0, 1e7, unit="USD"),
    "providers.*.timeout": Num(float, 0, _DAY, low_open=True, unit="s"),
    "providers.*.connect_timeout": Num(float, 0, _DAY, low_open=True, unit="s"),
    "providers.*.price.input": Num(float, 0, 1e6, unit="USD per million tokens"),
    "providers.*.price.output": Num(float, 0, 1e6, unit="USD per million tokens"),
    "providers.*.ttl": Num(float, 0, 30 * _DAY, low_open=True, unit="s"),
    "local.ports.*": Num(int, 1, 65535),
    "local.scan.*": Num(int, 1, 65535),
    # session settings (`%llm set`, `[defaults]`, per-cell options)
    "temperature": Num(float, 0, 2),
    "top_p": Num(float, 0, 1, low_open=True),
    "max_tokens": Num(int, 1, 10_000_000),
    "timeout": Num(float, 0, _DAY, low_open=True, unit="s"),
    "stall_timeout": Num(float, 0, _DAY, low_open=True, unit="s"),
    "deadline": Num(float, 0, _DAY, low_open=True, unit="s"),
    "table_rows": Num(int, 1, 1_000_000),
    # magic arguments
    "budget": Num(float, 0, 1e7, unit="USD"),
    "history.n": Num(int, 1, 1_000_000),
    "discover.port": Num(int, 1, 65535),
    "port": Num(int, 1, 65535),            # any other port option (e.g. a server to start)
    "serve.ctx": Num(int, 0, 10_000_000, note="0 takes the model's own context size"),
    "serve.gpu_layers": Num(int, -1, 100_000, note="-1 offloads every layer"),
    "serve.timeout": Num(float, 0, 3600, low_open=True, unit="s"),
}
# Below 1 request per minute a bucket would wait minutes per request: refused rather than hanging.
_NONZERO_MIN = {"limits.*.rpm": 1.0}


def numeric_spec(key: str) -> Num | None:
    """The NUMBERS entry for a dotted key (a provider name matches `*`)."""
    if key in NUMBERS:
        return NUMBERS[key]
    parts = key.split(".")
    for pattern, spec in NUMBERS.items():
        pat = pattern.split(".")
        if len(pat) == len(parts) and all(a == "*" or a == b for a, b in zip(pat, parts)):
            return spec
    return None


def _pattern(key: str) -> str:
    parts = key.split(".")
    for pattern in NUMBERS:
        pat = pattern.split(".")
        if len(pat) == len(parts) and all(a == "*" or a == b for a, b in zip(pat, parts)):
            return pattern
    return key


# A numeric key someone forgot to put in NUMBERS still gets the basics: finite, >= 0, not absurd.
FALLBACK = {int: Num(int, 0, 10 ** 9), float: Num(float, 0, 1e9)}


def check_number(key: str, value, *, where: str = "", label: str | None = None, kind: type | None = None):
    """Validate `value` for numeric key `key` (see NUMBERS): a finite number of the right type within
    range, strings parsed. Raises BAD_ARGUMENT (or CONFIG_ERROR naming `where` = file:line: key).
    A key missing from the table is checked with FALLBACK[kind] when `kind` is given."""
    spec = numeric_spec(key) or (FALLBACK.get(kind) if kind is not None else None)
    if spec is None:
        raise KeyError(key)
    code = "CONFIG_ERROR" if where else "BAD_ARGUMENT"
    name = where or (label or key)
    kind = "an integer" if spec.kind is int else "a number"
    original = value
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            value = int(text) if spec.kind is int and re.fullmatch(r"[+-]?\d+", text) else float(text)
        except (ValueError, OverflowError):
            raise LLMError(code, f"{name} must be {kind}, got {original!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LLMError(code, f"{name} must be {kind}, got {original!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise LLMError(code, f"{name} must be a finite number, got {original!r}")
    if spec.kind is int:
        if isinstance(value, float):
            if value != int(value):
                raise LLMError(code, f"{name} must be a whole number, got {original!r}")
            value = int(value)
    else:
        value = float(value)
    unit = f" {spec.unit}" if spec.unit else ""
    low_ok = value > spec.low if spec.low_open else value >= spec.low
    if not low_ok or value > spec.high:
        span = (f"> {spec.low:g} and <= {spec.high:g}{unit}" if spec.low_open
                else f"between {spec.low:g} and {spec.high:g}{unit}")
        extra = f"; {spec.note}" if spec.note else ""
        shown = original if isinstance(original, str) and len(original) <= 40 else f"{value:g}"
        raise LLMError(code, f"{name} must be {span}, got {shown}{extra}")
    floor = _NONZERO_MIN.get(_pattern(key))
    if floor is not None and 0 < value < floor:
        raise LLMError(code, f"{name} must be 0 (no limit) or at least {floor:g}, got {value:g}",
                       hint="a rate below one request per minute is not supported")
    return value


_SETTINGS = {"temperature": float, "max_tokens": int, "top_p": float, "system": str,
             "timeout": float, "stall_timeout": float, "deadline": float, "format": str, "cache": bool,
             "footer": bool, "table_rows": int}
FORMATS = ("markdown", "text", "code", "json", "html")
MAX_SECONDS = 86400.0  # the longest timeout, stall_timeout or deadline accepted


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
                  "capabilities": dict}
BUDGET_KEYS = {"session_usd": "session", "daily_usd": "daily", "monthly_usd": "monthly"}
MAX_USD = 10_000_000.0          # a cap or price above this is a typo, not a budget
MAX_PRICE = 1_000_000.0         # USD per million tokens ($1 a token)


def _finite(check: "_Checker", dotted: str, value: Any, minimum: float, maximum: float) -> float:
    check.number(dotted, value, float, minimum=minimum)
    if not math.isfinite(value) or value > maximum:
        check.fail(dotted, f"must be a finite number between {minimum:g} and {maximum:g}, got {value!r}")
    return float(value)


def _usd(check: "_Checker", dotted: str, value: Any) -> float:
    return _finite(check, dotted, value, 0, MAX_USD)


def _seconds(check: "_Checker", dotted: str, value: Any) -> float:
    seconds = _finite(check, dotted, value, 0, 86_400)
    if seconds <= 0:
        check.fail(dotted, f"must be more than 0 seconds, got {value!r}")
    return seconds


def _price(check: "_Checker", dotted: str, value: Any) -> None:
    table = check.table(dotted, value)
    for key in table:
        if key not in ("input", "output"):
            check.fail(f"{dotted}.{key}", f"unknown key {key!r} (known: input, output, USD per million tokens)")
    for key in ("input", "output"):
        if key not in table:
            check.fail(dotted, f"needs {key} (USD per million {key} tokens), e.g. price = {{ input = 0.15, output = 0.6 }}")
        _finite(check, f"{dotted}.{key}", table[key], 0, MAX_PRICE)


def _builtin_providers() -> tuple[str, ...]:
    from .providers import BUILTIN
    return tuple(BUILTIN)


def coerce_setting(key: str, value: Any, *, where: str = "") -> Any:
    """Validate one session setting (`%llm set`, `[defaults]`); raise BAD_ARGUMENT/CONFIG_ERROR."""
    code = "CONFIG_ERROR" if where else "BAD_ARGUMENT"
    prefix = f"{where}: " if where else ""
    if key not in _SETTINGS:
        raise LLMError(code, f"{prefix}unknown setting {key!r}", hint=f"known: {', '.join(_SETTINGS)}")
    kind = _SETTINGS[key]
    try:
        if kind is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in ("true", "false", "on", "off", "1", "0", "yes", "no"):
                    raise ValueError
                value = low in ("true", "on", "1", "yes")
            elif not isinstance(value, bool):
                raise ValueError
        elif kind is str:
            value = str(value)
        elif numeric_spec(key) is not None or kind in (int, float):
            return check_number(key, value, where=where, kind=kind)
        else:
            value = kind(value)
    except (TypeError, ValueError):
        raise LLMError(code, f"{prefix}{key} must be {kind.__name__}, got {value!r}") from None
    if kind is str and ("\x00" in value or _unencodable(value)):
        raise LLMError(code, f"{prefix}{key} holds a NUL or a lone surrogate character")
    if key == "format" and value not in FORMATS:
        raise LLMError(code, f"{prefix}format must be one of {', '.join(FORMATS)}, got {value!r}")
    return value


def _check_url(check: "_Checker", dotted: str, url: str) -> None:
    """A base URL must be http(s)://HOST[:PORT][/path] with no spaces (the error never shows its secrets)."""
    from urllib.parse import urlsplit
    from .redact import register_url, safe_url
    register_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        check.fail(dotted, f"{safe_url(url)!r} is not a URL ({exc})")
    if parts.scheme not in ("http", "https") or not host or any(c.isspace() for c in url) or _unencodable(url):
        check.fail(dotted, f"{safe_url(url)!r} is not an http(s):// URL with a host")
    if port is not None and not 0 < port < 65536:
        check.fail(dotted, f"port {port} is not 1-65535")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


def check_host(host: str, *, what: str = "--host") -> str:
    """A host name, IPv4 or IPv6 address (no scheme, port, path or spaces); BAD_ARGUMENT otherwise."""
    import ipaddress
    text = host.strip() if isinstance(host, str) else ""
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ipaddress.ip_address(bare)
        return bare
    except ValueError:
        pass
    if text and len(text) <= 253 and _HOST.fullmatch(text):
        return text
    raise LLMError("BAD_ARGUMENT", f"{what}: {host!r} is not a host name or IP address",
                   hint="e.g. 127.0.0.1, localhost or ::1; no scheme, port or spaces")


class _Checker:
    """Type checks that point at the offending line of the file."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, dotted: str) -> int | None:
        """The line that defines `dotted` (a table header, a key, or a key inside an inline table)."""
        parts = dotted.split(".")
        header: list[str] = []
        for no, line in enumerate(self.lines, 1):
            s = line.strip()
            m = re.match(r"^\[\[?\s*([^\]]+?)\s*\]\]?", s)
            if m:
                header = [h.strip().strip("\"'") for h in m.group(1).split(".")]
                if header == parts:
                    return no
                continue
            if parts[:len(header)] != header or len(parts) == len(header):
                continue
            rest = parts[len(header):]
            if re.match(rf"^[\"']?{re.escape(rest[0])}[\"']?\s*[=.]", s) and all(
                    re.search(rf"(^|[{{,\s.\"']){re.escape(r)}[\"']?\s*[=.]", s) for r in rest):
                return no
        return None

    def where(self, dotted: str) -> str:
        line = self.line_of(dotted)
        return f"{self.path}:{line}: {dotted}" if line else f"{self.path}: {dotted}"

    def fail(self, dotted: str, message: str):
        raise LLMError("CONFIG_ERROR", f"{self.where(dotted)}: {message}")

    def typed(self, dotted: str, value: Any, kind: type) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(dotted, f"must be {kind.__name__}, got {value!r}")
        return value

    def table(self, dotted: str, value: Any) -> dict:
        return self.typed(dotted, value, dict)

    def num(self, dotted: str, value: Any, kind: type | None = None):
        """A numeric key checked against NUMBERS (strings are not numbers in a TOML file)."""
        if isinstance(value, str):
            self.fail(dotted, f"must be a number, got {value!r}")
        return check_number(dotted, value, where=self.where(dotted), kind=kind)

    def number(self, dotted: str, value: Any, kind: type, minimum: float | None = None):
        """Older form of `num`: a key in NUMBERS is checked by the table; any other still must be a
        finite number (never nan or inf), at least `minimum`, and not absurd (FALLBACK)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
            self.fail(dotted, f"must be a number, got {value!r}")
        if numeric_spec(dotted) is not None:
            return check_number(dotted, value, where=self.where(dotted))
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(dotted, f"must be a finite number, got {value!r}")
        if minimum is not None and value < minimum:
            self.fail(dotted, f"must be >= {minimum}, got {value!r}")
        if abs(value) > 1e12:
            self.fail(dotted, f"must be at most 1e12, got {value!r}")
        return value
