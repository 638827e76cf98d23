"""Which OS keyring backends hold our credentials (SPEC 7): who to read, who to write, and why not.

Refuses backends that would hang a kernel (a master-password prompt) or silently write plaintext.
`keyring` is imported only when `select()` is called, and this module imports nothing else from the
package, so the helper process of `keyring_prefetch` can use it alone.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["SERVICE", "PLAINTEXT_BACKEND", "Backend", "name", "prompts", "select", "read"]

SERVICE = "jupyter-llm"                # keyring service name; username = provider id
PLAINTEXT_BACKEND = "keyrings.alt.file.PlaintextKeyring"
# Backends that ask for a master password on stdin: in a kernel that blocks forever, so they are
# only used when the user named them explicitly.
_PROMPTING = ("keyrings.cryptfile.", "keyrings.alt.file.EncryptedKeyring")


@dataclass
class Backend:
    """The keyring backend(s) this store may use: who to read, who to write, and why not."""
    readers: list = field(default_factory=list)
    writer: Any = None
    description: str = ""
    problem: str | None = None   # why nothing can be written (None: writer is usable)


def name(obj: Any) -> str:
    """A backend's full class name, e.g. keyrings.alt.file.PlaintextKeyring."""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def prompts(obj: Any) -> bool:
    """Whether the backend asks for a master password on the terminal."""
    return name(obj).startswith(_PROMPTING)


def select() -> Backend:
    """Work out which keyring backend to use, refusing any that would hang or silently write plaintext."""
    try:
        import keyring
        import keyring.core
        from keyring.backends import chainer, fail, null
    except Exception as exc:  # keyring missing or broken
        return Backend(description="keyring unavailable",
                       problem=f"the keyring package cannot be imported ({type(exc).__name__})")
    requested = os.environ.get("PYTHON_KEYRING_BACKEND", "").strip()
    if requested:
        try:
            kr = keyring.core.load_keyring(requested)
        except Exception as exc:
            return Backend(description=requested, problem=(
                f"PYTHON_KEYRING_BACKEND={requested} cannot be used ({type(exc).__name__}: {exc})"))
        explicit, how = True, "chosen by PYTHON_KEYRING_BACKEND"
    else:
        try:
            kr = keyring.get_keyring()
        except Exception as exc:
            return Backend(description="keyring unavailable",
                           problem=f"no OS keyring backend could be loaded ({type(exc).__name__})")
        try:
            explicit = keyring.core.load_config() is not None
        except Exception:
            explicit = False
        how = "chosen by keyringrc.cfg" if explicit else "detected"

    if isinstance(kr, (fail.Keyring, null.Keyring)):
        return Backend(description=name(kr), problem=f"there is no OS keyring backend ({name(kr)})")
    if isinstance(kr, chainer.ChainerBackend):
        members = list(kr.backends)
        usable = [b for b in members if explicit or not prompts(b)]
        if not usable:
            names = ", ".join(name(b) for b in members) or "none"
            return Backend(description=f"{name(kr)} [{names}]",
                           problem=f"there is no OS keyring backend (chained backends: {names})")
        writer = usable[0]
        return _check_writer(keyring, usable, writer, f"{name(writer)} via {name(kr)}, {how}", explicit)
    if prompts(kr) and not explicit:
        return Backend(description=name(kr), problem=(
            f"the detected keyring backend {name(kr)} asks for a master password on the terminal, "
            "which would hang a notebook kernel; it is used only when PYTHON_KEYRING_BACKEND names it"))
    return _check_writer(keyring, [kr], kr, f"{name(kr)}, {how}", explicit)


def _check_writer(keyring: Any, readers: list, writer: Any, desc: str, explicit: bool) -> Backend:
    writer_name = name(writer)
    if writer_name == PLAINTEXT_BACKEND or writer_name.endswith(".PlaintextKeyring"):
        path = getattr(writer, "file_path", None)
        desc += f" (plaintext file {path})" if path else " (plaintext file)"
    if not explicit and not keyring.core.recommended(writer):
        # e.g. keyrings.alt's PlaintextKeyring picked only because nothing better exists:
        # reading is fine, writing a secret to a plaintext file needs the user's explicit choice.
        return Backend(readers=readers, writer=None, description=desc, problem=(
            f"there is no OS keyring backend (only {writer_name}, which is not secure enough to pick silently)"))
    return Backend(readers=readers, writer=writer, description=desc)


def read(backend: Backend, provider_id: str, on_error: Callable[[Any, BaseException], None]) -> str | None:
    """The raw stored value for `provider_id` from the first reader that has one (None: none has).
    A reader that fails is reported to `on_error(reader, exc)` and skipped."""
    for kr in backend.readers:
        try:
            value = kr.get_password(SERVICE, provider_id)
        except Exception as exc:
            on_error(kr, exc)
            continue
        if value:
            return value
    return None


def _skip_macos_library_search() -> None:
    """keyring imports its macOS backend on every platform to ask its priority, and that module looks up
    the Security, CoreServices and Foundation frameworks with ctypes' find_library, which off macOS runs
    `ldconfig -p` and then gcc and ld for each (about 60 ms of processes, for a None every time). Off
    macOS the lookup answers None at once here, in the helper only; the backend is refused all the same
    ("macOS required")."""
    import sys
    if sys.platform == "darwin":
        return
    import ctypes.util
    search = ctypes.util.find_library

    def find_library(name: str):
        return None if name in ("Security", "CoreServices", "Foundation") else search(name)
    ctypes.util.find_library = find_library


def detected() -> str | None:
    """The backend keyring's own detection picked in this process (no PYTHON_KEYRING_BACKEND, no
    keyringrc.cfg), when it is a single backend: the kernel can load just that one instead of detecting
    again. None otherwise (named, configured, a chain, or keyring unusable)."""
    if os.environ.get("PYTHON_KEYRING_BACKEND", "").strip():
        return None
    try:
        import keyring
        import keyring.core
        from keyring.backends import chainer
        kr = keyring.get_keyring()
        if keyring.core.load_config() is not None or isinstance(kr, chainer.ChainerBackend):
            return None
        return name(kr)
    except Exception:
        return None


def lower_priority() -> None:
    """The helper process only (never the kernel): keyring's detection takes ~0.2 s of CPU, and the kernel,
    importing an SDK beside it, comes first."""
    if hasattr(os, "nice"):
        try:
            os.nice(10)
        except OSError:
            pass


def helper_main() -> None:
    """The helper process of `keyring_prefetch`: reads {"ids": [...], "path": [...]} from stdin (then
    stdin is closed, so nothing can prompt), prints {"values", "errors", "problem" (why nothing is read), "inprocess"} as JSON."""
    import json
    import sys
    job = json.loads(sys.stdin.read())
    sys.path[:] = [p for p in job.get("path", []) if isinstance(p, str)] or sys.path  # the kernel's view
    _skip_macos_library_search()
    backend = select()
    out: dict[str, Any] = {"values": {}, "errors": [], "inprocess": False,
                           "problem": None if backend.readers else backend.problem, "detected": detected()}
    if any(prompts(kr) for kr in backend.readers):   # it would ask for a password: the kernel's own call
        out["inprocess"] = True
    else:
        def failed(kr: Any, exc: BaseException) -> None:
            out["errors"].append([name(kr), type(exc).__name__])
        for provider_id in job.get("ids", []):
            out["values"][provider_id] = read(backend, provider_id, failed)
    sys.stdout.write(json.dumps(out))
    sys.stdout.flush()
