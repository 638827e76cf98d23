"""Local servers in a real JupyterLab (Debian chromium): a server on a non-default port reached from the panel and
the picker after `%llm discover`; `%llm serve` then a stream; a Lab kernel restart stops what it served; the
panel at 900 px with the file browser open."""
from __future__ import annotations

import re

import pytest

from tests.lab import expect, palette, screenshot_dir, settle
from tests.llama import llama_server_module
from tests.test_serve import gone

pytestmark = pytest.mark.browser
STATUS = '[data-jupyter-llm="status"]'


def test_server_on_another_port_from_the_panel_and_the_picker(lab, open_notebook, llama_server):
    port = llama_server.port
    lab.write_config('[local]\nscan = [1, 1]\n')  # nothing configured, nothing on the default range
    nb = open_notebook("discover_e2e.ipynb", cells=[])
    page = nb.page
    nb.run("%load_ext jupyter_llm")
    out = nb.run_text(f"%llm discover --ports {port}-{port}")
    assert re.search(rf"^{port}\s.*local:{port}$", out, re.M), out

    # the panel (and its ⟳) offers the discovered server; Switch uses it
    nb.run("%llm panel")
    panel = page.locator(".jupyter-llm-panel")
    panel.wait_for(state="visible")
    provider, model = panel.locator("select").nth(0), panel.locator("select").nth(1)
    # widget views render their children and apply kernel updates asynchronously: wait for the state, then check it
    expect()(provider).to_have_value("● local (1 server)", timeout=20_000)
    panel.locator("button[title^='scan servers']").click()
    nb.run("pass")  # the kernel handles comm and execute messages in order: the rescan is done when this cell is
    options = settle(lambda: model.evaluate("s => Array.from(s.options).map(o => o.value)"),
                     lambda vs: any(v.startswith(f"{port} ") for v in vs))
    label = next((v for v in options if v.startswith(f"{port} ")), None)
    assert label, options
    model.select_option(value=label)
    panel.get_by_role("button", name="Switch").click()
    panel.get_by_text(f"using local:{port}").wait_for()
    expect()(page.locator(STATUS)).to_have_text(f"LLM: local:{port} · $0.0000")
    # the key row is hidden for local servers
    expect()(panel.locator("input[type=password]")).to_be_hidden()

    # away to a cloud model, and back through the picker: it lists the server, and takes free text
    nb.run("%llm use openai:gpt-4o-mini")
    expect()(page.locator(STATUS)).to_have_text("LLM: openai:gpt-4o-mini · $0.0000")
    palette(page, "LLM: Switch model")
    dialog = page.locator(".jp-Dialog")
    box = dialog.locator("input")
    box.wait_for(state="visible")
    options = dialog.locator("datalist option").evaluate_all("os => os.map(o => o.value)")
    assert f"local:{port}" in options and "local" in options and "anthropic:claude-haiku-5-5" in options
    page.screenshot(path=str(screenshot_dir() / "jupyter-llm-picker-local.png"))
    box.fill(f"local:{port}")
    dialog.locator(".jp-mod-accept").click()
    expect()(page.locator(STATUS)).to_have_text(f"LLM: local:{port} · $0.0000")
    palette(page, "LLM: Switch model")
    box = page.locator(".jp-Dialog input")
    box.wait_for(state="visible")
    box.fill("groq:llama-3.3-70b-versatile")  # not in any list: typed by hand
    page.locator(".jp-Dialog .jp-mod-accept").click()
    expect()(page.locator(STATUS)).to_have_text("LLM: groq:llama-3.3-70b-versatile · $0.0000")

    # 900 px wide with the file browser open: the panel wraps instead of overflowing
    page.set_viewport_size({"width": 900, "height": 800})
    nb.eval_app("await app.commands.execute('filebrowser:activate');")
    page.locator("#filebrowser").wait_for(state="visible")
    page.wait_for_function("""() => { const fb = document.querySelector('#filebrowser').getBoundingClientRect();
        return fb.width > 0 && document.querySelector('#jp-main-dock-panel').getBoundingClientRect().left >= fb.right - 1; }""")
    root = panel.element_handle()
    geometry = """(el) => { const out = el.closest('.jp-OutputArea-output') || el.parentElement;
        return [el.getBoundingClientRect().right, out.getBoundingClientRect().right, el.scrollWidth, el.clientWidth]; }"""
    # Lumino lays the narrower notebook out on later frames: give the layout time to settle, then measure it
    fits = settle(lambda: page.evaluate(geometry, root), lambda f: f[0] <= f[1] + 1 and f[2] <= f[3] + 1, timeout=10)
    page.screenshot(path=str(screenshot_dir() / "jupyter-llm-panel-900px.png"))
    assert fits[0] <= fits[1] + 1 and fits[2] <= fits[3] + 1, fits


def test_serve_then_stream_and_a_restart_stops_it(lab, open_notebook):
    model = llama_server_module().ensure_model()
    lab.write_config('[local]\nscan = [1, 1]\n')
    nb = open_notebook("serve_e2e.ipynb", cells=[])
    page = nb.page
    nb.run("%load_ext jupyter_llm")
    out = nb.run_text(f"%llm serve {model} --alias web", timeout=120)
    assert "serving tiny-llama.gguf as 'web'" in out and "use it with %llm use local:web" in out, out
    port = int(re.search(r"127\.0\.0\.1:(\d+)", out).group(1))
    pid = int(re.search(r"pid (\d+)", out).group(1))
    nb.run("%llm use local:web")
    expect()(page.locator(STATUS)).to_have_text(f"LLM: local:{port}/web · $0.0000")
    nb.start("%%llm --max-tokens 40 -t 0\nTell me about the river.")
    cell = nb.cell(-1)
    rendered = cell.locator(".jp-RenderedMarkdown")
    rendered.first.wait_for(timeout=60_000)
    nb.wait_ready(60)
    # idle kernel, but the last Markdown update may still be rendering: read the answer once it is all there
    text = settle(lambda: rendered.first.inner_text(), lambda t: len(t.split()) >= 20)
    assert len(text.split()) >= 20, text
    assert nb.run_text("print(_llm.ok, _llm.answered_by)").split() == ["True", f"local:{port}/web"]
    servers = nb.run_text("%llm servers")
    assert str(pid) in servers and "local:web" in servers
    page.screenshot(path=str(screenshot_dir() / "jupyter-llm-serve-stream.png"))
    nb.restart_kernel()  # Kernel > Restart: the served model goes with the old kernel
    assert gone(pid), f"pid {pid} survived the restart"
    expect()(page.locator(STATUS)).to_be_hidden()


def test_the_quickstart_runs_as_it_is_in_jupyterlab(lab, open_notebook):
    """What `make lab` opens: the tutorial, no config, Run All; it generates the model and serves it itself."""
    import shutil
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    (lab.root / "notebooks").mkdir(exist_ok=True)
    shutil.copy(repo / "notebooks" / "quickstart.ipynb", lab.root / "notebooks" / "quickstart.ipynb")
    (lab.root / "scripts").mkdir(exist_ok=True)
    shutil.copy(repo / "scripts" / "make_tiny_gguf.py", lab.root / "scripts" / "make_tiny_gguf.py")
    lab.config_path.unlink(missing_ok=True)  # no hidden config
    nb = open_notebook("notebooks/quickstart.ipynb")
    page = nb.page
    nb.activate()
    nb.eval("await app.commands.execute('notebook:run-all-cells');")
    page.wait_for_function(
        """(path) => { const w = Array.from(window.jupyterapp.shell.widgets('main')).find(w => w.context && w.context.path === path);
           const cells = w.content.model.cells; let done = 0, code = 0;
           for (let i = 0; i < cells.length; i++) { const c = cells.get(i);
             if (c.type === 'code') { code++; if (c.executionCount) { done++; } } }
           return code > 0 && done === code && w.sessionContext.session.kernel.status === 'idle'; }""",
        arg="notebooks/quickstart.ipynb", timeout=180_000, polling=500)
    cells = nb.eval("const cs = panel.content.model.cells; return Array.from({length: cs.length}, (_, i) => "
                    "({src: cs.get(i).sharedModel.getSource(), tags: cs.get(i).getMetadata('tags') || [], "
                    "out: cs.get(i).type === 'code' ? cs.get(i).outputs.toJSON() : []}));")
    errors = [c["src"] for c in cells if any(o["output_type"] == "error" or
                                             (o["output_type"] == "stream" and o["name"] == "stderr") for o in c["out"])
              and "raises-exception" not in c["tags"]]
    assert errors == [], errors
    assert (lab.root / ".cache" / "models" / "tiny-llama.gguf").exists()
    answers = nb.page.locator(f"#{nb.panel_id()} .jp-OutputArea .jp-RenderedMarkdown")  # the %%llm answers
    expect()(answers.nth(2)).to_be_attached(timeout=30_000)  # Markdown renders asynchronously after the idle kernel
    assert answers.count() >= 3
    page.screenshot(path=str(screenshot_dir() / "jupyter-llm-quickstart-in-lab.png"), full_page=True)
    stop = next(c for c in cells if c["src"] == "%llm stop all")
    assert "stopped 2 servers" in "".join(o.get("text", "") for o in stop["out"])
