"""Context in real kernels: cell ids sent as JupyterLab sends them, re-runs replace, and 1,000 exchanges on a
2,048-token llama.cpp server without a failure and without per-cell time growing."""
from __future__ import annotations

import json
import statistics
import time

import pytest

from tests.conftest import CANARY, emulator_config

pytestmark = pytest.mark.kernel

EXCHANGES = ("import jupyter_llm, json; "
             "print(json.dumps([[e.cell_id, e.prompt] for e in jupyter_llm.session().chat.exchanges]))")


@pytest.fixture
def kernel(kernel_factory, emulator, isolated_env, monkeypatch):
    (isolated_env / "config.toml").write_text(emulator_config(emulator))
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
    k = kernel_factory()
    assert k.run("%load_ext jupyter_llm", cell_id="load").status == "ok"
    return k


def exchanges(k) -> list[list[str]]:
    return json.loads(k.run(EXCHANGES, cell_id="inspect").stdout.strip().splitlines()[-1])


def test_rerunning_a_cell_replaces_its_exchange(kernel, emulator):
    k = kernel
    assert k.run("%%llm -f text\nfirst question", cell_id="cell-a").status == "ok"
    assert k.run("%%llm -f text\nsecond question", cell_id="cell-b").status == "ok"
    assert len(emulator.last("openai").body["messages"]) == 3
    # re-run cell a (edited): it replaces its exchange in place and sees nothing of cell b's
    assert k.run("%%llm -f text\nfirst question, edited", cell_id="cell-a").status == "ok"
    assert [m["content"] for m in emulator.last("openai").body["messages"]] == ["first question, edited"]
    assert exchanges(k) == [["cell-a", "first question, edited"], ["cell-b", "second question"]]
    # re-run b as is: still two exchanges, and b now carries a's new answer
    assert k.run("%%llm -f text\nsecond question", cell_id="cell-b").status == "ok"
    sent = emulator.last("openai").body["messages"]
    assert [m["content"] for m in sent[::2]] == ["first question, edited", "second question"]
    assert exchanges(k) == [["cell-a", "first question, edited"], ["cell-b", "second question"]]
    # a new cell carries both
    assert k.run("%%llm -f text\nthird", cell_id="cell-c").status == "ok"
    assert len(emulator.last("openai").body["messages"]) == 5
    # no cell id (a terminal, a script): appends, twice
    k.run("%%llm -f text\nanonymous")
    k.run("%%llm -f text\nanonymous")
    assert [p for _, p in exchanges(k)][-2:] == ["anonymous", "anonymous"]


def test_context_dry_run_and_too_long_in_a_kernel(kernel, emulator):
    k = kernel
    k.run("%%llm -f text\nhello there", cell_id="c1")
    run = k.run("%llm context", cell_id="c2")
    assert run.status == "ok"
    text = run.texts()[0]
    assert "hello there" in text and "1 of 1 exchanges" in text and "128,000-token window" in text
    calls = len(emulator.calls(None))
    run = k.run("%%llm --dry-run --compare openai:gpt-4o-mini anthropic:claude-3-5-haiku-latest --max-tokens 50\n"
                "what would this cost?", cell_id="c3")
    assert run.status == "ok" and len(emulator.calls(None)) == calls
    result = run.of("execute_result")[0]["content"]["data"]
    assert "text/html" in result and "anthropic:claude-3-5-haiku-latest" in result["text/plain"]
    assert k.run("print(type(_).__name__, list(_['counted']))", cell_id="c4").stdout.strip() == \
        "DataFrame ['estimate', 'exact']"
    run = k.run("%%llm\n" + "word " * 200_000, cell_id="c5")
    line = (run.error["evalue"] if run.error else run.stderr).strip()
    assert "Traceback" not in run.stderr and len(line.splitlines()) == 1, line
    assert "CONTEXT_TOO_LONG: the prompt alone is" in line and "nothing was sent" in line
    assert len(emulator.calls(None)) == calls
    assert k.run("%llm forget 1", cell_id="c6").stdout.startswith("forgot exchange 1: 'hello there'; 0 left")


N_EXCHANGES = 1000


@pytest.mark.llama
def test_a_thousand_exchanges_on_a_2048_token_server(kernel_factory, llama_server, isolated_env):
    """Every ask fits the 2,048-token window (no failure), and a cell at exchange 1,000 costs about
    what one at exchange 100 does (the window is full from ~30 exchanges on)."""
    (isolated_env / "config.toml").write_text(f'default = "local:{llama_server.port}"\n')
    k = kernel_factory()
    assert k.run("%load_ext jupyter_llm\n%llm set max_tokens=8 temperature=0", cell_id="setup").status == "ok"
    times, failures = [], []
    for i in range(N_EXCHANGES):
        t0 = time.perf_counter()
        run = k.run(f"%%llm -f text\nQ{i}: and then?", cell_id=f"cell-{i}", timeout=120)
        times.append(time.perf_counter() - t0)
        if run.status != "ok":
            failures.append((i, run.error and run.error["evalue"]))
    assert failures == []
    out = k.run("import jupyter_llm; s = jupyter_llm.session(); f = s.context().fit\n"
                "print(len(s.chat), f.kept, f.input_tokens + f.reserve <= f.window, _llm.usage.input_tokens, "
                "_llm.context)", cell_id="check").stdout.split(maxsplit=4)
    assert out[0] == str(N_EXCHANGES) and 0 < int(out[1]) < 100 and out[2] == "True"
    assert int(out[3]) + 8 <= 2048 and out[4].startswith("context: ")
    early, late = statistics.median(times[75:125]), statistics.median(times[-100:])
    print(f"per cell: exchange ~10 {statistics.median(times[5:15]) * 1000:.0f} ms, ~150 {early * 1000:.0f} ms, "
          f"~950 {late * 1000:.0f} ms, total {sum(times):.0f} s")
    assert late < 3 * early, (early, late)  # flat: generous, the machine is shared
