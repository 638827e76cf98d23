"""JupyterLab + Playwright fixtures: a Lab server on 127.0.0.1 driven by Debian chromium (tests marked `browser`)."""

# Fixtures:
# - `lab` (session): a running `Lab` (url, token, root, env, config_path, ...) with isolated Jupyter paths.
# - `browser` (session): a Playwright chromium `Browser` on /usr/bin/chromium (never a downloaded one).
# - `page` (function): a fresh Playwright `Page` in its own context; `page.console_messages` and
#   `page.page_errors` collect the browser console.
# - `open_notebook` (function): `open_notebook(name, cells=None) -> Notebook`, writes the notebook
#   (when `cells` is given or it does not exist), opens it and waits for its kernel to be idle.
#   Kernels of notebooks it opened are shut down after the test.
#
# `Notebook` (from open_notebook) drives a notebook through `window.jupyterapp`: run(code) -> nbformat outputs,
# run_text(code), eval(js), eval_app(js), command(id, args), activate(), cell(i) (a Locator), cell_sources(),
# wait_ready(), kernel_status(), restart_kernel(), save(); `settle(read, until)` polls a read until it holds.
# `lab.write_config(toml)` sets the jupyter-llm config
# new kernels read; `lab.write_notebook`, `lab.api`, `lab.shutdown_kernels`, `lab.log()` help too.
from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

CHROMIUM = os.environ.get("JUPYTER_LLM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
                 "--disable-dev-shm-usage"]
REPO = Path(__file__).resolve().parents[1]
PROVIDER_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY", "GEMINI_API_KEY", "DEEPSEEK_API_KEY",
                 "GROQ_API_KEY", "TOGETHER_API_KEY", "OPENROUTER_API_KEY")

# JS helpers evaluated in the page; `findPanel(path)` returns the NotebookPanel open on `path`.
_FIND_PANEL = """
const findPanel = (path) => {
  const app = window.jupyterapp;
  if (!app) { return null; }
  for (const w of app.shell.widgets('main')) {
    if (w.context && w.context.path === path && w.content && w.sessionContext) { return w; }
  }
  return null;
};
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    """A running JupyterLab server; `env` is the environment its kernels inherit."""
    url: str
    token: str
    root: Path
    home: Path
    env: dict[str, str]
    process: subprocess.Popen
    log_path: Path

    @property
    def config_path(self) -> Path:
        """The jupyter-llm config file kernels read (JUPYTER_LLM_CONFIG)."""
        return Path(self.env["JUPYTER_LLM_CONFIG"])

    def write_config(self, text: str) -> Path:
        """Write the jupyter-llm config TOML that kernels started from now on will read."""
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(text)
        return self.config_path

    def notebook_url(self, path: str) -> str:
        """URL opening `path` (relative to root) in a fresh workspace."""
        return f"{self.url}lab/tree/{path}?reset&token={self.token}"

    def write_notebook(self, path: str, cells: list[str] | None = None, kernel: str = "python3") -> Path:
        """Write a notebook of code cells (a string starting with '# md' makes a markdown cell)."""
        nb_cells = []
        for i, src in enumerate(cells or []):
            if src.startswith("# md\n"):
                nb_cells.append({"cell_type": "markdown", "id": f"cell-{i}", "metadata": {}, "source": src[5:]})
            else:
                nb_cells.append({"cell_type": "code", "id": f"cell-{i}", "metadata": {}, "source": src,
                                 "outputs": [], "execution_count": None})
        nb = {"cells": nb_cells, "nbformat": 4, "nbformat_minor": 5,
              "metadata": {"kernelspec": {"name": kernel, "display_name": "Python 3", "language": "python"},
                           "language_info": {"name": "python"}}}
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(nb, indent=1))
        return target

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the server's REST API (`path` like "api/sessions"); returns the decoded JSON or None."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def shutdown_kernels(self, paths: list[str] | None = None) -> None:
        """Delete the sessions (and kernels) of `paths`, or of every notebook when None."""
        for s in self.api("GET", "api/sessions") or []:
            if paths is None or s.get("path") in paths:
                try:
                    self.api("DELETE", f"api/sessions/{s['id']}")
                except urllib.error.HTTPError:
                    pass

    def log(self) -> str:
        """The server's log so far (for failure messages)."""
        return self.log_path.read_text(errors="replace")


def lab_env(home: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for Lab and its kernels: own Jupyter/IPython paths, jupyter-llm config, data and keyring."""
    env = dict(os.environ if base is None else base)
    for var in PROVIDER_KEYS:
        env.pop(var, None)
    env.update({
        "JUPYTER_CONFIG_DIR": str(home / "jupyter-config"),
        "JUPYTER_DATA_DIR": str(home / "jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(home / "jupyter-runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "lab-workspaces"),
        "IPYTHONDIR": str(home / "ipython"),
        "JUPYTER_LLM_CONFIG": str(home / "llm" / "config.toml"),
        "JUPYTER_LLM_DATA_DIR": str(home / "llm" / "data"),
        "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
        "KEYRING_PROPERTY_FILE_PATH": str(home / "llm" / "keyring.cfg"),
        "XDG_DATA_HOME": str(home / "xdg-data"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])),
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("JUPYTER_PATH", None)  # installed extensions and kernelspecs come from sys.prefix
    return env


def _prepare_home(home: Path) -> None:
    settings = home / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    config = home / "jupyter-config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "jupyter_server_config.json").write_text(json.dumps({
        "ServerApp": {"terminals_enabled": False},
        "LabApp": {"expose_app_in_browser": True, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate", "news_url": None,
                   "extension_manager": "readonly"},
    }))
    for sub in ("jupyter-data", "jupyter-runtime", "lab-workspaces", "ipython", "llm/data", "xdg-data"):
        (home / sub).mkdir(parents=True, exist_ok=True)


def start_lab(home: Path, root: Path, env: dict[str, str] | None = None, timeout: float = 60) -> Lab:
    """Start JupyterLab on a free 127.0.0.1 port and wait until its API answers."""
    _prepare_home(home)
    root.mkdir(parents=True, exist_ok=True)
    env = env if env is not None else lab_env(home)
    token = secrets.token_hex(16)
    log_path = home / "lab.log"
    last_error = ""
    for _ in range(3):  # the free port may be taken between probing and binding
        port = _free_port()
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
               f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False"]
        log = open(log_path, "ab")
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        lab = Lab(f"http://127.0.0.1:{port}/", token, root, home, env, proc, log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                lab.api("GET", "api/status")
                return lab
            except (urllib.error.URLError, ConnectionError, OSError) as exc:
                last_error = str(exc)
                time.sleep(0.2)
        stop_lab(lab)
    raise RuntimeError(f"JupyterLab did not start ({last_error}):\n{log_path.read_text(errors='replace')[-3000:]}")


def stop_lab(lab: Lab) -> None:
    """Stop the server (it shuts its kernels down) and wait for it."""
    if lab.process.poll() is None:
        lab.process.terminate()
        try:
            lab.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            lab.process.kill()
            lab.process.wait(timeout=5)


@pytest.fixture(scope="session")
def lab(tmp_path_factory) -> Iterator[Lab]:
    """A JupyterLab server on 127.0.0.1 with its own Jupyter paths; kernels inherit `lab.env`."""
    home = tmp_path_factory.mktemp("lab-home")
    server = start_lab(home, home / "root")
    try:
        yield server
    finally:
        stop_lab(server)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian chromium through Playwright's sync API."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium, or set JUPYTER_LLM_CHROMIUM)")
    from playwright.sync_api import sync_playwright
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


@pytest.fixture
def page(browser) -> Iterator[Any]:
    """A fresh page in its own browser context; console output lands in `page.console_messages`."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(30_000)
    pg = context.new_page()
    pg.console_messages = []
    pg.page_errors = []
    pg.on("console", lambda m: pg.console_messages.append((m.type, m.text)))
    pg.on("pageerror", lambda e: pg.page_errors.append(str(e)))
    try:
        yield pg
    finally:
        context.close()


@dataclass
class Notebook:
    """A notebook open in the page; helpers go through `window.jupyterapp`, not the DOM."""
    page: Any
    lab: Lab
    path: str
    _js: str = field(default=_FIND_PANEL, repr=False)

    def eval(self, body: str, arg: Any = None) -> Any:
        """Evaluate `body` (a JS function body with `panel`, `app` and `arg` in scope; may await)."""
        script = (f"async ([path, arg]) => {{ {self._js} const app = window.jupyterapp; "
                  f"const panel = findPanel(path); if (!panel) {{ throw new Error('no panel for ' + path); }} "
                  f"{body} }}")
        return self.page.evaluate(script, [self.path, arg])

    def eval_app(self, body: str, arg: Any = None) -> Any:
        """Evaluate `body` with only `app` and `arg` in scope (works while this notebook is closed)."""
        return self.page.evaluate(f"async (arg) => {{ const app = window.jupyterapp; {body} }}", arg)

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until the app started, the panel exists and its kernel is connected and idle."""
        script = (f"(path) => {{ {self._js} const p = findPanel(path); const sc = p && p.sessionContext; "
                  "const k = sc && sc.session && sc.session.kernel; "
                  "return !!(sc && sc.isReady && k && k.connectionStatus === 'connected' && k.status === 'idle'); }")
        self.page.wait_for_function(script, arg=self.path, timeout=timeout * 1000, polling=100)

    def kernel_status(self) -> str | None:
        """The kernel's status ('idle', 'busy', ...) or None without a kernel."""
        return self.eval("const k = panel.sessionContext.session?.kernel; return k ? k.status : null;")

    def activate(self) -> None:
        """Make this notebook the current widget (commands act on it)."""
        self.eval("app.shell.activateById(panel.id); panel.content.activate();")

    def command(self, command_id: str, args: dict | None = None) -> Any:
        """Run an app command with this notebook current (awaits its result)."""
        self.activate()
        return self.eval("const r = await app.commands.execute(arg[0], arg[1]); "
                         "try { return JSON.parse(JSON.stringify(r ?? null)); } catch (e) { return null; }",
                         [command_id, args or {}])

    def run(self, code: str, timeout: float = 60) -> list[dict]:
        """Append a code cell with `code`, run it, wait for it to finish and return its nbformat outputs."""
        self.activate()
        body = """
          const nb = panel.content;
          const model = nb.model;
          model.sharedModel.insertCell(model.cells.length, {cell_type: 'code', source: arg[0]});
          nb.activeCellIndex = model.cells.length - 1;
          nb.deselectAll();
          const cell = model.cells.get(model.cells.length - 1);
          const done = app.commands.execute('notebook:run-cell');
          const late = new Promise((_, reject) => setTimeout(
            () => reject(new Error('cell did not finish in ' + arg[1] + ' s')), arg[1] * 1000));
          await Promise.race([done, late]);
          return cell.outputs.toJSON();
        """
        outputs = self.eval(body, [code, timeout])
        self.wait_ready(timeout)
        return outputs

    def start(self, code: str) -> None:
        """Append a code cell and start running it without waiting for it to finish."""
        self.activate()
        self.eval("""
          const nb = panel.content, model = nb.model;
          model.sharedModel.insertCell(model.cells.length, {cell_type: 'code', source: arg});
          nb.activeCellIndex = model.cells.length - 1;
          nb.deselectAll();
          app.commands.execute('notebook:run-cell');
        """, code)

    def run_text(self, code: str, timeout: float = 60) -> str:
        """Run `code` like `run` and return its outputs as plain text."""
        return outputs_text(self.run(code, timeout))

    def cell_sources(self) -> list[str]:
        """Sources of every cell, in order."""
        return self.eval("const cells = panel.content.model.cells; "
                         "return Array.from({length: cells.length}, (_, i) => cells.get(i).sharedModel.getSource());")

    def cell(self, index: int) -> Any:
        """Locator of the cell widget at `index` (negative counts from the end)."""
        cells = self.page.locator(f"#{self.panel_id()} .jp-Notebook .jp-Cell")
        return cells.nth(index) if index >= 0 else cells.nth(cells.count() + index)

    def panel_id(self) -> str:
        """The DOM id of the notebook panel."""
        return self.eval("return panel.id;")

    def restart_kernel(self, timeout: float = 60) -> None:
        """Restart the kernel without the confirmation dialog and wait for idle."""
        self.eval("await panel.sessionContext.session.kernel.restart();")
        self.wait_ready(timeout)

    def save(self) -> None:
        """Save the notebook to disk."""
        self.eval("await panel.context.save();")


def settle(read: Callable[[], Any], until: Callable[[Any], bool], timeout: float = 20.0, interval: float = 0.2) -> Any:
    """`read()` polled until `until(value)` holds or `timeout` passes; returns the last value for the test to assert
    on. The page renders outputs, runs commands and applies widget and comm updates asynchronously: a read right
    after an action can see the state before it, so tests read the state they wait for, not the first one."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if until(value) or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def expect():
    """Playwright's auto-waiting `expect` (imported on use: collecting the tests needs no browser)."""
    from playwright.sync_api import expect as playwright_expect
    return playwright_expect


def palette(page, text: str) -> None:
    """Open the command palette, filter by `text` and run the first match."""
    page.keyboard.press("Escape")
    page.keyboard.press("Control+Shift+C")
    box = page.locator(".lm-CommandPalette-input")
    box.wait_for(state="visible")
    box.fill(text)
    page.locator(".lm-CommandPalette-item:not(.lm-mod-disabled)", has_text=text).first.click()


def outputs_text(outputs: list[dict]) -> str:
    """Join stream text, text/plain of results and displays, and `ename: evalue` of errors."""
    parts = []
    for out in outputs:
        kind = out.get("output_type")
        if kind == "stream":
            text = out.get("text", "")
            parts.append("".join(text) if isinstance(text, list) else text)
        elif kind in ("execute_result", "display_data"):
            text = out.get("data", {}).get("text/plain", "")
            parts.append(("".join(text) if isinstance(text, list) else text) + "\n")
        elif kind == "error":
            parts.append(f"{out.get('ename')}: {out.get('evalue')}\n")
    return "".join(parts)


def open_in_page(page: Any, lab: Lab, path: str, timeout: float = 90) -> Notebook:
    """Navigate `page` to the notebook at `path` and wait for its kernel to be idle."""
    page.goto(lab.notebook_url(path), wait_until="domcontentloaded")
    page.wait_for_function("() => !!(window.jupyterapp && window.jupyterapp.shell)", timeout=timeout * 1000)
    nb = Notebook(page, lab, path)
    nb.wait_ready(timeout)
    return nb


@pytest.fixture
def open_notebook(page, lab) -> Iterator[Callable[..., Notebook]]:
    """`open_notebook(path, cells=None)`: write (if needed), open and wait for an idle kernel."""
    opened: list[str] = []

    def _open(path: str, cells: list[str] | None = None) -> Notebook:
        if cells is not None or not (lab.root / path).exists():
            lab.write_notebook(path, cells)
        opened.append(path)
        return open_in_page(page, lab, path)

    yield _open
    try:
        lab.shutdown_kernels(opened)
    except Exception:
        pass


def screenshot_dir() -> Path:
    """Where browser tests put screenshots (JUPYTER_LLM_SCREENSHOTS, default /tmp)."""
    d = Path(os.environ.get("JUPYTER_LLM_SCREENSHOTS", "/tmp"))
    d.mkdir(parents=True, exist_ok=True)
    return d


__all__ = ["Lab", "Notebook", "CHROMIUM", "CHROMIUM_ARGS", "lab_env", "start_lab", "stop_lab", "open_in_page",
           "outputs_text", "screenshot_dir", "settle", "expect", "palette"]
