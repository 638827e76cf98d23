"""`{name}`, `{name.attr}`, `{name[key]}` filled from the user namespace; other braces left alone.

Only fields that look like Python format fields are filled (no expressions are evaluated);
`{{` and `}}` give literal braces; JSON, code and other brace text pass through untouched.
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
        if convert is not None and not conv and not spec:
            text = convert(value)
            if text is not None:
                return text
        if conv:
            value = _formatter.convert_field(value, conv[1])
        try:
            return format(value, spec)
        except (ValueError, TypeError) as exc:
            raise LLMError("BAD_ARGUMENT", f"{{{field}:{spec}}}: {exc}; nothing was sent") from None

    return _FIELD.sub(fill, template)
