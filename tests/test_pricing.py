"""Pricing from the bundled genai-prices table: known models cost money, local is free, unknown is None."""
from __future__ import annotations


import pytest

from jupyter_llm import pricing
from jupyter_llm.events import Request, Usage
from jupyter_llm.providers import BUILTIN

KNOWN = [("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku-latest"), ("gemini", "gemini-2.0-flash"),
         ("deepseek", "deepseek-chat"), ("groq", "llama-3.1-8b-instant")]


@pytest.mark.parametrize("provider,model", KNOWN)
def test_known_models_cost_money_consistent_with_prices(provider, model):
    usage = Usage(input_tokens=1200, output_tokens=345)
    c = pricing.cost(provider, model, usage)
    assert c is not None and c > 0
    per_m_in, per_m_out = pricing.prices(provider, model)
    assert per_m_in > 0 and per_m_out > 0
    assert c == pytest.approx((1200 * per_m_in + 345 * per_m_out) / 1e6, rel=1e-9)


def test_every_builtin_default_model_has_a_price():
    for spec in BUILTIN.values():
        if spec.id != "local":
            assert pricing.prices(spec.id, spec.default_model) is not None, spec.id


def test_reference_prices():
    assert pricing.prices("openai", "gpt-4o-mini") == pytest.approx((0.15, 0.6))
    assert pricing.prices("gemini", "models/gemini-2.0-flash") == pricing.prices("gemini", "gemini-2.0-flash")


def test_local_is_free():
    assert pricing.cost("local", "phi3", Usage(10_000, 5_000)) == 0.0
    assert pricing.cost("local", None, Usage(1, 1)) == 0.0
    assert pricing.prices("local", "anything") == (0.0, 0.0)
    assert pricing.estimate("local", None, Request([{"role": "user", "content": "hi"}])) == 0.0
    # a configured endpoint on this machine (vLLM, Ollama, LM Studio) is free too
    assert pricing.cost("ollama", "gpt-4o", Usage(10, 10), base_url="http://localhost:11434/v1") == 0.0


def test_unknown_is_none():
    assert pricing.cost("openai", "no-such-model-xyz", Usage(10, 10)) is None
    assert pricing.prices("openai", "no-such-model-xyz") is None
    assert pricing.estimate("openai", "no-such-model-xyz", Request([])) is None
    assert pricing.cost("openai", None, Usage(10, 10)) is None
    assert pricing.cost("mygateway", "my-private-finetune", Usage(10, 10)) is None
    # a model known to belong to another provider is not priced under this one
    assert pricing.cost("groq", "claude-3-5-haiku-latest", Usage(10, 10)) is None


def test_configured_gateway_is_priced_by_model_name():
    direct = pricing.cost("openai", "gpt-4o", Usage(100, 100))
    assert pricing.cost("mygateway", "gpt-4o", Usage(100, 100)) == pytest.approx(direct)
    assert pricing.cost("mygateway", "openai/gpt-4o", Usage(100, 100)) == pytest.approx(direct)


def test_zero_usage_costs_zero():
    assert pricing.cost("openai", "gpt-4o-mini", Usage()) == 0.0


@pytest.mark.parametrize("provider,model", KNOWN)
def test_estimate_is_an_upper_bound(provider, model):
    system = "You are terse."
    messages = [{"role": "user", "content": "Explain the GIL in one paragraph, please. " * 20},
                {"role": "assistant", "content": "The GIL is a mutex."},
                {"role": "user", "content": "And in Python 3.13?"}]
    chars = len(system) + sum(len(m["content"]) for m in messages)
    req = Request(messages, system=system, max_tokens=300)
    est = pricing.estimate(provider, model, req)
    # a real tokenizer gives fewer tokens than chars/4 for English; the answer stops at max_tokens
    actual = pricing.cost(provider, model, Usage(input_tokens=-(-chars // 4), output_tokens=300))
    assert est >= actual > 0
    assert pricing.estimate_tokens(req)[1] == 300
    assert pricing.estimate_tokens(Request(messages))[1] == pricing.DEFAULT_OUTPUT_TOKENS


def test_estimate_tokens_rounds_up():
    inp, out = pricing.estimate_tokens(Request([{"role": "user", "content": "abcde"}], max_tokens=7))
    assert inp >= 2 and out == 7


def test_model_lookup_is_cached_after_first_call():
    pricing.cost("anthropic", "claude-3-5-haiku-latest", Usage(10, 10))
    pricing.cost("openai", "no-such-model-xyz", Usage(10, 10))
    misses = pricing._where.cache_info().misses
    for _ in range(20):
        pricing.cost("anthropic", "claude-3-5-haiku-latest", Usage(10, 10))
        pricing.cost("openai", "no-such-model-xyz", Usage(10, 10))
    assert pricing._where.cache_info().misses == misses  # the genai-prices search ran once per model
