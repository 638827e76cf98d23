"""Router: retries with backoff honouring Retry-After, circuit breaker, token bucket, fallback chain."""
from __future__ import annotations

import pytest

from jupyter_llm import providers
from jupyter_llm.config import Config
from jupyter_llm.errors import LLMError
from jupyter_llm.events import Attempt, Finish, Request, StreamError, TextDelta, Usage
from jupyter_llm.providers import Auth
from jupyter_llm.router import CircuitBreaker, Router, TokenBucket
from jupyter_llm.targets import Target


class FakeProvider:
    """Scripted outcomes per call: 'ok', an LLMError, or ('partial', LLMError)."""
    kind = "fake"
    env_vars = ()
    default_model = "m"
    needs_key = False

    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.calls = 0

    def stream(self, target, request, auth):
        self.calls += 1
        out = self.outcomes.pop(0) if self.outcomes else "ok"
        if isinstance(out, tuple):
            yield TextDelta("part")
            raise out[1]
        if isinstance(out, LLMError):
            raise out
        yield TextDelta(f"hello from {target}")
        yield Usage(3, 4)
        yield Finish("stop")


class NoCreds:
    def resolve(self, spec):
        return Auth(method="none")

    def refresh(self, spec):
        return Auth(method="none")


@pytest.fixture
def fakes(monkeypatch):
    table: dict[str, FakeProvider] = {}
    monkeypatch.setattr(providers, "get_provider", lambda pid, config: table[pid])
    return table


def make_router(**rel):
    cfg = Config()
    cfg.providers = {"a": {"base_url": "http://127.0.0.1:1/v1"}, "b": {"base_url": "http://127.0.0.1:1/v1"}}
    for k, v in rel.items():
        setattr(cfg.reliability, k, v)
    sleeps: list[float] = []
    router = Router(cfg, NoCreds(), sleep=sleeps.append)
    return router, sleeps


def run(router, target="a:m", fallback=()):
    return list(router.stream(Target(*target.split(":")), Request([{"role": "user", "content": "hi"}]),
                              [Target(*f.split(":")) for f in fallback]))


def test_retries_then_succeeds_with_backoff(fakes):
    fakes["a"] = FakeProvider([LLMError("PROVIDER_ERROR", "500", status=500), LLMError("NETWORK_ERROR", "refused"), "ok"])
    router, sleeps = make_router(retries=3, backoff=0.5)
    events = run(router)
    assert fakes["a"].calls == 3
    assert [e.n for e in events if isinstance(e, Attempt)] == [1, 2, 3]
    assert any(isinstance(e, Finish) for e in events)
    assert len(sleeps) == 2 and 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0


def test_retry_after_is_honoured_and_long_waits_are_not_slept(fakes):
    fakes["a"] = FakeProvider([LLMError("RATE_LIMITED", "slow down", retry_after=2.0), "ok"])
    router, sleeps = make_router()
    run(router)
    assert sleeps == [2.0]
    fakes["a"] = FakeProvider([LLMError("RATE_LIMITED", "slow down", retry_after=3600)])
    events = run(router)
    assert isinstance(events[-1], StreamError) and events[-1].error.code == "RATE_LIMITED"
    assert fakes["a"].calls == 1


def test_non_retryable_errors_are_not_retried(fakes):
    fakes["a"] = FakeProvider([LLMError("INVALID_CREDENTIALS", "bad key")])
    router, sleeps = make_router()
    events = run(router, fallback=["b:m"])
    assert fakes["a"].calls == 1 and sleeps == []
    assert events[-1].error.code == "INVALID_CREDENTIALS"


def test_retries_exhausted_then_fallback_answers(fakes):
    fakes["a"] = FakeProvider([LLMError("NETWORK_ERROR", "refused")] * 3)
    fakes["b"] = FakeProvider(["ok"])
    router, sleeps = make_router(retries=2)
    events = run(router, fallback=["b:m"])
    assert fakes["a"].calls == 3
    assert [e.target for e in events if isinstance(e, Attempt)][-1] == "b:m"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "hello from b:m"


def test_partial_text_is_kept_and_never_retried_or_fallen_back(fakes):
    fakes["a"] = FakeProvider([("partial", LLMError("NETWORK_ERROR", "dropped"))])
    fakes["b"] = FakeProvider(["ok"])
    router, _ = make_router()
    events = run(router, fallback=["b:m"])
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["part"]
    assert events[-1].error.code == "NETWORK_ERROR"
    assert fakes["a"].calls == 1 and fakes["b"].calls == 0


def test_circuit_opens_after_consecutive_failures_and_half_opens():
    now = [0.0]
    cb = CircuitBreaker(threshold=2, cooldown=10, clock=lambda: now[0])
    assert cb.allow() is None
    cb.failure()
    assert cb.state == "closed"
    cb.failure()
    assert cb.state == "open" and cb.allow() == pytest.approx(10)
    now[0] = 10.5
    assert cb.state == "half-open" and cb.allow() is None  # one trial
    assert cb.allow() == 0.0                               # a second caller waits for the trial
    cb.failure()
    assert cb.state == "open"
    now[0] = 21
    assert cb.allow() is None
    cb.success()
    assert cb.state == "closed"


def test_open_circuit_skips_target_and_falls_back(fakes):
    fakes["a"] = FakeProvider([LLMError("NETWORK_ERROR", "refused")] * 10)
    fakes["b"] = FakeProvider(["ok"] * 5)
    router, _ = make_router(retries=0, circuit_failures=2, circuit_cooldown=60)
    run(router)
    run(router)
    calls = fakes["a"].calls
    events = run(router, fallback=["b:m"])
    assert fakes["a"].calls == calls  # not even tried
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "hello from b:m"
    events = run(router)
    assert "circuit open" in events[-1].error.message


def test_token_bucket_waits_for_requests_per_minute():
    now = [0.0]
    bucket = TokenBucket(rpm=2, tpm=None, clock=lambda: now[0])
    assert bucket.wait_time(10) == 0 and bucket.wait_time(10) == 0
    wait = bucket.wait_time(10)
    assert wait == pytest.approx(30)
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s
    bucket.take(10, sleep)
    assert slept == [pytest.approx(30)]


def test_rate_limit_from_config_applies(fakes):
    fakes["a"] = FakeProvider(["ok"] * 3)
    cfg = Config()
    cfg.providers = {"a": {"base_url": "http://127.0.0.1:1/v1"}}
    cfg.limits["a"] = {"rpm": 1}
    now = [0.0]
    slept: list[float] = []

    def sleep(s):
        slept.append(s)
        now[0] += s
    router = Router(cfg, NoCreds(), sleep=sleep, clock=lambda: now[0])
    run(router)
    assert slept == []
    run(router)
    assert slept == [pytest.approx(60)]


def test_exhausted_retries_say_how_many_attempts(fakes):
    fakes["a"] = FakeProvider([LLMError("PROVIDER_ERROR", "server error (HTTP 500)", status=500)] * 3)
    router, sleeps = make_router(retries=2, backoff=0.01)
    events = run(router)
    assert fakes["a"].calls == 3 and "(after 3 attempts; retries = 2)" in events[-1].error.message


def test_no_retry_starts_past_the_deadline_and_no_fallback_after_it(fakes):
    import time
    fakes["a"] = FakeProvider([LLMError("PROVIDER_ERROR", "server error (HTTP 500)", status=500)] * 5)
    fakes["b"] = FakeProvider(["ok"])
    router, sleeps = make_router(retries=4, backoff=10.0, max_backoff=10.0)  # each wait 5-10 s: past a 1 s deadline
    request = Request([{"role": "user", "content": "hi"}], deadline=1.0)
    events = list(router.stream(Target("a", "m"), request, []))
    assert fakes["a"].calls == 1 and sleeps == []
    assert "no retry within the 1s deadline" in events[-1].error.message
    expired = Request([{"role": "user", "content": "hi"}], deadline=1.0, deadline_at=time.monotonic() - 1)
    events = list(router.stream(Target("a", "m"), expired, [Target("b", "m")]))
    assert isinstance(events[-1], StreamError) and events[-1].error.code == "TIMEOUT"
    assert "deadline" in events[-1].error.message and fakes["b"].calls == 0
