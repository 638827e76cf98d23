"""Map rows without sending anything: a template and DATA (DataFrame, Series, list, dict) become one
Request per row (messages, parameters, schema), plus each row's cache key and token estimate. The map
(mapping.py) sends them; batch jobs and server pools can reuse them as they are."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .errors import LLMError
from .events import Request, image_parts, text_of

IMAGE_TOKENS = 1600          # a typical image's input tokens, for estimates (OpenAI high detail ~765-1105, Claude ~1600)


@dataclass
class Row:
    """One rendered row: its index label, prompt text and Request (None when the template failed on it)."""
    position: int
    label: Any
    prompt: str
    request: Request | None
    error: LLMError | None = None


@dataclass
class Plan:
    """Every row of a map, the input's index, the schema and whether the prompts carry images."""
    rows: list[Row]
    index: Any                       # pandas Index of the input, or a list of labels
    schema: Any = None               # schema.Schema or None
    images: bool = False

    def __len__(self) -> int:
        return len(self.rows)


class RowView:
    """A row as the template sees it: `{row.col}` and `{row["col"]}` are always the row's values, also for
    columns named like Series attributes (`name`, `size`, `count`, `index`...); anything else, and the
    text of `{row}`, is the row's own (a pandas Series, or a dict)."""
    __slots__ = ("_row",)

    def __init__(self, row: Any):
        self._row = row

    def __getattr__(self, name: str) -> Any:
        row = object.__getattribute__(self, "_row")
        try:
            return row[name]
        except (KeyError, TypeError, IndexError):
            return getattr(row, name)

    def __getitem__(self, key: Any) -> Any:
        return self._row[key]

    def __format__(self, spec: str) -> str:
        return format(self._row, spec)

    def __str__(self) -> str:
        return str(self._row)

    def __repr__(self) -> str:
        return repr(self._row)


def _items(data: Any) -> tuple[list[Any], list[Any], Any, str]:
    """(labels, values, index, kind) of DATA; BAD_ARGUMENT when it cannot be mapped over."""
    mod = (type(data).__module__ or "").split(".")[0]
    if mod == "pandas" and type(data).__name__ == "DataFrame":
        return list(data.index), [r for _, r in data.iterrows()], data.index, "frame"
    if mod == "pandas" and type(data).__name__ == "Series":
        return list(data.index), list(data.to_numpy(dtype=object)), data.index, "series"
    if isinstance(data, Mapping):
        return list(data.keys()), list(data.values()), list(data.keys()), "dict"
    if isinstance(data, (str, bytes)):
        raise LLMError("BAD_ARGUMENT", f"--map DATA is a {type(data).__name__}; give a DataFrame, Series, list or dict "
                       "(nothing was sent)")
    try:
        values = list(data)
    except TypeError:
        raise LLMError("BAD_ARGUMENT", f"--map DATA is a {type(data).__name__}, which is not iterable; give a "
                       "DataFrame, Series, list or dict (nothing was sent)") from None
    return list(range(len(values))), values, list(range(len(values))), "list"


def build_rows(session, template: str, data: Any, *, namespace: Mapping[str, Any] | None = None,
               schema: Any = None, system: str | None = None, temperature: float | None = None,
               max_tokens: int | None = None, top_p: float | None = None,
               attach: Iterable[str] = ()) -> Plan:
    """Render `template` for every item of `data` into a Request (no conversation): `{row.col}`,
    `{row["col"]}`, `{item}`, `{index}` and names from `namespace`. A field missing on the first row is
    BAD_ARGUMENT (nothing is sent); on a later row it is that row's error."""
    from . import media
    from .schema import resolve
    if not isinstance(template, str) or not template.strip():
        raise LLMError("BAD_ARGUMENT", "the map template is empty: write the prompt below %%llm --map DATA")
    labels, values, index, kind = _items(data)
    spec = resolve(schema) if schema is not None else None
    attachments = [media.attach(p) for p in attach]
    table_rows = int(session.settings.get("table_rows") or 20)
    base = dict(namespace or {})
    from .config import coerce_setting  # validated and typed as a cell's options are: 0 and 0.0 share a cache key
    checked = {k: coerce_setting(k, v) for k, v in (("temperature", temperature), ("max_tokens", max_tokens),
                                                      ("top_p", top_p)) if v is not None}
    probe = session.build_request("", system=system, context=False, **checked)
    rows: list[Row] = []
    images = bool(attachments)
    for pos, (label, value) in enumerate(zip(labels, values)):
        ns = dict(base)
        view = RowView(value) if kind == "frame" or isinstance(value, Mapping) else value
        ns.update(row=view, item=view, index=label)
        try:
            content, prompt = media.render(template.strip("\n"), ns, table_rows=table_rows, attachments=attachments)
            from .sensitive import mark_row
            content = mark_row(content, template, ns, data)  # protected values: local targets only
        except LLMError as exc:
            if pos == 0:
                raise LLMError(exc.code, f"row {label!r}: {exc.message}", hint=exc.hint) from None
            rows.append(Row(pos, label, "", None, exc))
            continue
        images = images or isinstance(content, list)
        request = Request(messages=[{"role": "user", "content": content}], system=probe.system,
                          temperature=probe.temperature, max_tokens=probe.max_tokens, top_p=probe.top_p,
                          timeout=probe.timeout, schema=spec.request if spec is not None else None)
        rows.append(Row(pos, label, prompt, request))
    if not rows:
        raise LLMError("BAD_ARGUMENT", "--map DATA is empty: nothing to send")
    return Plan(rows, index, spec, images)


def cache_key(target, request: Request) -> str:
    from .store import Store
    return Store.cache_key(str(target), request.cache_key_parts())


def row_tokens(request: Request) -> tuple[int, int]:
    """(input, output) token estimate of one row: text by characters, images at IMAGE_TOKENS each."""
    from . import pricing
    inp, out = pricing.estimate_tokens(Request(messages=[{"role": m["role"], "content": text_of(m["content"])}
                                                         for m in request.messages], system=request.system,
                                               max_tokens=request.max_tokens))
    inp += IMAGE_TOKENS * sum(len(image_parts(m["content"])) for m in request.messages)
    if request.schema is not None:
        import json
        inp += len(json.dumps(request.schema["schema"])) // 4
    return inp, out
