"""%llm budget and %llm usage in a real IPython shell: setting every cap kind, showing spend, breakdowns."""
from __future__ import annotations

import time

import pytest

from jupyter_llm.budget import period_bounds
from tests.test_budget import FIVE, PRICE, spend
from tests.test_magics import assert_one_line_error, ip, run  # noqa: F401  (ip is a fixture)


@pytest.fixture
def priced(ip, cloud):
    """The shell on a session whose openai costs $1 per output token (see test_budget.PRICE)."""
    import jupyter_llm
    session = cloud(extra=PRICE)
    jupyter_llm._session = session
    ip.session = jupyter_llm._magics.session = session
    return ip


def caps(session) -> dict:
    return {c.name: c.usd for c in session.caps.caps()}


def test_budget_sets_and_shows_every_kind(priced, capsys, emulator):
    s = priced.session
    result, out, err = run(priced, capsys, "%llm budget")
    assert result.success and "budget off" in out
    run(priced, capsys, "%llm budget 5")                    # a bare number keeps meaning the session cap
    run(priced, capsys, "%llm budget daily 2")
    run(priced, capsys, "%llm budget monthly $40")
    run(priced, capsys, "%llm budget openai monthly 10")
    result, out, err = run(priced, capsys, "%llm budget anthropic 1.5")
    assert result.success, err
    assert caps(s) == {"session": 5, "daily": 2, "monthly": 40, "openai monthly": 10, "anthropic session": 1.5}
    assert s.budget == 5
    spend(s, 1.25)
    result, out, err = run(priced, capsys, "%llm budget")
    lines = out.splitlines()
    assert any(l.split()[:6] == ["daily", "today", "$2.00", "$1.25", "$0.75", "62%"] for l in lines), out
    assert any(l.split()[:7] == ["openai", "monthly", "this", "month", "$10.00", "$1.25", "$8.75"] for l in lines), out
    assert any(l.split()[:5] == ["session", "this", "session", "$5.00", "$0.00"] for l in lines), out
    run(priced, capsys, "%llm budget daily off")
    assert "daily" not in caps(s)
    run(priced, capsys, "%llm budget openai off")
    assert caps(s) == {"session": 5, "monthly": 40, "anthropic session": 1.5}
    result, out, err = run(priced, capsys, "%llm budget off")
    assert result.success and caps(s) == {} and "budget off" in out


def test_budget_from_the_magic_refuses_before_sending(priced, capsys, emulator):
    run(priced, capsys, "%llm budget openai daily 4")
    result, out, err = run(priced, capsys, f"%%llm {FIVE} --max-tokens 6\nhi")
    assert_one_line_error(result, err, "BUDGET_EXCEEDED")
    assert "openai daily cap" in err and "up to $6.00" in err
    assert emulator.calls() == []


@pytest.mark.parametrize("line", [
    "%llm budget -1", "%llm budget lots", "%llm budget nan", "%llm budget inf", "%llm budget 1e300",
    "%llm budget daily", "%llm budget daily lots", "%llm budget weekly 3", "%llm budget openia daily 2",
    "%llm budget openai daily monthly 2", "%llm budget openai daily 2 3", "%llm budget daily daily 2",
    "%llm usage --today --month", "%llm usage --week",
])
def test_bad_budget_and_usage_lines_are_one_coded_line(priced, capsys, line):
    result, out, err = run(priced, capsys, line)
    assert_one_line_error(result, err, "BAD_ARGUMENT")
    assert caps(priced.session) == {}


def test_usage_today_month_and_all_time_from_the_history(priced, capsys, emulator):
    s = priced.session
    now = time.time()
    s.caps.clock = lambda: now
    day0, _ = period_bounds("daily", now)
    month0, _ = period_bounds("monthly", now)
    assert s.ask("hi", target=FIVE).ok                      # this kernel: $5, 5 output tokens
    spend(s, 2.0, provider="anthropic")                     # another kernel today
    spend(s, 30.0, at=month0 - 3600)                        # last month
    if day0 > month0:
        spend(s, 7.0, at=month0 + 1)                        # this month, not today
    result, out, err = run(priced, capsys, "%llm usage --today")
    assert result.success, err
    rows = {l.split()[0]: l.split() for l in out.splitlines() if l.split()}
    assert rows["openai"][1:] == ["gpt-4o-mini+tokens-5", "1", "0", rows["openai"][4], "5", "$5.00"]
    assert rows["anthropic"][-1] == "$2.00" and rows["total"][-1] == "$7.00"
    result, out, err = run(priced, capsys, "%llm usage --month")
    total = [l.split() for l in out.splitlines() if l.startswith("total")][0]
    assert total[-1] == ("$14.00" if day0 > month0 else "$7.00")
    result, out, err = run(priced, capsys, "%llm usage")       # this session only, from the ledger
    total = [l.split() for l in out.splitlines() if l.startswith("total")][0]
    assert total[-1] == "$5.00"


def test_usage_notebook_breaks_down_rows_recorded_with_a_notebook(priced, capsys, emulator, monkeypatch):
    """The notebook path reaches the rows the way jupyter_server tells a kernel (JPY_SESSION_NAME)."""
    monkeypatch.setenv("JPY_SESSION_NAME", "projects/a.ipynb")
    assert run(priced, capsys, f"%%llm {FIVE}\none")[0].success
    assert run(priced, capsys, "%%llm openai:gpt-4o-mini+tokens-3\ntwo")[0].success
    monkeypatch.setenv("JPY_SESSION_NAME", "projects/b.ipynb")
    assert run(priced, capsys, "%%llm openai:gpt-4o-mini+tokens-2\nthree")[0].success
    assert priced.session.history(1)[-1]["notebook"] == "projects/b.ipynb"
    monkeypatch.setenv("JPY_SESSION_NAME", "projects/a.ipynb")
    result, out, err = run(priced, capsys, "%llm usage --notebook")
    assert result.success, err
    assert "notebook projects/a.ipynb" in out
    total = [l.split() for l in out.splitlines() if l.startswith("total")][0]
    assert total[1] == "2" and total[-1] == "$8.00"
    assert "tokens-2" not in out
    result, out, err = run(priced, capsys, "%llm usage --notebook projects/b.ipynb --today")
    total = [l.split() for l in out.splitlines() if l.startswith("total")][0]
    assert total[-1] == "$2.00" and "notebook projects/b.ipynb" in out
    monkeypatch.delenv("JPY_SESSION_NAME")
    result, out, err = run(priced, capsys, "%llm usage --notebook")
    assert_one_line_error(result, err, "BAD_ARGUMENT")


def test_usage_caption_shows_the_caps(priced, capsys, emulator):
    run(priced, capsys, "%llm budget daily 20")
    assert priced.session.ask("hi", target=FIVE, max_tokens=6).ok
    result, out, err = run(priced, capsys, "%llm usage")
    assert "budget: daily $5.00 of $20.00" in out


def test_status_shows_every_cap(priced, capsys, emulator):
    result, out, err = run(priced, capsys, "%llm status")
    assert [l.split() for l in out.splitlines() if l.startswith("budget")] == [["budget", "off"]]
    run(priced, capsys, "%llm budget 5")
    run(priced, capsys, "%llm budget openai daily 2")
    result, out, err = run(priced, capsys, "%llm status")
    line = [l for l in out.splitlines() if l.startswith("budget")][0]
    assert "session $0.00 of $5.00" in line and "openai daily $0.00 of $2.00" in line
