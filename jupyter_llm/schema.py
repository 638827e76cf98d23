"""Structured output: a pydantic model, dataclass or JSON-schema dict becomes a JSON schema, each provider's
native structured-output request fields, and a validated, parsed answer (INVALID_OUTPUT when it is not).

pydantic is imported only when the schema is a pydantic class; validation uses `jsonschema` (imported on
first use). Provider adapters call the `*_fields` functions here, so their own edits stay one line each.
"""
from __future__ import annotations

import copy
import dataclasses
import enum
import json
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from .errors import LLMError

_NAME_RE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class Schema:
    """A resolved schema: `name` (sent to providers), `json` (the JSON schema), `kind` (pydantic | dataclass
    | json) and `cls` (the pydantic model or dataclass the answer becomes, None for a dict schema)."""
    name: str
    json: dict
    kind: str
    cls: Any = None

    @property
    def request(self) -> dict[str, Any]:
        """What goes on `Request.schema`."""
        return {"name": self.name, "schema": self.json}

    @property
    def fields(self) -> list[str] | None:
        """Top-level property names when the schema is an object (one result column each), else None."""
        if self.json.get("type") == "object" and isinstance(self.json.get("properties"), dict):
            return list(self.json["properties"])
        return None


def resolve(obj: Any, name: str | None = None) -> Schema:
    """A pydantic model class, a dataclass (class) or a JSON-schema dict → Schema; anything else is BAD_ARGUMENT."""
    if isinstance(obj, Schema):
        return obj
    if isinstance(obj, type) and _is_pydantic(obj):
        return Schema(_clean_name(name or obj.__name__), obj.model_json_schema(), "pydantic", obj)
    if isinstance(obj, type) and dataclasses.is_dataclass(obj):
        defs: dict[str, Any] = {}
        schema = _dataclass_schema(obj, defs, root=True)
        if defs:
            schema["$defs"] = defs
        return Schema(_clean_name(name or obj.__name__), schema, "dataclass", obj)
    if isinstance(obj, dict):
        _check_dict(obj)
        return Schema(_clean_name(name or obj.get("title") or "answer"), copy.deepcopy(obj), "json", None)
    what = type(obj).__name__ if not isinstance(obj, type) else f"class {obj.__name__}"
    raise LLMError("BAD_ARGUMENT", f"--schema needs a pydantic model class, a dataclass or a JSON-schema dict, got {what}",
                   hint="e.g. class Label(BaseModel): sentiment: Literal['pos', 'neg']")


def _is_pydantic(cls: type) -> bool:
    import sys
    if "pydantic" not in sys.modules:  # a pydantic class implies pydantic is imported already
        return False
    from pydantic import BaseModel
    return issubclass(cls, BaseModel)


def _clean_name(name: str) -> str:
    return _NAME_RE.sub("_", str(name))[:64] or "answer"


def _check_dict(schema: dict) -> None:
    try:
        json.dumps(schema)
    except (TypeError, ValueError) as exc:
        raise LLMError("BAD_ARGUMENT", f"the JSON schema is not JSON: {exc}") from None
    try:
        import jsonschema
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except ImportError:  # pragma: no cover - jsonschema is a dependency
        pass
    except Exception as exc:
        raise LLMError("BAD_ARGUMENT", f"not a valid JSON schema: {getattr(exc, 'message', exc)}") from None


# ---- dataclasses → JSON schema (pydantic not needed) ----------------------------------------------

_SIMPLE = {str: {"type": "string"}, int: {"type": "integer"}, float: {"type": "number"}, bool: {"type": "boolean"},
           type(None): {"type": "null"}}


def _dataclass_schema(cls: type, defs: dict, root: bool = False) -> dict:
    hints = typing.get_type_hints(cls)
    props, required = {}, []
    for f in dataclasses.fields(cls):
        props[f.name] = _type_schema(hints.get(f.name, Any), defs)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    schema = {"title": cls.__name__, "type": "object", "properties": props, "required": required,
              "additionalProperties": False}
    return schema


def _type_schema(tp: Any, defs: dict) -> dict:
    if tp in _SIMPLE:
        return dict(_SIMPLE[tp])
    if tp is Any:
        return {}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [m.value for m in tp]}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if tp.__name__ not in defs:
            defs[tp.__name__] = {}  # placeholder against recursion
            defs[tp.__name__] = _dataclass_schema(tp, defs)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_type_schema(a, defs) for a in args]}
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple, set):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return {"type": "array", "prefixItems": [_type_schema(a, defs) for a in args],
                    "minItems": len(args), "maxItems": len(args)}
        return {"type": "array", "items": _type_schema(args[0], defs) if args else {}}
    if origin is dict or tp is dict:
        return {"type": "object", "additionalProperties": _type_schema(args[1], defs) if len(args) == 2 else {}}
    if typing.get_origin(tp) is typing.Annotated:
        return _type_schema(args[0], defs)
    raise LLMError("BAD_ARGUMENT", f"--schema: cannot describe the type {tp!r} as JSON",
                   hint="use str, int, float, bool, Literal, Enum, list, dict, Optional or nested dataclasses")


# ---- provider request fields -------------------------------------------------------------------------

def strict_schema(schema: dict) -> tuple[dict, bool]:
    """OpenAI strict mode wants every object closed (`additionalProperties: false`) with every property
    required; optional properties become nullable. Returns (schema, True), or (original, False) when the
    schema has open objects (free-form dicts) that strict mode cannot express."""
    ok = True

    def walk(node: Any) -> Any:
        nonlocal ok
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for k, v in node.items():
            if k in ("properties", "$defs", "definitions", "patternProperties") and isinstance(v, dict):
                out[k] = {name: walk(sub) for name, sub in v.items()}  # keys here are names, not keywords
            elif k != "default":  # strict mode rejects `default`
                out[k] = walk(v)
        if node.get("type") == "object" or "properties" in node:
            props = out.get("properties") or {}
            extra = node.get("additionalProperties")
            if extra not in (None, False) or not props:
                ok = False
            required = set(node.get("required") or [])
            for key, sub in props.items():
                if key not in required:
                    props[key] = _nullable(sub)
            out["properties"] = props
            out["required"] = list(props)
            out["additionalProperties"] = False
        return out

    result = walk(schema)
    return (result, True) if ok else (schema, False)


def _nullable(sub: dict) -> dict:
    kinds = [a.get("type") for a in sub.get("anyOf", [])] if "anyOf" in sub else [sub.get("type")]
    if "null" in kinds or (isinstance(sub.get("type"), list) and "null" in sub["type"]):
        return sub
    return {"anyOf": [sub, {"type": "null"}]}


def openai_fields(request_schema: dict | None) -> dict[str, Any]:
    """OpenAI (and configured OpenAI-compatible endpoints): `response_format` json_schema, strict when it can be."""
    if not request_schema:
        return {}
    schema, strict = strict_schema(request_schema["schema"])
    return {"response_format": {"type": "json_schema",
                                "json_schema": {"name": request_schema["name"], "schema": schema, "strict": strict}}}


def llamacpp_fields(request_schema: dict | None) -> dict[str, Any]:
    """llama.cpp's own `json_schema` field: grammar-constrained decoding (sent as extra body)."""
    if not request_schema:
        return {}
    return {"json_schema": request_schema["schema"]}


def anthropic_fields(request_schema: dict | None) -> dict[str, Any]:
    """Anthropic structured outputs: `output_config.format` json_schema, the schema reduced to what the API
    accepts (the SDK's own `transform_schema`; unsupported constraints move into descriptions)."""
    if not request_schema:
        return {}
    schema = request_schema["schema"]
    try:
        from anthropic import transform_schema
        schema = transform_schema(schema)
    except (ImportError, ValueError, TypeError):
        schema = strict_schema(schema)[0]
    return {"output_config": {"format": {"type": "json_schema", "schema": schema}}}


def gemini_fields(request_schema: dict | None) -> dict[str, Any]:
    """Gemini: `response_mime_type` application/json plus `response_json_schema` (GenerateContentConfig)."""
    if not request_schema:
        return {}
    return {"response_mime_type": "application/json", "response_json_schema": request_schema["schema"]}


# ---- validation ----------------------------------------------------------------------------------------

def parse(spec: Schema, text: str) -> Any:
    """The answer as the schema's type: a pydantic instance, a dataclass instance or plain JSON. Raises
    INVALID_OUTPUT (with the reason) when it is not JSON or does not match the schema."""
    try:
        data = json.loads(_strip_fence(text))
    except ValueError as exc:
        raise LLMError("INVALID_OUTPUT", f"the answer is not JSON ({exc}); its text is kept", retryable=False) from None
    if spec.kind == "pydantic":
        from pydantic import ValidationError
        try:
            return spec.cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0] if exc.errors() else {}
            where = ".".join(str(p) for p in first.get("loc", ())) or "answer"
            raise LLMError("INVALID_OUTPUT", f"the answer does not match {spec.name}: {where}: "
                           f"{first.get('msg', exc)}", retryable=False) from None
    validate(spec.json, data, spec.name)
    if spec.kind == "dataclass":
        return _build(spec.cls, data)
    return data


def apply(spec: Schema, response: Any) -> None:
    """Parse a complete, error-free Response against `spec`: `response.value` gets the object, or
    `response.error` becomes INVALID_OUTPUT (the text stays on `response.text`)."""
    if response.error is not None or response.incomplete:
        return
    try:
        response.value = parse(spec, response.text)
    except LLMError as exc:
        if response.finish_reason == "length":
            exc = LLMError("INVALID_OUTPUT", f"{exc.message} (the answer stopped at max_tokens)",
                           hint="raise --max-tokens", retryable=False)
        response.error = exc


def validate(schema: dict, data: Any, name: str = "the schema") -> None:
    import jsonschema
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "answer"
        raise LLMError("INVALID_OUTPUT", f"the answer does not match {name}: {where}: {error.message}",
                       retryable=False)


def as_columns(spec: Schema, value: Any) -> dict[str, Any]:
    """One result-frame value per schema field (plain JSON values), from a parsed answer."""
    fields = spec.fields
    if fields is None:
        return {"answer": value}
    if spec.kind == "pydantic":
        value = value.model_dump(mode="json")
    elif spec.kind == "dataclass":
        value = dataclasses.asdict(value)
    return {f: (value.get(f) if isinstance(value, dict) else None) for f in fields}


def _strip_fence(text: str) -> str:
    m = re.fullmatch(r"\s*```(?:json)?\s*\n(.*?)\n?```\s*", text, re.S)
    return m.group(1) if m else text


def _build(cls: Any, data: Any) -> Any:
    """A dataclass instance from validated JSON (nested dataclasses and lists of them included)."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)) or not isinstance(data, dict):
        return data
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(hints.get(f.name, Any), data[f.name])
    return cls(**kwargs)


def _convert(tp: Any, value: Any) -> Any:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for a in args:
            if isinstance(a, type) and dataclasses.is_dataclass(a) and isinstance(value, dict):
                return _build(a, value)
        return value
    if origin in (list, set, frozenset) and args and isinstance(value, list):
        return origin(_convert(args[0], v) for v in value)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        return {k: _convert(args[1], v) for k, v in value.items()}
    return value
