"""Deadlines hold: `timeout` bounds each attempt's wait for the answer to start (also on a port that accepts
and never answers), `stall_timeout` bounds silence mid-answer (keep-alives do not count), `deadline` bounds
the whole answer with its retries and fallbacks; every message names the limit that applied.

Wall-clock bounds are generous (a loaded 2-core machine): they only tell "a few seconds" from "forever"."""
from __future__ import annotations

import time

import pytest

from jupyter_llm.config import load_config, coerce_setting
from jupyter_llm.errors import LLMError
from jupyter_llm.events import Request, TextDelta
from tests.conftest import CANARY, emulator_config
from tests.test_providers_wire import PROVIDERS, adapter, run, texts


def timed(fn):
    for module in ("openai", "anthropic", "google.genai"):  # SDK imports take seconds: not what is timed
        __import__(module)
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


# ---- a port that accepts and never answers ------------------------------------------------------------

def test_cloud_endpoint_that_never_answers_times_out_once_within_timeout(cloud, silent_server, emulator):
    s = cloud(extra=f'[providers.silent]\nkind = "openai-compatible"\nbase_url = "{silent_server.url()}"\nauth = "none"\n')
    s.ask("warm up the SDK import", target="openai:m")
    s.set(timeout=2)
    r, took = timed(lambda: s.ask("hi", target="silent:m"))
    assert r.error.code == "TIMEOUT" and "2s (timeout)" in r.error.message and "set timeout" in r.error.hint
    assert 1.5 < took < 12, took  # today: retried with backoff, ~4x as long


def test_local_port_that_accepts_and_never_answers_times_out_within_timeout(cloud, silent_server):
    s = cloud()
    s.set(timeout=2)
    r, took = timed(lambda: s.ask("hi", target=f"local:{silent_server.port}"))
    assert r.error.code == "TIMEOUT" and "(timeout)" in r.error.message and str(silent_server.port) in r.error.message
    assert took < 12, took  # was 43 s: a 10 s probe, retried 3 times


def test_fallback_after_a_silent_target_answers_within_the_timeout(cloud, silent_server, emulator):
    s = cloud()
    s.set(timeout=2)
    s.set_fallback(["openai:gpt-4o-mini"])
    r, took = timed(lambda: s.ask("hi", target=f"local:{silent_server.port}"))
    assert r.ok and r.answered_by == "openai:gpt-4o-mini" and took < 15


# ---- keep-alives are not progress -------------------------------------------------------------------

@pytest.mark.parametrize("name", PROVIDERS)
def test_keepalives_mid_answer_hit_the_stall_timeout_with_text_kept(emulator, name):
    emulator.script("one two three four")
    req = Request([{"role": "user", "content": "x"}], timeout=10, stall_timeout=1)
    (events, error), took = timed(lambda: run(adapter(name), name, emulator, model="m+keepalive-after-2-for-60", request=req))
    assert texts(events) == ["one ", "two "]
    assert error.code == "TIMEOUT" and "1s" in error.message and "stall_timeout" in error.message
    assert took < 8, took  # the server would have kept it open for 60 s


@pytest.mark.parametrize("name", PROVIDERS)
def test_a_few_keepalives_do_no_harm(emulator, name):
    """Comments/pings between real chunks are skipped (google-genai would parse a comment as JSON)."""
    emulator.script("one two three four")
    req = Request([{"role": "user", "content": "x"}], timeout=10, stall_timeout=5)
    events, error = run(adapter(name), name, emulator, model="m+keepalive-after-2-for-0.5", request=req)
    assert error is None and "".join(texts(events)) == "one two three four"


@pytest.mark.parametrize("name", PROVIDERS)
def test_keepalives_before_the_first_token_hit_the_timeout(emulator, name):
    req = Request([{"role": "user", "content": "x"}], timeout=1.5, stall_timeout=30)
    (events, error), took = timed(lambda: run(adapter(name), name, emulator, model="m+keepalive-after-0-for-60", request=req))
    assert not texts(events) and error.code == "TIMEOUT" and "1.5s (timeout)" in error.message
    assert took < 8, took


# ---- the per-answer deadline ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", PROVIDERS)
def test_a_trickling_answer_stops_at_the_deadline_with_text_kept(emulator, name):
    emulator.script(tokens=200, delay=0.1)  # 20 s of steady progress: no stall, only the deadline stops it
    req = Request([{"role": "user", "content": "x"}], timeout=10, stall_timeout=10, deadline=2)
    (events, error), took = timed(lambda: run(adapter(name), name, emulator, request=req))
    assert 3 <= len(texts(events)) < 100
    assert error.code == "TIMEOUT" and "2s deadline (deadline)" in error.message and "set deadline" in error.hint
    assert took < 8, took


def test_retries_never_run_past_the_deadline(cloud, emulator):
    s = cloud(extra="")
    s.config.reliability.backoff = s.config.reliability.max_backoff = 3.0
    s.config.reliability.retries = 5
    s.set(deadline=2)
    r, took = timed(lambda: s.ask("hi", target="openai:m+fault-500"))
    assert r.error.code == "PROVIDER_ERROR" and "deadline" in r.error.message and "2s" in r.error.message
    assert took < 10 and len(emulator.calls("openai")) < 3, (took, len(emulator.calls("openai")))  # 5 retries: 15 s+


def test_a_retry_after_longer_than_the_deadline_is_not_waited_for(cloud, emulator):
    s = cloud()
    s.set(deadline=12)
    r, took = timed(lambda: s.ask("hi", target="openai:m+fault-429-25"))  # 25 s: honoured (<= 30 s) but past the deadline
    # given up at once: not after waiting out the deadline (12 s) nor the Retry-After (25 s)
    assert r.error.code == "RATE_LIMITED" and took < 8 and len(emulator.calls("openai")) == 1, took


def test_fallback_chain_shares_the_answers_deadline(cloud, silent_server, emulator):
    s = cloud(extra=f'[providers.silent]\nkind = "openai-compatible"\nbase_url = "{silent_server.url()}"\nauth = "none"\n')
    s.set(timeout=30, deadline=2)
    s.set_fallback(["openai:gpt-4o-mini"])
    r, took = timed(lambda: s.ask("hi", target="silent:m"))
    assert r.error.code == "TIMEOUT" and "deadline" in r.error.message and took < 8
    assert not emulator.calls("openai")  # no time was left for the fallback


def test_compare_columns_respect_the_same_limits(cloud, emulator):
    from jupyter_llm.compare import run_compare
    emulator.script("a b c d")
    s = cloud()
    s.set(stall_timeout=1)
    result, took = timed(lambda: run_compare(s, "hi", ["openai:m+keepalive-after-1-for-60", "anthropic:ok"], rich=False))
    stuck, fine = list(result)
    assert stuck.error.code == "TIMEOUT" and stuck.text == "a " and "stall_timeout" in stuck.error.message
    assert fine.ok and fine.text == "a b c d"
    assert took < 10, took


# ---- settings and config ----------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["deadline", "stall_timeout"])
@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "abc", "1e9"])
def test_new_settings_are_validated(key, bad):
    with pytest.raises(LLMError) as info:
        coerce_setting(key, bad)
    assert info.value.code == "BAD_ARGUMENT"


def test_settings_flow_into_the_request(cloud):
    s = cloud()
    s.set(deadline="90", stall_timeout=7.5, timeout=3)
    req = s.build_request("x")
    assert (req.timeout, req.stall_timeout, req.deadline) == (3.0, 7.5, 90.0)


def test_reliability_config_keys(isolated_env):
    path = isolated_env / "config.toml"
    path.write_text("[reliability]\ndeadline = 120\nstall_timeout = 15\n")
    cfg = load_config(path, strict=True)
    assert (cfg.reliability.deadline, cfg.reliability.stall_timeout) == (120.0, 15.0)
    path.write_text("[reliability]\ndeadline = -5\n")
    with pytest.raises(LLMError) as info:
        load_config(path, strict=True)
    assert info.value.code == "CONFIG_ERROR" and "reliability.deadline" in info.value.message and ":2" in info.value.message


def test_defaults_are_sane(isolated_env):
    cfg = load_config(isolated_env / "none.toml")
    assert cfg.reliability.timeout == 60 and cfg.reliability.stall_timeout == 60 and cfg.reliability.deadline == 600


# ---- real kernel --------------------------------------------------------------------------------------

@pytest.mark.kernel
def test_real_kernel_timeout_holds_on_a_silent_port(kernel_factory, emulator, silent_server, isolated_env):
    (isolated_env / "config.toml").write_text(emulator_config(emulator))
    k = kernel_factory(OPENAI_API_KEY=CANARY)
    assert k.run("%load_ext jupyter_llm").status == "ok"
    assert k.run("%llm set timeout=2").status == "ok"
    t0 = time.monotonic()
    run = k.run(f"%%llm local:{silent_server.port}\nhello", timeout=60)
    took = time.monotonic() - t0
    assert "TIMEOUT" in run.stderr and "(timeout)" in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert took < 15, took
    k.run("%%llm openai:m -f text\nwarm up (the SDK import takes seconds)")
    emulator.script(tokens=100, delay=0.1)
    # (not the reply status: after a UsageError cell this kernel reports the next cell as the failed one)
    assert "deadline=2.0" in k.run("%llm set deadline=2 timeout=30").stdout
    t0 = time.monotonic()
    run = k.run("%%llm openai:m -f text\nhello", timeout=60)
    took = time.monotonic() - t0
    assert "deadline" in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert took < 15, took
    out = k.run("print(_llm.incomplete, len(_llm.text) > 0, _llm.error.code)").stdout
    assert out.strip() == "True True TIMEOUT"
