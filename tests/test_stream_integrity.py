"""A stream is only "ok" when the server said it finished: terminal events, malformed data, non-stream 200
replies, truncation at max_tokens. Through the real SDKs over sockets to the emulator, real llama.cpp, and
a real kernel for a cut stream keeping its text."""
from __future__ import annotations

import json

import pytest

from jupyter_llm.events import Finish, ReasoningDelta, Request, TextDelta, Usage
from jupyter_llm.providers.llamacpp import LlamaCppProvider
from jupyter_llm.config import Config
from jupyter_llm.providers import spec_for
from jupyter_llm.targets import Target
from tests.conftest import CANARY, emulator_config
from tests.test_providers_wire import PROVIDERS, adapter, assert_clean, run, texts


# ---- terminal events ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PROVIDERS)
def test_stream_without_terminal_event_is_incomplete_and_keeps_text(emulator, name):
    """OpenAI: no finish_reason chunk and no [DONE]; Anthropic: no message_stop; Gemini: no finishReason."""
    emulator.script("one two three")
    events, error = run(adapter(name), name, emulator, model="m+no-end")
    assert texts(events) == ["one ", "two ", "three"]
    assert error is not None and error.code == "NETWORK_ERROR"
    assert "ended before the answer finished" in error.message
    assert not any(isinstance(e, Finish) for e in events)
    assert emulator.calls(name)[0].outcome == "no-end"
    assert_clean(error, name)


def test_anthropic_stop_reason_without_message_stop_is_incomplete(emulator):
    # The stop reason arrives in message_delta; only message_stop says the message is over.
    events, error = run(adapter("anthropic"), "anthropic", emulator, model="m+no-end")
    assert texts(events) and error.code == "NETWORK_ERROR"


def test_openai_finish_reason_without_done_is_complete(emulator):
    """A finish_reason chunk is the server saying it finished, even when [DONE] is lost after it."""
    emulator.script("all here")
    events, error = run(adapter("openai"), "openai", emulator, model="m+no-done")
    assert error is None and texts(events) == ["all ", "here"] and events[-1] == Finish("stop")


def test_openai_done_without_finish_reason_is_complete(emulator):
    """`data: [DONE]` is the server saying the stream is over, even when no chunk carried a finish_reason."""
    emulator.script("all here")
    events, error = run(adapter("openai"), "openai", emulator, model="m+no-finish")
    assert error is None and texts(events) == ["all ", "here"] and isinstance(events[-1], Finish)


@pytest.mark.parametrize("name", PROVIDERS)
def test_session_keeps_cut_text_in_llm_conversation_and_history(cloud, emulator, name):
    emulator.script("kept words here")
    s = cloud()
    r = s.ask("hello", target=f"{name}:m+no-end")
    assert r.text == "kept words here" and r.incomplete and r.error.code == "NETWORK_ERROR"
    assert not r.ok and s.conversation[-1]["content"] == "kept words here"
    row = s.history(1)[0]
    assert row["response"] == "kept words here" and row["incomplete"] and row["status"] == "NETWORK_ERROR"
    assert len(emulator.calls(name)) == 1  # text arrived: never retried


# ---- malformed data ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PROVIDERS)
def test_malformed_data_mid_stream_is_provider_error_with_text_kept(emulator, name):
    emulator.script("alpha beta gamma delta")
    events, error = run(adapter(name), name, emulator, model="m+garbage-after-2")
    assert texts(events) == ["alpha ", "beta "]
    assert error.code == "PROVIDER_ERROR" and "malformed" in error.message
    assert_clean(error, name)


def test_malformed_data_in_a_session_keeps_text_everywhere(cloud, emulator):
    emulator.script("alpha beta gamma delta")
    s = cloud()
    r = s.ask("hello", target="openai:m+garbage-after-3")
    assert r.text == "alpha beta gamma " and r.incomplete and r.error.code == "PROVIDER_ERROR"
    assert s.history(1)[0]["response"] == "alpha beta gamma "


# ---- HTTP 200 that is not an event stream -------------------------------------------------------------

@pytest.mark.parametrize("name", PROVIDERS)
def test_non_stream_json_completion_is_accepted_as_the_answer(emulator, name):
    emulator.script("a whole answer")
    events, error = run(adapter(name), name, emulator, model="m+json-200")
    assert error is None and "".join(texts(events)) == "a whole answer"
    usage = [e for e in events if isinstance(e, Usage)]
    assert usage and usage[0].output_tokens == 3 and events[-1] == Finish("stop")


@pytest.mark.parametrize("name", PROVIDERS)
def test_html_200_is_provider_error_naming_the_content_type(emulator, name):
    events, error = run(adapter(name), name, emulator, model="m+html-200")
    assert not texts(events) and error.code == "PROVIDER_ERROR" and "text/html" in error.message
    assert_clean(error, name)


def test_html_200_is_never_an_empty_ok_in_a_session(cloud, emulator):
    s = cloud()
    r = s.ask("hello", target="openai:m+html-200")
    assert not r.ok and r.text == "" and r.error.code == "PROVIDER_ERROR" and "text/html" in r.error.message
    assert len(emulator.calls("openai")) == 1  # a login page will not turn into an answer: not retried


def test_json_200_that_is_not_a_completion_is_provider_error(emulator):
    """A 200 JSON body without choices is not an answer (e.g. a gateway status page)."""
    from jupyter_llm.providers.base import Auth
    from tests.fake_http import FakeServer
    with FakeServer(200, {"status": "healthy", "version": "1.2"}, methods=("POST",)) as status_page:
        auth = Auth(secret=CANARY, base_url=status_page.url + "/v1")
        events, error = run(adapter("openai"), "openai", emulator, auth=auth)
        assert error.code == "PROVIDER_ERROR" and "application/json" in error.message and "not a completion" in error.message


# ---- truncation -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PROVIDERS)
def test_max_tokens_stop_is_truncated_with_the_limit_and_recorded(cloud, emulator, name):
    emulator.script(tokens=20)
    s = cloud()
    r = s.ask("hello", target=f"{name}:m", max_tokens=5)
    assert r.ok and r.finish_reason == "length" and r.truncated and r.max_tokens == 5
    assert not r.incomplete and len(r.text.split()) == 5
    assert s.history(1)[0]["truncated"] is True
    r2 = s.ask("again", target=f"{name}:m", max_tokens=50)
    assert r2.ok and not r2.truncated and s.history(1)[0]["truncated"] is False


# ---- real llama.cpp -------------------------------------------------------------------------------------

def _local() -> LlamaCppProvider:
    cfg = Config()
    return LlamaCppProvider(spec_for("local", cfg), cfg)


def test_real_llama_cpp_answer_is_complete_and_truncated_at_max_tokens(llama_server, cloud):
    """llama.cpp ends with a finish_reason chunk and [DONE]: ok, and "length" at max_tokens."""
    events = list(_local().stream(Target("local", port=llama_server.port),
                                  Request([{"role": "user", "content": "hi"}], max_tokens=6, temperature=0), None))
    assert events[-1] == Finish("length") and any(isinstance(e, TextDelta) for e in events)
    s = cloud()
    r = s.ask("hi", target=f"local:{llama_server.port}", max_tokens=6, temperature=0)
    assert r.ok and r.truncated and r.max_tokens == 6 and s.history(1)[0]["truncated"] is True


# ---- real kernel ----------------------------------------------------------------------------------------

@pytest.mark.kernel
def test_real_kernel_cut_stream_keeps_its_text_in_output_llm_and_history(kernel_factory, emulator, isolated_env):
    (isolated_env / "config.toml").write_text(emulator_config(emulator))
    k = kernel_factory(OPENAI_API_KEY=CANARY)
    assert k.run("%load_ext jupyter_llm").status == "ok"
    emulator.script("the first part of an answer")
    run = k.run("%%llm openai:m+no-end -f text\nhello")
    assert "Traceback" not in run.stderr and "NETWORK_ERROR" in run.stderr + "".join(run.texts())
    assert "ended before the answer finished" in run.stderr + "".join(run.texts())
    assert any("the first part of an answer" in t for t in run.texts()) or "the first part" in run.stdout
    out = k.run("print(repr(_llm.text), _llm.incomplete, _llm.error.code);"
                "import jupyter_llm; print(jupyter_llm.session().history(1)[0]['response'])").stdout
    assert "'the first part of an answer' True NETWORK_ERROR" in out
    assert out.strip().endswith("the first part of an answer")
    for m in run.messages:
        assert CANARY not in json.dumps(m["content"], default=str)
