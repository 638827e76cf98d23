"""An interrupted answer ends calmly (its text kept, one quiet line) yet still stops "Run All".

A cell that swallows KeyboardInterrupt replies "ok", so the kernel would go on to run every cell
queued after it, though the user pressed stop to stop. ipykernel aborts the queue after a failed
cell; we ask it to do the same after an interrupted answer, without a red error on top of the text.
"""
from __future__ import annotations

import logging

log = logging.getLogger("jupyter_llm")


def stop_queued_cells(shell) -> bool:
    """Abort the execute requests queued behind this cell, as ipykernel does after an error.
    True when a kernel took the request; False in a terminal or a kernel without that hook."""
    kernel = getattr(shell, "kernel", None)
    abort = getattr(kernel, "_abort_queues", None)
    if abort is None:
        return False
    try:
        abort()
        return True
    except Exception:  # an ipykernel without it: the queue runs on, as it would have
        log.debug("could not abort the queued cells", exc_info=True)
        return False
