"""%llm and %%llm in a real IPython shell (terminal mode): options, outputs, and one coded line per bad input."""
from __future__ import annotations

import pytest

import jupyter_llm
from tests.conftest import CANARY, run_cell as run


@pytest.fixture
def ip(cloud, magic_shell):
    """The test IPython shell with the extension loaded on a fresh emulator-backed session."""
    return magic_shell(cloud(), clear=("answer", "data"))


def assert_one_line_error(result, err: str, code: str):
    assert not result.success
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"UsageError: {code}: "), err
    assert "Traceback" not in err and CANARY not in err


@pytest.mark.parametrize("source,code", [
    ("%%llm --bogus\nhi", "BAD_ARGUMENT"),
    ("%%llm -f yaml\nhi", "BAD_ARGUMENT"),
    ("%%llm -o 1x\nhi", "BAD_ARGUMENT"),
    ("%%llm\n   \n", "BAD_ARGUMENT"),
    ("%%llm nope:x\nhi", "BAD_ARGUMENT"),
    ("%%llm local:99999\nhi", "BAD_ARGUMENT"),
    ("%%llm -t hot\nhi", "BAD_ARGUMENT"),
    ("%%llm -t 9\nhi", "BAD_ARGUMENT"),
    ("%%llm --max-tokens 0\nhi", "BAD_ARGUMENT"),
    ("%%llm --insert -f text\nhi", "BAD_ARGUMENT"),
    ('%%llm --system "unclosed\nhi', "BAD_ARGUMENT"),
    ("%%llm\nhi {nobody}", "BAD_ARGUMENT"),
    ("%%llm openai --compare anthropic gemini\nhi", "BAD_ARGUMENT"),
    ("%llm frobnicate", "BAD_ARGUMENT"),
    ("%llm use", "BAD_ARGUMENT"),
    ("%llm use openai:", "BAD_ARGUMENT"),
    ("%llm set temperature", "BAD_ARGUMENT"),
    ("%llm set colour=red", "BAD_ARGUMENT"),
    ("%llm budget -1", "BAD_ARGUMENT"),
    ("%llm budget lots", "BAD_ARGUMENT"),
    ("%llm history -n x", "BAD_ARGUMENT"),
    ("%llm discover --ports 9-1", "BAD_ARGUMENT"),
    ("%llm login nope", "BAD_ARGUMENT"),
    ("%llm logout", "BAD_ARGUMENT"),
    ("%llm fallback nope:x", "BAD_ARGUMENT"),
    ("%%llm openai:fault-401\nhi", "INVALID_CREDENTIALS"),
    ("%%llm openai:fault-404\nhi", "MODEL_NOT_FOUND"),
    ("%%llm anthropic:fault-context\nhi", "CONTEXT_TOO_LONG"),
    ("%%llm gemini:fault-429-3600\nhi", "RATE_LIMITED"),
    ("%%llm openai:fault-leak\nhi", "PROVIDER_ERROR"),
    ("%%llm local:9\nhi", "NETWORK_ERROR"),
    ("%%llm deepseek\nhi", "MISSING_CREDENTIALS"),
])
def test_every_bad_input_is_one_coded_line(ip, capsys, emulator, source, code):
    sent_before = len(emulator.calls())
    result, out, err = run(ip, capsys, source)
    assert_one_line_error(result, err, code)
    if code in ("BAD_ARGUMENT", "MISSING_CREDENTIALS"):
        assert len(emulator.calls()) == sent_before  # nothing was sent


def test_rate_limit_says_the_wait(ip, capsys):
    result, out, err = run(ip, capsys, "%%llm gemini:fault-429-3600\nhi")
    assert "retry in 60 min" in err


def test_network_error_hints_at_local_or_fallback(ip, capsys):
    ip.session.config.reliability.retries = 0
    result, out, err = run(ip, capsys, "%%llm local:9\nhi")
    assert "fallback" in err or "local" in err


def test_timeout_keeps_the_partial_text(ip, capsys, emulator):
    ip.session.set(timeout="0.5")
    result, out, err = run(ip, capsys, "%%llm openai:gpt-4o-mini+stall-after-2-for-5\ntell me")
    assert_one_line_error(result, err, "TIMEOUT")
    r = ip.user_ns["_llm"]
    assert r.incomplete and r.text and out.startswith(r.text) and "incomplete" in out


def test_budget_exceeded(ip, capsys, emulator):
    run(ip, capsys, "%llm budget 0.0000001")
    result, out, err = run(ip, capsys, "%%llm --max-tokens 500\nhi")
    assert_one_line_error(result, err, "BUDGET_EXCEEDED")
    assert emulator.calls() == []


def test_prompt_streams_and_sets_llm(ip, capsys, emulator):
    ip.user_ns["rows"] = 42
    result, out, err = run(ip, capsys, "%%llm -o answer\nHow many rows? {rows} and {{braces}} and {\"json\": 1}")
    assert result.success, err
    r = ip.user_ns["_llm"]
    assert 'you said How many rows? 42 and {braces} and {"json": 1}' in r.text
    text, footer = out.strip().rsplit("\n", 1)
    assert text == r.text.strip() and ip.user_ns["answer"] == r.text
    assert footer.startswith("openai:gpt-4o-mini · ") and "tokens" in footer  # the footer line
    assert r.target == "openai:gpt-4o-mini" and r.usage.output_tokens > 0 and r.cost > 0


def test_cell_target_does_not_switch(ip, capsys, emulator):
    result, out, err = run(ip, capsys, "%%llm anthropic\nhi")
    assert result.success and ip.user_ns["_llm"].answered_by == "anthropic"
    assert str(ip.session.active) == "openai:gpt-4o-mini"


def test_json_format_returns_the_object(ip, capsys, emulator):
    emulator.script('Sure:\n```json\n{"a": [1, 2], "b": "x"}\n```')
    result, out, err = run(ip, capsys, "%%llm -f json -o data\ngive json")
    assert result.success and result.result == {"a": [1, 2], "b": "x"}
    assert ip.user_ns["data"] == {"a": [1, 2], "b": "x"} and ip.user_ns["_llm"].value == ip.user_ns["data"]


def test_bad_json_is_a_provider_error_and_text_is_kept(ip, capsys, emulator):
    emulator.script("not json at all")
    result, out, err = run(ip, capsys, "%%llm -f json\ngive json")
    assert_one_line_error(result, err, "PROVIDER_ERROR")
    assert ip.user_ns["_llm"].text == "not json at all"


def test_code_insert_puts_code_in_the_next_cell(ip, capsys, emulator, monkeypatch):
    emulator.script("Here:\n```python\nprint('hi')\n```\n")
    inserted = []
    monkeypatch.setattr(ip, "set_next_input", lambda text, replace=False: inserted.append(text))
    result, out, err = run(ip, capsys, "%%llm -f code --insert\nwrite code")
    assert result.success and inserted == ["print('hi')"]


def test_system_temperature_max_tokens_per_cell(ip, capsys, emulator):
    run(ip, capsys, '%%llm --system "you are brief" -t 0.2 --max-tokens 30\nhi')
    body = emulator.last("openai").body
    assert body["messages"][0] == {"role": "system", "content": "you are brief"}
    assert body["temperature"] == 0.2 and body.get("max_completion_tokens", body.get("max_tokens")) == 30


def test_conversation_new_and_no_history(ip, capsys, emulator):
    run(ip, capsys, "%%llm\none")
    run(ip, capsys, "%%llm --no-history\ntwo")
    assert len(emulator.last("openai").body["messages"]) == 3
    assert len(ip.session.conversation) == 2
    run(ip, capsys, "%%llm --new\nthree")
    assert len(emulator.last("openai").body["messages"]) == 1 and len(ip.session.conversation) == 2
    run(ip, capsys, "%llm reset")
    assert ip.session.conversation == []


def test_no_stream_renders_once(ip, capsys):
    result, out, err = run(ip, capsys, "%%llm --no-stream\nhi")
    assert result.success and out.strip().rsplit("\n", 1)[0] == ip.user_ns["_llm"].text.strip()


def test_use_status_usage_history_providers(ip, capsys, emulator):
    result, out, _ = run(ip, capsys, "%llm use anthropic:claude-3-5-haiku-latest")
    assert "using anthropic:claude-3-5-haiku-latest" in out and str(ip.session.active) == "anthropic:claude-3-5-haiku-latest"
    run(ip, capsys, "%%llm\nhello")
    _, out, _ = run(ip, capsys, "%llm status")
    assert "anthropic:claude-3-5-haiku-latest" in out and "****" + CANARY[-4:] in out and "env:ANTHROPIC_API_KEY" in out
    _, out, _ = run(ip, capsys, "%llm usage")
    assert "claude-3-5-haiku-latest" in out and "total" in out
    _, out, _ = run(ip, capsys, "%llm history -n 3")
    assert "hello" in out and "ok" in out
    _, out, _ = run(ip, capsys, "%llm providers")
    assert "openai" in out and "deepseek" in out
    _, out, _ = run(ip, capsys, "%llm models openai")
    assert "gpt-4o-mini" in out
    _, out, _ = run(ip, capsys, "%llm help")
    assert "%llm use TARGET" in out
    for text in (out,):
        assert CANARY not in text


def test_login_logout_with_hidden_prompt(ip, capsys, monkeypatch, emulator):
    import getpass
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": CANARY)
    result, out, err = run(ip, capsys, "%llm login anthropic")
    assert result.success and CANARY not in out + err
    assert ip.session.credentials.lookup(ip.session._spec(ip.session.parse("anthropic"))).source == "keyring"
    result, out, err = run(ip, capsys, "%%llm anthropic\nhi")
    # older anthropic SDKs send the key as x-api-key, current ones as Authorization: Bearer
    assert result.success and emulator.secret_locations(CANARY) in (["anthropic:header:authorization"],
                                                                   ["anthropic:header:x-api-key"])
    result, out, err = run(ip, capsys, "%llm logout anthropic")
    assert "removed" in out
    result, out, err = run(ip, capsys, "%%llm anthropic\nhi")
    assert_one_line_error(result, err, "MISSING_CREDENTIALS")


def test_unload_removes_the_magics(ip, capsys):
    jupyter_llm.unload_ipython_extension(ip)
    assert "llm" not in ip.magics_manager.magics["cell"] and "llm" not in ip.magics_manager.magics["line"]
    jupyter_llm.load_ipython_extension(ip)
    assert "llm" in ip.magics_manager.magics["cell"]


def test_bad_config_still_loads_and_names_file_line_key(isolated_env, capsys):
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython
    start_ipython()
    shell = get_ipython()
    path = isolated_env / "config.toml"
    path.write_text('default = "local"\n[reliability]\nretries = "many"\n')
    jupyter_llm._session = None
    try:
        jupyter_llm.load_ipython_extension(shell)
        err = capsys.readouterr().err
        assert f"CONFIG_ERROR: {path}:3: reliability.retries" in err and "Traceback" not in err
        assert "llm" in shell.magics_manager.magics["cell"]
        shell.run_cell("%llm status")
        assert "CONFIG_ERROR" in capsys.readouterr().out
    finally:
        jupyter_llm.unload_ipython_extension(shell)
        jupyter_llm._session = None


# ---- answers that say what they are (footer, truncation, continue, interrupt) ----

def test_footer_off_and_truncation_line_then_continue(ip, capsys, emulator):
    run(ip, capsys, "%llm set footer=off")
    emulator.script("one two three four five six seven eight nine ten")
    result, out, err = run(ip, capsys, "%%llm --max-tokens 4\nCount.")
    assert result.success, err
    first = ip.user_ns["_llm"]
    assert first.truncated and first.max_tokens == 4 and first.finish_reason == "length"
    assert out.strip().splitlines()[-1] == "⚠ stopped at max_tokens (4): %llm continue carries on"
    assert "tokens ·" not in out  # footer off
    emulator.script("eleven twelve")
    result, out, err = run(ip, capsys, "%llm continue")
    assert result.success, err
    joined = ip.user_ns["_llm"]
    assert joined.text == first.text + "eleven twelve" and "eleven twelve" in out
    assert joined.usage.output_tokens == first.usage.output_tokens + 2
    sent = emulator.last("openai").body["messages"]
    assert sent[-2] == {"role": "assistant", "content": first.text} and "Continue" in sent[-1]["content"]
    run(ip, capsys, "%llm set footer=on")
    result, out, err = run(ip, capsys, "%%llm\nhi")
    assert out.strip().splitlines()[-1].startswith("openai:gpt-4o-mini · ")


def test_continue_without_an_answer_is_one_line(ip, capsys):
    from jupyter_llm import answer
    answer._LAST.clear()
    result, out, err = run(ip, capsys, "%llm continue")
    assert_one_line_error(result, err, "BAD_ARGUMENT")


def test_interrupt_is_one_calm_line(ip, capsys, emulator, monkeypatch):
    from jupyter_llm import stream_display
    emulator.script("alpha beta gamma delta epsilon zeta eta theta", delay=0.01)
    seen = []
    original = stream_display.StreamRenderer.__call__

    def interrupt_after_three(self, ev):
        original(self, ev)
        seen.append(ev)
        if sum(1 for e in seen if type(e).__name__ == "TextDelta") == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(stream_display.StreamRenderer, "__call__", interrupt_after_three)
    result, out, err = run(ip, capsys, "%%llm\nGo.")
    r = ip.user_ns["_llm"]
    assert result.success and err.strip() == ""  # no UsageError, no traceback
    assert r.finish_reason == "interrupted" and r.incomplete and r.text
    assert out.strip().splitlines()[-2] == f"stopped: {len(r.text)} characters kept"


# ---- explain, fix, {Err[n]} ----

def test_explain_fix_and_err_interpolation(ip, capsys, emulator):
    result, _, _ = run(ip, capsys, "values = [1, 2]\ntotal = values[5]")
    assert not result.success
    n = result.execution_count  # IPython 8 leaves it None outside history; Err then keys the newest error
    n = n if n is not None else max(ip.user_ns["Err"])
    err = ip.user_ns["Err"][n]
    assert err.type == "IndexError" and "values[5]" in err.source and "IndexError: list index out of range" in str(err)
    assert "interactiveshell" not in str(err)  # IPython's own frames are not sent
    result, out, e = run(ip, capsys, "%llm explain")
    assert result.success, e
    prompt = emulator.last("openai").body["messages"][-1]["content"]
    assert "total = values[5]" in prompt and "IndexError: list index out of range" in prompt and "Explain" in prompt
    emulator.script("Here is the fix:\n\n```python\nvalues = [1, 2]\ntotal = values[-1]\n```\n\nUse an index that exists.")
    inserted = []
    ip.set_next_input = lambda text, replace=False: inserted.append((text, replace))
    try:
        result, out, e = run(ip, capsys, f"%llm fix {n}")
    finally:
        del ip.set_next_input
    assert result.success, e
    assert inserted == [("values = [1, 2]\ntotal = values[-1]", False)]
    result, out, e = run(ip, capsys, f"%%llm --no-history\nWhy? {{Err[{n}]}}")
    assert "IndexError: list index out of range" in emulator.last("openai").body["messages"][-1]["content"]
    result, out, e = run(ip, capsys, "%%llm\nWhy? {Err[99999]}")
    assert_one_line_error(result, e, "BAD_ARGUMENT")
    assert "cell [99999] raised no error" in e
