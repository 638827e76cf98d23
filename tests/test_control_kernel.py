"""Control and audit through a real kernel: local-only mode, the audit, aliases and config, no canary on iopub."""
from __future__ import annotations

import json

import pytest

from tests.conftest import CANARY, emulator_config

pytestmark = pytest.mark.kernel


@pytest.fixture
def kernel(kernel_factory, emulator, isolated_env, monkeypatch):
    (isolated_env / "config.toml").write_text("# keep this comment\n" + emulator_config(emulator))
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.setenv("DEEPSEEK_API_KEY", CANARY)
    k = kernel_factory()
    assert k.run("%load_ext jupyter_llm").status == "ok"
    return k


def test_local_only_audit_alias_config_in_a_kernel(kernel, emulator, isolated_env):
    seen = []
    run = kernel.run("%llm offline on")
    seen.append(run)
    assert run.status == "ok" and "local-only" in run.stdout
    states = [m["content"]["data"] for m in run.of("comm_msg")]
    assert states and states[-1]["mode"] == "local-only"
    run = kernel.run("%%llm deepseek\nhello")                       # api.deepseek.com: refused, nothing sent
    seen.append(run)
    lines = [l for l in run.stderr.splitlines() if l.strip()]
    assert run.status == "error" and len(lines) == 1 and lines[0].startswith("UsageError: BLOCKED: "), run.stderr
    run = kernel.run("%%llm openai:gpt-4o-mini --no-stream\nhello")  # the emulator is on 127.0.0.1: local
    seen.append(run)
    assert run.status == "ok" and emulator.calls("openai")
    run = kernel.run("%llm login groq", stdin=lambda req: CANARY)
    seen.append(run)
    assert run.status == "ok", run.stderr
    run = kernel.run("%llm alias fast groq:llama-3.1-8b-instant")
    seen.append(run)
    assert run.status == "ok" and "# keep this comment" in (isolated_env / "config.toml").read_text()
    run = kernel.run("%llm history --events")
    seen.append(run)
    text = "\n".join(run.texts())
    assert "cloud allowed → local-only" in text and f"****{CANARY[-4:]}" in text and "fast = groq" in text
    run = kernel.run("%llm config")
    seen.append(run)
    assert "local-only" in "\n".join(run.texts())
    run = kernel.run("print(type(_llm_history).__name__, len(_llm_history))")
    assert run.stdout.startswith("DataFrame")
    for r in seen:
        assert CANARY not in json.dumps([m["content"] for m in r.messages], default=str)


def test_protect_and_replay_in_a_kernel(kernel, emulator, isolated_env):
    assert kernel.run("secret_note = 'acct 998877'\nimport jupyter_llm").status == "ok"
    assert kernel.run("%llm protect secret_note").status == "ok"
    run = kernel.run("%%llm deepseek\nRead {secret_note}")
    lines = [l for l in run.stderr.splitlines() if l.strip()]
    assert run.status == "error" and len(lines) == 1 and "BLOCKED" in lines[0] and "{secret_note}" in lines[0]
    rec = isolated_env / "k.jsonl"
    assert kernel.run(f"%llm record {rec}").status == "ok"
    assert kernel.run("%%llm openai:gpt-4o-mini --no-stream\nRead {secret_note}").status == "ok"
    assert "acct 998877" in rec.read_text() and CANARY not in rec.read_text()
    assert kernel.run(f"%llm record off\n%llm replay {rec} --strict").status == "ok"
    emulator.reset()
    run = kernel.run("%%llm openai:gpt-4o-mini --no-stream --new\nRead {secret_note}\n")
    assert run.status == "ok", run.stderr
    assert kernel.run("print(_llm.replayed)").stdout.strip() == "True" and emulator.requests == []
