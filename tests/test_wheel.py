"""The package as users get it: `make dist`'s sdist and wheel, the wheel rebuilt from the sdist the way a
downstream packager builds it, and the wheel installed (not editable) into a fresh venv where
`jupyter labextension list` and a real kernel with `%load_ext jupyter_llm` and a `%%llm` cell
against real llama.cpp must work.

The fresh venv is cached under .cache/wheel-venv/, keyed by the wheel's sha256 (hatchling builds
reproducible wheels), the Python version and the install command: an unchanged package reuses it, any
change to what ships builds a new one. Delete .cache/wheel-venv to force it.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.llama import ROOT

pytestmark = pytest.mark.install

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LABEXT_NAME = "jupyter-llm-labextension"
DATA = "share/jupyter/labextensions/" + LABEXT_NAME
VENVS = ROOT / ".cache" / "wheel-venv"
EXTRAS = "local"                       # what a user of the local llama.cpp server installs
ALSO = ["jupyterlab>=4"]               # what a user runs the extension in (not a dependency of ours)


def _version() -> str:
    text = (ROOT / "jupyter_llm" / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


VERSION = _version()


def builder():
    import importlib.util
    mod = sys.modules.get("_jupyter_llm_build_dist")
    if mod is None:
        spec = importlib.util.spec_from_file_location("_jupyter_llm_build_dist", ROOT / "scripts" / "build_dist.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """(sdist, wheel) built from this tree exactly as `make dist` does."""
    return builder().build(tmp_path_factory.mktemp("dist"), log=lambda *a: None)


@pytest.fixture(scope="module")
def wheel_from_sdist(dist, tmp_path_factory):
    return builder().wheel_from_sdist(dist[0], tmp_path_factory.mktemp("from-sdist"))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _metadata(wheel: Path) -> tuple[str, list[tuple[str, str]]]:
    with zipfile.ZipFile(wheel) as z:
        text = z.read(f"jupyter_llm-{VERSION}.dist-info/METADATA").decode()
    head = text.split("\n\n", 1)[0]
    return text, [tuple(line.split(": ", 1)) for line in head.splitlines() if ": " in line]


def test_wheel_carries_the_package_and_the_prebuilt_labextension(dist):
    sdist, wheel = dist
    assert wheel.name == f"jupyter_llm-{VERSION}-py3-none-any.whl"
    names = set(builder().wheel_files(wheel))
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "jupyter_llm").rglob("*.py")
               if "labextension" not in p.parts}
    assert modules and modules <= names, sorted(modules - names)
    data = f"jupyter_llm-{VERSION}.data/data/{DATA}/"
    ext = {n[len(data):] for n in names if n.startswith(data)}
    assert {"package.json", "install.json", "static/style.js"} <= ext, sorted(ext)
    assert any(re.fullmatch(r"static/remoteEntry\.[0-9a-f]+\.js", n) for n in ext), sorted(ext)
    with zipfile.ZipFile(wheel) as z:
        shipped = json.loads(z.read(data + "package.json"))
        install = json.loads(z.read(data + "install.json"))
    assert shipped["name"] == LABEXT_NAME and shipped["version"] == VERSION
    assert shipped["jupyterlab"]["_build"]["load"].startswith("static/remoteEntry.")  # a built, not a source, package.json
    assert install["packageName"] == PROJECT["name"]
    # nothing of the dev tree, and the extension only once (as data, not inside the package)
    assert not [n for n in names if n.startswith(("tests/", "scripts/", "jupyter_llm/labextension/"))]

    text, fields = _metadata(wheel)
    meta = {}
    for key, value in fields:
        meta.setdefault(key, []).append(value)
    assert meta["Version"] == [VERSION] and meta["Name"] == [PROJECT["name"]]
    assert set(meta["Provides-Extra"]) == {"local", "pandas", "test"}
    plain = {r.replace(" ", "") for r in meta["Requires-Dist"] if "extra ==" not in r}
    assert plain == {r.replace(" ", "") for r in PROJECT["dependencies"]}
    assert "Requires-Python: >=3.11" in text and "# jupyter-llm" in text  # the README is the long description

    with tarfile.open(sdist) as tar:
        inside = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    # a packager needs no Node: the built extension is in the sdist, beside its sources and the lockfile
    assert {"jupyter_llm/labextension/static/style.js", "labextension/src/index.ts", "labextension/yarn.lock",
            "labextension/package.json", "pyproject.toml", "LICENSE", "README.md"} <= inside
    assert not [n for n in inside if "node_modules" in n or n.startswith((".venv", ".cache", "dist/"))]


def test_wheel_built_from_the_sdist_has_the_same_files(dist, wheel_from_sdist):
    assert builder().same_files(dist[1], wheel_from_sdist) == []


def _venv_for(wheel: Path) -> Path:
    """A venv with `wheel[local]` and JupyterLab installed by pip, reused while the wheel is unchanged."""
    spec = [f"{wheel.name}[{EXTRAS}]", *ALSO]
    key = hashlib.sha256(wheel.read_bytes() + json.dumps([sys.version, spec]).encode()).hexdigest()[:20]
    venv = VENVS / key
    if (venv / ".complete").is_file():
        return venv
    VENVS.mkdir(parents=True, exist_ok=True)
    for old in VENVS.iterdir():  # one venv at a time: older keys are for wheels that no longer exist
        shutil.rmtree(old, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "--quiet", f"{wheel}[{EXTRAS}]", *ALSO], check=True, cwd=venv)
    (venv / ".complete").write_text(json.dumps(spec) + "\n")
    return venv


@pytest.fixture(scope="module")
def venv(dist):
    return _venv_for(dist[1])


def _isolated_jupyter(tmp_path) -> dict[str, str]:
    import os
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "PYTHONPATH", "VIRTUAL_ENV"))}
    env.update(JUPYTER_DATA_DIR=str(tmp_path / "jdata"), JUPYTER_CONFIG_DIR=str(tmp_path / "jconfig"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "jrun"), NO_COLOR="1")
    return env


def test_fresh_venv_has_the_wheel_not_the_tree_and_consistent_dependencies(venv, tmp_path):
    py = str(venv / "bin" / "python")
    code = ("import importlib.metadata as m, importlib.util as u, json, jupyter_llm\n"
            "d = m.distribution('jupyter-llm')\n"
            "print(json.dumps({'file': jupyter_llm.__file__, 'version': jupyter_llm.__version__,"
            " 'meta': d.version, 'direct_url': d.read_text('direct_url.json'),"
            " 'xllamacpp': u.find_spec('xllamacpp') is not None}))")
    out = subprocess.run([py, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
                         env=_isolated_jupyter(tmp_path))
    info = json.loads(out.stdout)
    assert Path(info["file"]).is_relative_to(venv) and "site-packages" in info["file"]
    assert info["version"] == info["meta"] == VERSION
    direct = json.loads(info["direct_url"])
    assert direct["url"].endswith(".whl") and not direct.get("dir_info", {}).get("editable")
    assert info["xllamacpp"]  # the [local] extra brings the llama.cpp server wheel
    check = subprocess.run([py, "-m", "pip", "check"], capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr


def test_fresh_venv_lists_the_labextension_enabled(venv, tmp_path):
    out = subprocess.run([str(venv / "bin" / "jupyter"), "labextension", "list"], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path, env=_isolated_jupyter(tmp_path))
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)
    assert out.returncode == 0, text
    section, line = None, None
    for row in text.splitlines():
        if row.strip().startswith("/"):
            section = row.strip()
        elif LABEXT_NAME in row:
            line = row
            break
    assert line is not None, text
    assert re.search(rf"{LABEXT_NAME} v{re.escape(VERSION)}\s+enabled\s+OK", line), line
    assert "(python, jupyter-llm)" in line, line
    assert Path(section) == venv / "share" / "jupyter" / "labextensions", text


def test_fresh_venv_kernel_loads_the_extension_and_streams_from_llama(venv, llama_server, kernel_factory, tmp_path):
    k = kernel_factory(python=str(venv / "bin" / "python"), cwd=str(tmp_path),
                       PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
    where = k.run("import sys, jupyter_llm; print(jupyter_llm.__file__); print(sys.executable)")
    assert where.status == "ok", where.stderr
    file, executable = where.stdout.split()
    assert Path(file).is_relative_to(venv) and Path(executable).parent == venv / "bin"

    load = k.run("%load_ext jupyter_llm")
    assert load.status == "ok" and not load.stderr and load.error is None, (load.stderr, load.error)

    run = k.run(f"%%llm local:{llama_server.port} --max-tokens 24 -t 0\nSay hello in five words.", timeout=120)
    assert run.status == "ok", (run.stderr, run.error)
    assert run.of("display_data"), [m["msg_type"] for m in run.messages]
    result = k.run("import json; print(json.dumps({'text': _llm.text, 'error': _llm.error and str(_llm.error),"
                   " 'target': str(_llm.target), 'finish': _llm.finish_reason,"
                   " 'out': _llm.usage.output_tokens if _llm.usage else None}))")
    assert result.status == "ok", result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["error"] is None and answer["text"].strip(), answer
    assert str(llama_server.port) in answer["target"] and answer["out"] and answer["out"] <= 24, answer
    shown = "".join(run.texts())
    assert answer["text"].strip().split()[0] in shown  # the streamed display showed the answer
