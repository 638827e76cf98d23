"""Reads our keyring entries in a helper process while the kernel imports a provider SDK, so SPEC 7's
keyring-first lookup costs a kernel's first cloud cell nothing.

`import keyring` and its backend detection are 20 to 130 ms of GIL-bound work (the importlib_metadata
backport on Python 3.11; every backend module, SecretService and cryptography included, when the backend
is detected). In the kernel that came on top of the SDK's own import; in a second process it runs on
another core. The kernel takes the values when it needs the key, then loads keyring itself in a
background thread while the request is in flight, so later lookups read in-process as before.

Used only where it helps: keyring not loaded in this process yet (an in-process `keyring.set_keyring`
is always honoured), at least two CPUs, and the caller about to import an SDK. Any trouble with the
helper (it cannot start, exits badly, prints nonsense) falls back to reading in-process.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from . import inflight

__all__ = ["Unavailable", "Read", "worthwhile", "warm_in_background"]

log = logging.getLogger(__name__)

MAX_AGE = 10.0   # seconds a read stays usable: it is meant for the cell being prepared now
_BACKEND_FILE = str(Path(__file__).with_name("keyring_backend.py"))
# Loads keyring_backend.py by path: the helper imports neither this package nor anything on its behalf.
_CHILD = ("import importlib.util as u, sys; s = u.spec_from_file_location('_jupyter_llm_keyring', {path!r}); "
          "m = sys.modules[s.name] = u.module_from_spec(s); s.loader.exec_module(m); m.lower_priority(); m.helper_main()")


class Unavailable(Exception):
    """The helper has no usable value for this provider: read in-process instead."""


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def worthwhile() -> bool:
    """Whether a helper process would take work off this process: keyring not loaded yet, 2+ CPUs, and
    sys.executable a Python interpreter (an embedding application's binary must never be started)."""
    return ("keyring" not in sys.modules and _cpus() >= 2 and not getattr(sys, "frozen", False)
            and os.path.basename(sys.executable or "").lower().startswith("python"))


class Read:
    """One helper process reading the stored entries of `provider_ids`; `take(id)` waits for it."""

    def __init__(self, provider_ids: Iterable[str]):
        self.ids = tuple(dict.fromkeys(provider_ids))
        self.started = time.monotonic()
        self.waited = 0.0   # seconds take() spent waiting for the helper (0 when it beat the SDK import)
        self._lock = threading.Lock()
        self._result: dict[str, Any] | None = None
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
        self._proc = subprocess.Popen([sys.executable, "-c", _CHILD.format(path=_BACKEND_FILE)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      creationflags=flags)
        try:
            # stdin is closed at once: a backend that tried to prompt would read EOF, never hang.
            self._proc.stdin.write(json.dumps({"ids": list(self.ids), "path": sys.path}).encode())
            self._proc.stdin.close()
        except OSError:   # the helper died at once; take() reports it
            pass
        self._proc.stdin = None   # closed: communicate() must not touch it
        self._done = threading.Event()   # a daemon thread collects (and reaps) the helper, taken or not
        threading.Thread(target=self._collect, name="llm-keyring-read", daemon=True).start()

    def __repr__(self) -> str:   # never the values
        return f"<keyring_prefetch.Read {list(self.ids)} pid={self._proc.pid}>"

    @property
    def detected(self) -> str | None:
        """The single backend keyring's detection picked in the helper, once it has answered; else None."""
        with self._lock:
            found = (self._result or {}).get("detected")
        return found if isinstance(found, str) and found else None

    def covers(self, provider_ids: Iterable[str]) -> bool:
        """Whether this read still holds a fresh value for every one of `provider_ids`."""
        with self._lock:
            if self._result is not None:
                values = self._result.get("values", {})
                return all(p in values for p in provider_ids) and self._fresh()
            return set(provider_ids) <= set(self.ids) and self._fresh()

    def _fresh(self) -> bool:
        return time.monotonic() - self.started < MAX_AGE

    def take(self, provider_id: str) -> tuple[str | None, list[tuple[str, str]], str | None]:
        """(raw stored value or None, reader failures as (backend, error type), why no backend is read).
        A value serves every lookup of the cell being prepared (a compare or map may look a key up more than
        once) for MAX_AGE seconds from the start; after that, or for a provider it did not read, this raises
        Unavailable and the caller reads in-process."""
        t0 = time.monotonic()
        try:
            self._done.wait()   # as long as an in-process read would take: a keyring may be slow to unlock
        except BaseException:   # an interrupt: stop the helper and go on up
            self.discard()
            raise
        with self._lock:
            self.waited += time.monotonic() - t0
            result = self._result or {"inprocess": True}
            values = result.get("values", {})
            if result.get("inprocess") or provider_id not in values or not self._fresh():
                raise Unavailable(provider_id)
            value = values[provider_id]
            errors = [tuple(e) for e in result.get("errors", [])]
            return (value if isinstance(value, str) and value else None), errors, result.get("problem")

    def _collect(self) -> None:
        """Wait for the helper's answer; any failure means "read in-process"."""
        try:
            out, _ = self._proc.communicate()
            result = json.loads(out) if self._proc.returncode == 0 else None
        except (OSError, ValueError):
            result = None
        if not isinstance(result, dict) or not isinstance(result.get("values"), dict):
            log.debug("keyring helper gave no result (exit %s): reading in-process", self._proc.returncode)
            result = {"inprocess": True}
        with self._lock:
            self._result = result
        self._done.set()

    def discard(self) -> None:
        """Stop the helper if it still runs (a newer read replaces it; the cell was interrupted)."""
        try:
            if self._proc.poll() is None:
                self._proc.kill()
        except OSError:
            pass


_warm_lock = threading.Lock()
_warmed = False


def warm_in_background(detected: str | None = None) -> None:
    """Load keyring and pick its backend in a daemon thread, once per process, so the next lookup reads
    in-process at no import cost. It starts once the request is out and its reply has begun (`inflight`):
    the main thread then waits on the network for the answer, so the work does not delay it.

    `detected`: the single backend keyring's detection picked in the helper (same environment, same
    sys.path). It is loaded alone and installed as keyring's backend, as detection would have done,
    without importing every other backend again (about 15 ms instead of 60 to 130)."""
    global _warmed
    with _warm_lock:
        if _warmed or "keyring" in sys.modules:
            return
        _warmed = True

    def warm() -> None:
        from . import keyring_backend
        if detected:
            import keyring.core
            if getattr(keyring.core, "_keyring_backend", False) is None:   # nobody has picked one yet
                try:
                    keyring.core.set_keyring(keyring.core.load_keyring(detected))
                except Exception:   # then keyring detects for itself, below
                    pass
        keyring_backend.select()
    inflight.after_send(warm, name="llm-keyring-warm")
