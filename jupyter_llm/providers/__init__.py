"""Provider registry: built-in specs, configured endpoints, and third-party adapters from the
`jupyter_llm.providers` entry-point group. Adapter modules (and their SDKs) load on first use."""
from __future__ import annotations

from dataclasses import field, replace
from typing import TYPE_CHECKING, Any

from ..errors import LLMError
from ..records import record
from .base import Auth, Health, ModelInfo, Provider, mask

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["Auth", "Health", "ModelInfo", "Provider", "ProviderSpec", "BUILTIN", "get_provider", "provider_ids", "spec_for", "mask"]


@record(frozen=True)
class ProviderSpec:
    id: str
    kind: str                       # openai-compatible | anthropic | gemini | llamacpp | ollama | entry point name
    base_url: str | None
    env_vars: tuple[str, ...] = ()
    default_model: str | None = None
    auth: str = "api_key"           # default auth method
    settings: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def needs_key(self) -> bool:
        return self.auth != "none"


BUILTIN: dict[str, ProviderSpec] = {s.id: s for s in (
    ProviderSpec("local", "llamacpp", None, (), None, auth="none"),
    ProviderSpec("ollama", "ollama", "http://127.0.0.1:11434/v1", (), None, auth="none"),
    # Defaults: current, inexpensive models from the genai-prices catalogue (none marked deprecated there).
    ProviderSpec("openai", "openai-compatible", "https://api.openai.com/v1", ("OPENAI_API_KEY",), "gpt-5.4-mini"),
    ProviderSpec("anthropic", "anthropic", "https://api.anthropic.com", ("ANTHROPIC_API_KEY",), "claude-haiku-5-5"),
    ProviderSpec("gemini", "gemini", "https://generativelanguage.googleapis.com", ("GOOGLE_API_KEY", "GEMINI_API_KEY"), "gemini-2.5-flash"),
    ProviderSpec("deepseek", "openai-compatible", "https://api.deepseek.com/v1", ("DEEPSEEK_API_KEY",), "deepseek-chat"),
    ProviderSpec("groq", "openai-compatible", "https://api.groq.com/openai/v1", ("GROQ_API_KEY",), "llama-3.1-8b-instant"),
    ProviderSpec("together", "openai-compatible", "https://api.together.xyz/v1", ("TOGETHER_API_KEY",), "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
    ProviderSpec("openrouter", "openai-compatible", "https://openrouter.ai/api/v1", ("OPENROUTER_API_KEY",), "openai/gpt-4o-mini"),
)}


def provider_ids(config: "Config") -> list[str]:
    """Every provider a target may name: built-ins, then configured endpoints."""
    ids = list(BUILTIN)
    ids += [p for p in config.providers if p not in BUILTIN]
    return ids


def spec_for(provider_id: str, config: "Config") -> ProviderSpec:
    """The built-in spec with config overrides applied, or a configured endpoint's spec."""
    conf = config.providers.get(provider_id, {})
    base = BUILTIN.get(provider_id)
    if base is None:
        if not conf:
            known = ", ".join(provider_ids(config))
            raise LLMError("BAD_ARGUMENT", f"unknown provider {provider_id!r}",
                           hint=f"known: {known}; add others under [providers.{provider_id}] in the config")
        kind = conf.get("kind", "openai-compatible")
        if kind == "openai":
            kind = "openai-compatible"
        if not conf.get("base_url") and kind == "openai-compatible":
            raise LLMError("CONFIG_ERROR", f"provider {provider_id!r} has no base_url",
                           hint=f"set base_url under [providers.{provider_id}]")
        env = conf.get("env") or f"{provider_id.upper().replace('-', '_')}_API_KEY"
        base = ProviderSpec(provider_id, kind, None, (env,), None)
    overrides: dict[str, Any] = {"settings": {"connect_timeout": config.reliability.connect_timeout, **conf}}
    if conf.get("base_url"):
        overrides["base_url"] = conf["base_url"]
    if conf.get("model"):
        overrides["default_model"] = conf["model"]
    if conf.get("auth"):
        overrides["auth"] = conf["auth"]
    if conf.get("env"):
        overrides["env_vars"] = (conf["env"],)
    return replace(base, **overrides)


_cache: dict[tuple[str, int], Provider] = {}


def get_provider(provider_id: str, config: "Config") -> Provider:
    """The adapter for `provider_id`, built once per config object."""
    key = (provider_id, id(config))
    if key in _cache:
        return _cache[key]
    spec = spec_for(provider_id, config)
    if spec.kind == "llamacpp":
        from .llamacpp import LlamaCppProvider
        adapter: Provider = LlamaCppProvider(spec, config)
    elif spec.kind == "ollama":
        from .ollama import OllamaProvider
        adapter = OllamaProvider(spec)
    elif spec.kind == "openai-compatible":
        from .openai_compat import OpenAICompatProvider
        adapter = OpenAICompatProvider(spec)
    elif spec.kind == "anthropic":
        from .anthropic import AnthropicProvider
        adapter = AnthropicProvider(spec)
    elif spec.kind == "gemini":
        from .gemini import GeminiProvider
        adapter = GeminiProvider(spec)
    else:
        adapter = _entry_point(spec)
    _cache[key] = adapter
    return adapter


def _entry_point(spec: ProviderSpec) -> Provider:
    """A third-party adapter: entry point `kind` in group jupyter_llm.providers, called with the spec."""
    from importlib.metadata import entry_points
    found = {ep.name: ep for ep in entry_points(group="jupyter_llm.providers")}
    if spec.kind not in found:
        known = ", ".join(["openai-compatible", "anthropic", "gemini", *sorted(found)])
        raise LLMError("CONFIG_ERROR", f"provider {spec.id!r} has unknown kind {spec.kind!r}",
                       hint=f"known kinds: {known}")
    try:
        return found[spec.kind].load()(spec)
    except Exception as exc:
        raise LLMError("CONFIG_ERROR", f"provider kind {spec.kind!r} failed to load: {type(exc).__name__}: {exc}") from None
