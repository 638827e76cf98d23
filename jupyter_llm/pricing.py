"""Cost in USD from the bundled genai-prices data (no network): actual cost, pre-send estimate, price lookup.

Local llama.cpp (and endpoints on this machine) cost $0; a model genai-prices does not know costs
None ("unknown"), never a guess. genai_prices (pydantic, a 1.5 MB table) is imported on first use.
"""
from __future__ import annotations

import math
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .events import Request, Usage

__all__ = ["cost", "estimate", "prices", "context_window", "estimate_tokens", "genai_provider", "FREE_PROVIDERS",
           "PROVIDER_MAP", "DEFAULT_OUTPUT_TOKENS"]

# Our provider ids -> genai-prices provider ids. Other (configured) providers are matched by model name.
PROVIDER_MAP = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "google",
    "deepseek": "deepseek",
    "groq": "groq",
    "together": "together",
    "openrouter": "openrouter",
}
FREE_PROVIDERS = frozenset({"local", "ollama"})  # self-hosted: no per-token price
DEFAULT_OUTPUT_TOKENS = 1024     # assumed answer length for an estimate when max_tokens is not set
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4           # role markers and separators around each chat message
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


def genai_provider(provider_id: str) -> str | None:
    """The genai-prices provider id for one of ours (None: match the model across all providers)."""
    return PROVIDER_MAP.get((provider_id or "").lower())


def _is_free(provider_id: str, base_url: str | None) -> bool:
    if (provider_id or "").lower() in FREE_PROVIDERS:
        return True
    if base_url:
        host = (urlsplit(base_url).hostname or "").lower()
        return host in _LOCAL_HOSTS or host.startswith("127.")
    return False


def _model_ref(model: str) -> str:
    ref = model.strip()
    if ref.startswith("models/"):          # Gemini's API spells ids as models/gemini-...
        ref = ref[len("models/"):]
    return ref


@lru_cache(maxsize=512)
def _where(provider_id: str, model: str) -> tuple[str | None, str] | None:
    """How genai-prices knows this model: (its provider id or None, model ref), or None if it does not."""
    from genai_prices import Usage as GUsage, calc_price
    ref = _model_ref(model)
    mapped = genai_provider(provider_id)
    if mapped is not None:
        candidates: list[tuple[str | None, str]] = [(mapped, ref)]
    else:
        # A configured endpoint (gateway, Azure, vLLM...): price by what the model is.
        candidates = [(None, ref)]
        if "/" in ref:
            candidates.append(("litellm", ref))          # "openai/gpt-4o" style names
    for gp_provider, gp_ref in candidates:
        try:
            calc_price(GUsage(input_tokens=1, output_tokens=1), gp_ref, provider_id=gp_provider)
        except (LookupError, ValueError):
            continue
        return gp_provider, gp_ref
    return None


def _calc(provider_id: str, model: str, input_tokens: int, output_tokens: int) -> Decimal | None:
    where = _where((provider_id or "").lower(), model)
    if where is None:
        return None
    from genai_prices import Usage as GUsage, calc_price
    try:
        result = calc_price(GUsage(input_tokens=max(int(input_tokens), 0), output_tokens=max(int(output_tokens), 0)),
                            where[1], provider_id=where[0])
    except (LookupError, ValueError):
        return None
    return result.total_price


def cost(provider_id: str, model: str | None, usage: "Usage", *, base_url: str | None = None) -> float | None:
    """USD for one exchange's usage: 0.0 for local models, None when the price is unknown."""
    if _is_free(provider_id, base_url):
        return 0.0
    if not model or usage is None:
        return None
    total = _calc(provider_id, model, usage.input_tokens, usage.output_tokens)
    return None if total is None else float(total)


def estimate_tokens(request: "Request") -> tuple[int, int]:
    """(input, output) token upper estimate: chars/4 rounded up plus per-message overhead; max_tokens or 1024."""
    chars = len(request.system or "")
    n_messages = 1 if request.system else 0
    for message in request.messages:
        content: Any = message.get("content", "")
        chars += len(content if isinstance(content, str) else str(content))
        n_messages += 1
    input_tokens = math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * n_messages
    output_tokens = request.max_tokens if request.max_tokens else DEFAULT_OUTPUT_TOKENS
    return input_tokens, output_tokens


def estimate(provider_id: str, model: str | None, request: "Request", *, base_url: str | None = None) -> float | None:
    """USD upper-bound estimate before sending (for budgets): 0.0 local, None when the price is unknown."""
    if _is_free(provider_id, base_url):
        return 0.0
    if not model:
        return None
    input_tokens, output_tokens = estimate_tokens(request)
    total = _calc(provider_id, model, input_tokens, output_tokens)
    return None if total is None else float(total)


@lru_cache(maxsize=512)
def _prices(provider_id: str, model: str) -> tuple[float, float] | None:
    # Priced on 1,000 tokens and scaled, so that tiered prices (e.g. >200k context) give the base tier.
    per_k_in = _calc(provider_id, model, 1000, 0)
    per_k_out = _calc(provider_id, model, 0, 1000)
    if per_k_in is None or per_k_out is None:
        return None
    return float(per_k_in * 1000), float(per_k_out * 1000)


def prices(provider_id: str, model: str | None) -> tuple[float, float] | None:
    """(USD per million input tokens, USD per million output tokens), (0, 0) for local, None if unknown."""
    if _is_free(provider_id, None):
        return 0.0, 0.0
    if not model:
        return None
    return _prices((provider_id or "").lower(), model)


@lru_cache(maxsize=512)
def context_window(provider_id: str, model: str | None) -> int | None:
    """The model's context size in tokens where genai-prices records it, else None."""
    if not model:
        return None
    where = _where((provider_id or "").lower(), model)
    if where is None:
        return None
    from genai_prices import Usage as GUsage, calc_price
    try:
        return calc_price(GUsage(input_tokens=1), where[1], provider_id=where[0]).model.context_window
    except (LookupError, ValueError, AttributeError):
        return None
