"""Cost in USD from the bundled genai-prices data (no network): actual cost, pre-send estimate, price lookup.

Local llama.cpp and any endpoint on a loopback address (localhost, 127.0.0.0/8, ::1) cost $0; a
provider's config can set its own price (`price = {input = .., output = ..}`, USD per million
tokens) or `free = true`, and `free = false` prices a loopback endpoint (a local proxy to a paid
cloud) from the catalogue. A model nobody knows the price of costs None ("unknown"), never a
guess. Lookups go through price_table.py, a verified copy of the entries used so far kept in the data dir;
genai_prices (pydantic, a 1.5 MB table) is only imported for a model the copy does not have yet.
"""
from __future__ import annotations

import ipaddress
import math
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .events import Request, Usage

__all__ = ["cost", "estimate", "prices", "context_window", "estimate_tokens", "genai_provider", "FREE_PROVIDERS",
           "PROVIDER_MAP", "DEFAULT_OUTPUT_TOKENS", "is_loopback", "configured_price"]

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


def is_loopback(base_url: str | None) -> bool:
    """True when `base_url` points at this machine: localhost (and *.localhost), 127.0.0.0/8, ::1, 0.0.0.0."""
    if not base_url:
        return False
    try:
        host = (urlsplit(base_url if "//" in base_url else "//" + base_url).hostname or "").lower().rstrip(".")
    except ValueError:
        return False
    if host in _LOCAL_HOSTS or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or ip.is_unspecified or bool(mapped and mapped.is_loopback)


def configured_price(settings: dict | None) -> tuple[float, float] | None:
    """(input, output) USD per million tokens from a provider's config: `free = true` is (0, 0),
    `price = {input, output}` is itself; None when the config says nothing about price."""
    if not settings:
        return None
    if settings.get("free") is True:
        return 0.0, 0.0
    price = settings.get("price")
    if isinstance(price, dict):
        return float(price.get("input", 0.0)), float(price.get("output", 0.0))
    return None


def _is_free(provider_id: str, base_url: str | None, settings: dict | None = None) -> bool:
    if (provider_id or "").lower() in FREE_PROVIDERS:
        return True
    if settings and settings.get("free") is False:   # a loopback proxy to a paid cloud
        return False
    return is_loopback(base_url or (settings or {}).get("base_url"))


def _by_config(settings: dict | None, input_tokens: int, output_tokens: int) -> float | None:
    price = configured_price(settings)
    if price is None:
        return None
    return (max(int(input_tokens), 0) * price[0] + max(int(output_tokens), 0) * price[1]) / 1_000_000


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
    from . import price_table
    entry = price_table.entry((provider_id or "").lower(), model)
    if entry is None:
        return None
    if entry.get("exact"):              # the compact copy (no genai-prices import)
        return price_table.total(entry, input_tokens, output_tokens)
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


def cost(provider_id: str, model: str | None, usage: "Usage", *, base_url: str | None = None,
         settings: dict | None = None) -> float | None:
    """USD for one exchange's usage: 0.0 for local models and loopback endpoints, the configured price
    where `settings` (the provider's config) has one, None when the price is unknown."""
    if usage is None:
        return None
    configured = _by_config(settings, usage.input_tokens, usage.output_tokens)
    if configured is not None:
        return configured
    if _is_free(provider_id, base_url, settings):
        return 0.0
    if not model:
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


def estimate(provider_id: str, model: str | None, request: "Request", *, base_url: str | None = None,
             settings: dict | None = None) -> float | None:
    """USD upper-bound estimate before sending (for budgets): 0.0 local, None when the price is unknown."""
    input_tokens, output_tokens = estimate_tokens(request)
    configured = _by_config(settings, input_tokens, output_tokens)
    if configured is not None:
        return configured
    if _is_free(provider_id, base_url, settings):
        return 0.0
    if not model:
        return None
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


def prices(provider_id: str, model: str | None, *, base_url: str | None = None,
           settings: dict | None = None) -> tuple[float, float] | None:
    """(USD per million input tokens, USD per million output tokens), (0, 0) for local, None if unknown."""
    configured = configured_price(settings)
    if configured is not None:
        return configured
    if _is_free(provider_id, base_url, settings):
        return 0.0, 0.0
    if not model:
        return None
    return _prices((provider_id or "").lower(), model)


@lru_cache(maxsize=512)
def context_window(provider_id: str, model: str | None) -> int | None:
    """The model's context size in tokens where genai-prices records it, else None."""
    if not model:
        return None
    from . import price_table
    entry = price_table.entry((provider_id or "").lower(), model)
    window = entry.get("ctx") if entry else None
    return window if isinstance(window, int) and window > 0 else None
