"""`%llm panel`: the ipywidgets control panel over the Session (unit level, no browser)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jupyter_llm import panel as panel_mod
from jupyter_llm.kernel_session import Session
from jupyter_llm.panel import Panel, show_panel
from tests.conftest import CANARY


@pytest.fixture
def session(emulator):
    Path(os.environ["JUPYTER_LLM_CONFIG"]).write_text(f'''default = "emu:model-a"
[providers.openai]
base_url = "{emulator.url("openai")}"
[providers.emu]
base_url = "{emulator.url("emu")}"
auth = "none"
models = ["model-a", "model-b"]
[local]
scan = [1, 1]
[reliability]
retries = 0
''')
    return Session()


def all_state(panel: Panel) -> str:
    """The synced state of every widget in the panel (and their layouts and styles), as JSON text."""
    from ipywidgets import Widget
    seen, todo, states = set(), list(panel.widgets()), []
    while todo:
        x = todo.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        state = x.get_state()
        states.append(state)
        for name in x.keys:
            value = getattr(x, name)
            for v in (value if isinstance(value, (list, tuple)) else [value]):
                if isinstance(v, Widget):
                    todo.append(v)
    return json.dumps(states, default=str)


def test_widget_tree_marks_and_status(session):
    p = Panel(session)
    labels = dict((v, k) for k, v in p.provider.options)
    assert labels["emu"] == "● emu" and labels["openai"] == "✗ openai (no key)"
    assert labels["local"] == "○ local (none found)"
    assert p.provider.value == "emu" and p.model.value == "emu:model-a"
    assert "emu:model-a" in p.status.value and "0 requests" in p.status.value
    kinds = {c.__name__ for w in p.widgets() for c in type(w).__mro__}  # SecretField is a Password
    assert {"Dropdown", "Password", "Button", "Text", "HTML", "VBox", "HBox"} <= kinds
    buttons = {w.description for w in p.widgets() if type(w).__name__ == "Button"}
    assert {"Switch", "Test connection", "Save key"} <= buttons


def test_switch_in_the_panel_is_session_use(session, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)  # with a key: no warning first
    p = Panel(session)
    calls = []
    real_use = session.use
    monkeypatch.setattr(session, "use", lambda text, **kw: calls.append(text) or real_use(text, **kw))
    p.provider.value = "openai"
    assert ("gpt-4o (", "openai:gpt-4o") in [(label[:8], v) for label, v in p.model.options]
    p.model.value = "openai:gpt-4o"
    assert str(session.active) == "emu:model-a"  # choosing is not switching
    p.switch.click()
    assert calls == ["openai:gpt-4o"] and str(session.active) == "openai:gpt-4o"
    assert "using openai:gpt-4o" in p.message.value and "openai:gpt-4o" in p.status.value


def test_panel_follows_llm_use_in_another_cell(session):
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython
    from jupyter_llm.magics import LLMMagics
    start_ipython()
    p = Panel(session)
    magics = LLMMagics(get_ipython(), session)
    magics.llm_line("use openai:gpt-4.1-mini")
    assert p.provider.value == "openai" and p.model.value == "openai:gpt-4.1-mini"
    assert "<b>openai:gpt-4.1-mini</b>" in p.status.value
    magics.llm_line("set temperature=0.3 max_tokens=99")
    assert (p.temperature.value, p.max_tokens.value) == ("0.3", "99")


def test_changes_from_worker_threads_are_applied_on_the_main_loop(session, monkeypatch):
    """Observer callbacks from other threads are queued onto the kernel loop, coalesced, never applied there."""
    queued = []

    class Loop:
        def add_callback(self, fn):
            queued.append(fn)

    class Shell:
        kernel = type("K", (), {"io_loop": Loop()})()

    monkeypatch.setattr("IPython.get_ipython", lambda: Shell())
    p = Panel(session)
    worker = threading.Thread(target=lambda: (session.use("openai:gpt-4o"), session.set(max_tokens=5)))
    worker.start()
    worker.join()
    assert len(queued) == 1  # two changes, one callback
    assert p.model.value == "emu:model-a"  # nothing touched the widgets from the worker
    queued.pop()()
    assert p.model.value == "openai:gpt-4o" and p.max_tokens.value == "5"


def test_secret_is_cleared_at_once_and_stored_in_the_keyring(session, emulator):
    from IPython.utils.capture import capture_output
    with capture_output() as cap:
        show_panel(session)
    p = panel_mod.current_panel(session)
    p.provider.value = "openai"
    p.secret.value = CANARY            # what the browser sends when the field loses focus
    assert p.secret.value == ""        # taken out of the widget before anything else happens
    assert "****2461" in p.message.value
    assert CANARY not in all_state(p)
    p.save.click()
    assert p.secret.value == ""
    assert "stored the openai credential in the OS keyring" in p.message.value
    import keyring
    assert CANARY in (keyring.get_password("jupyter-llm", "openai") or "")
    assert session.auth_for(session.parse("openai")).source == "keyring"
    assert dict((v, k) for k, v in p.provider.options)["openai"] == "✓ openai"
    # the stored key is used: the emulator accepts only it
    emulator.expect_key(CANARY, "openai")
    p.model.value = "openai:gpt-4o-mini"
    p.test.click()
    assert "✓ openai:gpt-4o-mini" in p.message.value
    everything = all_state(p) + json.dumps([o.data for o in cap.outputs]) + cap.stdout + cap.stderr + repr(p.secret)
    assert CANARY not in everything


def test_save_without_a_key_and_bad_settings_show_errors_in_the_panel(session):
    p = Panel(session)
    p.save.click()
    assert "BAD_ARGUMENT" in p.message.value and "type the API key first" in p.message.value
    p.temperature.value = "7"
    assert "temperature must be between 0 and 2" in p.message.value
    assert p.temperature.value == "" and session.settings["temperature"] is None
    p.max_tokens.value = "many"
    assert "max_tokens must be an integer" in p.message.value
    p.temperature.value = "0.5"
    assert session.settings["temperature"] == 0.5
    p.temperature.value = ""
    assert session.settings["temperature"] is None  # back to the provider default


def test_test_connection_failure_is_a_panel_message_not_a_traceback(session):
    p = Panel(session)
    p.provider.value = "openai"
    p.model.value = "openai:gpt-4o-mini"
    p.test.click()  # no key
    assert "MISSING_CREDENTIALS" in p.message.value
    assert dict((v, k) for k, v in p.provider.options)["openai"] == "✗ openai (no key)"  # never "down"
    assert p.provider.value == "openai"


def test_no_key_is_never_down_and_a_switch_without_one_is_warned_first(session, monkeypatch):
    p = Panel(session)
    p.provider.value = "openai"
    assert p.key_row.layout.display is None  # openai takes a key: the row shows
    p.model.value = "openai:gpt-4o"
    p.switch.click()
    assert str(session.active) == "emu:model-a"  # not yet: warned
    assert "has no key yet" in p.message.value and p.switch.description == "Switch anyway"
    p.switch.click()
    assert str(session.active) == "openai:gpt-4o" and "using openai:gpt-4o" in p.message.value
    assert p.switch.description == "Switch"
    # a failed health check with a key is "down"; logging in clears it
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    p._health["openai"] = False
    p._mark_providers("openai")
    assert dict((v, k) for k, v in p.provider.options)["openai"] == "✗ openai (down)"


def test_key_row_hidden_for_keyless_providers_and_stale_messages_cleared(session):
    p = Panel(session)
    assert p.key_row.layout.display == "none"  # emu: auth = none
    p.provider.value = "openai"
    assert p.key_row.layout.display is None
    p.save.click()
    assert "BAD_ARGUMENT" in p.message.value
    p.provider.value = "local"
    assert p.key_row.layout.display == "none" and p.message.value == ""  # stale message gone
    p.provider.value = "openai"
    p.save.click()
    p.model.value = "openai:gpt-4o"
    assert p.message.value == ""
    p.provider.value = "emu"
    p.switch.click()
    assert "using emu:model-a" in p.message.value
    session.use("openai:gpt-4o")  # a switch elsewhere makes "using emu:model-a" stale
    assert p.message.value == ""
    # every row wraps instead of overflowing a narrow notebook
    rows = [c for c in p.root.children if type(c).__name__ == "HBox"]
    assert rows and all(r.layout.flex_flow == "row wrap" for r in rows) and p.root.layout.max_width == "100%"


def test_ollama_in_the_panel(emulator):
    from tests.emulator.ollama import FakeOllama
    fake = FakeOllama()
    try:
        Path(os.environ["JUPYTER_LLM_CONFIG"]).write_text(
            f'[providers.ollama]\nbase_url = "{fake.base_url}"\n[local]\nscan = [1, 1]\n')
        p = Panel(Session())
        assert dict((v, k) for k, v in p.provider.options)["ollama"] == "● ollama (2 models)"
        p.provider.value = "ollama"
        assert p.key_row.layout.display == "none"
        assert [v for _, v in p.model.options] == ["ollama:llama3.2:latest", "ollama:qwen2.5-coder:1.5b"]
        p.switch.click()  # no key needed: no warning
        assert "using ollama:llama3.2:latest" in p.message.value
    finally:
        fake.close()
    p.refresh.click()
    assert dict((v, k) for k, v in p.provider.options)["ollama"] == "○ ollama (not running)"


def test_start_model_row_serves_and_offers_it(emulator, session):
    from tests.llama import llama_server_module
    from jupyter_llm import serve
    model = llama_server_module().ensure_model()
    p = Panel(session)
    p.start.click()
    assert "type the path of a .gguf model first" in p.message.value
    p.start_path.value = "/nonexistent/model.gguf"
    p.start.click()
    assert "no model file at" in p.message.value and not p.start.disabled
    p.start_path.value = str(model)
    p.start.click()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "serving" not in p.message.value:
        time.sleep(0.1)
    try:
        assert "serving tiny-llama.gguf on local:" in p.message.value, p.message.value
        port = serve.servers()[0].port
        assert p.provider.value == "local" and p.model.value == f"local:{port}"
        assert p.key_row.layout.display == "none" and not p.start.disabled and p.start_path.value == ""
        p.switch.click()
        assert str(session.active) == f"local:{port}"
        serve.stop(session, port)
        assert f"{port} (not running)" not in dict((v, k) for k, v in p.model.options).get(f"local:{port}", "")
    finally:
        serve.stop_all(session)


def test_slow_model_list_does_not_freeze_the_panel(session, monkeypatch):
    monkeypatch.setattr(panel_mod, "LIST_TIMEOUT", 0.3)
    release = threading.Event()
    monkeypatch.setattr(session, "models", lambda provider=None: release.wait(10) and [])
    p = Panel(session)
    t0 = time.monotonic()
    p.provider.value = "openai"
    assert time.monotonic() - t0 < 5  # bounded by LIST_TIMEOUT (0.3 s), not the 10 s the list would take
    assert "TIMEOUT" in p.message.value
    assert p.model.options[0][1] == "openai:gpt-5.4-mini"  # the provider default is still offered
    release.set()


def test_local_servers_fill_the_model_list(emulator, llama_server):
    Path(os.environ["JUPYTER_LLM_CONFIG"]).write_text(
        f'default = "local:{llama_server.port}"\n[local]\nscan = [1, 1]\nports = {{ {llama_server.port} = "tiny" }}\n'
        f'[aliases]\nmine = "local:{llama_server.port}"\n')
    p = Panel(Session())
    assert dict((v, k) for k, v in p.provider.options)["local"] == "● local (1 server)"
    label = dict((v, k) for k, v in p.model.options)[f"local:{llama_server.port}"]
    assert label.startswith(f"{llama_server.port} · mine / tiny (model {llama_server.alias}")
    p.test.click()
    assert f"✓ local:{llama_server.port}: ok, model {llama_server.alias}" in p.message.value


def test_close_unsubscribes_and_a_new_panel_replaces_the_old(session):
    from IPython.utils.capture import capture_output
    n = len(session._observers)
    with capture_output():
        show_panel(session)
        first = panel_mod.current_panel(session)
        show_panel(session)
    second = panel_mod.current_panel(session)
    assert first is not second and first.root.comm is None
    assert len(session._observers) == n + 1
    second.root.close()  # closing the widget (not the Panel object) is enough
    assert len(session._observers) == n and panel_mod.current_panel(session) is None
    session.use("openai")  # no error from a dead panel


def test_loading_the_extension_imports_no_widgets():
    code = ("import sys, jupyter_llm, jupyter_llm.magics; "
            "print(sorted(m for m in ('ipywidgets', 'pandas', 'jupyter_llm.panel', 'jupyter_llm.compare') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.strip() == "[]"


# ---- in a real JupyterLab ------------------------------------------------------------------------

def enable_widget_state(lab) -> None:
    """Make Lab save widget state into the .ipynb (off by default): the case a leaked secret would hit."""
    path = Path(lab.home) / "lab-settings" / "@jupyter-widgets" / "jupyterlab-manager" / "plugin.jupyterlab-settings"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"saveState": True}))


def _options(select) -> list[str]:
    return select.evaluate("s => Array.from(s.options).map(o => o.value)")


@pytest.mark.browser
def test_panel_in_jupyterlab_switches_and_never_keeps_the_secret(lab, open_notebook, emulator, llama_server):
    import hashlib
    enable_widget_state(lab)
    lab.write_config(f'default = "local:{llama_server.port}"\n[local]\nscan = [1, 1]\n'
                     f'ports = {{ {llama_server.port} = "tiny" }}\n'
                     f'[providers.openai]\nbase_url = "{emulator.url("openai")}"\n')
    nb = open_notebook("panel_e2e.ipynb", cells=[])
    nb.run("%load_ext jupyter_llm\n%llm panel")
    page = nb.page
    panel = page.locator(".jupyter-llm-panel")
    panel.wait_for(state="visible")
    provider, model = panel.locator("select").nth(0), panel.locator("select").nth(1)
    # the views of the panel's children render asynchronously: wait for their state rather than read it at once
    from tests.lab import expect, settle
    expect()(provider).to_have_value("● local (1 server)", timeout=20_000)
    options = settle(lambda: _options(model), lambda vs: any(v.startswith(f"{llama_server.port} · tiny") for v in vs))
    assert any(v.startswith(f"{llama_server.port} · tiny") for v in options), options

    # choose a target in the browser and press Switch: the kernel's active target changes
    provider.select_option(value="✗ openai (no key)")
    page.wait_for_function("s => Array.from(s.options).some(o => o.value.startsWith('gpt-4.1-mini'))",
                           arg=model.element_handle())
    model.select_option(value=next(v for v in _options(model) if v.startswith("gpt-4.1-mini")))
    panel.get_by_role("button", name="Switch").click()
    panel.get_by_text("openai has no key yet").wait_for()  # warned before switching without a credential
    panel.get_by_role("button", name="Switch anyway").click()
    panel.get_by_text("using openai:gpt-4.1-mini").wait_for()
    assert nb.run_text("import jupyter_llm; print(jupyter_llm.session().active)").strip() == "openai:gpt-4.1-mini"

    # a switch by magic shows in the panel at once
    nb.run(f"%llm use local:{llama_server.port}")
    page.wait_for_function("s => s.value === '● local (1 server)'", arg=provider.element_handle())
    page.screenshot(path="/tmp/jupyter-llm-panel.png")

    # type the canary: leaving the field takes it out of the widget; Save key stores it
    provider.select_option(value="✗ openai (no key)")
    secret = panel.locator("input[type=password]")
    secret.fill(CANARY)
    secret.press("Tab")
    panel.get_by_text("key received (****2461)").wait_for()
    expect()(secret).to_have_value("")  # the kernel's clear reaches the view as a comm update
    panel.get_by_role("button", name="Save key").click()
    panel.get_by_text("stored the openai credential in the OS keyring").wait_for()
    page.wait_for_function("s => s.value === '✓ openai'", arg=provider.element_handle())
    digest = hashlib.sha256(CANARY.encode()).hexdigest()
    out = nb.run_text("import hashlib\nfrom jupyter_llm.providers import spec_for\ns = jupyter_llm.session()\n"
                      "a = s.credentials.lookup(spec_for('openai', s.config))\n"
                      "print(a.source, hashlib.sha256(a.secret.encode()).hexdigest())")
    assert out.split() == ["keyring", digest]
    page.screenshot(path="/tmp/jupyter-llm-panel-saved.png")

    nb.save()
    saved = (lab.root / "panel_e2e.ipynb").read_text()
    state = json.loads(saved)["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    passwords = [m["state"] for m in state.values() if m["model_name"] == "PasswordModel"]
    assert passwords and all(p.get("value", "") == "" for p in passwords)  # defaults are left out
    assert CANARY not in saved
