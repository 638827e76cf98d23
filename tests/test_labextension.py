"""The JupyterLab extension in headless chromium: status item, palette commands, kernels without jupyter_llm."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.lab import expect, palette, screenshot_dir, settle

pytestmark = pytest.mark.browser

STATUS = '[data-jupyter-llm="status"]'
CONFIG = """\
default = "local:8081"
[aliases]
fast = "groq:llama-3.1-8b-instant"
"""


@pytest.fixture(scope="module", autouse=True)
def extension_installed():
    """Fail clearly when the prebuilt extension is not installed (built by `pip install -e .`, needs Node)."""
    from jupyter_core.paths import jupyter_path
    found = [p for p in jupyter_path("labextensions") if (Path(p) / "jupyter-llm-labextension" / "package.json").exists()]
    if not found:
        pytest.fail("jupyter-llm-labextension is not installed: run `pip install -e .` with Node >= 20 on PATH "
                    "(or `cd labextension && jlpm && jlpm build`, then reinstall)")


@pytest.fixture(autouse=True)
def llm_config(lab):
    """Every kernel in these tests starts on local:8081 with one alias."""
    lab.write_config(CONFIG)


def llm_console_errors(page):
    """Console errors and page errors that come from this extension or its comm."""
    bad = re.compile(r"jupyter[-_]llm|comm", re.I)
    errors = [text for kind, text in page.console_messages if kind == "error" and bad.search(text)]
    return errors + [e for e in page.page_errors if bad.search(e)]


def test_status_item_appears_on_load_and_follows_use(open_notebook):
    nb = open_notebook("status.ipynb", ["# md\n# jupyter-llm status bar"])
    status = nb.page.locator(STATUS)
    expect()(status).to_be_hidden()
    assert nb.run_text("%load_ext jupyter_llm") == ""
    expect()(status).to_have_text("LLM: local:8081 · $0.0000")
    assert "using openai:gpt-4o-mini" in nb.run_text("%llm use openai:gpt-4o-mini")
    expect()(status).to_have_text("LLM: openai:gpt-4o-mini · $0.0000")
    nb.page.screenshot(path=str(screenshot_dir() / "jupyter-llm-labextension.png"))
    assert llm_console_errors(nb.page) == []


def test_switch_model_from_the_palette(open_notebook):
    nb = open_notebook("switch.ipynb", [])
    nb.run("%load_ext jupyter_llm")
    page = nb.page
    expect()(page.locator(STATUS)).to_have_text("LLM: local:8081 · $0.0000")
    palette(page, "LLM: Switch model")
    dialog = page.locator(".jp-Dialog")
    box = dialog.locator("input")
    box.wait_for(state="visible")
    options = dialog.locator("datalist option").evaluate_all("os => os.map(o => o.value)")
    assert options[0] == "local:8081"
    assert {"local", "fast", "openai:gpt-5.4-mini", "anthropic:claude-haiku-5-5"} <= set(options)
    box.fill("anthropic:claude-haiku-5-5")
    page.screenshot(path=str(screenshot_dir() / "jupyter-llm-switch-dialog.png"))
    dialog.locator(".jp-mod-accept").click()
    expect()(page.locator(STATUS)).to_have_text("LLM: anthropic:claude-haiku-5-5 · $0.0000")
    assert nb.run_text("import jupyter_llm; print(jupyter_llm.session().active)") == \
        "anthropic:claude-haiku-5-5\n"
    # an alias from the picker resolves in the kernel
    nb.command("jupyter-llm:switch-model", {"target": "fast"})
    expect()(page.locator(STATUS)).to_have_text("LLM: groq:llama-3.1-8b-instant · $0.0000")
    assert llm_console_errors(page) == []


def test_insert_prompt_cell(open_notebook):
    nb = open_notebook("insert.ipynb", ["x = 1", "y = 2"])
    nb.eval("panel.content.activeCellIndex = 0;")
    palette(nb.page, "LLM: Insert prompt cell")
    expected = ["x = 1", "%%llm\n", "y = 2"]  # the command runs after the click returns: read it once it ran
    assert settle(nb.cell_sources, lambda s: s == expected) == expected
    nb.page.wait_for_function("() => window.jupyterapp.shell.currentWidget.content.mode === 'edit'")
    nb.page.keyboard.type("Say hi")
    assert settle(nb.cell_sources, lambda s: s[1] == "%%llm\nSay hi")[1] == "%%llm\nSay hi"


def test_kernel_without_the_extension_shows_nothing(open_notebook):
    nb = open_notebook("plain.ipynb", [])
    assert nb.run_text("print(1 + 1)") == "2\n"
    page = nb.page
    page.wait_for_timeout(500)
    expect()(page.locator(STATUS)).to_be_hidden()
    assert nb.eval("return app.commands.isEnabled('jupyter-llm:switch-model');") is False
    assert nb.eval("return app.commands.isEnabled('jupyter-llm:insert-prompt-cell');") is True
    assert llm_console_errors(page) == []
    assert not [text for kind, text in page.console_messages if kind == "error"], page.console_messages


def test_console_reload_restart_unload_and_notebook_switch(open_notebook, lab):
    nb = open_notebook("robust.ipynb", [])
    page = nb.page
    status = page.locator(STATUS)
    # a console that connected to the kernel first handles its comms: the notebook's item still works
    kernel_id = nb.eval("const id = panel.sessionContext.session.kernel.id; await panel.context.save(); "
                        "panel.dispose(); return id;")
    nb.eval_app("await app.commands.execute('console:create', {kernelPreference: {id: arg}});", kernel_id)
    page.locator(".jp-CodeConsole").wait_for(state="visible")
    nb.eval_app("await app.commands.execute('docmanager:open', {path: arg});", "robust.ipynb")
    nb.wait_ready()
    assert nb.eval("return panel.sessionContext.session.kernel.handleComms;") is False
    nb.run("%load_ext jupyter_llm")
    expect()(status).to_have_text("LLM: local:8081 · $0.0000")
    nb.run("%llm use local:8082")
    expect()(status).to_have_text("LLM: local:8082 · $0.0000")
    nb.eval_app("for (const w of Array.from(app.shell.widgets('main'))) { if (w.console) { w.dispose(); } }")

    # a page opened later adopts the kernel's comm (comm_info) without re-running %load_ext
    nb = open_notebook("robust.ipynb")
    expect()(status).to_have_text("LLM: local:8082 · $0.0000")

    # another notebook whose kernel has no jupyter_llm: the item follows the current notebook
    lab.write_notebook("other.ipynb", [])
    nb.eval("await app.commands.execute('docmanager:open', {path: 'other.ipynb'});")
    other = type(nb)(page, lab, "other.ipynb")
    other.wait_ready()
    other.activate()
    expect()(status).to_be_hidden()
    nb.activate()
    expect()(status).to_have_text("LLM: local:8082 · $0.0000")
    lab.shutdown_kernels(["other.ipynb"])

    # a restart starts a kernel without jupyter_llm
    nb.restart_kernel()
    expect()(status).to_be_hidden()
    nb.run("%load_ext jupyter_llm")
    expect()(status).to_have_text("LLM: local:8081 · $0.0000")

    nb.run("%unload_ext jupyter_llm")
    expect()(status).to_be_hidden()
    assert llm_console_errors(page) == []


def test_status_bar_shows_local_only_mode(open_notebook):
    nb = open_notebook("mode.ipynb", ["# md\n# jupyter-llm local-only mode"])
    status = nb.page.locator(STATUS)
    assert nb.run_text("%load_ext jupyter_llm") == ""
    expect()(status).to_have_text("LLM: local:8081 · $0.0000")
    expect()(status).to_have_attribute("data-mode", "cloud allowed")
    assert "local-only" in nb.run_text("%llm offline on")
    expect()(status).to_have_text("LLM: local:8081 · $0.0000 · local only")
    expect()(status).to_have_attribute("data-mode", "local-only")
    expect()(status).to_have_attribute("title", re.compile("local-only"))
    nb.page.screenshot(path=str(screenshot_dir() / "jupyter-llm-local-only.png"))
    nb.run_text("%llm offline off")
    expect()(status).to_have_text("LLM: local:8081 · $0.0000")
    assert llm_console_errors(nb.page) == []
