"""`%llm explain` / `%llm fix` and `{Err[n]}`: the errors cells raised, sent to the model with their source.

A `post_run_cell` hook (registered at `%load_ext`) keeps each failed cell's error by execution count:
type, message, the traceback without IPython's own frames, and the cell's source. `Err` in the user
namespace maps n to that error (as `In`/`Out` do for sources and results), so `{Err[3]}` in a prompt
interpolates cell 3's error. `explain` streams an explanation of the last (or cell N's) error from the
active target; `fix` asks for the corrected cell in code format and inserts it below.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass

from .errors import LLMError

KEEP = 100              # errors remembered (the oldest are forgotten first)
MAX_TRACEBACK = 6000    # characters of traceback sent (the end is kept: it names the failing line)
MAX_SOURCE = 12000

EXPLAIN = ("This Python code, run in a Jupyter notebook cell, raised the error below. Explain briefly what went "
           "wrong and why, and how to fix it.")
FIX = ("This Python code, run in a Jupyter notebook cell, raised the error below. Reply with the complete "
       "corrected cell in a single ```python code block, then one sentence saying what you changed.")


@dataclass(frozen=True)
class CellError:
    """The error one cell raised: `str()` (and `{Err[n]}`) gives the traceback ending in `Type: message`."""
    execution_count: int | None
    type: str
    message: str
    traceback: str
    source: str

    def __str__(self) -> str:
        return self.traceback or f"{self.type}: {self.message}"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __repr__(self) -> str:
        where = f"cell [{self.execution_count}]" if self.execution_count is not None else "a cell"
        return f"<CellError in {where}: {self.type}: {self.message}>"


class ErrorLog(dict):
    """execution count -> CellError; a missing cell is one clear BAD_ARGUMENT (nothing is sent)."""

    def __missing__(self, key):
        known = ", ".join(str(k) for k in sorted(self)[-8:]) or "none yet"
        raise LLMError("BAD_ARGUMENT", f"cell [{key}] raised no error that jupyter-llm saw (cells with errors: {known})",
                       hint="run %load_ext jupyter_llm before the failing cell")

    def last(self) -> CellError | None:
        return self[max(self)] if self else None

    def __repr__(self) -> str:
        return f"<Err: errors of cells {sorted(self)}>"


ERRORS = ErrorLog()
_shell = None


def describe(exc: BaseException, source: str = "", execution_count: int | None = None) -> CellError:
    """A CellError from an exception: the traceback starts at the user's code, not IPython's."""
    tb = exc.__traceback__
    while tb is not None and _internal(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    if isinstance(exc, SyntaxError):
        lines = traceback.format_exception_only(type(exc), exc)
    else:
        lines = traceback.format_exception(type(exc), exc, tb)
    text = "".join(lines).rstrip("\n")
    if len(text) > MAX_TRACEBACK:
        text = "…\n" + text[-MAX_TRACEBACK:]
    return CellError(execution_count, type(exc).__name__, str(exc), text, source)


def _internal(filename: str) -> bool:
    return "/IPython/core/" in filename.replace("\\", "/")


def _post_run_cell(result) -> None:
    exc = result.error_in_exec or result.error_before_exec
    if exc is None:
        return
    count = getattr(result, "execution_count", None)
    source = getattr(getattr(result, "info", None), "raw_cell", "") or ""
    err = describe(exc, source, count)
    key = count if count is not None else (max(ERRORS) + 1 if ERRORS else 0)
    ERRORS[key] = err
    while len(ERRORS) > KEEP:
        del ERRORS[min(ERRORS)]


def register(shell) -> None:
    """Hook `post_run_cell` and put `Err` in the namespace (unless the user has their own `Err`)."""
    global _shell
    _shell = shell
    from .cellinfo import hook
    hook(shell, "post_run_cell", _post_run_cell)
    if "Err" not in shell.user_ns:
        shell.user_ns["Err"] = ERRORS
        shell.user_ns_hidden["Err"] = ERRORS


def unregister(shell) -> None:
    global _shell
    from .cellinfo import unhook
    unhook(shell, "post_run_cell", _post_run_cell)
    if shell.user_ns.get("Err") is ERRORS:
        del shell.user_ns["Err"]
        shell.user_ns_hidden.pop("Err", None)
    _shell = None


def last_error(shell, cell: int | None = None) -> CellError:
    """Cell `cell`'s error, else the last one seen (falling back to IPython's sys.last_value)."""
    if cell is not None:
        return ERRORS[cell]
    err = ERRORS.last()
    if err is not None:
        return err
    import sys
    exc = getattr(sys, "last_value", None)
    if exc is None:
        raise LLMError("BAD_ARGUMENT", "there is no error to explain: no cell has failed since %load_ext jupyter_llm")
    return describe(exc)


def prompt_for(err: CellError, *, fix: bool) -> str:
    source = err.source.strip("\n")
    if len(source) > MAX_SOURCE:
        source = source[:MAX_SOURCE] + "\n# … (cut)"
    parts = [FIX if fix else EXPLAIN]
    if source:
        parts.append(f"The cell:\n```python\n{source}\n```")
    parts.append(f"The error:\n```\n{err}\n```")
    return "\n\n".join(parts)


def _run(magics, rest: list[str], *, fix: bool):
    from .answer import answer
    from .magics import _Parser
    name = "fix" if fix else "explain"
    p = _Parser(prog=f"%llm {name}", add_help=False)
    p.add_argument("cell", nargs="?", type=int, help="the execution count of the failed cell (default: the last)")
    p.add_argument("--target")
    args = p.parse_args(rest)
    err = last_error(magics.shell, args.cell)
    return answer(magics, prompt_for(err, fix=fix), target=args.target, fmt="code" if fix else "markdown",
                  insert=fix)


def cmd_explain(magics, rest: list[str]):
    """`%llm explain [N] [--target T]`: stream an explanation of the last error (or cell N's)."""
    return _run(magics, rest, fix=False)


def cmd_fix(magics, rest: list[str]):
    """`%llm fix [N] [--target T]`: ask for the corrected cell and insert it below."""
    return _run(magics, rest, fix=True)
