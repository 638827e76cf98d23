"""Honest lower bounds: the provider wire tests and real-kernel tests pass with the oldest versions pyproject allows.

A venv is resolved with `uv pip install --resolution lowest-direct` from pyproject's dependencies (plus
the `[local]` extra and the few test tools these files need, at their declared minimums), then a pytest
in that venv runs the files below. The venv is cached under .cache/lowest/, keyed by a hash of the
dependency lists, the Python version and uv's version: re-runs reuse it, any change to a bound makes
a new one. Delete .cache/lowest to force it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
from packaging.version import Version

from tests.llama import ROOT

pytestmark = pytest.mark.install

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
DEPENDENCIES = PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["local"]
# test tools these files need, with the bounds [test] declares
TOOLS = {"pytest", "pytest-timeout", "jupyter-client", "keyrings-alt", "nbval", "gguf"}
FILES = ["tests/test_providers_wire.py", "tests/test_auth_methods.py", "tests/test_session.py",
         "tests/test_magics.py", "tests/test_llamacpp.py", "tests/test_kernel.py", "tests/test_panel.py"]
VENVS = ROOT / ".cache" / "lowest"


def _name(req: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", req).group(0)).lower()


def _tools() -> list[str]:
    return [r for r in PYPROJECT["optional-dependencies"]["test"] if _name(r) in TOOLS]


def _uv() -> list[str]:
    found = shutil.which("uv", path=os.path.dirname(sys.executable)) or shutil.which("uv")
    if found is None:
        pytest.fail("uv is needed for --resolution lowest-direct: pip install uv (it is in the [test] extra)")
    return [found]


@pytest.fixture(scope="module")
def lowest():
    """The lowest-direct venv's python, built once per dependency list."""
    uv = _uv()
    version = subprocess.run([*uv, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    spec = [*DEPENDENCIES, *_tools()]
    key = hashlib.sha256(json.dumps([spec, sys.version, version]).encode()).hexdigest()[:20]
    venv = VENVS / key
    python = venv / "bin" / "python"
    if not (venv / ".complete").is_file():
        VENVS.mkdir(parents=True, exist_ok=True)
        for old in VENVS.iterdir():  # older keys are for dependency lists that no longer exist
            shutil.rmtree(old, ignore_errors=True)
        subprocess.run([*uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
        subprocess.run([*uv, "pip", "install", "--quiet", "--python", str(python), "--resolution", "lowest-direct",
                        *spec], check=True)
        (venv / ".complete").write_text(json.dumps(spec, indent=1) + "\n")
    return python


def _installed(python) -> dict[str, str]:
    code = ("import importlib.metadata as m, json\n"
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in json.loads(out.stdout).items()}


def test_each_runtime_dependency_is_installed_at_its_declared_minimum(lowest):
    installed = _installed(lowest)
    for req in DEPENDENCIES:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(>=|==)\s*([0-9][^,;\s]*)", req.strip())
        assert m, f"{req!r}: every dependency needs a lower bound (>= or ==)"
        name, _, minimum = m.groups()
        got = installed.get(_name(name))
        assert got is not None and Version(got) == Version(minimum), f"{req}: lowest-direct installed {got}"


def test_wire_and_kernel_tests_pass_with_the_lowest_versions(lowest, llama_server):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["JUPYTER_LLM_TEST_LLAMA_PORT"] = str(llama_server.port)  # reuse this session's llama.cpp server
    run = subprocess.run([str(lowest), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not browser",
                          "-o", "addopts=-ra --timeout=300", *FILES],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    tail = "\n".join((run.stdout + run.stderr).strip().splitlines()[-40:])
    assert run.returncode == 0, tail
    assert re.search(r"\b\d{2,} passed", tail), tail
