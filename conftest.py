"""Run-wide test setup (root conftest, so it also governs `pytest notebooks/...`): a private config,
data dir and keyring for everything the run starts, and real llama.cpp servers for the notebooks."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

_RUN: dict = {}


def pytest_configure(config):
    """Point everything this run starts (kernels, JupyterLab, nbval) at a private tree, never the user's."""
    base = Path(tempfile.mkdtemp(prefix="jupyter-llm-run-"))
    _RUN["base"] = base
    os.environ["JUPYTER_LLM_CONFIG"] = str(base / "config.toml")
    os.environ["JUPYTER_LLM_DATA_DIR"] = str(base / "data")
    os.environ["PYTHON_KEYRING_BACKEND"] = "keyrings.alt.file.PlaintextKeyring"
    os.environ["XDG_DATA_HOME"] = str(base / "xdg-data")
    os.environ["XDG_CONFIG_HOME"] = str(base / "xdg-config")
    os.environ["KEYRING_PROPERTY_FILE_PATH"] = str(base / "keyring.cfg")


def pytest_collection_finish(session):
    """Notebooks run against two real llama.cpp servers, aliased tiny-a and tiny-b in the run's config."""
    if not any(item.nodeid.endswith(".ipynb") or ".ipynb::" in item.nodeid for item in session.items):
        return
    from tests.llama import llama_server_module
    ls = llama_server_module()
    servers = [ls.start_server(alias="tiny-a"), ls.start_server(alias="tiny-b")]
    _RUN["servers"] = servers
    a, b = servers
    Path(os.environ["JUPYTER_LLM_CONFIG"]).write_text(
        f'default = "tiny-a"\n[local]\nports = {{ {a.port} = "tiny-a", {b.port} = "tiny-b" }}\n'
        f'[aliases]\n"tiny-a" = "local:{a.port}"\n"tiny-b" = "local:{b.port}"\n')
    os.environ.setdefault("JUPYTER_LLM_TEST_LLAMA_PORT", str(a.port))


def pytest_unconfigure(config):
    for server in _RUN.get("servers", []):
        server.stop()
