"""Spend caps across real kernels: two kernel processes (and a restart) sharing one history DB."""
from __future__ import annotations

import sqlite3

import pytest

from tests.conftest import CANARY, emulator_config
from tests.test_budget import FIVE, PRICE

pytestmark = pytest.mark.kernel


def run_cell(kernel, code: str, cell_id: str | None = None, timeout: float = 60):
    """Run `code` with the frontend's cell id in the execute_request metadata, as JupyterLab sends it."""
    if cell_id is None:
        return kernel.run(code, timeout=timeout)
    session = kernel.kc.session
    original = session.msg

    def msg(msg_type, content=None, parent=None, header=None, metadata=None):
        if msg_type == "execute_request":
            metadata = dict(metadata or {}, cellId=cell_id)
        return original(msg_type, content, parent, header, metadata)

    session.msg = msg
    try:
        return kernel.run(code, timeout=timeout)
    finally:
        del session.msg


@pytest.fixture
def kernels(kernel_factory, emulator, isolated_env, monkeypatch):
    """Start kernels on one config and one data dir; each names its notebook as jupyter_server does."""
    (isolated_env / "config.toml").write_text(emulator_config(emulator, "[budget]\ndaily_usd = 12\n" + PRICE))
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)

    def start(notebook: str):
        k = kernel_factory(JPY_SESSION_NAME=notebook)
        assert k.run("%load_ext jupyter_llm").status == "ok"
        return k
    return start


def test_daily_cap_holds_across_two_kernels_and_a_restart(kernels, emulator, isolated_env):
    a, b = kernels("analysis/a.ipynb"), kernels("analysis/b.ipynb")
    ok = run_cell(a, f"%%llm {FIVE} --max-tokens 6\nfirst", cell_id="cell-a1")      # $5 of 12
    assert ok.status == "ok", ok.stderr
    ok = run_cell(b, f"%%llm {FIVE} --max-tokens 6\nsecond", cell_id="cell-b1")     # 5 + 6 fits; then $10
    assert ok.status == "ok", ok.stderr
    assert "83% of the daily cap (today, all kernels) is spent ($10.00 of $12.00)" in ok.stderr
    assert len(emulator.calls("openai")) == 2

    # kernel A spent only $5 itself, but the cap counts B's $5 too: 10 + 6 > 12
    no = run_cell(a, f"%%llm {FIVE} --max-tokens 6\nthird", cell_id="cell-a2")
    assert no.status == "error"
    lines = [line for line in no.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("UsageError: BUDGET_EXCEEDED: the daily cap"), no.stderr
    assert "$10.00 of $12.00 is spent" in lines[0] and "nothing was sent" in lines[0]   # warned once, in B
    assert len(emulator.calls("openai")) == 2

    b.shutdown()                                       # a restart: a new kernel process, same history
    c = kernels("analysis/b.ipynb")
    no = run_cell(c, f"%%llm {FIVE} --max-tokens 6\nfourth", cell_id="cell-b2")
    assert no.status == "error" and "BUDGET_EXCEEDED" in no.stderr
    assert "jupyter-llm budget:" not in no.stderr
    small = run_cell(c, f"%%llm {FIVE} --max-tokens 2\nfifth", cell_id="cell-b3")   # 10 + 2 fits
    assert small.status == "ok", small.stderr
    assert len(emulator.calls("openai")) == 3

    shown = run_cell(a, "%llm budget")
    assert shown.status == "ok"
    rows = [line.split() for text in shown.texts() for line in text.splitlines() if line.startswith("daily")]
    assert rows == [["daily", "today", "$12.00", "$12.00", "$0.00", "100%"]], shown.texts()   # 5 + 5 + 2, all kernels
    usage = run_cell(a, "%llm usage --notebook --today")
    assert usage.status == "ok", usage.stderr
    text = "\n".join(usage.texts())
    assert "notebook analysis/a.ipynb" in text
    assert [l.split()[-1] for l in text.splitlines() if l.startswith("total")] == ["$5.00"]

    rows = sqlite3.connect(isolated_env / "data" / "history.sqlite3").execute(
        "SELECT notebook, cell_id, provider, cost FROM exchanges ORDER BY id").fetchall()
    assert rows == [("analysis/a.ipynb", "cell-a1", "openai", 5.0), ("analysis/b.ipynb", "cell-b1", "openai", 5.0),
                    ("analysis/b.ipynb", "cell-b3", "openai", 2.0)]


def test_two_kernels_asking_at_once_cannot_both_pass_the_cap(kernels, emulator):
    """Room for one $6 request under the $12 cap after $5 is spent: the kernels race, one is refused."""
    import threading
    a, b = kernels("race/a.ipynb"), kernels("race/b.ipynb")
    assert run_cell(a, f"%%llm {FIVE} --max-tokens 6\nwarm up").status == "ok"           # $5 of 12
    runs: dict[str, object] = {}
    start = threading.Barrier(2)

    def go(name, kernel):
        start.wait()
        runs[name] = kernel.run(f"%%llm {FIVE}+slow-1 --max-tokens 6\nrace", timeout=60)

    threads = [threading.Thread(target=go, args=(n, k)) for n, k in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    statuses = sorted(r.status for r in runs.values())
    assert statuses == ["error", "ok"], {n: (r.status, r.stderr) for n, r in runs.items()}
    loser = next(r for r in runs.values() if r.status == "error")
    assert "BUDGET_EXCEEDED" in loser.stderr and "daily cap" in loser.stderr
    assert len(emulator.calls("openai")) == 2
