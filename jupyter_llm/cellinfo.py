"""Which cell is running now: its frontend cell id, execution count and the notebook's path.

The context (cell-keyed exchanges) and the history (rows by notebook and cell) both need this; the
`pre_run_cell` hook is the one place IPython tells us (`ExecutionInfo.cell_id`, sent by JupyterLab,
VS Code and nbclient in the execute_request metadata). Outside a kernel everything is None.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class CellInfo:
    cell_id: str | None = None          # the frontend's cellId; None in the terminal
    execution_count: int | None = None  # the In[n] this cell will get
    notebook: str | None = None         # the notebook's path as the server knows it, when it says


_current = CellInfo()
_shell = None


def current() -> CellInfo:
    """The cell being executed now (or the last one run)."""
    return _current


def notebook_path() -> str | None:
    """The notebook path: jupyter_server passes it to the kernel as JPY_SESSION_NAME; VS Code sets
    __vsc_ipynb_file__ in the namespace. None in a terminal or a plain script."""
    path = os.environ.get("JPY_SESSION_NAME")
    if not path and _shell is not None:
        path = _shell.user_ns.get("__vsc_ipynb_file__")
    return str(path) if path else None


def _pre_run_cell(info) -> None:
    global _current
    count = getattr(_shell, "execution_count", None) if _shell is not None else None
    _current = CellInfo(getattr(info, "cell_id", None) or None, count, notebook_path())


def hook(shell, event: str, callback) -> None:
    """Register `callback` for IPython's `event` once: loading the extension again does not add a second."""
    unhook(shell, event, callback)
    shell.events.register(event, callback)


def unhook(shell, event: str, callback) -> None:
    try:
        shell.events.unregister(event, callback)
    except ValueError:  # was not registered
        pass


def register(shell) -> None:
    """Hook `pre_run_cell` (idempotent)."""
    global _shell
    _shell = shell
    hook(shell, "pre_run_cell", _pre_run_cell)


def unregister(shell) -> None:
    global _shell, _current
    unhook(shell, "pre_run_cell", _pre_run_cell)
    _shell, _current = None, CellInfo()
