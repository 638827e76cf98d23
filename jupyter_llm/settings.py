"""Session settings (`%llm set`, `[defaults]`, per-cell options): which exist, their types, and coercing a value to one."""
from __future__ import annotations

from typing import Any

from .errors import LLMError
from .validation import _unencodable, check_number, numeric_spec

_SETTINGS = {"temperature": float, "max_tokens": int, "top_p": float, "system": str,
             "timeout": float, "stall_timeout": float, "deadline": float, "format": str, "cache": bool,
             "footer": bool, "table_rows": int, "context": str}
FORMATS = ("markdown", "text", "code", "json", "html")
MAX_SECONDS = 86400.0  # the longest timeout, stall_timeout or deadline accepted


def coerce_setting(key: str, value: Any, *, where: str = "") -> Any:
    """Validate one session setting (`%llm set`, `[defaults]`); raise BAD_ARGUMENT/CONFIG_ERROR."""
    code = "CONFIG_ERROR" if where else "BAD_ARGUMENT"
    prefix = f"{where}: " if where else ""
    if key not in _SETTINGS:
        raise LLMError(code, f"{prefix}unknown setting {key!r}", hint=f"known: {', '.join(_SETTINGS)}")
    kind = _SETTINGS[key]
    if key == "context":  # auto | all | N (context.py)
        from .context import parse_mode
        try:
            return parse_mode(value)
        except ValueError:
            raise LLMError(code, f"{prefix}context must be auto, all or a number of exchanges, got {value!r}") from None
    try:
        if kind is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in ("true", "false", "on", "off", "1", "0", "yes", "no"):
                    raise ValueError
                value = low in ("true", "on", "1", "yes")
            elif not isinstance(value, bool):
                raise ValueError
        elif kind is str:
            value = str(value)
        elif numeric_spec(key) is not None or kind in (int, float):
            return check_number(key, value, where=where, kind=kind)
        else:
            value = kind(value)
    except (TypeError, ValueError):
        raise LLMError(code, f"{prefix}{key} must be {kind.__name__}, got {value!r}") from None
    if kind is str and ("\x00" in value or _unencodable(value)):
        raise LLMError(code, f"{prefix}{key} holds a NUL or a lone surrogate character")
    if key == "format" and value not in FORMATS:
        raise LLMError(code, f"{prefix}format must be one of {', '.join(FORMATS)}, got {value!r}")
    return value
