"""Real llama.cpp server fixtures: `llama_server` (one server, alias tiny-a) and `llama_servers` (tiny-a, tiny-b).

Both are session-scoped, bind 127.0.0.1 on free ports and serve the generated tiny GGUF through
scripts/llama_server.py. Set JUPYTER_LLM_TEST_LLAMA_PORT to reuse a server already running there.
Tests that use them get the `llama` marker automatically (deselect with `-m "not llama"`).
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_MODULE = "jupyter_llm_dev_llama_server"
LLAMA_FIXTURES = {"llama_server", "llama_servers"}


def llama_server_module():
    """scripts/llama_server.py as a module (it is dev tooling, not part of the package)."""
    mod = sys.modules.get(_MODULE)
    if mod is None:
        spec = importlib.util.spec_from_file_location(_MODULE, ROOT / "scripts" / "llama_server.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[_MODULE] = mod  # dataclasses need the module registered while it executes
        spec.loader.exec_module(mod)
    return mod


def pytest_collection_modifyitems(config, items):
    for item in items:
        if LLAMA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.llama)


def _external(ls):
    """A handle on the server at $JUPYTER_LLM_TEST_LLAMA_PORT when one answers there, else None."""
    env = os.environ.get("JUPYTER_LLM_TEST_LLAMA_PORT")
    if not env:
        return None
    port = int(env)
    try:
        if ls.http_get(ls.HOST, port, "/health")[0] != 200:
            return None
        _, models = ls.http_get(ls.HOST, port, "/v1/models")
        _, props = ls.http_get(ls.HOST, port, "/props")
    except OSError:
        return None
    model = models["data"][0]
    slots = int(props.get("total_slots") or 1)
    n_ctx = int(props.get("default_generation_settings", {}).get("n_ctx") or model["meta"]["n_ctx"])
    return ls.ServerHandle(port=port, alias=model["id"], pid=None, backend="external",
                           ctx=n_ctx * slots, parallel=slots, owned=False)


def _start(ls, **kwargs):
    try:
        return ls.start_server(**kwargs)
    except ls.ServerStartError as exc:
        if "no llama.cpp server available" in str(exc):
            pytest.skip(str(exc))
        raise


@pytest.fixture(scope="session")
def llama_server():
    """One real llama.cpp server: `.port`, `.url`, `.base_url`, `.alias` ("tiny-a"), `.ctx` 2048, `.parallel` 1."""
    ls = llama_server_module()
    handle = _external(ls)
    if handle is not None:
        yield handle
        return
    handle = _start(ls, alias="tiny-a", ctx=2048, parallel=1, threads=1)
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def llama_servers(llama_server):
    """Two real servers on different ports: [tiny-a (ctx 2048, 1 slot), tiny-b (ctx 1024 over 2 slots = 512 each)]."""
    ls = llama_server_module()
    second = _start(ls, alias="tiny-b", ctx=1024, parallel=2, threads=1)
    yield [llama_server, second]
    second.stop()
