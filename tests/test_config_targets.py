"""Targets, aliases and named ports; the TOML config and its file:line:key errors."""
from __future__ import annotations

import textwrap

import pytest

from jupyter_llm.config import coerce_setting, load_config
from jupyter_llm.errors import LLMError
from jupyter_llm.targets import Target, parse_target

SPEC_EXAMPLE = textwrap.dedent('''\
    default = "local:8081"
    [local]
    host = "127.0.0.1"
    ports = { 8081 = "phi3", 8085 = "qwen-coder-7b", 8086 = "hermes-3-8b" }
    [providers.openai]
    model = "gpt-4o-mini"
    [providers.mygateway]
    kind = "openai-compatible"
    base_url = "https://llm.example.com/v1"
    auth = "gateway"
    [aliases]
    fast = "groq:llama-3.1-8b-instant"
    [reliability]
    retries = 3
    timeout = 60
    fallback = ["local:8081", "openai:gpt-4o-mini"]
    [budget]
    session_usd = 5.0
''')


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(SPEC_EXAMPLE)
    return load_config(path, strict=True)


def test_spec_example_loads(cfg):
    assert cfg.default == "local:8081"
    assert cfg.local_ports == {8081: "phi3", 8085: "qwen-coder-7b", 8086: "hermes-3-8b"}
    assert cfg.providers["mygateway"]["auth"] == "gateway"
    assert cfg.reliability.fallback == ["local:8081", "openai:gpt-4o-mini"]
    assert cfg.budget_usd == 5.0 and cfg.reliability.timeout == 60


@pytest.mark.parametrize("text,expected", [
    ("openai:gpt-4o-mini", Target("openai", "gpt-4o-mini")),
    ("openai", Target("openai")),
    ("local:8081", Target("local", "phi3", 8081)),
    ("local:8081/qwen-coder", Target("local", "qwen-coder", 8081)),
    ("local:qwen-coder-7b", Target("local", "qwen-coder-7b", 8085)),
    ("local", Target("local")),
    ("fast", Target("groq", "llama-3.1-8b-instant")),
    ("openrouter:meta-llama/llama-3.1-8b-instruct:free", Target("openrouter", "meta-llama/llama-3.1-8b-instruct:free")),
    ("mygateway:gpt-4o", Target("mygateway", "gpt-4o")),
])
def test_parse_targets(cfg, text, expected):
    assert parse_target(text, cfg) == expected


@pytest.mark.parametrize("text", ["", "openai:", "local:99999", "local:nosuch", "local:8081/", "open ai:x", ":x", "-x"])
def test_bad_targets_are_bad_arguments(cfg, text):
    with pytest.raises(LLMError) as err:
        parse_target(text, cfg)
    assert err.value.code == "BAD_ARGUMENT"


def test_target_round_trips_through_str(cfg):
    for text in ("openai:gpt-4o-mini", "local:8081/phi3", "local", "anthropic"):
        assert str(parse_target(str(parse_target(text, cfg)), cfg)) == str(parse_target(text, cfg))


@pytest.mark.parametrize("body,line,key", [
    ('[reliability]\nretries = "three"\n', 2, "reliability.retries"),
    ('default = "x"\n\n[local]\nports = { 8081 = 5 }\n', 4, "local.ports.8081"),
    ('[providers.openai]\nmodle = "gpt-4o"\n', 2, "providers.openai.modle"),
    ('[budget]\nsession_usd = -1\n', 2, "budget.session_usd"),
    ('[defaults]\ntemperature = 7\n', 2, "defaults.temperature"),
    ('default = "local:8081"\nwhat = 1\n', 2, "what"),
])
def test_bad_config_names_file_line_and_key(tmp_path, body, line, key):
    path = tmp_path / "config.toml"
    path.write_text(body)
    with pytest.raises(LLMError) as err:
        load_config(path, strict=True)
    assert err.value.code == "CONFIG_ERROR"
    assert f"{path}:{line}" in err.value.message and key in err.value.message


def test_toml_syntax_error_names_line_and_loading_still_works(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('default = "local"\n[local\nhost = 1\n')
    cfg = load_config(path)  # not strict: defaults + the error kept
    assert cfg.error is not None and cfg.error.code == "CONFIG_ERROR"
    assert str(path) in cfg.error.message and "line 2" in cfg.error.message
    assert cfg.default == "local"


def test_missing_config_is_fine(tmp_path):
    cfg = load_config(tmp_path / "nope.toml", strict=True)
    assert cfg.error is None and cfg.default == "local"


@pytest.mark.parametrize("key,value,ok", [
    ("temperature", "0.5", 0.5), ("max_tokens", "12", 12), ("cache", "on", True), ("cache", "false", False),
    ("format", "json", "json"), ("system", "be brief", "be brief"),
])
def test_settings_coerce(key, value, ok):
    assert coerce_setting(key, value) == ok


@pytest.mark.parametrize("key,value", [("temperature", "hot"), ("temperature", "3"), ("max_tokens", "1.5"),
                                       ("max_tokens", "0"), ("format", "yaml"), ("cache", "maybe"), ("colour", "1")])
def test_bad_settings(key, value):
    with pytest.raises(LLMError) as err:
        coerce_setting(key, value)
    assert err.value.code == "BAD_ARGUMENT"
