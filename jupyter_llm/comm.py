"""Kernel side of the JupyterLab extension: the comm target `jupyter_llm` (frontend: labextension/src/index.ts)."""

# Protocol (JSON on one comm per kernel, shared by every frontend that adopts it):
#
# - kernel -> frontend
#   - ``{"type": "state", "target", "cost", "tokens", "input_tokens", "output_tokens", "requests", "mode"}``
#     (``mode``: "local-only" or "cloud allowed", see policy.py):
#     sent as the comm_open data at `%load_ext`, after every session change, and as a reply.
#   - ``{"type": "targets", "targets": [...], "active"}``: reply to ``targets``.
#   - ``{"type": "error", "message"}``: a request failed (``message`` is the LLMError line).
#   - replies echo the request's ``"id"`` so a frontend can match them; broadcasts carry none.
#   - comm_close with ``{"type": "closed"}`` at `%unload_ext`.
# - frontend -> kernel: ``{"action": "state" | "targets" | "use", "target"?, "id"?}`` as comm_msg or as
#   the data of a frontend-opened comm_open.
# - frontend -> kernel: ``{"action": "cells", "cells": [cell ids in notebook order], "removed": [ids]}``
#   whenever the notebook's cell list changes (debounced): the exchanges of the `removed` cells are
#   dropped and the rest follow the notebook's order (context.Conversation.keep_cells). Without
#   ``removed``, every exchange whose cell is not in ``cells`` is dropped. Reply ``{"type": "cells",
#   "dropped": n}``.
#
# At load the kernel registers the target and opens a comm, so an open page learns at once; a page
# that connects later asks with comm_info_request and adopts the kernel's comm by id. Session
# observers may fire on worker threads (ipykernel handles comm messages on the shell that last sent
# on the comm, here the main one, so a request waits for a running cell), so every send goes through one lock.
from __future__ import annotations

import threading
from typing import Any, Callable

TARGET = "jupyter_llm"

_bridge: "Bridge | None" = None


def register(ipython: Any, session: Any) -> "Bridge | None":
    """Register the comm target and open a comm to the frontend; a no-op outside a kernel."""
    global _bridge
    unregister(ipython)
    kernel = getattr(ipython, "kernel", None)
    if kernel is None:  # plain IPython terminal: no frontend to talk to
        return None
    manager = getattr(kernel, "comm_manager", None)
    if manager is None:
        import comm as comm_pkg  # lazy: only inside a kernel
        manager = comm_pkg.get_comm_manager()
    _bridge = Bridge(session, manager)
    _bridge.start()
    return _bridge


def unregister(ipython: Any = None) -> None:
    """Close the comms, unregister the target and stop observing the session."""
    global _bridge
    bridge, _bridge = _bridge, None
    if bridge is not None:
        bridge.stop()


class Bridge:
    """Keeps the frontends' view of one Session current over comms of target `jupyter_llm`."""

    def __init__(self, session: Any, manager: Any, create_comm: Callable[..., Any] | None = None):
        self.session = session
        self.manager = manager
        self._create_comm = create_comm
        self._comms: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._last_state: dict[str, Any] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._stopped = False

    # ---- lifecycle ----
    def start(self) -> None:
        """Register the target, subscribe to the session and open the kernel's own comm."""
        self.manager.register_target(TARGET, self._on_open)
        self._unsubscribe = self.session.observe(self._on_change)
        create = self._create_comm
        if create is None:
            from comm import create_comm as create
        state = self.state()
        with self._lock:
            comm = create(target_name=TARGET, data=state)
            self._last_state = state
            self._adopt(comm)

    def stop(self) -> None:
        """Undo start(): frontends see a comm_close and hide the status item."""
        with self._lock:
            self._stopped = True
            comms, self._comms = list(self._comms.values()), {}
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for comm in comms:
            try:
                comm.close(data={"type": "closed"})
            except Exception:
                pass
        try:
            self.manager.unregister_target(TARGET, self._on_open)
        except Exception:
            pass

    @property
    def comms(self) -> list[Any]:
        """The open comms (the kernel's own plus any a frontend opened)."""
        with self._lock:
            return list(self._comms.values())

    # ---- state ----
    def state(self) -> dict[str, Any]:
        """The `state` message for the session as it is now."""
        summary = self.session.usage.summary()
        tin = int(summary.get("input_tokens") or 0)
        tout = int(summary.get("output_tokens") or 0)
        return {"type": "state", "target": str(self.session.active), "cost": float(summary.get("cost") or 0.0),
                "tokens": tin + tout, "input_tokens": tin, "output_tokens": tout,
                "requests": int(summary.get("requests") or 0), "mode": str(getattr(self.session, "mode", "") or "")}

    def broadcast(self, force: bool = False) -> None:
        """Send the state to every comm unless it is unchanged since the last broadcast."""
        state = self.state()
        with self._lock:
            if self._stopped or (not force and state == self._last_state):
                return
            self._last_state = state
            for comm in list(self._comms.values()):
                self._send(comm, state)

    # ---- comm plumbing ----
    def _adopt(self, comm: Any) -> None:
        self._comms[comm.comm_id] = comm
        comm.on_msg(lambda msg, comm=comm: self._on_msg(comm, msg))
        comm.on_close(lambda msg, comm=comm: self._on_close(comm))

    def _on_open(self, comm: Any, msg: dict) -> None:
        with self._lock:
            if self._stopped:
                return
            self._adopt(comm)
        data = (msg.get("content") or {}).get("data") or {}
        self._handle(comm, data if data.get("action") else {"action": "state"})

    def _on_close(self, comm: Any) -> None:
        with self._lock:
            self._comms.pop(comm.comm_id, None)

    def _on_msg(self, comm: Any, msg: dict) -> None:
        self._handle(comm, (msg.get("content") or {}).get("data") or {})

    def _on_change(self, change: str) -> None:
        self.broadcast()

    def _send(self, comm: Any, data: dict) -> None:
        with self._lock:
            try:
                comm.send(data)
            except Exception:  # a closed comm or a dying kernel must not break the session
                self._comms.pop(getattr(comm, "comm_id", None), None)

    def _handle(self, comm: Any, data: dict) -> None:
        action = data.get("action")
        rid = data.get("id")
        try:
            if action == "state":
                reply = self.state()
            elif action == "targets":
                reply = {"type": "targets", "targets": list(self.session.known_targets()),
                         "active": str(self.session.active)}
            elif action == "cells":
                cells, removed = data.get("cells"), data.get("removed")
                if not isinstance(cells, list) or not all(isinstance(c, str) for c in cells):
                    raise ValueError("cells must be a list of cell ids")
                if removed is not None and (not isinstance(removed, list) or not all(isinstance(c, str) for c in removed)):
                    raise ValueError("removed must be a list of cell ids")
                reply = {"type": "cells", "dropped": self.session.keep_cells(cells, removed)}
            elif action == "use":
                target = str(data.get("target") or "").strip()
                if not target:
                    raise ValueError("no target given")
                self.session.use(target)
                self.broadcast()  # in case the session did not notify
                reply = self.state()
            else:
                raise ValueError(f"unknown action {action!r}")
        except Exception as exc:
            line = getattr(exc, "line", None)
            message = line() if callable(line) else f"{type(exc).__name__}: {exc}"
            reply = {"type": "error", "message": message}
        if rid is not None:
            reply["id"] = rid
        self._send(comm, reply)
