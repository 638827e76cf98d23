"""Run-wide test setup (root conftest, so it also governs `pytest notebooks/...`): a private (empty) config,
data dir and keyring for everything the run starts. The notebooks bring up their own llama.cpp servers."""
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
