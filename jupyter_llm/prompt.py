"""`{name}`, `{name.attr}`, `{name[key]}` filled from the user namespace; other braces left alone.

Only fields that look like Python format fields are filled (no expressions are evaluated);
`{{` and `}}` give literal braces; JSON, code and other brace text pass through untouched.
Text that cannot be sent (a lone surrogate) is refused naming the variable it came from.
"""
from __future__ import annotations

import re
import string
from typing import Any, Callable, Mapping

from .errors import LLMError

_FIELD = re.compile(
    r"\{\{|\}\}"
    r"|\{(?P<field>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[[^\[\]{}'\"]+\]"
    r"|\[\"[^\"\[\]{}]*\"\]|\['[^'\[\]{}]*'\])*)"
    r"(?P<conv>![rsa])?(?::(?P<spec>[^{}\n]*))?\}"
)
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[\"([^\"]*)\"\]|\['([^']*)'\]|\[([^\]]+)\]")
_formatter = string.Formatter()


def _get_field(field: str, namespace: Mapping[str, Any]) -> Any:
    """`name`, `.attr`, `[key]` (digits are ints, as in str.format) and `["key"]` / `['key']` (always str)."""
    root = re.match(r"[A-Za-z_][A-Za-z0-9_]*", field).group(0)
    value = namespace[root]
    for m in _STEP.finditer(field, len(root)):
        attr, dq, sq, bare = m.groups()
        if attr is not None:
            value = getattr(value, attr)
        elif bare is not None:
            value = value[int(bare) if bare.isdigit() else bare]
        else:
            value = value[dq if dq is not None else sq]
    return value


def interpolate(template: str, namespace: Mapping[str, Any], convert: Callable[[Any], str | None] | None = None) -> str:
    """Fill the fields of `template`; raise BAD_ARGUMENT naming the first unknown one (nothing is sent).
    `convert(value)` may return the text for a value (a DataFrame as a table, an image as a marker) when the
    field has no conversion or format spec; None leaves the value to `format`."""

    def fill(m: re.Match) -> str:
        tok = m.group(0)
        if tok == "{{":
            return "{"
        if tok == "}}":
            return "}"
        field, conv, spec = m.group("field"), m.group("conv"), m.group("spec") or ""
        try:
            value = _get_field(field, namespace)
        except KeyError as exc:
            root = field.split(".")[0].split("[")[0]
            if root not in namespace:
                raise LLMError("BAD_ARGUMENT", f"unknown name {{{root}}} in the prompt; nothing was sent",
                               hint="define it first, or write {{ and }} for literal braces") from None
            raise LLMError("BAD_ARGUMENT", f"{{{field}}}: no key {exc.args[0]!r}; nothing was sent") from None
        except (AttributeError, IndexError, TypeError) as exc:
            raise LLMError("BAD_ARGUMENT", f"{{{field}}}: {exc}; nothing was sent") from None
        except Exception as exc:  # a property or __getitem__ of the user's object raised
            raise LLMError("BAD_ARGUMENT", f"{{{field}}}: {type(exc).__name__}: {exc}; nothing was sent") from None
        if convert is not None and not conv and not spec:
            try:
                text = convert(value)
            except LLMError:
                raise
            except Exception as exc:  # e.g. a DataFrame whose rendering fails
                raise LLMError("BAD_ARGUMENT", f"{{{field}}}: {type(exc).__name__}: {exc}; nothing was sent") from None
            if text is not None:
                return _sendable(text, f"{{{field}}}")
        try:
            if conv:
                value = _formatter.convert_field(value, conv[1])
            text = format(value, spec)
        except (ValueError, TypeError) as exc:
            raise LLMError("BAD_ARGUMENT", f"{{{field}:{spec}}}: {exc}; nothing was sent") from None
        except Exception as exc:  # the object's __format__/__str__/__repr__ raised
            raise LLMError("BAD_ARGUMENT", f"{{{field}}}: formatting it raised {type(exc).__name__}: {exc}; "
                           "nothing was sent") from None
        if not isinstance(text, str):
            raise LLMError("BAD_ARGUMENT", f"{{{field}}}: its __format__ returned {type(text).__name__}, not text")
        _sendable(text, f"{{{field}}}")
        return text

    return _sendable(_FIELD.sub(fill, template), "the prompt")


def _sendable(text: str, what: str) -> str:
    """Text that can go on the wire as UTF-8 JSON: no lone surrogates (BAD_ARGUMENT naming `what`)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LLMError("BAD_ARGUMENT", f"{what} holds a lone surrogate character ({exc.object[exc.start]!r} at "
                       f"position {exc.start}) that cannot be encoded as UTF-8; nothing was sent",
                       hint="clean it, e.g. s.encode('utf-8', 'replace').decode()") from None
    return text
