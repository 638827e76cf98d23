"""The provider registry: built-ins, configured endpoints and third-party adapters by entry point."""
from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from jupyter_llm.config import load_config
from jupyter_llm.errors import LLMError
from jupyter_llm.events import Finish, TextDelta
from jupyter_llm.kernel_session import Session
from jupyter_llm.providers import get_provider, provider_ids, spec_for


class EchoProvider:
    """A third-party adapter as a plugin would ship it."""
    kind = "echo"
    env_vars = ()
    default_model = "echo-1"
    needs_key = False

    def __init__(self, spec):
        self.id = spec.id
        self.spec = spec

    def stream(self, target, request, auth):
        yield TextDelta("echo: " + request.messages[-1]["content"])
        yield Finish("stop")

    def list_models(self, auth):
        return []

    def health(self, target, auth):
        from jupyter_llm.providers import Health
        return Health(True, "echo")


def test_entry_point_provider_is_used_for_its_kind(tmp_path, monkeypatch):
    import importlib.metadata as md
    ep = EntryPoint("echo", f"{__name__}:EchoProvider", "jupyter_llm.providers")
    monkeypatch.setattr(md, "entry_points", lambda group=None: [ep] if group == "jupyter_llm.providers" else [])
    path = tmp_path / "config.toml"
    path.write_text('default = "myecho"\n[providers.myecho]\nkind = "echo"\nauth = "none"\n')
    s = Session(load_config(path, strict=True))
    assert "myecho" in provider_ids(s.config)
    r = s.ask("hi there")
    assert r.ok and r.text == "echo: hi there" and r.answered_by == "myecho"


def test_unknown_kind_is_a_config_error_naming_known_kinds(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[providers.odd]\nkind = "nosuchkind"\nauth = "none"\n')
    cfg = load_config(path, strict=True)
    with pytest.raises(LLMError) as err:
        get_provider("odd", cfg)
    assert err.value.code == "CONFIG_ERROR" and "openai-compatible" in err.value.hint


def test_configured_endpoint_without_base_url_is_a_config_error(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[providers.gw]\nmodel = "x"\n')
    with pytest.raises(LLMError) as err:
        spec_for("gw", load_config(path, strict=True))
    assert err.value.code == "CONFIG_ERROR" and "base_url" in err.value.message


def test_config_overrides_builtin_defaults(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[providers.openai]\nmodel = "gpt-4.1-mini"\nbase_url = "http://127.0.0.1:1/v1"\nenv = "MY_KEY"\n')
    spec = spec_for("openai", load_config(path, strict=True))
    assert (spec.default_model, spec.base_url, spec.env_vars) == ("gpt-4.1-mini", "http://127.0.0.1:1/v1", ("MY_KEY",))
