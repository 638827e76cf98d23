"""The MIME bundles of an answer in each format (markdown, text, code, json, html) and the helpers the
faces share (code extraction, JSON parsing, kernel detection). Streaming lives in `stream_display`.
"""
from __future__ import annotations

import json
import re
from typing import Any


def in_kernel() -> bool:
    """True inside a Jupyter kernel (rich displays work); False in the IPython terminal or plain Python."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def extract_code(text: str) -> tuple[str, str]:
    """(language, code): the fenced blocks of an answer joined, or the whole answer if it has none."""
    blocks = re.findall(r"^\s*```([\w+-]*)[^\n]*\n(.*?)^\s*```", text, re.M | re.S)
    if not blocks:
        return "python", text.strip("\n")
    lang = next((b[0] for b in blocks if b[0]), "python")
    return lang, "\n\n".join(b[1].rstrip("\n") for b in blocks)


def parse_json(text: str) -> Any:
    """The JSON value in an answer (fences and prose around one object/array tolerated)."""
    candidates = [text.strip()]
    m = re.search(r"```(?:json)?\s*\n(.*?)```", text, re.S)
    if m:
        candidates.insert(0, m.group(1).strip())
    start = min([i for i in (text.find("{"), text.find("[")) if i >= 0], default=-1)
    if start >= 0:
        end = max(text.rfind("}"), text.rfind("]"))
        candidates.append(text[start:end + 1])
    error = None
    for c in candidates:
        try:
            return json.loads(c)
        except ValueError as exc:
            error = error or exc
    raise error  # type: ignore[misc]


def bundle(fmt: str, text: str, *, live: bool = False) -> dict[str, Any]:
    """The MIME bundle for `text` in format `fmt` (streaming or final)."""
    if fmt == "text":
        return {"text/plain": text}
    if fmt == "html" and not live:
        return {"text/html": text, "text/plain": text}
    if fmt == "code":
        lang, code = extract_code(text) if not live else ("", text)
        return {"text/markdown": f"```{lang}\n{code}\n```", "text/plain": code}
    if fmt == "json":
        return {"text/markdown": f"```json\n{text}\n```", "text/plain": text}
    return {"text/markdown": text, "text/plain": text}



