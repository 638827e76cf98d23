"""Images and tables in prompts: a matplotlib Figure, PIL Image, `IPython.display.Image` or `--attach PATH`
becomes an image part of the message; a DataFrame interpolated as `{df}` becomes a compact Markdown table.

Nothing here imports matplotlib, PIL or pandas: values are recognised by their class's module, so a
prompt without them costs nothing. Which targets take images is decided before anything is sent.
"""
from __future__ import annotations

import base64
import io
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import LLMError

MIMES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))
MAX_IMAGE_BYTES = 20 * 1024 * 1024   # the largest inline image the providers take (OpenAI, Anthropic ~5-20 MB)
_MARK = "\x00jupyter-llm-image-{}\x00"
_MARK_RE = re.compile("\x00jupyter-llm-image-(\\d+)\x00")


def _module(value: Any) -> str:
    return type(value).__module__ or ""


def is_image(value: Any) -> bool:
    mod, name = _module(value), type(value).__name__
    if mod.split(".")[0] == "matplotlib" and hasattr(value, "savefig"):
        return True
    if mod.split(".")[0] == "PIL" and hasattr(value, "save") and hasattr(value, "mode"):
        return True
    return mod.split(".")[0] == "IPython" and name == "Image" and hasattr(value, "data")


def is_table(value: Any) -> bool:
    return _module(value).split(".")[0] == "pandas" and type(value).__name__ == "DataFrame"


def _sniff(data: bytes) -> str | None:
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _part(data: bytes, mime: str, what: str) -> dict[str, Any]:
    if len(data) > MAX_IMAGE_BYTES:
        raise LLMError("BAD_ARGUMENT", f"{what} is {len(data) / 1e6:.1f} MB; providers take at most "
                       f"{MAX_IMAGE_BYTES / 1e6:.0f} MB per image", hint="save it smaller (fewer dpi, JPEG)")
    return {"type": "image", "mime": mime, "data": base64.b64encode(data).decode("ascii")}


def image_part(value: Any) -> dict[str, Any]:
    """The message part for an image value: PNG for figures, the original bytes for the others."""
    mod = _module(value)
    if mod.split(".")[0] == "matplotlib":
        buf = io.BytesIO()
        value.savefig(buf, format="png", bbox_inches="tight")
        return _part(buf.getvalue(), "image/png", "the figure")
    if mod.split(".")[0] == "PIL":
        fmt = (getattr(value, "format", None) or "PNG").upper()
        if fmt not in ("PNG", "JPEG", "WEBP"):
            fmt = "PNG"
        image = value if fmt != "JPEG" or value.mode in ("RGB", "L") else value.convert("RGB")
        buf = io.BytesIO()
        image.save(buf, format=fmt)
        return _part(buf.getvalue(), f"image/{fmt.lower()}", "the image")
    data = value.data
    if isinstance(data, str):  # an Image(url=...) or a path that was never read
        raise LLMError("BAD_ARGUMENT", "this IPython Image holds a URL or path, not image bytes",
                       hint="use Image(filename=PATH) or --attach PATH")
    mime = _sniff(data) or MIMES.get("." + str(getattr(value, "format", "png")).lower())
    if mime is None:
        raise LLMError("BAD_ARGUMENT", "only PNG, JPEG and WebP images can be sent")
    return _part(data, mime, "the image")


def attach(path: str | os.PathLike) -> dict[str, Any]:
    """`--attach PATH`: a png/jpeg/webp file as an image part; BAD_ARGUMENT for anything else."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise LLMError("BAD_ARGUMENT", f"--attach: no file {str(path)!r}; nothing was sent")
    data = p.read_bytes()
    mime = _sniff(data)
    if mime is None:
        raise LLMError("BAD_ARGUMENT", f"--attach: {p.name} is not a PNG, JPEG or WebP image; nothing was sent")
    return _part(data, mime, p.name)


def markdown_table(df: Any, rows: int = 20) -> str:
    """The first `rows` rows of a DataFrame as a Markdown table, with its shape (not its repr)."""
    n_rows, n_cols = df.shape
    head = df.head(max(0, int(rows)))

    def cell(v: Any) -> str:
        text = "" if v is None else str(v)
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= 80 else text[:79] + "…"

    names = [str(head.index.name or "")] + [cell(c) for c in head.columns]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for label, values in zip(head.index, head.itertuples(index=False, name=None)):
        lines.append("| " + " | ".join([cell(label)] + [cell(v) for v in values]) + " |")
    shown = f"first {len(head)} of {n_rows} rows" if len(head) < n_rows else f"{n_rows} rows"
    return f"DataFrame, {n_rows} rows × {n_cols} columns ({shown}):\n\n" + "\n".join(lines)


def render(template: str, namespace: Mapping[str, Any], *, table_rows: int = 20,
           attachments: list[dict[str, Any]] | None = None) -> tuple[str | list[dict[str, Any]], str]:
    """Interpolate `template` with images and tables handled: (message content, prompt text).

    The content is the plain string when there are no images, else a list of text and image parts in
    the order the fields appear, with `attachments` last. The prompt text (for history, estimates and
    dry runs) marks each image as `[image N]`.
    """
    from .prompt import interpolate
    images: list[dict[str, Any]] = []

    def convert(value: Any) -> str | None:
        if is_table(value):
            return markdown_table(value, table_rows)
        if is_image(value):
            images.append(image_part(value))
            return _MARK.format(len(images) - 1)
        return None

    text = interpolate(template, namespace, convert)
    images += list(attachments or [])
    if not images:
        return text, text
    parts: list[dict[str, Any]] = []
    pos = 0
    for m in _MARK_RE.finditer(text):
        if text[pos:m.start()]:
            parts.append({"type": "text", "text": text[pos:m.start()]})
        parts.append(images[int(m.group(1))])
        pos = m.end()
    if text[pos:]:
        parts.append({"type": "text", "text": text[pos:]})
    inline = len(_MARK_RE.findall(text))
    parts += images[inline:]
    label = _MARK_RE.sub(lambda m: f"[image {int(m.group(1)) + 1}]", text)
    label += "".join(f" [image {i + 1}]" for i in range(inline, len(images)))
    return parts, label


def accepts_images(session: Any, target: Any) -> tuple[bool, str]:
    """(True, "") when `target` can take image parts, else (False, why): the model's capabilities decide
    (capcheck.py: llama.cpp /props, known models, the config override); unknown is allowed."""
    from .capcheck import vision
    return vision(session, target)


def require_images(session: Any, targets: list[Any]) -> None:
    """BAD_ARGUMENT (nothing sent) when a target cannot take the images the prompt carries."""
    for t in targets:
        ok, why = accepts_images(session, t)
        if not ok:
            raise LLMError("BAD_ARGUMENT", f"{t} cannot take images: {why}; nothing was sent",
                           hint="choose a target with vision, or drop the image")

