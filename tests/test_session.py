"""The Session end to end: real SDKs over real sockets to the emulator, history, budget, cache, fallback."""
from __future__ import annotations

import sqlite3

import pytest

from jupyter_llm.errors import LLMError
from jupyter_llm.events import TextDelta
from tests.conftest import CANARY


@pytest.mark.parametrize("target,wire", [
    ("openai:gpt-4o-mini", "openai"), ("anthropic:claude-3-5-haiku-latest", "anthropic"),
    ("gemini:gemini-2.0-flash", "gemini"), ("groq:llama-3.1-8b-instant", "groq"), ("mygateway", "mygateway"),
])
def test_ask_every_provider(cloud, emulator, target, wire):
    s = cloud()
    deltas = []
    r = s.ask("ping", target=target, on_event=lambda e: isinstance(e, TextDelta) and deltas.append(e.text))
    assert r.ok, r.error
    assert "you said ping" in r.text and len(deltas) > 1 and "".join(deltas) == r.text
    assert r.usage.output_tokens > 0 and r.finish_reason == "stop"
    assert r.ttft is not None and r.latency >= r.ttft
    assert r.cost is not None and r.cost > 0  # all these models are priced by genai-prices
    assert emulator.last(wire).route == "chat"
    row = s.history(1)[-1]
    assert row["target"] == r.target and row["status"] == "ok" and row["response"] == r.text


def test_history_opens_while_the_first_reply_is_awaited(cloud, emulator):
    """The first exchange's history row is not held up by opening the database: that is done once the
    request is out, while the model has not answered yet (exchange.warm_history)."""
    s = cloud()
    emulator.script(tokens=5, first_token_delay=1.0)
    seen = []

    def on_event(ev):
        if isinstance(ev, TextDelta) and not seen:
            seen.append(s._store is not None and s._store.is_open)
    r = s.ask("ping", on_event=on_event)
    assert r.ok, r.error
    assert seen == [True]
    assert s.history(1)[-1]["response"] == r.text


def test_switch_keeps_conversation_and_sends_it(cloud, emulator):
    s = cloud()
    s.ask("first question")
    s.use("anthropic:claude-3-5-haiku-latest")
    seen = []
    s.observe(seen.append)
    r = s.ask("second question")
    assert r.ok and r.answered_by == "anthropic:claude-3-5-haiku-latest"
    body = emulator.last("anthropic").body
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"] in ("first question", [{"type": "text", "text": "first question"}])
    assert len(s.conversation) == 4 and "usage" in seen and "conversation" in seen


def test_system_and_parameters_reach_the_wire(cloud, emulator):
    s = cloud()
    s.set(temperature="0.3", max_tokens="50", system="be terse")
    s.ask("hi")
    body = emulator.last("openai").body
    assert body["temperature"] == 0.3
    assert body.get("max_completion_tokens", body.get("max_tokens")) == 50
    assert body["messages"][0] == {"role": "system", "content": "be terse"}
    s.ask("hi", target="anthropic", system="other")
    assert emulator.last("anthropic").body["system"] in ("other", [{"type": "text", "text": "other"}])


def test_rate_limit_is_retried_after_retry_after(cloud, emulator):
    s = cloud()
    emulator.fault(429, retry_after=1, on="chat")
    r = s.ask("hi")
    assert r.ok and len(emulator.calls("openai")) == 2
    assert r.latency >= 1.0


def test_server_errors_fall_back_and_say_who_answered(cloud, emulator):
    s = cloud()
    s.set_fallback(["anthropic"])
    r = s.ask("hi", target="openai:fault-500")
    assert r.ok and r.answered_by == "anthropic" and r.target == "openai:fault-500"
    assert len(emulator.calls("openai")) == 3  # first try + 2 retries, then the chain
    assert s.history(1)[-1]["answered_by"] == "anthropic"


def test_dropped_stream_keeps_partial_text_in_response_and_history(cloud, emulator):
    s = cloud()
    r = s.ask("tell me a long story", target="openai:gpt-4o-mini+drop-after-3")
    assert r.error is not None and r.error.code == "NETWORK_ERROR"
    assert r.incomplete and r.text and len(r.chunks) == 3
    row = s.history(1)[-1]
    assert row["incomplete"] and row["response"] == r.text and row["status"] == "NETWORK_ERROR"
    assert s.conversation[-1]["content"] == r.text  # nothing lost for the next turn either
    assert len(emulator.calls("openai")) == 1  # text arrived: never retried


def test_missing_key_is_one_clear_error_and_nothing_sent(cloud, emulator):
    s = cloud(keys=False)
    r = s.ask("hi")
    assert r.error.code == "MISSING_CREDENTIALS" and "OPENAI_API_KEY" in r.error.line()
    assert "%llm login openai" in r.error.line()
    assert emulator.calls() == []


def test_budget_refuses_before_sending(cloud, emulator):
    s = cloud()
    s.set_budget(0.0000001)
    with pytest.raises(LLMError) as err:
        s.ask("hi", max_tokens=1000)
    assert err.value.code == "BUDGET_EXCEEDED" and "nothing was sent" in err.value.message
    assert emulator.calls() == []
    s.set_budget(10)
    assert s.ask("hi").ok and 0 < s.usage.cost < 10 and s.budget_left < 10


def test_budget_from_config_counts_spend(cloud, emulator):
    s = cloud(extra="[budget]\nsession_usd = 1.0\n")
    assert s.budget == 1.0
    s.ask("hi")
    assert s.budget_left == pytest.approx(1.0 - s.usage.cost)


def test_cache_makes_the_second_run_free(cloud, emulator):
    s = cloud()
    s.set(cache="on")
    a = s.ask("same prompt", new=True, no_history=True)
    b = s.ask("same prompt", new=True, no_history=True)
    assert not a.cached and b.cached and b.text == a.text and b.cost == 0.0
    assert len(emulator.calls("openai")) == 1
    c = s.ask("same prompt", new=True, no_history=True, cache=False)
    assert not c.cached and len(emulator.calls("openai")) == 2


def test_use_check_refuses_a_dead_target(cloud, emulator):
    s = cloud()
    with pytest.raises(LLMError) as err:
        s.use("local:9", check=True)
    assert err.value.code == "NETWORK_ERROR" and str(s.active) == "openai:gpt-4o-mini"
    assert str(s.use("anthropic", check=True)) == "anthropic"


def test_status_and_providers_mask_the_key(cloud, emulator):
    s = cloud()
    st = s.status()
    assert st["key"] == "****" + CANARY[-4:] and st["source"] == "env:OPENAI_API_KEY" and st["health"].startswith("ok")
    rows = {r["provider"]: r for r in s.providers()}
    assert rows["openai"]["configured"] and rows["openai"]["health"].startswith("ok")
    assert not rows["deepseek"]["configured"]
    assert CANARY not in repr(st) + repr(rows)


def test_circuit_breaker_opens_and_fallback_takes_over(cloud, emulator):
    s = cloud(extra="circuit_failures = 2\ncircuit_cooldown = 60\n")
    s.config.reliability.retries = 0
    s.ask("hi", target="openai:fault-500")
    s.ask("hi", target="openai:fault-500")
    n = len(emulator.calls("openai"))
    r = s.ask("hi", target="openai:fault-500")
    assert r.error.code == "NETWORK_ERROR" and "circuit open" in r.error.message
    assert len(emulator.calls("openai")) == n


def test_history_db_never_holds_the_key(cloud, emulator, isolated_env):
    s = cloud()
    s.ask("hi")
    s.ask("hi", target="openai:fault-401")
    s.ask("hi", target="openai:fault-leak")
    s.login("anthropic", "sk-other-secret-123456")
    db = isolated_env / "data" / "history.sqlite3"
    raw = db.read_bytes() + b"".join(p.read_bytes() for p in db.parent.glob("*") if p.is_file())
    assert CANARY.encode() not in raw and b"sk-other-secret-123456" not in raw
    rows = sqlite3.connect(db).execute("select status from exchanges").fetchall()
    assert [r[0] for r in rows] == ["ok", "INVALID_CREDENTIALS", "PROVIDER_ERROR"]
