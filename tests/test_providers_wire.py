"""The cloud adapters driven through the real SDKs over real sockets to the emulator."""
from __future__ import annotations

import subprocess
import sys
import time
from email.utils import formatdate

import pytest

from jupyter_llm.errors import LLMError
from jupyter_llm.events import Finish, Request, TextDelta, Usage
from jupyter_llm.providers import BUILTIN, ProviderSpec
from jupyter_llm.providers import _wire
from jupyter_llm.providers.anthropic import AnthropicProvider
from jupyter_llm.providers.base import Auth
from jupyter_llm.providers.catalogue import price_info
from jupyter_llm.providers.gemini import GeminiProvider
from jupyter_llm.providers.openai_compat import OpenAICompatProvider
from jupyter_llm.targets import Target
from tests.conftest import CANARY

PROVIDERS = ["openai", "anthropic", "gemini"]
ADAPTERS = {"openai": OpenAICompatProvider, "anthropic": AnthropicProvider, "gemini": GeminiProvider}
# anthropic 2.x sends the API key as a Bearer token, no longer as x-api-key.
# Where each SDK may put a key: older anthropic releases send `x-api-key`, current ones `Authorization: Bearer`
# (the API takes both); the lowest-bounds test runs this file with the oldest supported SDKs.
AUTH_HEADER = {"openai": {"authorization"}, "anthropic": {"authorization", "x-api-key"}, "gemini": {"x-goog-api-key"}}


def adapter(name: str, spec: ProviderSpec | None = None):
    return ADAPTERS.get(name, OpenAICompatProvider)(spec or BUILTIN[name])


def auth_for(emulator, name: str, **kw) -> Auth:
    return Auth(secret=kw.pop("secret", CANARY), base_url=emulator.url(name), **kw)


def run(provider, name, emulator, *, model=None, request=None, auth=None):
    """Stream one exchange; return (events, error or None)."""
    request = request or Request([{"role": "user", "content": "ping"}], timeout=5)
    events, error = [], None
    try:
        for ev in provider.stream(Target(name, model), request, auth or auth_for(emulator, name)):
            events.append(ev)
    except LLMError as exc:
        error = exc
    return events, error


def texts(events):
    return [e.text for e in events if isinstance(e, TextDelta)]


def assert_clean(error: LLMError, name: str):
    """One line, names the provider, never the key."""
    for text in (str(error), error.message, error.hint or "", repr(error)):
        assert CANARY not in text
    assert "\n" not in str(error)


# streaming --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PROVIDERS)
def test_stream_text_then_usage_then_finish(emulator, name):
    emulator.script("The quick brown fox jumps.")
    events, error = run(adapter(name), name, emulator)
    assert error is None
    assert texts(events) == ["The ", "quick ", "brown ", "fox ", "jumps."]
    assert isinstance(events[-2], Usage) and events[-2].output_tokens == 5 and events[-2].input_tokens > 0
    assert events[-1] == Finish("stop")
    assert len(emulator.calls(name)) == 1 and emulator.calls(name)[0].stream


@pytest.mark.parametrize("name", PROVIDERS)
def test_default_reply_echoes_prompt_and_model(emulator, name):
    events, _ = run(adapter(name), name, emulator, model="m-1",
                    request=Request([{"role": "user", "content": "hello there"}]))
    assert "".join(texts(events)) == f"Hello from {name} m-1: you said hello there"
    assert emulator.last(name).model == "m-1"


@pytest.mark.parametrize("name", PROVIDERS)
def test_max_tokens_cut_reports_length(emulator, name):
    emulator.script(tokens=20)
    events, _ = run(adapter(name), name, emulator, request=Request([{"role": "user", "content": "x"}], max_tokens=4))
    assert len(texts(events)) == 4 and events[-1] == Finish("length")


def test_openai_system_and_parameters_on_the_wire(emulator):
    req = Request([{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                   {"role": "user", "content": "q2"}], system="Be brief.", temperature=0.3, top_p=0.9, max_tokens=50)
    run(adapter("openai"), "openai", emulator, model="gpt-4o", request=req)
    body = emulator.last("openai").body
    assert body["model"] == "gpt-4o" and body["stream"] is True
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert [m["content"] for m in body["messages"][1:]] == ["q1", "a1", "q2"]
    assert body["temperature"] == 0.3 and body["top_p"] == 0.9 and body["max_completion_tokens"] == 50
    assert body["stream_options"] == {"include_usage": True}


def test_compatible_cloud_uses_its_prefix_and_max_tokens(emulator):
    run(adapter("groq"), "groq", emulator, request=Request([{"role": "user", "content": "hi"}], max_tokens=7),
        auth=auth_for(emulator, "groq"))
    rec = emulator.last("groq")
    assert rec.path == "/groq/v1/chat/completions" and rec.model == "llama-3.1-8b-instant"
    assert rec.body["max_tokens"] == 7 and "max_completion_tokens" not in rec.body


def test_anthropic_system_and_parameters_on_the_wire(emulator):
    req = Request([{"role": "user", "content": "q1"}], system="Be brief.", temperature=0.2, top_p=0.8)
    events, _ = run(adapter("anthropic"), "anthropic", emulator, request=req)
    body = emulator.last("anthropic").body
    assert body["system"] == "Be brief." and body["messages"] == [{"role": "user", "content": "q1"}]
    assert body["model"] == "claude-haiku-5-5"  # the default: a current model, which takes one of the two
    assert body["max_tokens"] == 4096 and body["temperature"] == 0.2 and "top_p" not in body
    assert [e.text for e in events if type(e).__name__ == "Notice"] == [
        "claude-haiku-5-5 takes temperature or top_p, not both: top_p not sent"]
    run(adapter("anthropic"), "anthropic", emulator, request=req, model="claude-opus-4-0")
    body = emulator.last("anthropic").body
    assert body["temperature"] == 0.2 and body["top_p"] == 0.8  # older models take both


def test_gemini_system_and_parameters_on_the_wire(emulator):
    req = Request([{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                   {"role": "user", "content": "q2"}], system="Be brief.", temperature=0.4, top_p=0.7, max_tokens=64)
    run(adapter("gemini"), "gemini", emulator, model="gemini-2.5-flash", request=req)
    rec = emulator.last("gemini")
    assert rec.path.endswith("/models/gemini-2.5-flash:streamGenerateContent") and rec.query.get("alt") == "sse"
    assert rec.body["systemInstruction"]["parts"][0]["text"] == "Be brief."
    assert [c["role"] for c in rec.body["contents"]] == ["user", "model", "user"]
    config = dict(rec.body["generationConfig"])
    thinking = config.pop("thinkingConfig")  # 2.5 thinks: thought summaries asked for (the SDK writes snake_case,
    assert thinking in ({"includeThoughts": True}, {"include_thoughts": True})  # proto JSON takes both)
    assert config == {"temperature": 0.4, "topP": 0.7, "maxOutputTokens": 64}


# credentials --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PROVIDERS)
def test_key_sent_only_in_its_header(emulator, name):
    emulator.expect_key(CANARY)
    _, error = run(adapter(name), name, emulator)
    assert error is None
    (where,) = emulator.secret_locations(CANARY)  # exactly one place
    assert where in {f"{name}:header:{h}" for h in AUTH_HEADER[name]}, where


@pytest.mark.parametrize("name", PROVIDERS)
def test_wrong_key_is_invalid_credentials(emulator, name):
    emulator.expect_key("sk-the-right-key-0000000000")
    events, error = run(adapter(name), name, emulator)
    assert error.code == "INVALID_CREDENTIALS" and f"%llm login {name}" in error.hint
    assert texts(events) == [] and len(emulator.calls(name)) == 1
    assert_clean(error, name)


@pytest.mark.parametrize("name", ["anthropic", "gemini"])
def test_gateway_token_goes_as_bearer(emulator, name):
    emulator.expect_key(CANARY)
    _, error = run(adapter(name), name, emulator, auth=auth_for(emulator, name, method="gateway"))
    assert error is None
    assert emulator.secret_locations(CANARY) == [f"{name}:header:authorization"]
    assert emulator.last(name).headers["authorization"] == f"Bearer {CANARY}"


def test_openai_organization_and_project_headers(emulator):
    run(adapter("openai"), "openai", emulator, auth=auth_for(emulator, "openai", organization="org-1", project="proj-1"))
    headers = emulator.last("openai").headers
    assert headers["openai-organization"] == "org-1" and headers["openai-project"] == "proj-1"


@pytest.mark.parametrize("name", PROVIDERS)
def test_missing_key_sends_nothing(emulator, name):
    _, error = run(adapter(name), name, emulator, auth=Auth(base_url=emulator.url(name)))
    assert error.code == "MISSING_CREDENTIALS" and emulator.requests == []


# faults ------------------------------------------------------------------------------------------

STATUS_CASES = [("401", "INVALID_CREDENTIALS", False), ("403", "INVALID_CREDENTIALS", False),
                ("404", "MODEL_NOT_FOUND", False), ("429", "RATE_LIMITED", True),
                ("500", "PROVIDER_ERROR", True), ("503", "PROVIDER_ERROR", True),
                ("context", "CONTEXT_TOO_LONG", False), ("leak", "PROVIDER_ERROR", False)]


@pytest.mark.parametrize("kind,code,retryable", STATUS_CASES)
@pytest.mark.parametrize("name", PROVIDERS)
def test_status_faults_map_to_codes(emulator, name, kind, code, retryable):
    emulator.fault(kind, retry_after=2 if kind == "429" else None)
    events, error = run(adapter(name), name, emulator, model="some-model")
    assert error is not None and error.code == code and error.retryable is retryable
    assert events == [] and len(emulator.calls(name)) == 1  # one attempt: the SDK did not retry
    assert error.status == int(emulator.calls(name)[0].outcome.split(":")[1])
    assert_clean(error, name)
    if kind == "429":
        assert error.retry_after == 2 and "retry in 2 s" in error.message
    if kind == "404":
        assert "some-model" in error.message and error.hint == f"%llm models {name}"
    if code in ("PROVIDER_ERROR", "RATE_LIMITED", "MODEL_NOT_FOUND", "INVALID_CREDENTIALS"):
        assert _wire.display_name(name) in error.message


@pytest.mark.parametrize("name", PROVIDERS)
def test_model_name_triggers(emulator, name):
    provider = adapter(name)
    _, error = run(provider, name, emulator, model="fault-429-3")
    assert error.code == "RATE_LIMITED" and error.retry_after == 3
    _, error = run(provider, name, emulator, model="flaky-1-503")
    assert error.code == "PROVIDER_ERROR" and error.status == 503
    events, error = run(provider, name, emulator, model="flaky-1-503")
    assert error is None and events[-1] == Finish("stop")
    assert len(emulator.calls(name)) == 3


def test_retry_after_forms(emulator):
    emulator.fault("429", retry_after_ms=1500)
    _, error = run(adapter("openai"), "openai", emulator)
    assert error.retry_after == 1.5
    emulator.fault("429", retry_after=formatdate(time.time() + 30, usegmt=True))
    _, error = run(adapter("anthropic"), "anthropic", emulator)
    assert 25 <= error.retry_after <= 31
    assert _wire.retry_after({"retry-after": "garbage"}) is None


def test_gemini_retry_delay_from_body_only():
    from jupyter_llm.providers.gemini import _retry_delay
    body = {"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]}}
    assert _retry_delay(body) == 7.0


@pytest.mark.parametrize("name", PROVIDERS)
def test_drop_mid_stream_keeps_partial_text(emulator, name):
    emulator.fault("drop", after=3)
    events, error = run(adapter(name), name, emulator)
    assert texts(events) == ["Hello ", "from ", f"{name} "]
    assert error.code == "NETWORK_ERROR" and "%llm use local" in error.hint and "mid-answer" in error.message
    assert len(emulator.calls(name)) == 1
    assert_clean(error, name)


@pytest.mark.parametrize("name", PROVIDERS)
def test_error_event_mid_stream(emulator, name):
    events, error = run(adapter(name), name, emulator, model="error-after-2")
    assert len(texts(events)) == 2 and error.code == "PROVIDER_ERROR" and error.retryable


@pytest.mark.parametrize("name", PROVIDERS)
def test_stall_mid_stream_is_timeout(emulator, name):
    emulator.fault("stall", after=2, seconds=30)
    start = time.monotonic()
    events, error = run(adapter(name), name, emulator, request=Request([{"role": "user", "content": "x"}], timeout=0.4))
    assert len(texts(events)) == 2 and error.code == "TIMEOUT" and "0.4s" in error.message
    took = time.monotonic() - start
    assert took < 12 and len(emulator.calls(name)) == 1, took  # the stall lasts 30 s


def test_slow_first_token_within_timeout_is_fine(emulator):
    emulator.fault("slow", seconds=0.3)
    events, error = run(adapter("openai"), "openai", emulator, request=Request([{"role": "user", "content": "x"}], timeout=5))
    assert error is None and events[-1] == Finish("stop")


@pytest.mark.parametrize("name", PROVIDERS)
def test_unreachable_and_hangup_are_network_errors(emulator, name):
    _, error = run(adapter(name), name, emulator, model="fault-hangup")
    assert error.code == "NETWORK_ERROR" and len(emulator.calls(name)) == 1
    closed = Auth(secret=CANARY, base_url=emulator.url(name).replace(str(emulator.port), "1"))
    _, error = run(adapter(name), name, emulator, auth=closed)
    assert error.code == "NETWORK_ERROR" and "cannot reach" in error.message
    assert_clean(error, name)


@pytest.mark.parametrize("name", PROVIDERS)
def test_consumer_stopping_closes_the_stream(emulator, name):
    emulator.script(tokens=200, delay=0.01)
    provider = adapter(name)
    gen = provider.stream(Target(name), Request([{"role": "user", "content": "x"}], timeout=5), auth_for(emulator, name))
    assert isinstance(next(gen), TextDelta) and isinstance(next(gen), TextDelta)
    gen.close()
    deadline = time.monotonic() + 15  # waited for as an event: a loaded machine can take seconds to notice
    while emulator.calls(name)[0].outcome != "client-gone" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert emulator.calls(name)[0].outcome == "client-gone"


# model lists and health ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PROVIDERS)
def test_list_models_live_with_key(emulator, name):
    emulator.set_models(name, [BUILTIN[name].default_model, "brand-new-model"])
    models = adapter(name).list_models(auth_for(emulator, name))
    assert [m.id for m in models] == [BUILTIN[name].default_model, "brand-new-model"]
    assert all(m.source == "live" for m in models)
    assert models[0].input_price and models[0].output_price and models[1].input_price is None
    assert len(emulator.calls(name, "models")) == 1


@pytest.mark.parametrize("name", PROVIDERS)
def test_list_models_catalogue_without_key(emulator, name):
    models = adapter(name).list_models(Auth())
    assert models[0].id == BUILTIN[name].default_model and all(m.source == "catalogue" for m in models)
    assert models[0].input_price > 0 and models[0].context
    assert emulator.requests == []


@pytest.mark.parametrize("name", PROVIDERS)
def test_list_models_error_is_mapped(emulator, name):
    emulator.fault("401", on="models")
    with pytest.raises(LLMError) as info:
        adapter(name).list_models(auth_for(emulator, name))
    assert info.value.code == "INVALID_CREDENTIALS"
    assert_clean(info.value, name)


@pytest.mark.parametrize("name", PROVIDERS)
def test_health(emulator, name):
    provider = adapter(name)
    ok = provider.health(Target(name), auth_for(emulator, name))
    assert ok.ok and ok.latency is not None and "models" in ok.detail
    emulator.fault("500", on="models")
    bad = provider.health(Target(name), auth_for(emulator, name))
    assert not bad.ok and "PROVIDER_ERROR" in bad.detail and CANARY not in bad.detail
    assert not provider.health(Target(name), Auth()).ok


# plumbing ----------------------------------------------------------------------------------------------

def test_clients_are_cached_per_credential(emulator):
    provider = adapter("openai")
    for _ in range(2):
        run(provider, "openai", emulator)
    run(provider, "openai", emulator, auth=auth_for(emulator, "openai", secret="sk-other-key-123456789"))
    assert len(provider._clients._clients) == 2 and CANARY not in repr(provider._clients)


def test_price_info():
    info = price_info("openai", "gpt-4o-mini")
    assert (info.input_price, info.output_price, info.context) == (0.15, 0.6, 128000)
    assert price_info("gemini", "gemini-2.0-flash").input_price == 0.1
    assert price_info("openai", "no-such-model-xyz") is None


def test_importing_adapters_imports_no_sdk():
    code = ("import sys, jupyter_llm.providers.openai_compat, jupyter_llm.providers.anthropic, "
            "jupyter_llm.providers.gemini, jupyter_llm.providers.catalogue; "
            "print(sorted(m for m in ('openai', 'anthropic', 'google.genai', 'genai_prices') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_emulator_runs_standalone_and_takes_control_requests():
    import json
    import urllib.request
    proc = subprocess.Popen([sys.executable, "-m", "tests.emulator", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        base = line.split()[3]
        assert base.startswith("http://127.0.0.1:")
        post = urllib.request.Request(f"{base}/_emulator/fault", data=json.dumps({"kind": "503", "retry_after": 4}).encode(),
                                      headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(post, timeout=5).read()
        provider = adapter("openai")
        with pytest.raises(LLMError) as info:
            list(provider.stream(Target("openai"), Request([{"role": "user", "content": "x"}]),
                                 Auth(secret=CANARY, base_url=f"{base}/openai/v1")))
        assert info.value.code == "PROVIDER_ERROR" and info.value.retry_after == 4
        recorded = json.loads(urllib.request.urlopen(f"{base}/_emulator/requests", timeout=5).read())
        assert [r["outcome"] for r in recorded] == ["status:503"]
    finally:
        proc.terminate()
        proc.wait(5)


def _adapter_of(modules: tuple[str, ...]) -> _wire.SDKAdapter:
    adapter = _wire.SDKAdapter(BUILTIN["openai"])
    adapter.sdk_modules = modules
    return adapter


def test_an_sdk_is_imported_on_a_fresh_stack_while_the_caller_waits(tmp_path, monkeypatch):
    """preload imports on a short-lived thread (an empty call stack: on CPython 3.11 a deep one can make the
    import 15-20 % slower) and returns only once the SDK is in; an SDK already imported is left alone."""
    (tmp_path / "fake_sdk_mod.py").write_text("import threading\nTHREAD = threading.current_thread().name\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fake_sdk_mod", raising=False)
    adapter = _adapter_of(("fake_sdk_mod",))
    assert not adapter.loaded()
    adapter.preload()
    assert adapter.loaded() and sys.modules["fake_sdk_mod"].THREAD == "llm-fresh-stack"
    first = sys.modules["fake_sdk_mod"]
    adapter.preload()
    assert sys.modules["fake_sdk_mod"] is first


def test_an_sdk_that_cannot_be_imported_fails_in_the_caller():
    with pytest.raises(ModuleNotFoundError) as info:
        _adapter_of(("no_such_sdk_for_jupyter_llm",)).preload()
    assert "no_such_sdk_for_jupyter_llm" in str(info.value)
