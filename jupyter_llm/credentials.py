"""Credentials (SPEC 7): OS keyring first, then environment variables; api_key, gateway and command auth.

Secrets only ever leave this module inside an `Auth` (whose repr masks them); no error message,
log line or repr built here contains one. `keyring` is imported on first use, never at import time.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable

from . import keyring_backend, keyring_prefetch, redact
from .errors import LLMError
from .keyring_backend import PLAINTEXT_BACKEND, SERVICE
from .keyring_backend import name as _name
from .providers.base import Auth, mask

if TYPE_CHECKING:
    from .config import Config
    from .providers import ProviderSpec

__all__ = ["SERVICE", "CredentialStore", "METHODS", "COMMAND_TIMEOUT", "DEFAULT_COMMAND_TTL"]

log = logging.getLogger(__name__)

METHODS = ("api_key", "gateway", "command")
COMMAND_TIMEOUT = 30.0                  # seconds a token command may run
DEFAULT_COMMAND_TTL = 50 * 60.0         # seconds a command's token is reused (most are valid for 60 min)
_SHELL_CHARS = set("|&;<>$`*?(){}\n")


def _scrub(text: str, *secrets: str | None) -> str:
    """Replace any occurrence of a secret in `text` by its masked form (belt and braces for errors)."""
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, mask(secret))
    return text


def _to_unix(expiry: Any) -> float | None:
    """Accept unix seconds, a datetime or an ISO 8601 string; return unix seconds (None: no expiry)."""
    if expiry is None or expiry == "":
        return None
    if isinstance(expiry, bool):
        raise LLMError("BAD_ARGUMENT", "expiry must be a time, not a boolean")
    if isinstance(expiry, (int, float)):
        return float(expiry)
    if isinstance(expiry, datetime):
        dt = expiry
    else:
        try:
            dt = datetime.fromisoformat(str(expiry).strip().replace("Z", "+00:00"))
        except ValueError:
            raise LLMError("BAD_ARGUMENT", f"expiry {expiry!r} is not a unix time or ISO 8601 date",
                           hint="e.g. 2025-12-31T23:00:00Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _run_captured(args: Any, shell: bool, timeout: float) -> subprocess.CompletedProcess:
    """Run with no stdin and captured output; on timeout (or interrupt) kill the whole process group
    (a shell's children too, else their open pipes would keep us waiting) and re-raise."""
    posix = os.name == "posix"
    proc = subprocess.Popen(args, shell=shell, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=posix,
                            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:  # timeout, or the user interrupted the cell: leave no orphan behind
        try:
            if posix:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except OSError:
            pass
        try:
            proc.communicate(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _registered(auth: Auth | None) -> Auth | None:
    """Register the secret (and any secret in the base URL) of an Auth about to be used or shown."""
    if auth is not None:
        redact.register(auth.secret)
        redact.register_url(auth.base_url)
    return auth


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


class CredentialStore:
    """Finds, stores and deletes provider credentials; caches command tokens in memory only."""

    def __init__(self, config: "Config | None" = None):
        if config is None:
            from .config import Config
            config = Config()
        self.config = config
        self._lock = threading.RLock()
        self._tokens: dict[str, tuple[str, float, str]] = {}   # provider -> (token, expiry, command)
        self._warned: set[str] = set()
        self._prefetched: keyring_prefetch.Read | None = None   # a helper process's read, for one cell
        redact.register_config(config)   # env keys and base-URL secrets are masked before first use

    def __repr__(self) -> str:
        return f"<CredentialStore service={SERVICE!r} cached_tokens={len(self._tokens)}>"

    # ---- public API -------------------------------------------------------------------------

    def lookup(self, spec: "ProviderSpec", *, run_command: bool = True) -> Auth | None:
        """The credential for `spec`: keyring, then a configured command, then env vars; None if none.
        Providers whose auth is "none" skip the keyring (only a configured env var applies).

        Never raises for a missing credential. A command is run (or its cached token reused) unless
        `run_command` is False, which returns the command Auth without a secret (for status views);
        a failing command raises INVALID_CREDENTIALS.
        """
        return _registered(self._lookup(spec, run_command))

    def _lookup(self, spec: "ProviderSpec", run_command: bool) -> Auth | None:
        # auth = "none" (local llama.cpp, a keyless vLLM): no keyring access on every request.
        doc = self._read(spec.id) if spec.needs_key else None
        if doc is not None:
            return self._from_doc(spec, doc, run_command)
        command = spec.settings.get("command")
        if command and spec.auth == "command":
            return self._command_auth(spec, command, spec.settings.get("ttl"), run_command, origin="config")
        for var in spec.env_vars:
            value = os.environ.get(var, "").strip()
            if value:
                method = "gateway" if spec.auth == "gateway" else "api_key"
                return Auth(secret=value, method=method, source=f"env:{var}",
                            organization=spec.settings.get("organization"),
                            project=spec.settings.get("project"))
        return None

    def resolve(self, spec: "ProviderSpec") -> Auth:
        """As lookup, but a missing credential (MISSING_CREDENTIALS) or an expired token
        (INVALID_CREDENTIALS) raises; providers that need no key get Auth(method="none")."""
        auth = self.lookup(spec)
        if auth is None:
            if not spec.needs_key:
                return Auth(method="none", source="none")
            raise self._missing(spec)
        if auth.method == "gateway" and auth.expiry is not None and auth.expiry <= time.time():
            raise LLMError("INVALID_CREDENTIALS",
                           f"the gateway token for {spec.id} expired at {_when(auth.expiry)} (token expired)",
                           hint=f"run %llm login {spec.id} --method gateway to store a fresh token")
        return auth

    def refresh(self, spec: "ProviderSpec") -> Auth:
        """Forget any cached command token and resolve again: re-runs the command once (after a 401)."""
        with self._lock:
            self._tokens.pop(spec.id, None)
        return self.resolve(spec)

    def store(self, provider_id: str, secret: str, method: str = "api_key", **extra: Any) -> None:
        """Save a credential in the OS keyring (never elsewhere). For method="command", `secret` is
        the command line; gateway takes base_url, organization, project, expiry; command takes ttl."""
        provider_id = (provider_id or "").strip().lower()
        if not provider_id:
            raise LLMError("BAD_ARGUMENT", "no provider given", hint="e.g. %llm login openai")
        if method not in METHODS:
            raise LLMError("BAD_ARGUMENT", f"unknown auth method {method!r}", hint=f"use one of: {', '.join(METHODS)}")
        if not isinstance(secret, str) or not secret.strip():
            what = "command line" if method == "command" else "secret"
            raise LLMError("BAD_ARGUMENT", f"empty {what} for {provider_id}; nothing stored")
        secret = secret.strip()
        if method != "command":
            redact.register(secret)
        if method == "gateway":
            redact.register_url(extra.get("base_url"))
        allowed = {"api_key": set(), "gateway": {"base_url", "organization", "project", "expiry"},
                   "command": {"ttl"}}[method]
        unknown = sorted(k for k, v in extra.items() if k not in allowed and v is not None)
        if unknown:
            raise LLMError("BAD_ARGUMENT", f"{method} does not take {', '.join(unknown)}",
                           hint=f"it takes: {', '.join(sorted(allowed)) or 'nothing else'}")
        if method == "api_key":
            value = secret
        elif method == "gateway":
            doc = {"method": "gateway", "token": secret, "base_url": extra.get("base_url"),
                   "organization": extra.get("organization"), "project": extra.get("project"),
                   "expiry": _to_unix(extra.get("expiry"))}
            value = json.dumps({k: v for k, v in doc.items() if v is not None})
        else:
            ttl = extra.get("ttl")
            if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0):
                raise LLMError("BAD_ARGUMENT", f"ttl must be a positive number of seconds, got {ttl!r}")
            try:
                shlex.split(secret)
            except ValueError as exc:
                raise LLMError("BAD_ARGUMENT", f"cannot parse the command for {provider_id}: {exc}") from None
            value = json.dumps({k: v for k, v in {"method": "command", "command": secret, "ttl": ttl}.items()
                                if v is not None})

        self._forget_prefetched()   # what the helper read is out of date from here on
        backend = keyring_backend.select()
        if backend.problem:
            raise LLMError("CONFIG_ERROR", f"cannot store the {provider_id} credential: {backend.problem}",
                           hint=self._way_out(provider_id))
        try:
            backend.writer.set_password(SERVICE, provider_id, value)
        except Exception as exc:  # locked keyring, D-Bus trouble, ...
            detail = _scrub(f"{type(exc).__name__}: {exc}", secret, value)
            raise LLMError("CONFIG_ERROR", f"the keyring ({backend.description}) refused to store the "
                           f"{provider_id} credential: {detail}", hint=self._way_out(provider_id)) from None
        with self._lock:
            self._tokens.pop(provider_id, None)
        log.info("stored %s credential for %s in %s", method, provider_id, backend.description)

    def delete(self, provider_id: str) -> bool:
        """Remove the stored credential (and any cached token); True if the keyring held one."""
        provider_id = (provider_id or "").strip().lower()
        with self._lock:
            self._tokens.pop(provider_id, None)
        self._forget_prefetched()
        backend = keyring_backend.select()
        if not backend.readers:
            return False
        targets = [backend.writer] if backend.writer is not None else []
        targets += [b for b in backend.readers if b is not backend.writer]
        from keyring.errors import PasswordDeleteError
        deleted = False
        for kr in targets:
            try:
                if kr.get_password(SERVICE, provider_id) is None:
                    continue
                kr.delete_password(SERVICE, provider_id)
                deleted = True
            except PasswordDeleteError:
                continue
            except Exception as exc:
                raise LLMError("CONFIG_ERROR", f"could not delete the {provider_id} credential from "
                               f"{_name(kr)}: {type(exc).__name__}") from None
        if deleted:
            log.info("deleted the %s credential from the keyring", provider_id)
        return deleted

    def backend(self) -> tuple[bool, str]:
        """(usable for storing?, a one-line description of the keyring backend or what is wrong)."""
        b = keyring_backend.select()
        if b.problem:
            return False, f"{b.problem}; {self._way_out(None)}"
        return True, b.description

    def clear_cache(self) -> None:
        """Forget every cached command token."""
        with self._lock:
            self._tokens.clear()

    # ---- keyring ----------------------------------------------------------------------------

    def prefetch(self, specs: Iterable["ProviderSpec"]) -> None:
        """Start reading these providers' keyring entries in a helper process, when that takes work off
        this one (keyring not loaded yet, 2+ CPUs): the caller is about to import their SDKs."""
        ids = [s.id for s in specs if s.needs_key]
        if not ids or not keyring_prefetch.worthwhile():
            return
        with self._lock:
            if self._prefetched is not None:
                if self._prefetched.covers(ids):
                    return
                self._prefetched.discard()
            try:
                self._prefetched = keyring_prefetch.Read(ids)
            except OSError as exc:
                self._prefetched = None
                log.debug("keyring helper could not start (%s): reading in-process", type(exc).__name__)

    def _forget_prefetched(self) -> None:
        with self._lock:
            if self._prefetched is not None:
                self._prefetched.discard()
            self._prefetched = None

    def _read(self, provider_id: str) -> dict | None:
        """The stored entry as a dict ({"method": ..., ...}), or None; keyring trouble is logged, not raised."""
        with self._lock:
            pending = self._prefetched
        try:
            if pending is None:
                raise keyring_prefetch.Unavailable(provider_id)
            value, errors, problem = pending.take(provider_id)
        except keyring_prefetch.Unavailable:
            backend, errors = keyring_backend.select(), []
            problem = None if backend.readers else backend.problem
            value = keyring_backend.read(backend, provider_id, lambda kr, exc: errors.append(
                (keyring_backend.name(kr), type(exc).__name__)))
        else:
            keyring_prefetch.warm_in_background(pending.detected)   # later lookups read in-process
        for reader, error in errors:
            self._warn_once(f"read:{reader}", "could not read the keyring (%s): %s", reader, error)
        if problem and "nokeyring" not in self._warned:
            self._warned.add("nokeyring")
            log.debug("keyring not used: %s", problem)
        return self._parse(provider_id, value) if value else None

    @staticmethod
    def _parse(provider_id: str, value: str) -> dict:
        text = value.strip()
        if text.startswith("{"):
            try:
                doc = json.loads(text)
            except ValueError:
                doc = None
            if isinstance(doc, dict) and doc.get("method") in ("gateway", "command"):
                return doc
        return {"method": "api_key", "token": text}

    def _from_doc(self, spec: "ProviderSpec", doc: dict, run_command: bool) -> Auth:
        method = doc.get("method")
        settings = spec.settings
        if method == "command":
            return self._command_auth(spec, str(doc.get("command") or ""), doc.get("ttl") or settings.get("ttl"),
                                      run_command, origin="keyring")
        if method == "gateway":
            try:
                expiry = _to_unix(doc.get("expiry"))
            except LLMError:
                expiry = None
            return Auth(secret=doc.get("token") or None, method="gateway", source="keyring",
                        base_url=doc.get("base_url") or settings.get("base_url"),
                        organization=doc.get("organization") or settings.get("organization"),
                        project=doc.get("project") or settings.get("project"), expiry=expiry)
        return Auth(secret=doc.get("token"), method="api_key", source="keyring",
                    organization=settings.get("organization"), project=settings.get("project"))

    # ---- command auth -----------------------------------------------------------------------

    def _command_auth(self, spec: "ProviderSpec", command: str, ttl: Any, run_command: bool, origin: str) -> Auth:
        """Auth from a token command: the cached token while fresh, else run the command now."""
        settings = spec.settings
        common = dict(method="command", source="command", organization=settings.get("organization"),
                      project=settings.get("project"))
        with self._lock:
            cached = self._tokens.get(spec.id)
            if cached and cached[2] == command and cached[1] > time.time():
                return Auth(secret=cached[0], expiry=cached[1], **common)
            if not run_command:
                return Auth(secret=None, **common)
            token = self._run(spec.id, command, origin)
            try:
                seconds = float(ttl) if ttl is not None else DEFAULT_COMMAND_TTL
            except (TypeError, ValueError):
                seconds = DEFAULT_COMMAND_TTL
            expiry = time.time() + max(seconds, 0.0)
            self._tokens[spec.id] = (token, expiry, command)
            return Auth(secret=token, expiry=expiry, **common)

    def _run(self, provider_id: str, command: str, origin: str) -> str:
        """Run a token command (no stdin, 30 s limit); its last non-empty stdout line is the token."""
        where = f"[providers.{provider_id}] command" if origin == "config" else f"the stored {provider_id} command"
        way_out = f"check {where}, or run %llm login {provider_id} --method command"
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise LLMError("INVALID_CREDENTIALS", f"cannot parse {where}: {exc}", hint=way_out) from None
        if not argv:
            raise LLMError("INVALID_CREDENTIALS", f"{where} is empty", hint=way_out)
        program = os.path.basename(argv[0])
        if _SHELL_CHARS & set(command):
            args: Any = command
            shell = True
        else:
            found = shutil.which(argv[0])
            args, shell = ([found] + argv[1:] if found else argv), False
        started = time.monotonic()
        try:
            proc = _run_captured(args, shell, COMMAND_TIMEOUT)
        except FileNotFoundError:
            raise LLMError("INVALID_CREDENTIALS", f"the token command for {provider_id} was not found: {program}",
                           hint=way_out) from None
        except subprocess.TimeoutExpired:
            raise LLMError("INVALID_CREDENTIALS", f"the token command for {provider_id} ({program}) did not "
                           f"finish within {COMMAND_TIMEOUT:.0f} s", hint=way_out) from None
        except OSError as exc:
            raise LLMError("INVALID_CREDENTIALS", f"the token command for {provider_id} ({program}) could not "
                           f"start: {exc.strerror or type(exc).__name__}", hint=way_out) from None
        lines = [ln.strip() for ln in (proc.stdout or "").splitlines() if ln.strip()]
        token = lines[-1] if lines else ""
        if proc.returncode != 0:
            first = next((ln.strip() for ln in (proc.stderr or "").splitlines() if ln.strip()), "no error output")
            first = redact.scrub(_scrub(first, token, *lines))[:200]
            raise LLMError("INVALID_CREDENTIALS", f"the token command for {provider_id} ({program}) failed "
                           f"with exit code {proc.returncode}: {first}", hint=way_out)
        if not token:
            raise LLMError("INVALID_CREDENTIALS", f"the token command for {provider_id} ({program}) printed no token",
                           hint=way_out)
        log.debug("token command for %s (%s) ran in %.2f s", provider_id, program, time.monotonic() - started)
        return token

    # ---- messages ---------------------------------------------------------------------------

    def _env_vars(self, provider_id: str | None) -> tuple[str, ...]:
        if not provider_id:
            return ()
        try:
            from .providers import spec_for
            return spec_for(provider_id, self.config).env_vars
        except LLMError:
            return (f"{provider_id.upper().replace('-', '_')}_API_KEY",)

    def _way_out(self, provider_id: str | None) -> str:
        env = " or ".join(self._env_vars(provider_id)) or "the provider's API key variable"
        return (f"set {env} in the environment instead, or `pip install keyrings.alt` and set "
                f"PYTHON_KEYRING_BACKEND={PLAINTEXT_BACKEND} to keep keys in a plaintext file")

    def _missing(self, spec: "ProviderSpec") -> LLMError:
        env = " or ".join(spec.env_vars)
        if spec.auth == "command":
            return LLMError("MISSING_CREDENTIALS", f"no token command for {spec.id}",
                            hint=f"set command = \"...\" under [providers.{spec.id}] in the config, "
                                 f"or run %llm login {spec.id} --method command")
        method = " --method gateway" if spec.auth == "gateway" else ""
        hint = f"set {env} or run %llm login {spec.id}{method}" if env else f"run %llm login {spec.id}{method}"
        return LLMError("MISSING_CREDENTIALS", f"no credentials for {spec.id}", hint=hint)

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)
