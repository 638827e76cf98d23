"""Sensitive values stay home: `jupyter_llm.protect(obj, columns=None)` / `%llm protect NAME` mark a
variable, a DataFrame or some of its columns; a prompt that interpolates one may go to local targets
only (cloud targets get BLOCKED naming the variable), in single cells, compare and fallbacks alike.

The mark travels with the prompt text itself (`SensitivePrompt`, a str), so every request that carries
it, including later requests whose conversation holds it, is checked where every request passes: the
router (`check_request`). Protection follows the object (and the variable name, for `%llm protect`),
not copies made from it.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .errors import LLMError
from .records import record

if TYPE_CHECKING:
    from .config import Config
    from .events import Request
    from .targets import Target

_lock = threading.Lock()


@record
class _Mark:
    obj: Any                      # kept alive so its id is not reused while marked
    columns: frozenset | None     # None: the whole object


_by_id: dict[int, _Mark] = {}
_by_name: dict[str, frozenset | None] = {}


class SensitivePrompt(str):
    """Prompt text that interpolated protected values; `.sensitive` names them (e.g. `df["salary"]`)."""
    sensitive: tuple[str, ...] = ()

    def __new__(cls, text: str, sensitive: Iterable[str]):
        self = super().__new__(cls, text)
        self.sensitive = tuple(dict.fromkeys(sensitive))
        return self

    def __reduce__(self):
        return (SensitivePrompt, (str(self), self.sensitive))


class SensitiveParts(list):
    """Message content parts (text and images) that carry protected values; `.sensitive` names them."""
    sensitive: tuple[str, ...] = ()

    def __init__(self, parts: Iterable, sensitive: Iterable[str]):
        super().__init__(parts)
        self.sensitive = tuple(dict.fromkeys(sensitive))


def _cols(columns) -> frozenset | None:
    if columns is None:
        return None
    if isinstance(columns, str):
        columns = [columns]
    return frozenset(str(c) for c in columns)


def protect(obj: Any, columns: Iterable[str] | str | None = None) -> Any:
    """Mark `obj` (or only these `columns` of a DataFrame) as sensitive; returns `obj`."""
    if columns is not None and hasattr(obj, "columns"):
        missing = sorted(set(_cols(columns)) - {str(c) for c in obj.columns})
        if missing:
            raise LLMError("BAD_ARGUMENT", f"no column {', '.join(map(repr, missing))} to protect")
    with _lock:
        _by_id[id(obj)] = _Mark(obj, _cols(columns))
    return obj


def unprotect(obj: Any) -> bool:
    with _lock:
        return _by_id.pop(id(obj), None) is not None


def protect_name(name: str, namespace: Mapping[str, Any], columns=None) -> None:
    if name not in namespace:
        raise LLMError("BAD_ARGUMENT", f"no variable {name!r} to protect")
    protect(namespace[name], columns)
    with _lock:
        _by_name[name] = _cols(columns)


def unprotect_name(name: str, namespace: Mapping[str, Any]) -> bool:
    with _lock:
        had = _by_name.pop(name, None) is not None or name in _by_name
    if name in namespace:
        had = unprotect(namespace[name]) or had
    return had


def protected(namespace: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(variable, what is protected) for the names and objects marked, as found in `namespace`."""
    out = []
    with _lock:
        names, ids = dict(_by_name), dict(_by_id)
    for name, value in namespace.items():
        if name.startswith("_"):
            continue
        cols = names.get(name, ids[id(value)].columns if id(value) in ids else False)
        if cols is not False:
            out.append((name, "everything" if cols is None else "columns " + ", ".join(sorted(cols))))
    return out


def _mark_for(root: str, value: Any) -> frozenset | None | bool:
    """The protected columns of a variable (None: all of it), or False when it is not protected."""
    with _lock:
        if root in _by_name:
            return _by_name[root]
        mark = _by_id.get(id(value))
    return False if mark is None else mark.columns


def scan(template: str, namespace: Mapping[str, Any], aliases: Mapping[str, Any] | None = None) -> list[str]:
    """The protected values a prompt template interpolates, as written (`df`, `df["salary"]`, `key`).
    `aliases` gives names whose protection comes from elsewhere (a map's `row`/`item` from its DATA)."""
    from .prompt import _FIELD
    aliases = aliases or {}
    hits = []
    for m in _FIELD.finditer(template):
        field = m.group("field") if m.group(0) not in ("{{", "}}") else None
        if not field:
            continue
        root = field.split(".")[0].split("[")[0]
        if root in aliases:
            cols = aliases[root]
        elif root not in namespace:
            continue
        else:
            cols = _mark_for(root, namespace[root])
        if cols is False:
            continue
        rest = field[len(root):]
        if cols is None or not rest:
            hits.append(field)
            continue
        first = rest[1:].split(".")[0].split("[")[0] if rest.startswith(".") else rest[1:rest.index("]")]
        if first.strip("'\"") in cols:
            hits.append(field)
    return hits


def mark(prompt: str, template: str, namespace: Mapping[str, Any]) -> str:
    """`prompt` as a SensitivePrompt when `template` interpolated protected values, else unchanged."""
    if not _by_id and not _by_name:
        return prompt
    hits = scan(template, namespace)
    return SensitivePrompt(prompt, hits) if hits else prompt


def mark_content(prompt: str, extra: dict, template: str, namespace: Mapping[str, Any]) -> tuple[str, dict]:
    """A cell's (prompt, extra) with the protected values it interpolates marked on both the text and
    any content parts (images) that replace it as the message sent."""
    if not _by_id and not _by_name:
        return prompt, extra
    hits = scan(template, namespace)
    if not hits:
        return prompt, extra
    if isinstance(extra.get("content"), list):
        extra = dict(extra, content=SensitiveParts(extra["content"], hits))
    return SensitivePrompt(prompt, hits), extra


def mark_row(content: Any, template: str, namespace: Mapping[str, Any], data: Any) -> Any:
    """One map row's message content, marked when the template interpolates a protected value: a
    protected name, or `{row...}` / `{item}` of a protected DATA (its protected columns)."""
    if not _by_id and not _by_name:
        return content
    cols = _mark_for("", data)
    aliases = {} if cols is False else {"row": cols, "item": cols}
    hits = scan(template, namespace, aliases)
    if not hits:
        return content
    if isinstance(content, list):
        return SensitiveParts(content, hits)
    return SensitivePrompt(content, hits)


def sensitive_in(request: "Request") -> list[str]:
    names: list[str] = []
    for msg in request.messages:
        content = msg.get("content") if isinstance(msg, dict) else None
        names += list(getattr(content, "sensitive", ()) or ())
    return list(dict.fromkeys(names))


def check_request(target: "Target", request: "Request", config: "Config") -> None:
    """BLOCKED when a request that carries protected values would leave the machine."""
    names = sensitive_in(request)
    if not names:
        return
    from .policy import is_local
    if is_local(target.provider, config):
        return
    shown = ", ".join(f"{{{n}}}" for n in names)
    raise LLMError("BLOCKED", f"the prompt interpolates protected {shown}; it may go to local targets only, "
                   f"not {target}; nothing was sent",
                   hint="use a local target, or %llm protect --remove NAME / jupyter_llm.unprotect(obj)")


def cmd_protect(magics, rest: list[str]) -> None:
    """`%llm protect NAME [--columns a,b]` | `%llm protect --remove NAME` | `%llm protect` (list)."""
    from .magics import _Parser
    ns = magics.shell.user_ns
    if not rest:
        from .tables import show_table
        rows = protected(ns)
        show_table(["variable", "protected"], rows, caption="" if rows else "nothing is protected")
        return
    p = _Parser(prog="%llm protect", add_help=False)
    p.add_argument("name")
    p.add_argument("--columns")
    p.add_argument("--remove", action="store_true")
    args = p.parse_args(rest)
    if args.remove:
        print(f"{args.name} is no longer protected" if unprotect_name(args.name, ns) else f"{args.name} was not protected")
        return
    cols = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    protect_name(args.name, ns, cols)
    what = "columns " + ", ".join(cols) if cols else "all of it"
    print(f"protected {args.name} ({what}): prompts that interpolate it go to local targets only")
