"""Local servers wherever they are: a server found by `%llm discover` on a non-default port is remembered for the
session (bare `local`, `%llm models local`, the picker); Ollama is built in (emulated Ollama, real openai SDK)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from jupyter_llm.errors import LLMError
from jupyter_llm.kernel_session import Session
from tests.emulator.ollama import FakeOllama, ollama  # noqa: F401  (fixture)


def write_config(text: str) -> None:
    Path(os.environ["JUPYTER_LLM_CONFIG"]).write_text(text)


@pytest.fixture
def shell():
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython
    import jupyter_llm
    start_ipython()
    ip = get_ipython()
    yield ip, jupyter_llm
    jupyter_llm.unload_ipython_extension(ip)
    jupyter_llm._session = None


def load(shell, session):
    ip, jupyter_llm = shell
    jupyter_llm._session = session
    jupyter_llm.load_ipython_extension(ip)
    return ip


def test_a_discovered_server_on_another_port_is_remembered_everywhere(llama_server, shell, capsys):
    # the default scan range holds nothing; the server runs on a port no config names
    write_config('[local]\nscan = [1, 1]\n')
    s = Session()
    error = s.ask("hi", target="local", max_tokens=2, fallback=False).error
    assert isinstance(error, LLMError)
    assert error.code == "NETWORK_ERROR" and "%llm serve" in error.hint and "scripts/" not in error.line()
    with pytest.raises(LLMError) as exc:
        raise error
    assert exc.value.code == "NETWORK_ERROR" and "%llm serve" in exc.value.hint and "scripts/" not in exc.value.line()
    assert f"local:{llama_server.port}" not in s.known_targets()
    ip = load(shell, s)
    capsys.readouterr()
    ip.run_line_magic("llm", f"discover --ports {llama_server.port}-{llama_server.port}")
    out = capsys.readouterr().out
    row = next(l for l in out.splitlines() if l.startswith(str(llama_server.port)))
    assert row.split()[-1] == f"local:{llama_server.port}" and llama_server.alias in row
    # now every face looks there
    assert s.check("local").ok
    assert [m.id for m in s.models("local")] == [f"local:{llama_server.port}"]
    assert f"local:{llama_server.port}" in s.known_targets()
    r = s.ask("hi", target="local", max_tokens=3)
    assert r.ok and r.answered_by == "local"
    ip.run_line_magic("llm", "models local")
    assert f"local:{llama_server.port}" in capsys.readouterr().out
    # a later scan of that port that finds nothing forgets it; the picker still offers a way back to local
    s.use("openai:gpt-4o-mini")
    assert "local" in s.known_targets()


def test_discover_prints_configured_names_and_nothing_found(llama_server, shell, capsys):
    write_config(f'[local]\nscan = [1, 1]\nports = {{ {llama_server.port} = "tiny" }}\n')
    ip = load(shell, Session())
    capsys.readouterr()
    ip.run_line_magic("llm", "discover")
    assert "local:tiny" in capsys.readouterr().out
    ip.run_line_magic("llm", "discover --ports 2-3")
    assert "no llama.cpp server or Ollama found" in capsys.readouterr().out


def test_ollama_is_built_in(ollama):  # noqa: F811
    write_config(f'[providers.ollama]\nbase_url = "{ollama.base_url}"\n[local]\nscan = [1, 1]\n')
    s = Session()
    assert s.parse("ollama:llama3.2").provider == "ollama"
    models = s.models("ollama")
    assert [m.id for m in models] == ["llama3.2:latest", "qwen2.5-coder:1.5b"]
    assert models[0].extra["parameters"] == "3.2B" and models[0].input_price == 0.0
    events = []
    r = s.ask("hi", target="ollama:llama3.2", on_event=events.append, max_tokens=4)
    assert r.ok and r.text == "Hello from the emulated" and r.finish_reason == "length"
    assert r.usage.output_tokens == 4 and r.cost == 0.0
    sent = [q for q in ollama.requests if q["method"] == "POST"][-1]
    assert sent["path"] == "/v1/chat/completions" and sent["body"]["model"] == "llama3.2"
    assert sent["body"]["stream"] is True and sent["body"]["max_tokens"] == 4
    assert not sent["headers"].get("Authorization", "").endswith("None")
    # bare `ollama` uses the first installed model; the budget does not count it
    s.set_budget(0.0)
    r = s.ask("hi", target="ollama", max_tokens=2)
    assert r.ok and [q for q in ollama.requests if q["method"] == "POST"][-1]["body"]["model"] == "llama3.2:latest"
    assert s.check("ollama:qwen2.5-coder:1.5b").ok
    assert "ollama:llama3.2:latest" in s.known_targets()
    prov = {row["provider"]: row for row in s.providers()}
    assert prov["ollama"]["configured"] and prov["ollama"]["health"].startswith("ok")


def test_ollama_errors_name_the_way_out(ollama):  # noqa: F811
    write_config(f'[providers.ollama]\nbase_url = "{ollama.base_url}"\n[reliability]\nretries = 0\n')
    s = Session()
    r = s.ask("hi", target="ollama:mistral", fallback=False)
    assert r.error.code == "MODEL_NOT_FOUND" and "ollama pull mistral" in r.error.hint
    h = s.check("ollama:mistral")
    assert not h.ok and "ollama pull mistral" in h.detail
    empty = FakeOllama(models=[])
    try:
        write_config(f'[providers.ollama]\nbase_url = "{empty.base_url}"\n[reliability]\nretries = 0\n')
        r = Session().ask("hi", target="ollama", fallback=False)
        assert r.error.code == "MODEL_NOT_FOUND" and "ollama pull" in r.error.hint
    finally:
        empty.close()
    port = ollama.port
    ollama.close()
    write_config(f'[providers.ollama]\nbase_url = "http://127.0.0.1:{port}/v1"\n[reliability]\nretries = 0\n')
    r = Session().ask("hi", target="ollama:llama3.2", fallback=False)
    assert r.error.code == "NETWORK_ERROR" and "ollama serve" in r.error.hint
    assert f"127.0.0.1:{port}" in r.error.message


def test_discover_finds_ollama(ollama, shell, capsys):  # noqa: F811
    write_config(f'[providers.ollama]\nbase_url = "{ollama.base_url}"\n[local]\nscan = [1, 1]\n')
    ip = load(shell, Session())
    capsys.readouterr()
    ip.run_line_magic("llm", "discover")
    out = capsys.readouterr().out
    assert "ollama:llama3.2:latest" in out and "ollama:qwen2.5-coder:1.5b" in out
    ip.run_line_magic("llm", f"discover --ports {ollama.port}-{ollama.port}")
    out = capsys.readouterr().out
    assert out.count(f"{ollama.port} ") == 2 and "ok (Ollama)" in out  # its /v1 face is not listed twice
