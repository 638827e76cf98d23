"""What a model can do: context window, max output, vision, structured output, reasoning, tool calling.

Sources, later ones winning: a built-in table of model families (the public model cards of the providers
in the price catalogue), the genai-prices catalogue (context window), the provider's model list (context),
llama.cpp's `/props` (context per slot, `modalities.vision`, `chat_template_caps.supports_tools`), and
the config override for endpoints nobody knows:

    [providers.mygateway.capabilities]
    "my-model" = { vision = true, context = 32768, max_output = 4096 }
    "*" = { tools = false }          # every model of this provider
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .errors import LLMError

FLAGS = ("vision", "structured_output", "reasoning", "tools")
KEYS = ("context", "max_output") + FLAGS


@dataclass(frozen=True)
class Capabilities:
    context: int | None = None          # tokens in + out
    max_output: int | None = None       # tokens
    vision: bool | None = None          # None: unknown
    structured_output: bool | None = None
    reasoning: bool | None = None
    tools: bool | None = None
    sources: tuple[str, ...] = field(default=(), compare=False)
    origin: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)  # (key, source) pairs

    def merged(self, source: str, **values: Any) -> "Capabilities":
        clean = {k: v for k, v in values.items() if k in KEYS and v is not None}
        if not clean:
            return self
        origin = tuple((k, s) for k, s in self.origin if k not in clean) + tuple((k, source) for k in clean)
        return replace(self, **clean, sources=tuple(dict.fromkeys((*self.sources, source))), origin=origin)

    def source_of(self, key: str) -> str | None:
        """Which source set `key` last ("config", "llama.cpp /props", "built-in table", ...), None if none did."""
        return next((s for k, s in reversed(self.origin) if k == key), None)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "origin"}


# (provider or "*", model regex) -> capabilities. First match wins; providers' own ids first.
_T, _F = True, False
_TABLE: list[tuple[str, str, dict[str, Any]]] = [
    ("*", r"^(openai/)?gpt-5", dict(max_output=128000, vision=_T, structured_output=_T, reasoning=_T, tools=_T)),
    ("*", r"^(openai/)?gpt-4\.1", dict(max_output=32768, vision=_T, structured_output=_T, reasoning=_F, tools=_T)),
    ("*", r"^(openai/)?gpt-4o", dict(max_output=16384, vision=_T, structured_output=_T, reasoning=_F, tools=_T)),
    ("*", r"^(openai/)?o1-(mini|preview)", dict(vision=_F, structured_output=_F, tools=_F)),
    ("*", r"^(openai/)?o[134](-|$)", dict(max_output=100000, vision=_T, structured_output=_T, reasoning=_T, tools=_T)),
    ("*", r"^(openai/)?gpt-oss", dict(max_output=32768, vision=_F, structured_output=_T, reasoning=_T, tools=_T)),
    # Anthropic's JSON outputs (output_config.format) launched with Sonnet 4.5 and Opus 4.1: not 3.x, Sonnet 4, Opus 4.
    ("*", r"^(anthropic/)?claude-3", dict(structured_output=_F)),
    ("*", r"^(anthropic/)?claude-(opus|sonnet)-4([.-]0)?(-\d{8})?$", dict(structured_output=_F)),
    ("*", r"^(anthropic/)?claude-3[.-]5-haiku", dict(max_output=8192, vision=_T, structured_output=_F, reasoning=_F, tools=_T)),
    ("*", r"^(anthropic/)?claude-3[.-]5-sonnet", dict(max_output=8192, vision=_T, structured_output=_F, reasoning=_F, tools=_T)),
    ("*", r"^(anthropic/)?claude-3-7-sonnet", dict(max_output=64000, vision=_T, structured_output=_F, reasoning=_T, tools=_T)),
    ("*", r"^(anthropic/)?claude-(opus|sonnet|haiku)-4|^claude-4", dict(max_output=64000, vision=_T, structured_output=_T, reasoning=_T, tools=_T)),
    ("*", r"^(anthropic/)?claude-opus-4", dict(max_output=32000)),
    ("*", r"^(google/)?gemini-2\.5", dict(max_output=65536, vision=_T, structured_output=_T, reasoning=_T, tools=_T)),
    ("*", r"^(google/)?gemini-2\.0", dict(max_output=8192, vision=_T, structured_output=_T, reasoning=_F, tools=_T)),
    ("*", r"^(google/)?gemini-1\.5", dict(max_output=8192, vision=_T, structured_output=_T, reasoning=_F, tools=_T)),
    # DeepSeek has JSON mode (json_object) but no json_schema response_format: a schema goes as instructions.
    ("deepseek", r"^deepseek-reasoner", dict(max_output=65536, vision=_F, structured_output=_F, reasoning=_T, tools=_T)),
    ("deepseek", r"^deepseek-chat", dict(max_output=8192, vision=_F, structured_output=_F, reasoning=_F, tools=_T)),
    ("*", r"llama-3\.[13].*(8b|70b)", dict(vision=_F, structured_output=_T, reasoning=_F, tools=_T)),
    ("*", r"llama-3\.2-(11|90)b-vision|llama-4", dict(vision=_T, tools=_T)),
]


def _from_table(provider: str, model: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for prov, pattern, caps in _TABLE:
        if prov in ("*", provider) and re.search(pattern, model, re.I):
            for k, v in caps.items():
                out.setdefault(k, v)
    return out


def _override(config, provider: str, model: str) -> dict[str, Any]:
    table = (config.providers.get(provider) or {}).get("capabilities") or {}
    if not isinstance(table, dict):
        return {}
    out: dict[str, Any] = {}
    for key in ("*", model):
        entry = table.get(key)
        if isinstance(entry, dict):
            out.update({k: v for k, v in entry.items() if k in KEYS})
    return out


def validate_override(table: Any, where: str) -> None:
    """CONFIG_ERROR for a bad `[providers.X.capabilities]` table (called on load and by tests)."""
    if not isinstance(table, dict):
        raise LLMError("CONFIG_ERROR", f"{where}: must be a table of model = {{ ... }}")
    for model, entry in table.items():
        if not isinstance(entry, dict):
            raise LLMError("CONFIG_ERROR", f"{where}.{model}: must be a table like {{ vision = true }}")
        for k, v in entry.items():
            if k not in KEYS:
                raise LLMError("CONFIG_ERROR", f"{where}.{model}.{k}: unknown capability (known: {', '.join(KEYS)})")
            ok = (isinstance(v, bool) if k in FLAGS else isinstance(v, int) and not isinstance(v, bool) and v > 0)
            if not ok:
                raise LLMError("CONFIG_ERROR", f"{where}.{model}.{k}: must be {'true or false' if k in FLAGS else 'a positive integer'}")


def llamacpp_caps(props: dict[str, Any]) -> dict[str, Any]:
    """Capabilities from a llama.cpp `/props` body."""
    gen = props.get("default_generation_settings") or {}
    out: dict[str, Any] = {"context": gen.get("n_ctx"), "structured_output": True}  # grammar-constrained JSON
    modalities = props.get("modalities")
    if isinstance(modalities, dict) and "vision" in modalities:
        out["vision"] = bool(modalities["vision"]) or bool(props.get("multimodal"))
    elif "multimodal" in props:  # servers before `modalities` (2025) said only this
        out["vision"] = bool(props["multimodal"])
    caps = props.get("chat_template_caps")
    if isinstance(caps, dict):
        tools = caps.get("supports_tool_calls", caps.get("supports_tools"))
        if tools is not None:
            out["tools"] = bool(tools)
    return out


def for_model(session, provider: str, model: str | None, *, context: int | None = None,
              props: dict[str, Any] | None = None) -> Capabilities:
    """What `provider:model` can do, from every source that knows (see the module docstring)."""
    from . import pricing
    model = model or ""
    caps = Capabilities().merged("built-in table", **_from_table(provider, model))
    if model:
        caps = caps.merged("genai-prices", context=pricing.context_window(provider, model))
    caps = caps.merged("model list", context=context)
    if props:
        caps = caps.merged("llama.cpp /props", **llamacpp_caps(props))
    return caps.merged("config", **_override(session.config, provider, model))


def for_models(session, provider: str, models: list) -> list[Capabilities]:
    """Capabilities of each ModelInfo a model list returned (llama.cpp servers asked for /props)."""
    out = []
    for m in models:
        props = None
        port = (getattr(m, "extra", None) or {}).get("port")
        if provider == "local" and port:
            from .recording import llamacpp_props_raw
            props = llamacpp_props_raw(session.config.local_host or "127.0.0.1", port)
        model_id = m.id if provider != "local" else ((m.extra or {}).get("alias") or m.id)
        out.append(for_model(session, provider, model_id, context=m.context, props=props))
    return out


def _flag(v: bool | None) -> str:
    return "?" if v is None else ("yes" if v else "no")


def row(c: Capabilities) -> tuple[str, ...]:
    return (str(c.context or ""), str(c.max_output or ""), _flag(c.vision), _flag(c.structured_output),
            _flag(c.reasoning), _flag(c.tools))


HEADERS = ["context", "max out", "vision", "schema", "reasoning", "tools"]


def local_props(session, target) -> tuple[str, int, dict[str, Any]]:
    """(host, port, /props body) of a llama.cpp target; the body is {} when the server does not answer.
    LLMError when no server can be found for it (a name or port nothing listens on)."""
    provider = session.provider(target)
    port = target.port if target.port is not None else provider.resolve(target).port
    from .recording import llamacpp_props_raw
    host = getattr(provider, "host", None) or session.config.local_host or "127.0.0.1"
    return host, port, llamacpp_props_raw(host, port)


def for_target(session, target) -> Capabilities:
    """Capabilities of a target (`"openai:gpt-4o"`, `"local:8081"`): what a check on images or a schema asks."""
    t = session.parse(target)
    spec = session._spec(t)
    if t.is_local:
        try:
            props = local_props(session, t)[2]
        except LLMError:
            return for_model(session, "local", t.model)
        alias = t.model or props.get("model_alias") or ""
        return for_model(session, "local", alias, props=props)
    return for_model(session, t.provider, t.model or spec.default_model)
