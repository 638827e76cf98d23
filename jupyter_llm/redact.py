"""Mask secrets by value: a registry of every secret in use and `scrub()` for every string we show or store.

The credential store registers each secret it hands out (keyring, environment, command and gateway
tokens, userinfo and `?api-key=` values of configured base URLs). `scrub(text)` replaces each one,
and its URL-encoded and base64 forms (also inside a longer base64 blob such as a Basic-auth
`user:pass` header), by a mask. Patterns are not guessed: only known values are masked.
"""
from __future__ import annotations

import base64
import logging
import threading
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

__all__ = ["register", "register_url", "register_config", "scrub", "scrub_deep", "safe_url", "secrets_known", "forget_all", "MASK"]

MASK = "****"
MIN_LENGTH = 4                  # shorter values would mask ordinary words
SENSITIVE_QUERY = {"api-key", "api_key", "apikey", "key", "token", "access_token", "auth", "password",
                   "secret", "sig", "signature", "x-api-key"}

_lock = threading.Lock()
_values: dict[str, str] = {}    # encoded form -> replacement, longest first when applied
_secrets: set[str] = set()
_ordered: list[tuple[str, str]] = []
_log_hooked = False


def _mask(secret: str) -> str:
    return MASK + (secret[-4:] if len(secret) >= 8 else "")


def _b64_cores(raw: bytes) -> set[str]:
    """Substrings that any base64 encoding of a text containing `raw` must contain (3 alignments,
    standard and URL-safe alphabets, with and without padding)."""
    out: set[str] = set()
    for shift in range(3):
        blob = b"\0" * shift + raw
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            text = enc(blob).decode("ascii")
            start = (shift * 8 + 5) // 6        # first character not touched by the bytes in front
            full = len(blob) * 8 // 6           # characters before it depend only on our bytes
            core = text[start:full]
            if len(core) >= 6:
                out.add(core)
    return out


def register(secret: str | None, *, extra_forms: tuple[str, ...] = ()) -> None:
    """Remember `secret` (and derived forms) so `scrub` masks it everywhere from now on."""
    if not isinstance(secret, str):
        return
    secret = secret.strip()
    if len(secret) < MIN_LENGTH:
        return
    with _lock:
        if secret in _secrets and not extra_forms:
            return
        _secrets.add(secret)
        forms = {secret: _mask(secret)}
        for enc in (quote(secret, safe=""), quote_plus(secret), quote(secret)):
            if enc != secret:
                forms.setdefault(enc, MASK)
        raw = secret.encode("utf-8", "surrogatepass")
        for whole in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
            forms.setdefault(whole, MASK)
            forms.setdefault(whole.rstrip("="), MASK)
        if len(secret) >= 8:
            for core in _b64_cores(raw):
                forms.setdefault(core, MASK)
        for form in extra_forms:
            if form and len(form) >= MIN_LENGTH:
                forms.setdefault(form, MASK)
        _values.update({k: v for k, v in forms.items() if k not in _values})
        _ordered[:] = sorted(_values.items(), key=lambda kv: -len(kv[0]))
    _hook_logging()


def register_basic(user: str, password: str) -> None:
    """A Basic-auth pair: the password, and `user:password` in every encoding."""
    register(password)
    if password:
        pair = f"{user}:{password}"
        register(pair)
        register(password, extra_forms=(base64.b64encode(pair.encode("utf-8", "surrogatepass")).decode(),))


def register_url(url: str | None) -> None:
    """Register the userinfo password and the sensitive query values of a URL."""
    if not isinstance(url, str) or not url:
        return
    try:
        parts = urlsplit(url)
        password, user = parts.password, parts.username
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return
    if password:
        from urllib.parse import unquote
        register_basic(unquote(user or ""), unquote(password))
        register(password)
    elif user and "@" in parts.netloc and len(user) >= 8:
        from urllib.parse import unquote
        register(unquote(user))   # a token given as the userinfo alone (a short name is not a secret)
    for key, value in query:
        if key.lower() in SENSITIVE_QUERY and value:
            register(value)


def register_config(config: Any) -> None:
    """Register what the config and environment hold for every known provider: environment keys,
    base-URL userinfo and `?api-key=` values (the credential store calls this when it is built)."""
    import os
    try:
        from .providers import provider_ids, spec_for
        for pid in provider_ids(config):
            spec = spec_for(pid, config)
            register_url(spec.settings.get("base_url") or spec.base_url)
            for var in spec.env_vars:
                register(os.environ.get(var))
    except Exception:  # a broken provider entry point must not stop credentials from working
        logging.getLogger(__name__).debug("could not register the configured secrets", exc_info=True)


def safe_url(url: str | None) -> str:
    """`url` fit to show: userinfo replaced by `****` and sensitive query values masked."""
    if not isinstance(url, str) or not url:
        return url or ""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, MASK if k.lower() in SENSITIVE_QUERY and v else v) for k, v in pairs], safe="*")
        return scrub(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))
    except ValueError:
        return scrub(url)


def scrub(text: Any) -> Any:
    """`text` with every registered secret (and its encoded forms) masked; non-strings pass through."""
    if not isinstance(text, str) or not _ordered or not text:
        return text
    for value, replacement in _ordered:
        if value in text:
            text = text.replace(value, replacement)
    return text


def scrub_deep(value: Any) -> Any:
    """`scrub` applied to every string inside dicts, lists and tuples."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub_deep(k): scrub_deep(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scrub_deep(v) for v in value)
    return value


def secrets_known() -> int:
    return len(_secrets)


def forget_all() -> None:
    """Drop every registered secret (tests)."""
    with _lock:
        _values.clear()
        _secrets.clear()
        _ordered.clear()


_LOGGERS = ("jupyter_llm", "httpx", "httpcore", "openai", "anthropic", "google", "urllib3")


def _hook_logging() -> None:
    """Scrub log records of our loggers and the HTTP/SDK libraries (they log URLs and headers)."""
    global _log_hooked
    if _log_hooked:
        return
    _log_hooked = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _ordered and record.name.startswith(_LOGGERS):
            try:
                message = record.getMessage()
            except Exception:
                return record
            clean = scrub(message)
            if clean != message:
                record.msg, record.args = clean, ()
            if record.exc_info and record.exc_text is None:  # a traceback's text can quote a secret too
                try:
                    record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
                except Exception:
                    pass
        return record

    logging.setLogRecordFactory(factory)
