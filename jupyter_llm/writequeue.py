"""The history write queue (nothing is lost): writes run on one background thread, in order, and a
locked or full database is retried for a bounded time; each caller holds a `Ticket` that says
whether its row was recorded, so the cell can say so every time it was not."""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger(__name__)

RETRY_FOR = 30.0          # seconds a queued write is retried while the database is locked or full


class Ticket:
    """The fate of one queued write: `wait()` until it is done; then `ok`, `row_id` or `reason`."""

    def __init__(self, what: str):
        self.what = what
        self.ok: bool | None = None      # None while pending
        self.row_id = 0
        self.reason = ""
        self._done = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the write is finished (recorded or given up); False if still pending."""
        return self._done.wait(timeout)

    def _finish(self, ok: bool, row_id: Any = 0, reason: str = "") -> None:
        self.ok, self.reason = ok, reason
        self.row_id = row_id if isinstance(row_id, int) else 0
        self._done.set()


class WriteQueue:
    """One writer thread per Store, started on demand; `flush` waits for it (bounded)."""

    def __init__(self, store: "Store"):
        self.store = store
        self.retry_for = RETRY_FOR
        self._queue: list[tuple[Ticket, Callable[[], Any]]] = []
        self._cv = threading.Condition()
        self._writer: threading.Thread | None = None
        self._lost: list[Ticket] = []        # queued exchanges that were finally given up
        self._atexit = False

    def in_writer(self) -> bool:
        return threading.current_thread() is self._writer

    def submit(self, what: str, write: Callable[[], Any]) -> Ticket:
        """Queue `write` (a call of one of this store's record methods). A background thread runs it,
        retrying a locked or full database for up to `retry_for` seconds; never blocks the caller."""
        ticket = Ticket(what)
        with self._cv:
            self._queue.append((ticket, write))
            if self._writer is None or not self._writer.is_alive():
                if not self._atexit:
                    import atexit
                    atexit.register(self.flush, 5.0)   # give queued rows a last chance at exit
                    self._atexit = True
                self._writer = threading.Thread(target=self._drain, name="llm-history-writer", daemon=True)
                self._writer.start()
            self._cv.notify()
        return ticket

    def take_lost(self) -> list[Ticket]:
        """Queued writes given up since the last call (so a later cell can say so)."""
        with self._cv:
            lost, self._lost = self._lost, []
        return lost

    def pending(self) -> int:
        with self._cv:
            return len(self._queue)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait up to `timeout` s for the queue to empty; True if it did."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.1))
        return True

    def _drain(self) -> None:
        self.store._tls.strict = True
        while True:
            with self._cv:
                if not self._queue:
                    self._writer = None
                    self._cv.notify_all()
                    return
                ticket, write = self._queue[0]
            self._write_with_retry(ticket, write)
            with self._cv:
                self._queue.pop(0)
                if ticket.ok is False and ticket.what == "exchange":
                    self._lost.append(ticket)
                self._cv.notify_all()

    def _write_with_retry(self, ticket: Ticket, write: Callable[[], Any]) -> None:
        from .store import STORE_ERRORS
        deadline = time.monotonic() + self.retry_for
        delay = 0.05
        while True:
            try:
                ticket._finish(True, write())
                return
            except STORE_ERRORS as exc:
                reason = _reason(exc)
                if self.store._disabled or time.monotonic() + delay > deadline:
                    log.warning("jupyter-llm: a %s could not be written to the history at %s: %s",
                                ticket.what, self.store.path, reason)
                    ticket._finish(False, reason=reason)
                    return
                ticket.reason = reason
                log.debug("history %s write failed (%s); retrying", ticket.what, reason)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            except Exception as exc:  # a bug must not kill the writer thread and strand the queue
                ticket._finish(False, reason=f"{type(exc).__name__}: {exc}")
                return

def _reason(exc: BaseException) -> str:
    text = str(exc)
    low = text.lower()
    if "locked" in low or "busy" in low:
        return "the database is locked by another process"
    if "full" in low or getattr(exc, "errno", None) == 28:
        return "the disk or database is full"
    return f"{type(exc).__name__}: {text}"


def report_write(store: "Store", ticket: Ticket, wait: float = 0.5) -> str | None:
    """Wait briefly for a queued history row; the line to show when it (or an earlier queued one) is
    not recorded, else None. An interrupt while waiting leaves the row queued: nothing is lost."""
    try:
        ticket.wait(wait)
    except KeyboardInterrupt:
        pass
    notes = []
    lost = store.take_lost()
    earlier = [t for t in lost if t is not ticket]
    if earlier:
        notes.append(f"{len(earlier)} earlier exchange{'s' if len(earlier) > 1 else ''} could not be recorded "
                     f"in the history ({earlier[-1].reason})")
    if ticket.ok is False:
        if ticket not in lost:   # the writer gave up on it after take_lost; take it now
            store.take_lost()
        notes.append(f"this exchange could not be recorded in the history ({ticket.reason}); "
                     "the answer itself is kept (the returned response, _llm)")
    elif ticket.ok is None:
        why = ticket.reason or "the history database is locked or busy"
        notes.append(f"this exchange is not in the history yet ({why}); retrying in the background "
                     f"for up to {store.retry_for:g} s")
    if not notes:
        return None
    return "jupyter-llm: " + "; ".join(notes) + f" [{store.path}]"


