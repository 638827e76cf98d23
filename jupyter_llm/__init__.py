"""jupyter-llm: prompt language models from Jupyter with streaming `%%llm` cells.

`%load_ext jupyter_llm` registers the magics; `jupyter_llm.session()` is the same kernel-resident
session for use as a library. Importing this package loads no provider SDK, widget or pandas.
"""
from __future__ import annotations

import sys

__version__ = "0.2.0"

_session = None
_magics = None


def session():
    """The process-wide Session the magics, the panel and the labextension drive (created on first use)."""
    global _session
    if _session is None:
        from .kernel_session import Session
        _session = Session()
    return _session


def load_ipython_extension(ipython) -> None:
    """`%load_ext jupyter_llm`: register %llm / %%llm and the labextension comm."""
    global _magics
    from .magics import LLMMagics
    s = session()
    _magics = LLMMagics(ipython, s)
    ipython.register_magics(_magics)
    from . import cellinfo
    cellinfo.register(ipython)
    if s.config.error is not None:
        print(s.config.error.line() + " (using defaults)", file=sys.stderr)
    try:
        from . import comm
        comm.register(ipython, s)
    except Exception as exc:  # the status bar is optional; the magics must load
        print(f"jupyter-llm: labextension comm unavailable: {exc}", file=sys.stderr)


def unload_ipython_extension(ipython) -> None:
    """`%unload_ext jupyter_llm`: remove the magics and the comm; the session itself survives."""
    global _magics
    mm = ipython.magics_manager
    for kind in ("line", "cell"):
        mm.magics[kind].pop("llm", None)
    if _magics is not None and _magics in mm.registry.values():
        for key, value in list(mm.registry.items()):
            if value is _magics:
                del mm.registry[key]
    _magics = None
    from . import cellinfo
    cellinfo.unregister(ipython)
    try:
        from . import comm
        comm.unregister(ipython)
    except Exception:
        pass


def _jupyter_labextension_paths():
    """Where the prebuilt JupyterLab extension lives, for `jupyter labextension develop`."""
    return [{"src": "labextension", "dest": "jupyter-llm-labextension"}]
