"""Record and replay: every exchange to JSONL (minus secrets) and back with no network and no key."""
from __future__ import annotations

import json

import pytest

import jupyter_llm
from tests.conftest import CANARY, run_cell as run


@pytest.fixture
def ip(cloud, magic_shell):
    return magic_shell(cloud())


def test_record_then_replay_without_network_or_key(ip, capsys, emulator, tmp_path, monkeypatch, cloud):
    rec = tmp_path / "rec.jsonl"
    assert run(ip, capsys, f"%llm record {rec}")[0].success
    emulator.script("The answer is forty-two.")
    assert run(ip, capsys, "%%llm --system 'be brief' -t 0.2\nwhat is the answer?")[0].success
    live = ip.user_ns["_llm"]
    assert run(ip, capsys, "%%llm anthropic:claude-3-5-haiku-latest\nand again?")[0].success
    from jupyter_llm.compare import run_compare
    cmp = run_compare(ip.session, "compare me", ["openai:gpt-4o-mini", "groq"], rich=False)
    assert all(r.ok for r in cmp)
    lines = [json.loads(l) for l in rec.read_text().splitlines()]
    assert len(lines) == 4
    first = lines[0]
    assert first["target"] == "openai:gpt-4o-mini" and first["answer"] == live.text
    assert first["request"]["system"] == "be brief" and first["request"]["temperature"] == 0.2
    assert first["request"]["messages"][-1] == {"role": "user", "content": "what is the answer?"}
    assert first["usage"]["output_tokens"] == live.usage.output_tokens and first["model"]["provider"] == "openai"
    assert CANARY not in rec.read_text()
    _, out, _ = run(ip, capsys, "%llm status")
    assert "recording to" in out
    run(ip, capsys, "%llm record off")

    # a new session: no keys, nothing listening matters, every request answered from the file
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GROQ_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    emulator.reset()
    jupyter_llm.unload_ipython_extension(ip)
    fresh = cloud(keys=False)
    jupyter_llm._session = fresh
    jupyter_llm.load_ipython_extension(ip)
    ip.session = fresh
    result, out, _ = run(ip, capsys, f"%llm replay {rec} --strict")
    assert result.success and "replaying 4 recorded answers" in out
    assert run(ip, capsys, "%%llm --system 'be brief' -t 0.2\nwhat is the answer?")[0].success
    r = ip.user_ns["_llm"]
    assert r.text == live.text and r.replayed and r.cost == 0.0 and r.usage.output_tokens == live.usage.output_tokens
    assert run(ip, capsys, "%%llm anthropic:claude-3-5-haiku-latest\nand again?")[0].success
    cmp2 = run_compare(fresh, "compare me", ["openai:gpt-4o-mini", "groq"], rich=False)
    assert [r.text for r in cmp2] == [r.text for r in cmp] and all(r.replayed for r in cmp2)
    assert emulator.requests == []
    hist = fresh.history(3)
    assert all(h["replayed"] for h in hist)
    _, out, _ = run(ip, capsys, "%llm history -n 3")
    assert "(replayed)" in out
    # strict: a request that was not recorded is refused, nothing sent
    result, _, err = run(ip, capsys, "%%llm\nsomething new")
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("UsageError: BLOCKED: replay --strict") and emulator.requests == []
    # not strict: a miss goes to the live target
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    run(ip, capsys, f"%llm replay {rec}")
    assert run(ip, capsys, "%%llm --new\nsomething new")[0].success
    assert not ip.user_ns["_llm"].replayed and len(emulator.calls("openai")) == 1


def test_fallback_is_recorded_with_who_answered(cloud, emulator, tmp_path):
    from jupyter_llm.recording import tap
    s = cloud()
    t = tap(s)
    t.start_recording(tmp_path / "r.jsonl")
    s.set_fallback(["anthropic:claude-3-5-haiku-latest"])
    emulator.fault(500, provider="openai", times=10)
    r = s.ask("hi")
    assert r.answered_by.startswith("anthropic")
    entry = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])
    assert entry["target"] == "openai:gpt-4o-mini" and entry["answered_by"].startswith("anthropic")
    emulator.reset()
    t.stop_recording()
    t.start_replay(tmp_path / "r.jsonl", strict=True)
    r2 = s.ask("hi", new=True)
    assert r2.text == r.text and r2.replayed and r2.answered_by == r.answered_by and not emulator.requests


def test_errors_and_cut_answers_are_not_recorded(cloud, emulator, tmp_path):
    from jupyter_llm.recording import tap
    s = cloud()
    t = tap(s)
    t.start_recording(tmp_path / "r.jsonl")
    emulator.fault(401)
    assert s.ask("a").error is not None
    emulator.fault("drop", after=2)
    assert s.ask("b").error is not None
    assert (tmp_path / "r.jsonl").read_text() == ""


def test_bad_recordings_are_one_clear_error(ip, capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n{}\n")
    for cell, code in ((f"%llm replay {tmp_path / 'none.jsonl'}", "BAD_ARGUMENT"), (f"%llm replay {bad}", "BAD_ARGUMENT"),
                       ("%llm record a b", "BAD_ARGUMENT"), (f"%llm record {tmp_path}", "BAD_ARGUMENT")):
        result, _, err = run(ip, capsys, cell)
        lines = [l for l in err.splitlines() if l.strip()]
        assert not result.success and len(lines) == 1 and lines[0].startswith(f"UsageError: {code}"), (cell, err)
