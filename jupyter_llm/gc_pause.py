"""Python's cyclic garbage collector paused while a cell imports an SDK and sends its first request, and run
once that request's reply has begun. An SDK's import allocates a few hundred thousand long-lived objects
(modules, classes, functions); in a kernel's first cloud cell they set off a full collection and several
younger ones, 60 to 100 ms that find almost nothing, before the request leaves. While the main thread waits
on the network for the model's answer, the same collection costs the answer nothing (`inflight`)."""
from __future__ import annotations

import gc
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

__all__ = ["pause_until_reply", "paused_until_reply"]

_lock = threading.Lock()
_held = 0                 # pauses not released yet
_reenable = False         # whether the collector was on when the first of them began


def pause_until_reply() -> Callable[[], None]:
    """Stop automatic collections now; they resume with one full collection on a daemon thread once the
    next request's reply has begun (or after `inflight.MAX_WAIT` s when none does). Returns a release for
    a caller that fails before its request is out: it turns the collector back on at once (a release is
    idempotent). A collector the user had turned off stays off. Pauses nest: the collector resumes when the
    last one ends."""
    global _held, _reenable
    with _lock:
        if _held == 0:
            _reenable = gc.isenabled()
            gc.disable()
        _held += 1
    done = threading.Lock()

    def release(collect: bool = False) -> None:
        if not done.acquire(blocking=False):
            return   # released already
        if _resume() and collect:
            gc.collect()
    from . import inflight
    inflight.after_send(lambda: release(collect=True), name="llm-gc")
    return release


@contextmanager
def paused_until_reply() -> Iterator[None]:
    """`pause_until_reply` around a block, released when the block ends however it ends: the collector comes
    back at once if no reply began in it (a failure before the send, an interrupt, a cached answer)."""
    release = pause_until_reply()
    try:
        yield
    finally:
        release()


def _resume() -> bool:
    """End one pause; True when it was the last and the collector is back on."""
    global _held
    with _lock:
        _held -= 1
        if _held or not _reenable:
            return False
        gc.enable()
        return True
