"""Right codes for what real servers say: context-window errors (llama.cpp for real, the clouds in their own
words), a gateway's 400 for an unknown model, an endpoint with no model-list route, a missing key."""
from __future__ import annotations

import pytest

from jupyter_llm.config import Config
from jupyter_llm.errors import LLMError
from jupyter_llm.events import Request
from jupyter_llm.providers import _wire, spec_for
from jupyter_llm.providers.llamacpp import LlamaCppProvider
from jupyter_llm.targets import Target
from tests.test_providers_wire import PROVIDERS, adapter, assert_clean, run


# ---- context too long ---------------------------------------------------------------------------------

def test_real_llama_cpp_context_overflow_is_context_too_long(llama_server, cloud):
    cfg = Config()
    local = LlamaCppProvider(spec_for("local", cfg), cfg)
    long_prompt = " ".join(["hello world"] * 3000)  # far past the 2048-token context
    with pytest.raises(LLMError) as info:
        list(local.stream(Target("local", port=llama_server.port),
                          Request([{"role": "user", "content": long_prompt}], max_tokens=4), None))
    err = info.value
    assert err.code == "CONTEXT_TOO_LONG" and "%llm reset" in err.hint and "--new" in err.hint
    assert "\n" not in str(err)
    s = cloud()
    with pytest.raises(LLMError) as refused:  # context=auto (the default) measures first and sends nothing
        s.ask(long_prompt, target=f"local:{llama_server.port}", max_tokens=4)
    assert refused.value.code == "CONTEXT_TOO_LONG" and "nothing was sent" in refused.value.message
    s.set(context="all")  # send everything and let the server refuse: its own words map to the same code
    r = s.ask(long_prompt, target=f"local:{llama_server.port}", max_tokens=4)
    assert r.error.code == "CONTEXT_TOO_LONG" and "%llm reset" in r.error.hint


@pytest.mark.parametrize("name", PROVIDERS)
@pytest.mark.parametrize("fault", ["context", "context-llama"])
def test_context_errors_in_each_providers_words(emulator, name, fault):
    _, error = run(adapter(name), name, emulator, model=f"m+fault-{fault}")
    assert error.code == "CONTEXT_TOO_LONG" and "%llm reset" in error.hint and "--new" in error.hint
    assert not error.retryable and len(emulator.calls(name)) == 1
    assert_clean(error, name)


@pytest.mark.parametrize("message", [
    "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
    "the request exceeds the available context size, try increasing it",
    "prompt is too long: 210417 tokens > 200000 maximum",
    "The input token count (1210417) exceeds the maximum number of tokens allowed (1048576).",
    "Input is too long for requested model.",
])
def test_context_wording_maps_to_context_too_long(message):
    assert _wire.status_error("openai", 400, message, model="m").code == "CONTEXT_TOO_LONG"


# ---- unknown model at a gateway --------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["litellm-model", "litellm-deployments", "openrouter-model"])
def test_gateway_400_for_an_unknown_model_is_model_not_found(cloud, emulator, fault):
    s = cloud()
    error = s.ask("hi", target=f"mygateway:m+fault-{fault}").error
    assert error.code == "MODEL_NOT_FOUND" and "%llm models mygateway" in error.hint
    assert not error.retryable and len(emulator.calls("mygateway")) == 1  # not retried


@pytest.mark.parametrize("message", [
    "litellm.BadRequestError: Invalid model name passed in model=gpt-9. Call `/v1/models` to view available models",
    "No healthy deployments for this model. model=gpt-9",
    "gpt-9 is not a valid model ID",
    "The model `gpt-9` does not exist or you do not have access to it.",
    "model 'llama9' not found, try pulling it first",
])
def test_unknown_model_wording_maps_to_model_not_found(message):
    assert _wire.status_error("mygateway", 400, message, model="gpt-9").code == "MODEL_NOT_FOUND"


def test_a_plain_bad_request_stays_provider_error():
    assert _wire.status_error("openai", 400, "temperature must be at most 2", model="m").code == "PROVIDER_ERROR"


# ---- no model-list route --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mygateway", "gemini", "anthropic"])
def test_no_model_list_route_falls_back_to_catalogue_and_is_not_down(cloud, emulator, name):
    emulator.drop_models_route(name, 404)
    s = cloud()
    models = s.models(name)
    assert models and all(m.source == "catalogue" for m in models)
    health = s.check(f"{name}:" + (s._spec(Target(name)).default_model or "gpt-4o"))
    assert health.ok and "no model list" in health.detail
    row = {r["provider"]: r for r in s.providers()}[name]
    assert row["health"].startswith("ok") and "down" not in row["health"]
    assert emulator.calls(name, "models")  # it did ask


def test_405_on_models_is_not_down_either(cloud, emulator):
    emulator.drop_models_route("mygateway", 405)
    s = cloud()
    assert s.check("mygateway:gpt-4o").ok
    assert [m.id for m in s.models("mygateway")] == ["gpt-4o"]


# ---- missing key ----------------------------------------------------------------------------------------

def test_missing_key_is_no_key_never_down(cloud, emulator):
    s = cloud(keys=False)
    rows = {r["provider"]: r for r in s.providers()}
    for name in ("openai", "anthropic", "gemini", "groq"):
        assert rows[name]["health"] == "no key", rows[name]
    assert s.status()["health"] == "no key"
    s.use("local")
    assert s.status(probe=False)["health"] == ""


def test_error_bodies_sent_with_http_200_get_their_codes():
    """Gateways that answer errors as a 200 JSON body (or an error event in the stream)."""
    from jupyter_llm.providers import BUILTIN
    from jupyter_llm.providers.openai_compat import OpenAICompatProvider
    p = OpenAICompatProvider(BUILTIN["openai"])
    cases = [({"error": {"message": "No healthy deployments for this model", "code": "400"}}, "MODEL_NOT_FOUND"),
             ({"error": {"message": "This model's maximum context length is 8192 tokens", "code": "context_length_exceeded"}},
              "CONTEXT_TOO_LONG"),
             ({"error": {"message": "upstream overloaded", "code": 503}}, "PROVIDER_ERROR")]
    for body, code in cases:
        with pytest.raises(LLMError) as info:
            list(p._complete(body, "application/json", "gpt-x", None))
        assert info.value.code == code, body
    assert _wire.status_error("openai", 200, "model 'x' not found").code == "MODEL_NOT_FOUND"


def test_a_web_page_on_the_model_list_route_gives_the_catalogue_not_a_traceback():
    """A proxy or web app answering GET /models with HTML 200: `%llm models` shows the catalogue; health
    says what happened (one coded line) instead of a parse traceback."""
    from jupyter_llm.providers import BUILTIN
    from jupyter_llm.providers.base import Auth
    from tests.conftest import CANARY
    from tests.fake_http import FakeServer

    with FakeServer(200, b"<html><body>app</body></html>", content_type="text/html") as page:  # a web app's page
        for name in PROVIDERS:
            p = adapter(name)
            auth = Auth(secret=CANARY, base_url=page.url + ("/v1" if name == "openai" else ""))
            models = p.list_models(auth)
            assert models[0].id == BUILTIN[name].default_model and all(m.source == "catalogue" for m in models)
            health = p.health(Target(name), auth)
            assert not health.ok and health.detail.startswith("PROVIDER_ERROR") and "\n" not in health.detail
