"""Capabilities drive the checks: images go only to models that can see, and a `--schema` goes natively to models
with structured output and as instructions to models without it (the answer is validated against it either way).

A known "no" refuses (images) or changes course (schema); unknown keeps today's path (nothing is refused that we
cannot know); the config override `[providers.X.capabilities]` wins both ways. The image check runs once per target
per cell (a llama.cpp server costs one /props call); the schema choice needs no network, so the router makes it for
every attempt, fallbacks included, and a dry run shows the same choice.
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from .errors import LLMError

INSTRUCTION = ("Answer with JSON only: one JSON value that matches the JSON schema below, with no other text "
               "and no code fence.")


def _setting(provider: str, model: str, key: str, value: str) -> str:
    return f'[providers.{provider}.capabilities] "{model or "*"}" = {{ {key} = {value} }}'


def vision(session, target) -> tuple[bool, str]:
    """(True, "") when `target` can take image parts, else (False, why). llama.cpp says so in /props
    (`modalities.vision`); clouds by the model's known capabilities; the config override wins."""
    from . import capabilities
    if target.is_local:
        try:
            host, port, props = capabilities.local_props(session, target)
        except LLMError as exc:
            return False, exc.message
        alias = target.model or props.get("model_alias") or session.config.local_name(port) or ""
        caps = capabilities.for_model(session, "local", alias, props=props)
        if caps.source_of("vision") == "config":
            return (True, "") if caps.vision else (False, f"the config says it has no vision "
                                                          f"({_setting('local', alias, 'vision', 'false')})")
        where = f"the llama.cpp server at {host}:{port}"
        if not props:
            return False, f"{where} does not answer /props"
        if caps.vision:
            return True, ""
        return False, (f"{where} has no vision support (start it with a multimodal model and --mmproj, or if it "
                       f"has, say so: {_setting('local', alias, 'vision', 'true')})")
    caps = capabilities.for_target(session, target)
    if caps.vision is not False:  # yes, or unknown: the provider answers for its model
        return True, ""
    model = target.model or session._spec(target).default_model or ""
    if caps.source_of("vision") == "config":
        return False, f"the config says {model} has no vision ({_setting(target.provider, model, 'vision', 'false')})"
    return False, (f"{model} has no image input (known model capabilities; if this endpoint does take images, "
                   f"set {_setting(target.provider, model, 'vision', 'true')} in the config)")


def structured_output(config, target) -> bool | None:
    """Whether `target` takes a JSON schema natively (None: unknown). No network: llama.cpp always can
    (grammar-constrained `json_schema`); clouds by the built-in model table; the config override wins."""
    from .capabilities import _from_table, _override
    from .providers import spec_for
    spec = spec_for(target.provider, config)
    model = target.model or spec.default_model or ""
    if spec.kind == "llamacpp":
        known: bool | None = True
        if not model and target.port is not None:
            model = config.local_name(target.port) or ""
    else:
        known = _from_table(target.provider, model).get("structured_output")
    forced = _override(config, target.provider, model).get("structured_output")
    return known if forced is None else bool(forced)


def instructions(request_schema: dict[str, Any]) -> str:
    """The system-prompt text that asks for the schema when the model cannot take it natively."""
    body = json.dumps(request_schema["schema"], ensure_ascii=False, separators=(",", ":"))
    return f"{INSTRUCTION}\nSchema {request_schema['name']}:\n{body}"


def by_prompt(request):
    """`request` with its schema moved into the system prompt (no native structured-output fields sent)."""
    text = instructions(request.schema)
    system = f"{request.system}\n\n{text}" if request.system else text
    return replace(request, system=system, schema=None)


def adapt(config, target, request) -> tuple[Any, str | None]:
    """The request as `target` should get it, and a one-line note when the schema went as instructions."""
    if request.schema is None or structured_output(config, target) is not False:
        return request, None
    return by_prompt(request), (f"{target} has no structured output: the schema went as instructions in the "
                                "system prompt and the answer was validated against it")


def schema_note(config, targets, schema) -> str:
    """` (the schema went as instructions to T: no structured output)` for a map's summary line, or ""."""
    if schema is None:
        return ""
    names = [str(t) for t in targets if structured_output(config, t) is False]
    return f" (the schema went as instructions to {', '.join(names)}: no structured output)" if names else ""
