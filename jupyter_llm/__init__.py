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


def protect(obj, columns=None):
    """Mark a value, a DataFrame or some of its `columns` as sensitive: prompts that interpolate it
    may go to local targets only (cloud targets get BLOCKED). Returns `obj`."""
    from .sensitive import protect as _protect
    return _protect(obj, columns)


def unprotect(obj) -> bool:
    """Undo `protect(obj)`."""
    from .sensitive import unprotect as _unprotect
    return _unprotect(obj)


def map(template, data, target=None, schema=None, workers=None, compare=None, **options):  # noqa: A001
    """Send `template` once per item of `data` (DataFrame, Series, list or dict) and return a DataFrame on
    the input's index: `answer` (or one column per `schema` field), status, error, tokens, cost, latency,
    answered_by. `compare=[T1, T2, ...]` runs every row on every target (a column group each); per-target
    figures are in `frame.attrs["summary"]`. Fields: `{row.col}`, `{row["col"]}`, `{item}`, `{index}`, and
    the caller's variables (`namespace=`, default: the IPython namespace). Options: system, temperature,
    max_tokens, top_p, attach, stop_on_error, cache, progress, dry_run. See README "Prompting over data"."""
    from .mapping import map_rows
    if "namespace" not in options:
        try:
            from IPython import get_ipython
            ip = get_ipython()
        except ImportError:
            ip = None
        options["namespace"] = ip.user_ns if ip is not None else {}
    return map_rows(session(), template, data, target=target, schema=schema, workers=workers, compare=compare,
                    **options)


def load_ipython_extension(ipython) -> None:
    """`%load_ext jupyter_llm`: register %llm / %%llm and the labextension comm."""
    global _magics
    from .magics import LLMMagics
    s = session()
    _magics = LLMMagics(ipython, s)
    ipython.register_magics(_magics)
    from . import cellinfo, explain
    cellinfo.register(ipython)
    explain.register(ipython)
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
    from . import cellinfo, explain
    cellinfo.unregister(ipython)
    explain.unregister(ipython)
    try:
        from . import comm
        comm.unregister(ipython)
    except Exception:
        pass


def _jupyter_labextension_paths():
    """Where the prebuilt JupyterLab extension lives, for `jupyter labextension develop`."""
    return [{"src": "labextension", "dest": "jupyter-llm-labextension"}]
