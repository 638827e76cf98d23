"""Work deferred until a request is out and its reply has begun: the kernel's main thread then waits on
the network for the answer's body (a cloud model's first token takes hundreds of milliseconds), so a
daemon thread gets the GIL at no cost to the answer. Earlier, while the request is being built and sent,
the main thread gives up the GIL at every socket call and would wait up to a switch interval (5 ms) to get
it back each time. `keyring_prefetch` uses it to load keyring after a helper process has read the key,
`exchange` to open the history database before the first answer's row is written, `gc_pause` to run the
garbage collection a first cell's SDK import postponed, and a compare to import pandas for its frame."""
from __future__ import annotations

import importlib
import logging
import sys
import threading
from typing import Callable

__all__ = ["after_send", "import_after_send", "waiting", "MAX_WAIT"]

log = logging.getLogger(__name__)

MAX_WAIT = 5.0   # seconds: the work runs anyway if no reply begins that soon
_lock = threading.Lock()
_waiting: list[threading.Event] = []


def after_send(fn: Callable[[], object], name: str = "llm-inflight", *,
               otherwise: Callable[[], object] | None = None) -> None:
    """Run `fn` in a daemon thread once the next request's reply has begun; when none has after MAX_WAIT s,
    run `otherwise` instead if given, else `fn` anyway. Exceptions are logged at debug level: deferred work
    must never disturb an answer."""
    go = threading.Event()
    with _lock:
        _waiting.append(go)

    def run() -> None:
        work = fn
        if not go.wait(MAX_WAIT):
            with _lock:   # no reply began (the request failed, or is slow to start): stop waiting for one
                if go in _waiting:
                    _waiting.remove(go)
            if otherwise is not None:
                work = otherwise
        try:
            work()
        except Exception as exc:
            log.debug("deferred %s failed: %s", name, type(exc).__name__)
    threading.Thread(target=run, name=name, daemon=True).start()


def import_after_send(module: str) -> None:
    """Import `module`, if installed and not loaded yet, once the next reply has begun: pandas for a compare's
    or a map's frame (about 1 s cold) then loads while the answers stream, neither before the requests
    leave nor after the answers are in."""
    if module in sys.modules:
        return

    def load() -> None:
        try:
            importlib.import_module(module)
        except ImportError:   # reported where the frame is built
            pass
    after_send(load, name=f"llm-import-{module}")


def waiting() -> None:
    """A request is out and its reply has begun (status and headers are in): start what was deferred."""
    if not _waiting:   # the usual case: nothing deferred, no lock taken
        return
    with _lock:
        ready = _waiting[:]
        _waiting.clear()
    for go in ready:
        go.set()
