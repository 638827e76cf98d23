"""Built-in model catalogue per cloud provider, and `price_info`, the one genai-prices lookup to reuse."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .base import ModelInfo

# A handful of current models per provider, the default first. Shown when no key is set.
CATALOGUE: dict[str, tuple[str, ...]] = {
    "openai": ("gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini", "gpt-5-mini", "gpt-5"),
    "anthropic": ("claude-3-5-haiku-latest", "claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-1"),
    "gemini": ("gemini-2.0-flash", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro"),
    "deepseek": ("deepseek-chat", "deepseek-reasoner"),
    "groq": ("llama-3.1-8b-instant", "llama-3.3-70b-versatile", "openai/gpt-oss-20b"),
    "together": ("meta-llama/Llama-3.3-70B-Instruct-Turbo",),
    "openrouter": ("openai/gpt-4o-mini", "anthropic/claude-3.5-haiku", "google/gemini-2.5-flash"),
}
# Context sizes genai-prices does not know.
_CONTEXT = {"llama-3.1-8b-instant": 131072, "llama-3.3-70b-versatile": 131072,
            "meta-llama/Llama-3.3-70B-Instruct-Turbo": 131072}
# Our provider ids that genai-prices names differently.
_PRICES_ID = {"gemini": "google"}


@dataclass(frozen=True)
class PriceInfo:
    input_price: float | None   # USD per million input tokens
    output_price: float | None  # USD per million output tokens
    context: int | None         # tokens


@lru_cache(maxsize=512)
def price_info(provider_id: str, model: str) -> PriceInfo | None:
    """Prices (USD per million tokens) and context size from genai-prices; None when it does not know
    the model. Priced on 1,000 tokens so tiered (long-context) prices do not leak in."""
    if not model:
        return None
    try:
        from genai_prices import Usage, calc_price
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    pid = _PRICES_ID.get(provider_id, provider_id)
    for kwargs in ({"provider_id": pid}, {}):
        try:
            calc_in = calc_price(Usage(input_tokens=1000), model, **kwargs)
            calc_out = calc_price(Usage(output_tokens=1000), model, **kwargs)
        except (LookupError, ValueError, TypeError):
            continue
        return PriceInfo(float(calc_in.input_price) * 1000, float(calc_out.output_price) * 1000,
                         calc_in.model.context_window or _CONTEXT.get(model))
    return None


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
