"""`--compare` honours or refuses every %%llm option (issue 7, item 10)."""
from __future__ import annotations

import pytest

from tests.test_compare import captured
from tests.test_magics import assert_one_line_error, ip, run  # noqa: F401  (ip is a fixture)

PAIR = "--compare openai:gpt-4o-mini anthropic"


def test_output_stores_the_list_of_responses(ip, capsys, emulator):
    emulator.script("side by side")
    result, out, err = run(ip, capsys, f"%%llm {PAIR} -o answers\nhi")
    assert result.success, err
    answers = ip.user_ns["answers"]
    assert isinstance(answers, list) and len(answers) == 2
    assert [a.target for a in answers] == ["openai:gpt-4o-mini", "anthropic"]
    assert all(a.ok and a.text == "side by side" for a in answers)


def test_insert_is_refused_before_anything_is_sent(ip, capsys, emulator):
    for line in (f"{PAIR} --insert", f"--insert -f code {PAIR}"):
        result, out, err = run(ip, capsys, f"%%llm {line}\nhi")
        assert_one_line_error(result, err, "BAD_ARGUMENT")
        assert "--insert" in err
    assert emulator.calls() == []


def test_no_history_leaves_the_conversation_alone(ip, capsys, emulator):
    before = list(ip.session.conversation)
    result, out, err = run(ip, capsys, f"%%llm {PAIR} --no-history\nhi")
    assert result.success, err
    assert ip.session.conversation == before


def test_no_stream_displays_once_with_the_final_columns(ip, emulator, monkeypatch):
    monkeypatch.setattr("jupyter_llm.render.in_kernel", lambda: True)
    emulator.script(tokens=8, delay=0.02)
    results, outputs = captured(ip, lambda: ip.run_cell_magic("llm", f"{PAIR} --no-stream", "hi"))
    assert len(outputs) == 1 and not outputs[0].update, [o.update for o in outputs]
    assert all(r.ok for r in results)
    shown = outputs[0].data["text/plain"]
    assert all(r.text.strip()[:10] in shown for r in results)
    # streaming (the default) shows a first display and then updates
    results, outputs = captured(ip, lambda: ip.run_cell_magic("llm", PAIR, "hi"))
    assert len(outputs) > 1 and outputs[0].update is False


def test_no_stream_in_a_terminal_prints_each_column_once(ip, capsys, emulator):
    emulator.script("answer text")
    result, out, err = run(ip, capsys, f"%%llm {PAIR} --no-stream\nhi")
    assert result.success, err
    assert out.count("answer text") == 2 and "comparing" not in out


@pytest.mark.parametrize("opts,check", [
    ("--system 'be brief'", lambda body: "be brief" in str(body)),
    ("-t 0.3", lambda body: "0.3" in str(body)),
    ("--max-tokens 7", lambda body: "7" in str(body)),
])
def test_parameters_reach_every_column(ip, capsys, emulator, opts, check):
    result, out, err = run(ip, capsys, f"%%llm {PAIR} {opts}\nhi")
    assert result.success, err
    calls = emulator.calls()
    assert len(calls) == 2 and all(check(c.body) for c in calls)


def test_json_format_parses_each_answer(ip, capsys, emulator):
    emulator.script('{"a": 1}')
    result, out, err = run(ip, capsys, f"%%llm {PAIR} -f json -o out\nhi")
    assert result.success, err
    assert [r.value for r in ip.user_ns["out"]] == [{"a": 1}, {"a": 1}]


def test_new_and_cache_are_honoured(ip, capsys, emulator):
    ip.session.ask("remember me")
    result, out, err = run(ip, capsys, f"%%llm {PAIR} --new\nhi")
    assert result.success and all("remember me" not in str(c.body) for c in emulator.calls()[1:])
    run(ip, capsys, f"%%llm {PAIR} --cache\ncached prompt")
    n = len(emulator.calls())
    result, out, err = run(ip, capsys, f"%%llm {PAIR} --cache -o again\ncached prompt")
    assert result.success and len(emulator.calls()) == n and all(r.cached for r in ip.user_ns["again"])


def test_targets_may_be_separated_by_commas(ip, capsys, emulator):
    emulator.script("side by side")
    for line in ("--compare openai:gpt-4o-mini,anthropic -o answers", "--compare openai:gpt-4o-mini, anthropic -o answers"):
        result, out, err = run(ip, capsys, f"%%llm {line}\nhi")
        assert result.success, err
        assert [a.target for a in ip.user_ns["answers"]] == ["openai:gpt-4o-mini", "anthropic"]
    result, out, err = run(ip, capsys, "%%llm --compare ,\nhi")
    assert_one_line_error(result, err, "BAD_ARGUMENT")
