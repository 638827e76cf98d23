"""Spend caps from the history DB (session, day, month, per provider), the 80% warning, and money never
spent unseen (unpriced models refused under a cap, configured prices, free, loopback free)."""
from __future__ import annotations

import datetime as dt
import re
import sqlite3
from pathlib import Path

import pytest

from jupyter_llm import pricing
from jupyter_llm.budget import period_bounds
from jupyter_llm.config import _PROVIDER_KEYS, load_config
from jupyter_llm.errors import LLMError
from jupyter_llm.events import Usage
from jupyter_llm.store import Store

# $1 per output token, input free: a reply of N tokens costs exactly $N; a request with --max-tokens M
# is estimated at exactly $M (the estimate is input + max_tokens).
PRICE = "[providers.openai.price]\ninput = 0\noutput = 1000000\n"
FIVE = "openai:gpt-4o-mini+tokens-5"      # the emulator answers with exactly 5 tokens


def local(y, mo, d, h=0, mi=0, s=0.0) -> float:
    """A local wall-clock time as a unix timestamp (so the tests hold in any time zone)."""
    return dt.datetime(y, mo, d, h, mi, int(s), int((s % 1) * 1e6)).timestamp()


def spend(session, usd: float, *, at: float | None = None, provider: str = "openai", sid: str = "other-kernel"):
    """A row as another kernel would have written it to the shared history DB."""
    import time
    assert session.store.record_exchange(time=at or time.time(), session_id=sid, target=f"{provider}:m",
                                         answered_by=f"{provider}:m", provider=provider, model="m",
                                         input_tokens=1, output_tokens=1, cost=usd)


def refused(session, *args, **kwargs) -> LLMError:
    with pytest.raises(LLMError) as err:
        session.ask(*args, **kwargs)
    assert err.value.code == "BUDGET_EXCEEDED" and "nothing was sent" in err.value.message
    return err.value


# ---- config ------------------------------------------------------------------------------------

def test_budget_config_accepts_every_cap_kind(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[budget]\nsession_usd = 5\ndaily_usd = 2.5\nmonthly_usd = 40\n'
                    '[budget.providers]\nopenai = { daily_usd = 2, monthly_usd = 10, session_usd = 1 }\n'
                    '[budget.providers.anthropic]\nmonthly_usd = 3\n')
    cfg = load_config(path, strict=True)
    assert cfg.budget_usd == 5
    assert cfg.budget_caps == {(None, "session"): 5, (None, "daily"): 2.5, (None, "monthly"): 40,
                               ("openai", "daily"): 2, ("openai", "monthly"): 10, ("openai", "session"): 1,
                               ("anthropic", "monthly"): 3}


@pytest.mark.parametrize("body,line,key", [
    ('[budget]\ndaily_usd = -1\n', 2, "budget.daily_usd"),
    ('[budget]\nmonthly_usd = nan\n', 2, "budget.monthly_usd"),
    ('[budget]\ndaily_usd = inf\n', 2, "budget.daily_usd"),
    ('[budget]\nsession_usd = 1e300\n', 2, "budget.session_usd"),
    ('[budget]\nweekly_usd = 1\n', 2, "budget.weekly_usd"),
    ('[budget]\ndaily_usd = "2"\n', 2, "budget.daily_usd"),
    ('[budget]\n\n[budget.providers]\nopenia = { daily_usd = 2 }\n', 4, "budget.providers.openia"),
    ('[budget.providers]\nopenai = { hourly_usd = 2 }\n', 2, "budget.providers.openai.hourly_usd"),
    ('[budget.providers]\nopenai = { daily_usd = -2 }\n', 2, "budget.providers.openai.daily_usd"),
    ('[providers.openai]\nprice = { input = 1 }\n', 2, "providers.openai.price"),
    ('[providers.openai]\nprice = { input = 1, output = -1 }\n', 2, "providers.openai.price.output"),
    ('[providers.openai]\nprice = { input = 1, output = 2, cached = 1 }\n', 2, "providers.openai.price.cached"),
    ('[providers.openai]\nprice = 3\n', 2, "providers.openai.price"),
    ('[providers.openai]\nfree = "yes"\n', 2, "providers.openai.free"),
    ('[providers.openai]\nfree = true\nprice = { input = 1, output = 2 }\n', 2, "providers.openai.free"),
    ('[providers.openai]\nstream_usage = "no"\n', 2, "providers.openai.stream_usage"),
    ('[providers.openai]\nmax_tokens_param = "max tokens"\n', 2, "providers.openai.max_tokens_param"),
    ('[providers.openai]\ntimeout = 0\n', 2, "providers.openai.timeout"),
    ('[providers.openai]\ntimeout = nan\n', 2, "providers.openai.timeout"),
    ('[providers.gemini]\napi_version = 1\n', 2, "providers.gemini.api_version"),
])
def test_bad_budget_and_price_keys_name_file_line_and_key(tmp_path, body, line, key):
    path = tmp_path / "config.toml"
    path.write_text(body)
    with pytest.raises(LLMError) as err:
        load_config(path, strict=True)
    assert err.value.code == "CONFIG_ERROR"
    assert f"{path}:{line}: {key}" in err.value.message, err.value.message


def test_documented_provider_keys_are_accepted_and_reach_the_adapter(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[providers.mygw]\nkind = "openai-compatible"\nbase_url = "https://gw.example/v1"\n'
                    'stream_usage = false\nmax_tokens_param = "max_tokens"\ntimeout = 12.5\nconnect_timeout = 3\n'
                    'price = { input = 0.5, output = 1.5 }\n'
                    '[providers.gemini]\napi_version = "v1alpha"\nfree = true\n')
    cfg = load_config(path, strict=True)
    from jupyter_llm.providers import spec_for
    gw = spec_for("mygw", cfg).settings
    assert gw["stream_usage"] is False and gw["max_tokens_param"] == "max_tokens"
    assert gw["timeout"] == 12.5 and gw["connect_timeout"] == 3 and gw["price"] == {"input": 0.5, "output": 1.5}
    assert spec_for("gemini", cfg).settings["api_version"] == "v1alpha"


def test_every_setting_the_code_reads_is_a_known_config_key():
    """A key an adapter or the credential store reads from its provider's config must be accepted."""
    root = Path(__file__).resolve().parents[1] / "jupyter_llm"
    read = set()
    for path in [*root.joinpath("providers").glob("*.py"), root / "credentials.py", root / "pricing.py"]:
        read |= set(re.findall(r"settings\.get\(\s*[\"'](\w+)[\"']", path.read_text()))
        read |= set(re.findall(r"settings\[\s*[\"'](\w+)[\"']\s*\]", path.read_text()))
    assert {"stream_usage", "max_tokens_param", "timeout", "api_version", "price", "free"} <= read
    assert read <= set(_PROVIDER_KEYS), read - set(_PROVIDER_KEYS)


def test_readme_documents_the_provider_keys():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for key in ("stream_usage", "max_tokens_param", "api_version", "price", "free", "daily_usd", "monthly_usd",
                "[budget.providers]"):
        assert key in readme, key


# ---- pricing: configured, free, loopback ---------------------------------------------------------

@pytest.mark.parametrize("url,free", [
    ("http://localhost:8000/v1", True), ("http://127.0.0.1:4000", True), ("http://127.3.4.5/v1", True),
    ("http://[::1]:8080/v1", True), ("http://LOCALHOST./v1", True), ("http://api.localhost/v1", True),
    ("http://0.0.0.0:8000", True), ("http://[::ffff:127.0.0.1]:80/", True),
    ("https://api.openai.com/v1", False), ("http://10.0.0.5:8000/v1", False), ("http://localhost.example.com", False),
    ("http://128.0.0.1/", False), (None, False), ("", False),
])
def test_loopback_detection(url, free):
    assert pricing.is_loopback(url) is free


def test_loopback_endpoint_is_free_unless_the_config_says_otherwise():
    usage = Usage(1000, 1000)
    paid = pricing.cost("openai", "gpt-4o-mini", usage)
    assert paid and paid > 0
    assert pricing.cost("openai", "gpt-4o-mini", usage, base_url="http://127.0.0.1:9999/v1") == 0.0
    assert pricing.cost("vllm", "some-unknown-model", usage, base_url="http://[::1]:8000/v1") == 0.0
    assert pricing.cost("openai", "gpt-4o-mini", usage, base_url="http://127.0.0.1:9/v1",
                        settings={"free": False}) == paid
    assert pricing.cost("gw", "some-unknown-model", usage, base_url="https://gw.example/v1") is None


def test_configured_price_and_free():
    usage = Usage(2_000_000, 500_000)
    price = {"price": {"input": 0.5, "output": 4}}
    assert pricing.cost("gw", "private-model", usage, settings=price) == pytest.approx(1.0 + 2.0)
    assert pricing.cost("openai", "gpt-4o-mini", usage, settings=price) == pytest.approx(3.0)  # config wins
    assert pricing.cost("gw", "private-model", usage, settings={"free": True}) == 0.0
    assert pricing.prices("gw", "private-model", settings=price) == (0.5, 4.0)
    from jupyter_llm.events import Request
    req = Request([{"role": "user", "content": "x" * 400}], max_tokens=1000)
    inp, out = pricing.estimate_tokens(req)
    assert pricing.estimate("gw", "private-model", req, settings=price) == pytest.approx((inp * 0.5 + out * 4) / 1e6)
    assert pricing.estimate("gw", "private-model", req) is None


# ---- the store: new columns, migration, range queries ------------------------------------------

OLD_SCHEMA = """
CREATE TABLE exchanges (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, session_id TEXT, target TEXT,
    answered_by TEXT, prompt TEXT, response TEXT, input_tokens INTEGER, output_tokens INTEGER, cost REAL,
    latency REAL, ttft REAL, status TEXT NOT NULL DEFAULT 'ok', incomplete INTEGER NOT NULL DEFAULT 0,
    cached INTEGER NOT NULL DEFAULT 0, finish_reason TEXT);
CREATE INDEX exchanges_session ON exchanges(session_id, id);
CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, session_id TEXT, kind TEXT NOT NULL,
    detail TEXT);
CREATE TABLE cache (key TEXT PRIMARY KEY, time REAL NOT NULL, target TEXT, response TEXT NOT NULL);
PRAGMA user_version=1;
"""


def test_a_0_1_history_file_is_migrated_and_its_spend_counts(tmp_path):
    path = tmp_path / "history.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    conn.execute("INSERT INTO exchanges (time, session_id, target, answered_by, cost) VALUES (?, 's', "
                 "'openai:gpt-4o-mini', 'anthropic:claude-haiku-4-5', 0.25)", [local(2026, 5, 3, 10)])
    conn.execute("INSERT INTO exchanges (time, session_id, target, answered_by, cost) VALUES (?, 's', "
                 "'local:8081/phi', '', 0.0)", [local(2026, 5, 3, 11)])
    conn.commit()
    conn.close()
    store = Store(path)
    assert store.spend() == {"anthropic": 0.25, "local": 0.0}
    rows = store.history(5)
    assert [(r["provider"], r["model"]) for r in rows] == [("anthropic", "claude-haiku-4-5"), ("local", "8081/phi")]
    day = period_bounds("daily", local(2026, 5, 3, 12))
    assert store.spend(since=day[0], until=day[1], provider="anthropic") == {"anthropic": 0.25}
    cols = {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(exchanges)")}
    assert {"provider", "model", "notebook", "cell_id"} <= cols
    assert Store(path).spend() == {"anthropic": 0.25, "local": 0.0}  # a second open finds nothing to do


def test_calendar_bounds_are_local_days_and_months():
    assert period_bounds("daily", local(2026, 2, 28, 23, 59, 59.5)) == (local(2026, 2, 28), local(2026, 3, 1))
    assert period_bounds("daily", local(2026, 3, 1)) == (local(2026, 3, 1), local(2026, 3, 2))
    assert period_bounds("monthly", local(2026, 2, 28, 23, 59, 59.5)) == (local(2026, 2, 1), local(2026, 3, 1))
    assert period_bounds("monthly", local(2026, 12, 31, 12)) == (local(2026, 12, 1), local(2027, 1, 1))


# ---- caps on the Session -------------------------------------------------------------------------

def test_daily_cap_counts_other_kernels_and_names_the_cap(cloud, emulator):
    s = cloud(extra="[budget]\ndaily_usd = 10\n" + PRICE)
    spend(s, 4.0)                                   # another kernel, earlier today
    r = s.ask("hi", target=FIVE, max_tokens=6)     # 4 + 6 <= 10: sent, costs exactly $5
    assert r.ok and r.cost == pytest.approx(5.0)
    err = refused(s, "hi", target=FIVE, max_tokens=6)   # 9 + 6 > 10
    assert "daily cap" in err.message and "$9.00 of $10.00 is spent" in err.message and "up to $6.00" in err.message
    assert "%llm budget daily USD" in err.line()
    assert len(emulator.calls("openai")) == 1
    assert s.ask("hi", target=FIVE, max_tokens=1).ok      # 9 + 1 fits


def test_monthly_cap(cloud, emulator):
    s = cloud(extra="[budget]\nmonthly_usd = 20\ndaily_usd = 100\n" + PRICE)
    lo, _ = period_bounds("monthly", s.caps.clock())
    spend(s, 15.0, at=lo + 1)                        # first second of this month, not today (usually)
    err = refused(s, "hi", target=FIVE, max_tokens=6)
    assert "monthly cap (this month, all kernels)" in err.message and "$15.00 of $20.00" in err.message
    assert emulator.calls() == []


def test_session_cap_counts_only_this_kernel(cloud, emulator):
    s = cloud(extra="[budget]\nsession_usd = 8\n" + PRICE)
    spend(s, 1000.0)                                # other kernels do not count against a session cap
    assert s.ask("hi", target=FIVE, max_tokens=6).ok
    err = refused(s, "hi", target=FIVE, max_tokens=6)
    assert "session cap (this session, this kernel)" in err.message and "$5.00 of $8.00" in err.message
    assert s.budget == 8 and s.budget_left == pytest.approx(3.0)


def test_per_provider_caps_count_only_their_provider(cloud, emulator):
    s = cloud(extra="[budget.providers]\nopenai = { daily_usd = 10 }\nanthropic = { monthly_usd = 1000 }\n" + PRICE)
    spend(s, 9.0, provider="anthropic")
    assert s.ask("hi", target=FIVE, max_tokens=6).ok       # anthropic's spend is not openai's
    spend(s, 2.0, provider="openai")
    err = refused(s, "hi", target=FIVE, max_tokens=6)      # 5 + 2 + 6 > 10
    assert "openai daily cap" in err.message and "$7.00 of $10.00" in err.message
    assert "%llm budget openai daily USD" in err.line()
    assert s.ask("hi", target="anthropic:claude-haiku-4-5").ok   # anthropic's own cap is far away
    assert s.ask("hi", target="gemini:gemini-2.5-flash").ok      # no cap covers gemini


def test_compare_is_checked_against_provider_caps_together(cloud, emulator):
    from jupyter_llm.events import Request
    s = cloud(extra="[budget.providers]\nopenai = { session_usd = 10 }\n" + PRICE)
    req = Request([{"role": "user", "content": "hi"}], max_tokens=6)
    with pytest.raises(LLMError) as err:       # two openai columns: 12 > 10, though each alone fits
        s.check_budget([s.parse(FIVE), s.parse("openai:gpt-4o")], req)
    assert err.value.code == "BUDGET_EXCEEDED" and "this compare" in err.value.message
    s.check_budget([s.parse(FIVE), s.parse("anthropic")], req)


def test_calendar_day_and_month_boundaries_with_an_injected_clock(cloud, emulator):
    s = cloud(extra="[budget]\ndaily_usd = 10\nmonthly_usd = 30\n" + PRICE)
    spend(s, 8.0, at=local(2026, 2, 28, 23, 59, 59))       # last second of February
    spend(s, 7.0, at=local(2026, 2, 10, 12))
    spend(s, 50.0, at=local(2026, 4, 1, 0, 0, 0))          # first second of April
    s.caps.clock = lambda: local(2026, 2, 28, 23, 59, 59.5)
    spent = {c.name: v for c, v in s.caps.spent(s).items()}
    assert spent == {"daily": 8.0, "monthly": 15.0}
    refused(s, "hi", target=FIVE, max_tokens=6)            # 8 + 6 > 10 today
    s.caps.clock = lambda: local(2026, 3, 1, 0, 0, 0.5)    # half a second later: a new day and month
    assert {c.name: v for c, v in s.caps.spent(s).items()} == {"daily": 0.0, "monthly": 0.0}
    assert s.ask("hi", target=FIVE, max_tokens=6).ok      # (its row carries the real time, not March)
    s.caps.clock = lambda: local(2026, 3, 31, 23, 59, 59.9)
    assert {c.name: v for c, v in s.caps.spent(s).items()} == {"daily": 0.0, "monthly": 0.0}
    s.caps.clock = lambda: local(2026, 4, 1)
    assert {c.name: v for c, v in s.caps.spent(s).items()} == {"daily": 50.0, "monthly": 50.0}
    err = refused(s, "hi", target=FIVE, max_tokens=1)
    assert "daily cap" in err.message and "$50.00 of $10.00" in err.message


def test_spend_the_db_could_not_record_still_counts(cloud, emulator, monkeypatch):
    s = cloud(extra="[budget]\ndaily_usd = 10\n" + PRICE)
    monkeypatch.setattr(type(s.store), "record_exchange", lambda self, **f: 0)   # a locked, full DB
    assert s.ask("hi", target=FIVE, max_tokens=6).ok
    err = refused(s, "hi", target=FIVE, max_tokens=6)
    assert "$5.00 of $10.00" in err.message


def test_eighty_percent_warns_once_per_cap_and_period_even_after_a_restart(cloud, emulator, capsys):
    extra = "[budget]\ndaily_usd = 10\nmonthly_usd = 100\n" + PRICE
    s = cloud(extra=extra)
    spend(s, 2.0)
    capsys.readouterr()
    assert s.ask("hi", target=FIVE, max_tokens=6).ok        # 7 of 10: below 80%, nothing said
    assert "budget" not in capsys.readouterr().err
    spend(s, 1.5)                                           # another kernel takes it to 8.5 of 10
    assert s.ask("hi", target="openai:gpt-4o-mini+tokens-1", max_tokens=1).ok   # seen before sending; then 9.5
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "budget" in line]
    assert len(lines) == 1 and "85% of the daily cap (today, all kernels) is spent ($8.50 of $10.00)" in lines[0]
    assert not any("monthly" in line for line in lines)     # 9.5 of 100
    refused(s, "hi", target=FIVE, max_tokens=6)             # later cells: refused, but not warned again
    assert "budget" not in capsys.readouterr().err
    again = cloud(extra=extra)                              # a restarted kernel on the same DB
    seen: list[str] = []
    again.caps.emit = seen.append
    refused(again, "hi", target=FIVE, max_tokens=6)
    assert seen == []                                       # already said today
    spend(again, 75.0)                                      # the month passes 80% too (84.5): its own warning
    again.check_budget([again.parse("local:8081")], again.build_request("hi"))   # free: allowed past any cap
    assert len(seen) == 1 and "monthly cap" in seen[0]


# ---- money never spent unseen ----------------------------------------------------------------------

def test_unpriced_cloud_model_is_refused_under_a_budget(cloud, emulator):
    s = cloud(extra="[budget]\nmonthly_usd = 50\n")
    err = refused(s, "hi", target="mygateway:my-private-model")
    assert "mygateway:my-private-model has no known price" in err.message
    assert "[providers.mygateway] price" in err.line() and "free = true" in err.line()
    assert emulator.calls() == []
    s.caps.clear(everything=True)
    r = s.ask("hi", target="mygateway:my-private-model")     # no budget: sent, cost unknown
    assert r.ok and r.cost is None


def test_unpriced_model_outside_every_cap_is_not_refused(cloud, emulator):
    s = cloud(extra="[budget.providers]\nopenai = { daily_usd = 5 }\n")
    assert s.ask("hi", target="mygateway:my-private-model").ok


def test_configured_price_lets_it_through_and_prices_it(cloud, emulator):
    s = cloud(extra="[budget]\nsession_usd = 50\n[providers.mygateway.price]\ninput = 2\noutput = 10\n")
    r = s.ask("hi", target="mygateway:my-private-model")
    assert r.ok and r.cost == pytest.approx((r.usage.input_tokens * 2 + r.usage.output_tokens * 10) / 1e6)
    row = s.history(1)[-1]
    assert row["cost"] == pytest.approx(r.cost) and row["provider"] == "mygateway" and row["model"] == "my-private-model"


def test_free_provider_costs_nothing_under_a_budget(cloud, emulator, isolated_env, monkeypatch):
    path = isolated_env / "config.toml"
    monkeypatch.setenv("CORP_API_KEY", "k")
    path.write_text(f'default = "corp:house-model"\n[budget]\nsession_usd = 0\n'
                    f'[providers.corp]\nbase_url = "{emulator.url("corp")}"\nfree = false\n'
                    f'[providers.house]\nbase_url = "{emulator.url("house")}"\nfree = true\nauth = "none"\n')
    from jupyter_llm.kernel_session import Session
    s = Session(load_config(path, strict=True))
    refused(s, "hi")                                       # corp: unpriced, loopback overridden
    r = s.ask("hi", target="house:anything")
    assert r.ok and r.cost == 0.0 and r.usage.output_tokens > 0


def test_loopback_endpoint_is_free_and_allowed_under_a_budget(cloud, emulator, isolated_env):
    path = isolated_env / "config.toml"
    path.write_text(f'default = "lab:any-model"\n[budget]\nsession_usd = 0\ndaily_usd = 0\n'
                    f'[providers.lab]\nbase_url = "{emulator.url("lab")}"\nauth = "none"\n')
    from jupyter_llm.kernel_session import Session
    s = Session(load_config(path, strict=True))
    r = s.ask("hi")
    assert r.ok and r.cost == 0.0 and len(emulator.calls("lab")) == 1


def test_fallback_that_would_spend_unseen_is_skipped(cloud, emulator, caplog):
    s = cloud(extra="[budget]\nsession_usd = 5\n" + PRICE)
    s.set_fallback(["mygateway:my-private-model", "anthropic"])
    r = s.ask("hi", target="openai:fault-500", max_tokens=2)
    assert r.ok and r.answered_by == "anthropic"
    assert emulator.calls("mygateway") == []
    assert "fallback mygateway:my-private-model skipped" in caplog.text


def test_history_rows_carry_the_notebook_and_cell(cloud, emulator, monkeypatch):
    from jupyter_llm import cellinfo
    monkeypatch.setattr(cellinfo, "_current", cellinfo.CellInfo("cell-abc", 7, "work/analysis.ipynb"))
    s = cloud()
    s.ask("hi")
    row = s.history(1)[-1]
    assert row["notebook"] == "work/analysis.ipynb" and row["cell_id"] == "cell-abc"
    assert row["provider"] == "openai" and row["model"] == "gpt-4o-mini"


def test_per_provider_timeout_applies_to_that_provider_only(cloud, emulator, monkeypatch):
    monkeypatch.setenv("SLOWGW_API_KEY", "k")
    s = cloud(extra=f'[providers.slowgw]\nbase_url = "{emulator.url("slowgw")}"\ntimeout = 0.5\n'
                    '[providers.slowgw.price]\ninput = 0\noutput = 0\n')
    r = s.ask("hi", target="slowgw:gpt-4o-mini+slow-2", no_history=True)
    assert r.error is not None and r.error.code == "TIMEOUT" and "0.5s" in r.error.message
    r = s.ask("hi", target="openai:gpt-4o-mini+slow-1.5", no_history=True)   # the session's 5 s still applies
    assert r.ok, r.error


def test_a_raised_cap_warns_again_at_its_own_80_percent(cloud, emulator):
    s = cloud(extra="[budget]\ndaily_usd = 10\n" + PRICE)
    seen: list[str] = []
    s.caps.emit = seen.append
    spend(s, 8.5)
    s.caps.after_spend(s)
    s.caps.after_spend(s)
    assert len(seen) == 1 and "$8.50 of $10.00" in seen[0]
    s.set_budget(20, "daily")
    spend(s, 8.0)
    s.caps.after_spend(s)
    assert len(seen) == 2 and "$16.50 of $20.00" in seen[1]


def test_requests_in_flight_in_two_sessions_cannot_both_pass_a_daily_cap(cloud, emulator):
    """Two sessions (separate connections to one file, as two kernels) ask at the same moment; the cap
    has room for one: the second sees the first's hold and is refused before sending."""
    import threading
    extra = "[budget]\ndaily_usd = 10\n" + PRICE
    a, b = cloud(extra=extra), cloud(extra=extra)
    assert a.store is not b.store
    start = threading.Barrier(2)
    outcome: dict[str, object] = {}

    def ask(name, session):
        start.wait()
        try:
            outcome[name] = session.ask("hi", target="openai:gpt-4o-mini+tokens-5+slow-1", max_tokens=6)
        except LLMError as exc:
            outcome[name] = exc

    threads = [threading.Thread(target=ask, args=(n, s)) for n, s in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    kinds = sorted(type(v).__name__ for v in outcome.values())
    assert kinds == ["LLMError", "Response"], outcome
    err = next(v for v in outcome.values() if isinstance(v, LLMError))
    assert err.code == "BUDGET_EXCEEDED" and "up to $6.00 and $0.00 of $10.00 is spent with $6.00 more held by requests in flight" in err.message
    assert len(emulator.calls("openai")) == 1
    assert a.store.held(since=0) == {}                      # the hold went when the exchange was recorded
    assert a.caps.spent(a) == {c: 5.0 for c in a.caps.caps()}


def test_a_refused_or_finished_request_leaves_no_hold(cloud, emulator):
    s = cloud(extra="[budget]\nsession_usd = 10\n" + PRICE)
    assert s.ask("hi", target=FIVE, max_tokens=6).ok
    refused(s, "hi", target=FIVE, max_tokens=6)
    assert s.store.held(since=0) == {}
    assert s.budget_left == pytest.approx(5.0)


def test_python_api_reports_caps(cloud, emulator):
    import jupyter_llm
    from jupyter_llm import budget
    s = cloud(extra=PRICE)
    s.set_budget(2, "daily", provider="openai")
    s.set_budget(7)
    with pytest.raises(LLMError) as err:
        s.set_budget(float("nan"), "daily")
    assert err.value.code == "BAD_ARGUMENT"
    with pytest.raises(LLMError):
        s.set_budget(1, "weekly")
    with pytest.raises(LLMError):
        s.set_budget(1, "daily", provider="nosuch")
    spend(s, 0.5)
    old, jupyter_llm._session = jupyter_llm._session, s
    try:
        rows = budget.report()
    finally:
        jupyter_llm._session = old
    assert [(r["cap"], r["limit"], r["spent"], r["left"]) for r in rows] == [
        ("session", 7.0, 0.0, 7.0), ("openai daily", 2.0, 0.5, 1.5)]


def test_real_llama_server_is_free_under_zero_caps(llama_server, isolated_env):
    """A real llama.cpp server answers under $0 caps: local costs nothing, so nothing is refused."""
    path = isolated_env / "config.toml"
    path.write_text(f'default = "local:{llama_server.port}"\n[budget]\nsession_usd = 0\ndaily_usd = 0\n'
                    '[budget.providers]\nlocal = { monthly_usd = 0 }\n')
    from jupyter_llm.kernel_session import Session
    s = Session(load_config(path, strict=True))
    r = s.ask("hello", max_tokens=4)
    assert r.ok, r.error
    assert r.cost == 0.0 and r.usage.output_tokens == 4
    row = s.history(1)[-1]
    assert row["provider"] == "local" and row["cost"] == 0.0
    assert s.store.held(since=0) == {}


def test_a_cached_answer_is_free_past_a_spent_cap(cloud, emulator):
    """Restart & Run All with the cache on costs nothing, so a spent cap does not refuse it."""
    s = cloud(extra="[budget]\ndaily_usd = 6\n" + PRICE)
    s.set(cache="on")
    first = s.ask("same", target=FIVE, max_tokens=6, new=True, no_history=True)
    assert first.ok and first.cost == 5.0
    again = s.ask("same", target=FIVE, max_tokens=6, new=True, no_history=True)   # 5 + 6 > 6, but cached
    assert again.cached and again.text == first.text and again.cost == 0.0
    refused(s, "different", target=FIVE, max_tokens=6, new=True, no_history=True)
    assert len(emulator.calls("openai")) == 1


def test_models_list_shows_the_configured_price(cloud, emulator):
    s = cloud(extra="[providers.mygateway.price]\ninput = 0.4\noutput = 1.6\n")
    models = s.models("mygateway")
    assert models and all((m.input_price, m.output_price) == (0.4, 1.6) for m in models)
    openai = {m.id: m for m in s.models("openai")}              # free = false: the catalogue's price
    assert openai["gpt-4o-mini"].input_price and openai["gpt-4o-mini"].input_price > 0


def test_a_busy_month_is_summed_once_and_today_read_live(cloud, emulator):
    s = cloud(extra="[budget]\nmonthly_usd = 100\n" + PRICE)
    s.caps.clock = lambda: local(2026, 5, 20, 12)
    spend(s, 2.0, at=local(2026, 5, 3, 9))
    calls = []
    real = s.store.spend
    s.store.spend = lambda **kw: calls.append(kw) or real(**kw)
    assert list(s.caps.spent(s).values()) == [2.0]
    spend(s, 1.0, at=local(2026, 5, 20, 11))                 # today, another kernel
    assert list(s.caps.spent(s).values()) == [3.0]
    month_start = local(2026, 5, 1)
    assert sum(1 for kw in calls if kw.get("since") == month_start) == 1   # the settled days: once
    s.caps.clock = lambda: local(2026, 5, 21, 12)            # a new day settles the 20th too
    assert list(s.caps.spent(s).values()) == [3.0]
    assert sum(1 for kw in calls if kw.get("since") == month_start) == 2


def test_spend_index_covers_the_range_sum(tmp_path):
    store = Store(tmp_path / "h.sqlite3")
    store.spend(since=0, until=1)
    plan = " ".join(str(tuple(r)) for r in store._connect().execute(
        "EXPLAIN QUERY PLAN SELECT provider, SUM(cost) FROM exchanges WHERE time >= 0 AND time < 1 GROUP BY provider"))
    assert "COVERING INDEX exchanges_spend" in plan
