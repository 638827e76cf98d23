"""Shared test rig: every test runs with its own config, data dir and file keyring, never the user's."""
from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.emulator.fixtures",   # `emulator`: wire-level OpenAI/Anthropic/Gemini fake on 127.0.0.1
    "tests.llama",               # `llama_server`: a real llama.cpp server with a generated tiny GGUF
    "tests.lab",                 # `lab`, `page`: JupyterLab on 127.0.0.1 driven by Playwright + Debian chromium
    "tests.kernel",              # `kernel_factory`: real IPython kernels with iopub recording
]

# A fake key that must never show up anywhere a user could see or save it.
CANARY = "sk-canary-7f3a9c1e5d80b2461"


def run_fresh_script(script: str, *args: str, env: dict[str, str]) -> tuple[dict, str]:
    """Run `script` (with `args`) in a fresh interpreter that has this tree on its path; returns the JSON it
    printed after "RESULT " and everything it printed (stdout and stderr), to check for secrets."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    env = dict(env, PYTHONPATH=str(Path(__file__).parent.parent))
    out = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=180)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, out.stderr[-3000:]
    return json.loads(line[7:]), out.stdout + out.stderr


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Own config path, data dir and plaintext file keyring under tmp_path; no provider keys from outside."""
    monkeypatch.setenv("JUPYTER_LLM_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("JUPYTER_LLM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
    monkeypatch.setenv("KEYRING_PROPERTY_FILE_PATH", str(tmp_path / "keyring.cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))  # no user keyringrc.cfg
    import keyring.core
    monkeypatch.setattr(keyring.core, "_keyring_backend", None)  # keyring caches its backend process-wide
    from jupyter_llm import redact
    redact.forget_all()  # the secret registry is process-wide: each test starts with none known
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY", "GEMINI_API_KEY", "DEEPSEEK_API_KEY",
                "GROQ_API_KEY", "TOGETHER_API_KEY", "OPENROUTER_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    yield tmp_path


@pytest.fixture
def magic_shell():
    """The test IPython shell with the extension loaded on a given session: `magic_shell(session)`. Every
    `_llm*` result is removed before (an earlier test in this process may have left one) and after, with any
    `clear` names; the extension is unloaded afterwards."""
    import jupyter_llm
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython
    start_ipython()  # once per process; later calls return None
    shell = get_ipython()
    names = {name for name in shell.user_ns if name.startswith("_llm")}
    for name in names:
        shell.user_ns.pop(name, None)

    def load(session, clear=()):
        jupyter_llm._session = session
        jupyter_llm.load_ipython_extension(shell)
        shell.session = session
        names.update(clear)
        return shell
    yield load
    jupyter_llm.unload_ipython_extension(shell)
    jupyter_llm._session = None
    for name in names | {name for name in shell.user_ns if name.startswith("_llm")}:
        shell.user_ns.pop(name, None)


def run_cell(shell, capsys, source: str):
    """Run one cell in the test shell; return (result, stdout, stderr)."""
    capsys.readouterr()
    result = shell.run_cell(source)
    out = capsys.readouterr()
    return result, out.out, out.err


def emulator_config(emulator, extra: str = "", default: str = "openai:gpt-4o-mini") -> str:
    """A config text pointing every cloud provider (and a configured gateway) at the emulator."""
    # `free = false`: the emulator stands in for the paid clouds, so it is priced like them even though
    # it listens on 127.0.0.1 (a loopback endpoint is otherwise free).
    return (f'default = "{default}"\n'
            f'[providers.openai]\nbase_url = "{emulator.url("openai")}"\nfree = false\n'
            f'[providers.anthropic]\nbase_url = "{emulator.url("anthropic")}"\nfree = false\n'
            f'[providers.gemini]\nbase_url = "{emulator.url("gemini")}"\nfree = false\n'
            f'[providers.groq]\nbase_url = "{emulator.url("groq")}"\nfree = false\n'
            f'[providers.mygateway]\nkind = "openai-compatible"\nbase_url = "{emulator.url("mygateway")}"\n'
            f'model = "gpt-4o"\nfree = false\n'
            '[reliability]\nretries = 2\nbackoff = 0.01\nmax_backoff = 0.05\ntimeout = 5\n' + extra)


@pytest.fixture
def cloud(isolated_env, emulator, monkeypatch):
    """A fresh Session whose clouds are the emulator, with the canary as every provider's key."""
    from jupyter_llm.config import load_config
    from jupyter_llm.kernel_session import Session

    def make(extra: str = "", default: str = "openai:gpt-4o-mini", keys: bool = True) -> Session:
        path = isolated_env / "config.toml"
        path.write_text(emulator_config(emulator, extra, default))
        if keys:
            for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GROQ_API_KEY", "MYGATEWAY_API_KEY"):
                monkeypatch.setenv(var, CANARY)
        config = load_config(path, strict=True)
        return Session(config)
    return make
