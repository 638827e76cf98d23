"""Today's models: reasoning/thinking text kept apart from the answer (`_llm.reasoning`), reasoning tokens in
usage and cost, parameters reasoning models reject left out with a note, defaults from the price catalogue."""
from __future__ import annotations

import pytest

from jupyter_llm import pricing
from jupyter_llm.events import Finish, Notice, ReasoningDelta, Request, TextDelta, Usage
from jupyter_llm.providers import BUILTIN
from jupyter_llm.providers.anthropic import one_sampling_parameter
from jupyter_llm.providers.gemini import thinking_model
from jupyter_llm.providers.openai_compat import reasoning_model
from tests.test_providers_wire import PROVIDERS, adapter, run, texts


def reasoning(events):
    return "".join(e.text for e in events if isinstance(e, ReasoningDelta))


# ---- reasoning text on the wire -------------------------------------------------------------------------

@pytest.mark.parametrize("name", PROVIDERS)
def test_reasoning_chunks_become_reasoning_deltas_not_text(emulator, name):
    """OpenAI-compatible `reasoning_content`, Anthropic thinking blocks, Gemini thought parts."""
    emulator.script("The answer is 4.", reasoning="Two plus two is four.")
    events, error = run(adapter(name), name, emulator)
    assert error is None
    assert reasoning(events) == "Two plus two is four."
    assert "".join(texts(events)) == "The answer is 4."
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert all(not isinstance(e, ReasoningDelta) for e in events[first_text:])  # thinking comes first
    usage = [e for e in events if isinstance(e, Usage)][-1]
    assert usage.output_tokens == 4 + 5  # reasoning is billed as output
    if name != "anthropic":  # Anthropic folds thinking into output_tokens without a separate count
        assert usage.reasoning_tokens == 5
    assert events[-1] == Finish("stop")


@pytest.mark.parametrize("name", PROVIDERS)
def test_reasoning_in_a_non_stream_body(emulator, name):
    emulator.script("Four.", reasoning="Adding.")
    events, error = run(adapter(name), name, emulator, model="m+json-200")
    assert error is None and reasoning(events) == "Adding." and "".join(texts(events)) == "Four."


@pytest.mark.parametrize("name", PROVIDERS)
def test_session_keeps_reasoning_out_of_text_and_conversation(cloud, emulator, name):
    emulator.script("The answer is 4.", reasoning="Two plus two is four.")
    s = cloud()
    r = s.ask("2+2?", target=f"{name}:m")
    assert r.ok and r.text == "The answer is 4." and r.reasoning == "Two plus two is four."
    assert s.conversation[-1] == {"role": "assistant", "content": "The answer is 4."}
    assert s.history(1)[0]["response"] == "The answer is 4."
    assert r.usage.output_tokens == 9


def test_reasoning_tokens_are_counted_in_cost(cloud, emulator):
    emulator.script("ok", reasoning=" ".join(["think"] * 40))
    s = cloud()
    r = s.ask("q", target="openai:gpt-5.4-mini")
    assert r.usage.reasoning_tokens == 40 and r.usage.output_tokens == 41
    assert r.cost == pytest.approx(pricing.cost("openai", "gpt-5.4-mini", Usage(r.usage.input_tokens, 41)))
    assert r.cost > pricing.cost("openai", "gpt-5.4-mini", Usage(r.usage.input_tokens, 1))


def test_real_llama_cpp_reasoning_content_is_reasoning(llama_server):
    """llama.cpp sends thinking as `reasoning_content` deltas (--reasoning-format deepseek); the tiny model
    does not think, so this checks the answer stays text and nothing leaks into reasoning."""
    from jupyter_llm.config import Config
    from jupyter_llm.providers import spec_for
    from jupyter_llm.providers.llamacpp import LlamaCppProvider
    from jupyter_llm.targets import Target
    cfg = Config()
    events = list(LlamaCppProvider(spec_for("local", cfg), cfg).stream(
        Target("local", port=llama_server.port), Request([{"role": "user", "content": "hi"}], max_tokens=5, temperature=0), None))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)).strip() and reasoning(events) == ""


# ---- parameters reasoning models reject -------------------------------------------------------------------

@pytest.mark.parametrize("model", ["o3", "o4-mini", "o1-pro", "gpt-5", "gpt-5-mini", "gpt-5.4-mini", "gpt-6.1-sol",
                                   "openai/o3-mini", "azure/gpt-5-nano"])
def test_openai_reasoning_models_do_not_get_temperature_or_top_p(cloud, emulator, model):
    s = cloud()
    r = s.ask("q", target=f"openai:{model}", temperature=0.3, top_p=0.9, max_tokens=50)
    body = emulator.last("openai").body
    assert "temperature" not in body and "top_p" not in body
    assert body["max_completion_tokens"] == 50 and "max_tokens" not in body
    assert r.ok and r.notes == [f"{model} is a reasoning model and rejects temperature and top_p: not sent"]
    assert s.history(1)[0]["status"] == "ok"


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4.1", "gpt-5-chat-latest", "llama-3.1-8b-instant", "oss-model"])
def test_other_models_get_their_parameters(cloud, emulator, model):
    s = cloud()
    r = s.ask("q", target=f"openai:{model}", temperature=0.3)
    assert emulator.last("openai").body["temperature"] == 0.3 and r.notes == []


def test_a_gateway_serving_a_reasoning_model_also_drops_them(cloud, emulator):
    s = cloud()
    r = s.ask("q", target="mygateway:openai/o4-mini", temperature=0.5)
    body = emulator.last("mygateway").body
    assert "temperature" not in body and r.notes and "reasoning model" in r.notes[0]


def test_anthropic_recent_models_get_one_sampling_parameter(cloud, emulator):
    s = cloud()
    r = s.ask("q", target="anthropic:claude-sonnet-4-6", temperature=0.3, top_p=0.9)
    body = emulator.last("anthropic").body
    assert body["temperature"] == 0.3 and "top_p" not in body and "not both" in r.notes[0]
    r = s.ask("q", target="anthropic:claude-sonnet-4-6", temperature=0.3)
    assert emulator.last("anthropic").body["temperature"] == 0.3 and r.notes == []


@pytest.mark.parametrize("model,expected", [("claude-opus-4-1", True), ("claude-sonnet-4-5-20250929", True),
                                            ("claude-haiku-4-5", True), ("claude-sonnet-5-5", True),
                                            ("claude-opus-4-0", False), ("claude-sonnet-4-20250514", False),
                                            ("claude-3-7-sonnet-latest", False)])
def test_which_claude_models_take_one_sampling_parameter(model, expected):
    assert one_sampling_parameter(model) is expected


@pytest.mark.parametrize("model,expected", [("gemini-2.5-flash", True), ("gemini-2.5-pro", True), ("gemini-3.5-flash", True),
                                            ("gemini-2.0-flash", False), ("gemini-2.5-flash-tts", False),
                                            ("gemini-1.5-pro", False)])
def test_gemini_thought_summaries_asked_only_of_thinking_models(model, expected):
    assert thinking_model(model) is expected


@pytest.mark.parametrize("model,expected", [("o3", True), ("gpt-5-chat-latest", False), ("gpt-4o", False),
                                            ("deepseek-reasoner", False), ("openrouter/gpt-5", True)])
def test_which_openai_models_reason(model, expected):
    assert reasoning_model(model) is expected


# ---- today's models --------------------------------------------------------------------------------------

@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_defaults_are_current_models_of_the_price_catalogue(provider):
    from genai_prices import data
    model = BUILTIN[provider].default_model
    assert model not in ("claude-3-5-haiku-latest", "gemini-2.0-flash")  # retired
    assert pricing.prices(provider, model) is not None
    ref = {"openai": "openai", "anthropic": "anthropic", "gemini": "google"}[provider]
    found = [m for p in data.providers if p.id == ref for m in p.models if m.id == model]
    assert found and not found[0].deprecated, (provider, model)


def test_readme_examples_name_no_retired_model():
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for retired in ("claude-3-5-haiku-latest", "gemini-2.0-flash"):
        assert retired not in readme
