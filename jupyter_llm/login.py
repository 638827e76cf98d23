"""Storing and removing a provider's credential for the session (optional live check, audit event, change notice), kept out of the coordinating Session."""
from __future__ import annotations

from typing import Any

from .errors import LLMError
from .targets import Target


def login(session, provider: str, secret: str, method: str = "api_key", *, check: bool = False,
          **extra: Any) -> tuple[str, str] | None:
    """Store a credential for a known provider (the store checks method and secret). With `check`,
    one cheap live call validates it first: an invalid one raises INVALID_CREDENTIALS and is not
    stored; returns (verdict, detail) with verdict valid | unchecked (see credential_check.py)."""
    spec = session._spec(Target(provider.lower()))
    verdict = None
    if check and isinstance(secret, str) and secret.strip():
        from .credential_check import INVALID, check as check_credential
        verdict = check_credential(session, spec.id, secret.strip(), method, **extra)
        if verdict[0] == INVALID:
            session._record_event("login rejected", {"provider": spec.id, "method": method})
            raise LLMError("INVALID_CREDENTIALS", f"the {spec.id} provider refused this credential; nothing was stored",
                           hint="check it and try again, or store it anyway with --no-check")
    session.credentials.store(spec.id, secret, method=method, **extra)
    from .providers import mask
    session._record_event("login", {"provider": spec.id, "method": method, "key": mask(secret),
                                    "checked": verdict[0] if verdict else "no"})
    session.notify("credentials")
    return verdict


def logout(session, provider: str) -> bool:
    """Delete the stored credential of `provider`; True when there was one."""
    spec = session._spec(Target(provider.lower()))
    removed = session.credentials.delete(spec.id)
    session._record_event("logout", {"provider": spec.id, "removed": removed})
    session.notify("credentials")
    return removed
