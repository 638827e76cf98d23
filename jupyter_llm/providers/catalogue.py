"""Built-in model catalogue per cloud provider, and `price_info`, the one genai-prices lookup to reuse."""
from __future__ import annotations

from dataclasses import dataclass

from .base import ModelInfo

# A handful of current models per provider, the default first. Shown when no key is set.
CATALOGUE: dict[str, tuple[str, ...]] = {
    "openai": ("gpt-5.4-mini", "gpt-5.4-nano", "gpt-5.4", "gpt-4.1-mini", "gpt-4o-mini", "gpt-4o", "o4-mini"),
    "anthropic": ("claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5", "claude-haiku-4-5", "claude-sonnet-4-6"),
    "gemini": ("gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro", "gemini-3.5-flash"),
    "deepseek": ("deepseek-chat", "deepseek-reasoner"),
    "groq": ("llama-3.1-8b-instant", "llama-3.3-70b-versatile", "openai/gpt-oss-20b"),
    "together": ("meta-llama/Llama-3.3-70B-Instruct-Turbo",),
    "openrouter": ("openai/gpt-4o-mini", "anthropic/claude-haiku-4.5", "google/gemini-2.5-flash"),
}
# Context sizes genai-prices does not know.
_CONTEXT = {"llama-3.1-8b-instant": 131072, "llama-3.3-70b-versatile": 131072,
            "meta-llama/Llama-3.3-70B-Instruct-Turbo": 131072}


@dataclass(frozen=True)
class PriceInfo:
    input_price: float | None   # USD per million input tokens
    output_price: float | None  # USD per million output tokens
    context: int | None         # tokens


def price_info(provider_id: str, model: str) -> PriceInfo | None:
    """Prices (USD per million tokens) and context size, from the one genai-prices lookup in pricing.py."""
    from .. import pricing
    found = pricing.prices(provider_id, model)
    if found is None:
        return None
    return PriceInfo(found[0], found[1], pricing.context_window(provider_id, model) or _CONTEXT.get(model))


def model_info(provider_id: str, model: str, source: str, context: int | None = None, **extra) -> ModelInfo:
    """A ModelInfo with prices and context filled in where genai-prices knows them."""
    info = price_info(provider_id, model)
    return ModelInfo(model, context=context or (info.context if info else None) or _CONTEXT.get(model),
                     input_price=info.input_price if info else None,
                     output_price=info.output_price if info else None, source=source, extra=extra)


def catalogue(provider_id: str, configured: list[str] | tuple[str, ...] | None = None,
              default: str | None = None) -> list[ModelInfo]:
    """The offline list: config's `models`, else the built-in one; the default model always included."""
    ids = list(configured or CATALOGUE.get(provider_id, ()))
    if default and default not in ids:
        ids.insert(0, default)
    return [model_info(provider_id, m, "catalogue") for m in ids]
