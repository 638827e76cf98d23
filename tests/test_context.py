"""Cell-aware context (context.py), window fitting, token meters, %llm context / forget, --dry-run."""
from __future__ import annotations

import pytest

from jupyter_llm.cellinfo import CellInfo
from jupyter_llm.context import Conversation, fit, parse_mode
from jupyter_llm.errors import LLMError
from jupyter_llm.targets import Target
from jupyter_llm.tokencount import EstimateMeter


def cell(cid, n):
    return CellInfo(cid, n, None)


# ---- the conversation ----------------------------------------------------------------------------

def test_rerun_replaces_in_place_and_terminal_appends():
    c = Conversation()
    a1, b1 = cell("a", 1), cell("b", 2)
    c.record("qa", "A", "t", a1)
    c.record("qb", "B", "t", b1)
    a3 = cell("a", 3)
    assert [e.prompt for e in c.history_for(a3)] == []          # a re-run sees only what came before it
    c.record("qa2", "A2", "t", a3)
    assert [e.prompt for e in c.exchanges] == ["qa2", "qb"]     # replaced in place, not appended
    assert [e.prompt for e in c.history_for(cell("new", 4))] == ["qa2", "qb"]
    c.record("t1", "T1", "t", None)                               # no cell id: appends
    c.record("t1", "T1", "t", None)
    assert [e.prompt for e in c.exchanges] == ["qa2", "qb", "t1", "t1"]


def test_several_asks_in_one_run_all_stay_and_a_new_run_replaces_them_all():
    c = Conversation()
    run = cell("loop", 1)
    for i in range(3):
        assert len(c.history_for(run)) == i
        c.record(f"q{i}", "x", "t", run)
    c.record("after", "x", "t", cell("z", 2))
    again = cell("loop", 3)
    c.record("only", "x", "t", again)
    assert [e.prompt for e in c.exchanges] == ["only", "after"]


def test_forget_and_keep_cells():
    c = Conversation()
    for i, cid in enumerate("abcd"):
        c.record(f"q{cid}", "x", "t", cell(cid, i))
    c.record("term", "x", "t", None)
    assert c.forget(2).prompt == "qb"
    assert c.forget(-1).prompt == "term"
    with pytest.raises(LLMError) as err:
        c.forget(9)
    assert err.value.code == "BAD_ARGUMENT" and "has 3" in err.value.message
    with pytest.raises(LLMError):
        c.forget(0)
    # the frontend's list: c deleted, d moved above a
    assert c.keep_cells(["d", "a", "x"]) == 1
    assert [e.prompt for e in c.exchanges] == ["qd", "qa"]
    # what the labextension sends: deletions it saw, and the order; cells it does not know (fresh ids
    # after a page reload of an old notebook) lose nothing
    c.record("qe", "x", "t", cell("e", 9))
    assert c.keep_cells(["fresh-1", "fresh-2"], removed=[]) == 0 and len(c) == 3
    assert c.keep_cells(["e", "a"], removed=["d"]) == 1
    assert [e.prompt for e in c.exchanges] == ["qe", "qa"]


# ---- fitting -------------------------------------------------------------------------------------

def _conv(n, size=40):
    c = Conversation()
    for i in range(n):
        c.record(f"question {i} " + "w" * size, "answer " + "v" * size, "t", cell(f"c{i}", i))
    return c


def test_fit_keeps_newest_and_always_the_prompt_and_system():
    c = _conv(40)
    meter = EstimateMeter(window=400)
    f = fit(meter, Target("openai", "gpt-4o-mini"), c.exchanges, "now?", "be brief", 50)
    assert 0 < f.kept < 40 and f.trimmed
    assert f.history == c.exchanges[40 - f.kept:]                # oldest dropped first
    assert f.input_tokens + f.reserve <= 400
    assert f.note().startswith(f"context: {f.kept} of 40 exchanges (~")
    # context = N keeps at most N (and still fits); all keeps everything
    assert fit(meter, Target("openai", "x"), c.exchanges, "q", None, 50, 2).kept == 2
    assert fit(meter, Target("openai", "x"), c.exchanges, "q", None, 50, "all").kept == 40
    assert fit(meter, Target("openai", "x"), c.exchanges, "q", None, 50, 0).kept == 0
    assert fit(EstimateMeter(window=None), Target("openai", "x"), c.exchanges[:3], "q", None, 50, 5).kept == 3


def test_trimmed_start_sticks_while_it_fits_so_prompt_caches_hit():
    c = _conv(30)
    meter = EstimateMeter(window=600)
    t = Target("openai", "x")
    first = fit(meter, t, c.exchanges, "q", None, 20)
    anchor = first.history[0]
    c.record("one more", "short", "t", None)
    second = fit(meter, t, c.exchanges, "q", None, 20, anchor=anchor)
    assert second.history[0] is anchor and second.kept == first.kept + 1


def test_prompt_alone_too_long_says_by_how_much():
    meter = EstimateMeter(window=100)
    meter.exact = True
    with pytest.raises(LLMError) as err:
        fit(meter, Target("local", port=8080), [], "word " * 200, None, 8)
    e = err.value
    assert e.code == "CONTEXT_TOO_LONG" and "over the 100-token window" in e.message and "nothing was sent" in e.message
    over = int(e.message.split(": ")[1].split(" tokens over")[0].replace(",", ""))
    assert over == meter.base(None, "word " * 200) + 8 - 100


def test_context_mode_setting():
    assert parse_mode("auto") == "auto" and parse_mode("ALL") == "all" and parse_mode("12") == 12
    with pytest.raises(ValueError):
        parse_mode("-3")


# ---- sessions against the emulator -------------------------------------------------------------

def test_session_fits_sends_trimmed_and_notes_it(cloud, emulator):
    s = cloud("[defaults]\ncontext = \"auto\"\n")
    assert s.settings["context"] == "auto"
    for i in range(5):
        assert s.ask(f"question {i}").ok
    assert len(s.chat) == 5 and len(s.conversation) == 10
    s.set(context=2)
    r = s.ask("with two")
    assert r.ok and r.context == f"context: 2 of 5 exchanges (~{r.context.split('(~')[1]}"
    assert len(emulator.last("openai").body["messages"]) == 5  # 2 exchanges + the prompt
    with pytest.raises(LLMError) as err:
        s.set(context="lots")
    assert err.value.code == "BAD_ARGUMENT"


def test_too_long_prompt_is_refused_before_sending(cloud, emulator):
    s = cloud()
    before = len(emulator.calls("openai"))
    with pytest.raises(LLMError) as err:
        s.ask("word " * 200_000)
    assert err.value.code == "CONTEXT_TOO_LONG" and "over the 128,000-token window" in err.value.message
    assert len(emulator.calls("openai")) == before


def test_dry_run_sends_nothing_and_counts_exactly_where_it_can(cloud, emulator):
    s = cloud()
    s.ask("first question here", target="anthropic:claude-3-5-haiku-latest")
    sent = len(emulator.calls(None))
    rows = s.dry_run("how many words are in this prompt", ["anthropic:claude-3-5-haiku-latest", "openai:gpt-4o-mini",
                                                            "gemini:gemini-2.0-flash"], max_tokens=100, frame=False)
    assert len(emulator.calls(None)) == sent  # no chat request
    anth, oai, gem = rows
    assert anth["counted"] == "exact" and gem["counted"] == "exact" and oai["counted"] == "estimate"
    # the emulator counts one token per word plus 3 per message: 3 messages, 13 words for anthropic
    assert anth["input_tokens"] == 3 * 3 + len("first question here".split()) + len(s.chat.exchanges[0].answer.split()) + 7
    assert gem["input_tokens"] >= 3 + 7
    assert anth["messages"] == 3 and anth["max_output"] == 100 and anth["fits"] is True
    assert anth["window"] == 200_000 and oai["window"] == 128_000
    assert 0 < anth["cost_low_usd"] < anth["cost_high_usd"]
    counts = [r for r in emulator.requests if r.route == "count"]
    assert counts and all("count_tokens" in r.path or ":countTokens" in r.path for r in counts)
    frame = s.dry_run("hi", frame=True)
    assert list(frame.columns)[:3] == ["target", "messages", "input_tokens"]


def test_counting_is_only_paid_near_the_window(cloud, emulator):
    s = cloud()
    for i in range(3):
        assert s.ask(f"q{i}", target="anthropic:claude-3-5-haiku-latest").ok
    assert not [r for r in emulator.requests if r.route == "count"]  # far from a 200k window: estimate only


def test_magics_context_forget_and_dry_run(cloud, emulator, capsys):
    import jupyter_llm
    from IPython import get_ipython
    from IPython.core.error import UsageError
    from IPython.testing.globalipapp import start_ipython
    start_ipython()  # the process-wide test shell (as tests/test_magics.py)
    ip = get_ipython()
    s = cloud()
    jupyter_llm._session = s
    jupyter_llm.load_ipython_extension(ip)
    try:
        ip.run_cell_magic("llm", "-f text", "alpha question")
        ip.run_cell_magic("llm", "-f text", "beta question")
        n_calls = len(emulator.calls("openai"))
        value = ip.run_cell_magic("llm", "--dry-run --compare openai:gpt-4o-mini anthropic:claude-3-5-haiku-latest",
                                  "gamma")
        assert len(emulator.calls("openai")) == n_calls and len(value) == 2
        assert list(value["target"]) == ["openai:gpt-4o-mini", "anthropic:claude-3-5-haiku-latest"]
        assert list(value["messages"]) == [5, 5]
        capsys.readouterr()
        ip.run_line_magic("llm", "context")
        out = capsys.readouterr().out
        assert "alpha question" in out and "beta question" in out and "2 of 2 exchanges" in out
        ip.run_line_magic("llm", "forget 1")
        assert "forgot exchange 1: 'alpha question'; 1 left" in capsys.readouterr().out
        assert [e.prompt for e in s.chat.exchanges] == ["beta question"]
        with pytest.raises(UsageError, match="BAD_ARGUMENT"):
            ip.run_line_magic("llm", "forget x")
        with pytest.raises(UsageError, match="CONTEXT_TOO_LONG"):
            ip.run_cell_magic("llm", "", "word " * 200_000)
    finally:
        jupyter_llm.unload_ipython_extension(ip)
        jupyter_llm._session = None


def test_llama_counts_are_what_the_server_counts(llama_server, isolated_env):
    from jupyter_llm.config import load_config
    from jupyter_llm.context import fit_for
    from jupyter_llm.kernel_session import Session
    (isolated_env / "config.toml").write_text(f'default = "local:{llama_server.port}"\n')
    s = Session(load_config(strict=True))
    s.set(max_tokens=6, temperature=0, system="You are terse.")
    for i in range(4):
        assert s.ask(f"question {i}: what now?").ok
    planned = fit_for(s, s.active, "and finally?", None)
    assert planned.exact and planned.window == 2048 and planned.kept == 4
    r = s.ask("and finally?")
    assert r.ok and r.usage.input_tokens == planned.input_tokens  # exact, template tokens included
    rows = s.dry_run("and finally?", frame=False)
    # the exchange just made is in the next plan: more tokens than before, counted exactly again
    assert rows[0]["counted"] == "exact" and rows[0]["input_tokens"] > planned.input_tokens
    assert rows[0]["messages"] == 2 * 5 + 1 + 1 and rows[0]["cost_high_usd"] == 0.0 and rows[0]["fits"] is True


def test_ollama_is_fitted_to_its_servers_context_not_left_unbounded(isolated_env):
    """Ollama's /v1 API runs every model at the server's num_ctx (4096 by default), whatever the model's own size."""
    from jupyter_llm.config import load_config
    from jupyter_llm.kernel_session import Session
    from jupyter_llm.tokencount import OLLAMA_CONTEXT, meter_for
    path = isolated_env / "config.toml"
    path.write_text('default = "ollama:llama3.2"\n')
    s = Session(load_config(path, strict=True))
    assert meter_for(s, Target("ollama", "llama3.2")).window == OLLAMA_CONTEXT == 4096
    path.write_text('default = "ollama:llama3.2"\n[providers.ollama]\ncontext = 16384\n')
    s = Session(load_config(path, strict=True))
    assert meter_for(s, Target("ollama", "llama3.2")).window == 16384
