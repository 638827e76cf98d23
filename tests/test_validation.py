"""Every number is validated (issue 7, item 3): nan, inf, negative and absurd values are one coded line,
BAD_ARGUMENT from magics and `%llm set`/`budget`, CONFIG_ERROR naming file:line:key from the config."""
from __future__ import annotations

import math
import threading

import pytest

from jupyter_llm.config import NUMBERS, check_number, load_config, numeric_spec
from jupyter_llm.errors import LLMError
from tests.test_magics import assert_one_line_error, ip, run  # noqa: F401  (ip is a fixture)

BAD = ["nan", "inf", "-inf", "-1", "1e300", "99999999999999999999", "", "true", "0x10"]


def _bad_for(spec) -> list:
    """Values that must be refused for this key: non-finite, out of range each side, wrong type."""
    out = [math.nan, math.inf, -math.inf, True, "lots", spec.high * 10 + 1, spec.low - 1]
    if spec.low_open:
        out.append(spec.low)
    if spec.kind is int:
        out.append(spec.low + 0.5 if spec.low + 0.5 <= spec.high else 1.5)
    return out


@pytest.mark.parametrize("key", sorted(NUMBERS))
def test_every_numeric_key_refuses_nonfinite_negative_and_absurd(key):
    spec = NUMBERS[key]
    concrete = key.replace("*", "prov")
    for value in _bad_for(spec):
        with pytest.raises(LLMError) as info:
            check_number(concrete, value)
        assert info.value.code == "BAD_ARGUMENT", (key, value)
        assert concrete in info.value.message
    # and the edges of the range are accepted
    good = spec.high if spec.kind is float else int(spec.high)
    assert check_number(concrete, good) == good
    if not spec.low_open:
        assert check_number(concrete, spec.low) == spec.low


def test_a_new_numeric_key_is_one_line_in_the_table(monkeypatch):
    from jupyter_llm.config import Num
    monkeypatch.setitem(NUMBERS, "reliability.stall_timeout", Num(float, 0, 600, low_open=True, unit="s"))
    assert numeric_spec("reliability.stall_timeout").high == 600
    with pytest.raises(LLMError):
        check_number("reliability.stall_timeout", math.nan)


CONFIG_CASES = [
    ("[reliability]\ntimeout = nan\n", "reliability.timeout", 2),
    ("[reliability]\nretries = 3\ntimeout = inf\n", "reliability.timeout", 3),
    ("[reliability]\nconnect_timeout = -inf\n", "reliability.connect_timeout", 2),
    ("[reliability]\nbackoff = -0.5\n", "reliability.backoff", 2),
    ("[reliability]\nmax_backoff = 1e300\n", "reliability.max_backoff", 2),
    ("[reliability]\nretries = 1000000\n", "reliability.retries", 2),
    ("[reliability]\ncircuit_cooldown = nan\n", "reliability.circuit_cooldown", 2),
    ("[reliability]\ncircuit_failures = -2\n", "reliability.circuit_failures", 2),
    ("[limits.openai]\nrpm = nan\n", "limits.openai.rpm", 2),
    ("[limits.openai]\nrpm = 0.5\n", "limits.openai.rpm", 2),
    ("[limits.openai]\ntpm = -5\n", "limits.openai.tpm", 2),
    ("[budget]\nsession_usd = inf\n", "budget.session_usd", 2),
    ("[budget]\nsession_usd = -1\n", "budget.session_usd", 2),
    ("[providers.openai]\nttl = nan\n", "providers.openai.ttl", 2),
    ("[budget]\ndaily_usd = nan\n", "budget.daily_usd", 2),
    ("[budget.providers.openai]\nmonthly_usd = inf\n", "budget.providers.openai.monthly_usd", 2),
    ("[providers.openai]\ntimeout = nan\n", "providers.openai.timeout", 2),
    ("[providers.openai]\nprice = { input = nan, output = 1 }\n", "providers.openai.price.input", 2),
    ("[defaults]\ntemperature = nan\n", "defaults.temperature", 2),
    ("[defaults]\nmax_tokens = 1e300\n", "defaults.max_tokens", 2),
    ("[defaults]\ntop_p = 0\n", "defaults.top_p", 2),
    ("[defaults]\ntimeout = inf\n", "defaults.timeout", 2),
    ("[local]\nports = { 99999 = \"x\" }\n", "local.ports.99999", 2),
    ("[local]\nports = { \"²\" = \"x\" }\n", "local.ports", 2),
    ("[local]\nscan = [0, 70000]\n", "local.scan", 2),
    ("[local]\nhost = \"127.0.0 .1\"\n", "local.host", 2),
]


@pytest.mark.parametrize("text,key,line", CONFIG_CASES)
def test_config_numbers_are_config_errors_naming_file_line_and_key(tmp_path, text, key, line):
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(LLMError) as info:
        load_config(path, strict=True)
    err = info.value
    assert err.code == "CONFIG_ERROR"
    assert str(path) in err.message and key in err.message
    assert f"{path}:{line}:" in err.message, err.message
    # not strict: the extension still loads with defaults and keeps the error
    cfg = load_config(path)
    assert cfg.error is not None and cfg.error.code == "CONFIG_ERROR"


def test_good_numbers_still_load(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[reliability]\nretries = 0\ntimeout = 2.5\nbackoff = 0\n[limits.openai]\nrpm = 1\ntpm = 0\n"
                    "[budget]\nsession_usd = 0\n[defaults]\ntemperature = 0\nmax_tokens = 16\n")
    cfg = load_config(path, strict=True)
    assert cfg.reliability.retries == 0 and cfg.reliability.timeout == 2.5
    assert cfg.limits["openai"] == {"rpm": 1.0, "tpm": 0.0} and cfg.budget_usd == 0.0
    assert cfg.defaults == {"temperature": 0.0, "max_tokens": 16}


@pytest.mark.parametrize("source", [
    "%llm set timeout=nan", "%llm set timeout=inf", "%llm set timeout=-1", "%llm set timeout=1e300",
    "%llm set temperature=nan", "%llm set temperature=inf", "%llm set top_p=nan", "%llm set top_p=0",
    "%llm set max_tokens=nan", "%llm set max_tokens=-5", "%llm set max_tokens=99999999999999999999",
    "%llm set max_tokens=2.5",
    "%llm budget nan", "%llm budget inf", "%llm budget -inf", "%llm budget -1", "%llm budget 1e300",
    "%llm budget $nan",
    "%llm history -n 99999999999999999999", "%llm history -n -3", "%llm history -n 0", "%llm history -n nan",
    "%llm discover --ports 99999999999999999999-1", "%llm discover --ports ²-³", "%llm discover --ports 1-65536",
    "%llm discover --ports 1-60000",
    "%%llm -t nan\nhi", "%%llm -t inf\nhi", "%%llm -t -1\nhi", "%%llm --temperature 1e999\nhi",
    "%%llm --max-tokens 99999999999999999999\nhi", "%%llm --max-tokens -1\nhi",
])
def test_magic_numbers_are_one_bad_argument_line(ip, capsys, emulator, source):
    before = dict(ip.session.settings), ip.session.budget
    result, out, err = run(ip, capsys, source)
    assert_one_line_error(result, err, "BAD_ARGUMENT")
    assert (dict(ip.session.settings), ip.session.budget) == before  # nothing was changed
    assert emulator.calls() == []


def test_good_magic_numbers_work(ip, capsys, emulator):
    result, out, err = run(ip, capsys, "%llm set timeout=30 temperature=0.5 max_tokens=64 top_p=1")
    assert result.success, err
    assert ip.session.settings["timeout"] == 30.0 and ip.session.settings["max_tokens"] == 64
    result, out, err = run(ip, capsys, "%llm budget $2.5")
    assert result.success and ip.session.budget == 2.5
    result, out, err = run(ip, capsys, "%llm history -n 1000000")
    assert result.success, err


def test_session_api_refuses_nonfinite_budget_too(cloud):
    s = cloud()
    for bad in (math.nan, math.inf, -1.0):
        with pytest.raises(LLMError) as info:
            s.set_budget(bad)
        assert info.value.code == "BAD_ARGUMENT"
    assert s.budget is None


def test_a_fractional_rpm_bucket_never_hangs():
    """A TokenBucket built with rpm < 1 (the config refuses it; the library must still not hang)."""
    from jupyter_llm.router import TokenBucket
    now = [0.0]
    bucket = TokenBucket(0.5, None, clock=lambda: now[0])
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    done = threading.Event()

    def take_two():
        bucket.take(10, sleep)
        bucket.take(10, sleep)
        done.set()

    t = threading.Thread(target=take_two, daemon=True)
    t.start()
    assert done.wait(5), "a fractional rpm bucket hung"
    assert slept and math.isfinite(sum(slept)) and sum(slept) == pytest.approx(120.0, rel=0.01)


def test_history_limit_beyond_sqlite_integers_is_not_a_crash(tmp_path):
    from jupyter_llm.store import Store
    store = Store(tmp_path / "h.sqlite3")
    store.record_exchange(target="t", prompt="p")
    assert len(store.history(99999999999999999999)) == 1


def test_a_numeric_setting_missing_from_the_table_still_refuses_nan(monkeypatch):
    from jupyter_llm import config
    monkeypatch.setitem(config._SETTINGS, "stall_timeout", float)
    for bad in ("nan", "inf", "-1", "1e300"):
        with pytest.raises(LLMError) as info:
            config.coerce_setting("stall_timeout", bad)
        assert info.value.code == "BAD_ARGUMENT"
    assert config.coerce_setting("stall_timeout", "30") == 30.0


def test_a_reliability_number_missing_from_the_table_still_refuses_nan(tmp_path, monkeypatch):
    from jupyter_llm import config
    monkeypatch.setattr(config.Reliability, "deadline", 300.0, raising=False)
    path = tmp_path / "config.toml"
    path.write_text("[reliability]\ndeadline = nan\n")
    with pytest.raises(LLMError) as info:
        load_config(path, strict=True)
    assert info.value.code == "CONFIG_ERROR" and f"{path}:2: reliability.deadline" in info.value.message
    path.write_text("[reliability]\ndeadline = 120\n")
    assert load_config(path, strict=True).reliability.deadline == 120.0


def test_the_older_checker_form_refuses_nonfinite_too(tmp_path):
    from jupyter_llm.config import _Checker
    check = _Checker(tmp_path / "c.toml", "[budget]\ndaily_usd = nan\n")
    for bad in (math.nan, math.inf, -1.0, 1e300):
        with pytest.raises(LLMError) as info:
            check.number("budget.daily_usd", bad, float, minimum=0)
        assert info.value.code == "CONFIG_ERROR" and ":2: budget.daily_usd" in info.value.message
    assert check.number("budget.daily_usd", 3.5, float, minimum=0) == 3.5
