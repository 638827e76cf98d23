"""Capabilities per model: built-in table, genai-prices context, model lists, llama.cpp /props, config override."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import jupyter_llm
from jupyter_llm import capabilities
from jupyter_llm.errors import LLMError


def test_cloud_models_from_table_and_catalogue(cloud):
    s = cloud()
    c = capabilities.for_target(s, "openai:gpt-4o-mini")
    assert c.vision and c.tools and c.structured_output and c.reasoning is False
    assert c.context and c.context >= 128000 and c.max_output == 16384
    assert "genai-prices" in c.sources
    r = capabilities.for_target(s, "deepseek:deepseek-reasoner")
    assert r.reasoning and r.vision is False
    unknown = capabilities.for_target(s, "mygateway:house-model")
    assert unknown.vision is None and unknown.context is None


def test_config_override_for_endpoints_nobody_knows(cloud):
    s = cloud('[providers.mygateway.capabilities]\n"house-model" = { vision = true, context = 32768 }\n'
              '"*" = { tools = false }\n')
    c = capabilities.for_target(s, "mygateway:house-model")
    assert c.vision is True and c.context == 32768 and c.tools is False and "config" in c.sources
    assert capabilities.for_target(s, "mygateway:other").tools is False


@pytest.mark.parametrize("table,msg", [
    ('"m" = { vision = "yes" }', "true or false"), ('"m" = { context = -1 }', "positive integer"),
    ('"m" = { telepathy = true }', "unknown capability"), ('"m" = 3', "must be a table")])
def test_bad_override_is_one_config_error_naming_the_line(isolated_env, table, msg):
    from jupyter_llm.config import load_config
    path = isolated_env / "config.toml"
    path.write_text(f'[providers.gw]\nbase_url = "http://127.0.0.1:9/v1"\n[providers.gw.capabilities]\n{table}\n')
    with pytest.raises(LLMError) as exc:
        load_config(path, strict=True)
    assert exc.value.code == "CONFIG_ERROR" and msg in exc.value.message and str(path) in exc.value.message


def test_llamacpp_props_parsing():
    caps = capabilities.llamacpp_caps({"default_generation_settings": {"n_ctx": 4096},
                                       "modalities": {"vision": True}, "chat_template_caps": {"supports_tool_calls": False}})
    assert caps == {"context": 4096, "structured_output": True, "vision": True, "tools": False}


def test_models_shows_capabilities(cloud, capsys):
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython
    start_ipython()
    shell = get_ipython()
    s = cloud()
    jupyter_llm._session = s
    jupyter_llm.load_ipython_extension(shell)
    try:
        capsys.readouterr()
        assert shell.run_cell("%llm models openai").success
        out = capsys.readouterr().out
        assert "vision" in out and "max out" in out and "reasoning" in out and "tools" in out
        line = next(l for l in out.splitlines() if l.startswith("gpt-4o-mini "))
        assert "16384" in line and "yes" in line
    finally:
        jupyter_llm.unload_ipython_extension(shell)
        jupyter_llm._session = None


def test_local_server_capabilities_from_props(llama_server, isolated_env):
    from jupyter_llm.config import load_config
    from jupyter_llm.kernel_session import Session
    s = Session(load_config(isolated_env / "none.toml"))
    c = capabilities.for_target(s, f"local:{llama_server.port}")
    assert c.context and c.context > 0 and c.structured_output is True and "llama.cpp /props" in c.sources
