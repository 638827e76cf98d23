"""Credentials: keyring round trip in a temp file keyring, env fallback, auth methods, no secret leaks."""
from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest

from jupyter_llm import credentials as cred_mod
from jupyter_llm.config import Config
from jupyter_llm.credentials import SERVICE, CredentialStore
from jupyter_llm.errors import LLMError
from jupyter_llm.providers import spec_for
from tests.conftest import CANARY

ROOT = Path(__file__).resolve().parents[1]


def spec(pid: str, config: Config | None = None):
    return spec_for(pid, config or Config())


@pytest.fixture
def creds():
    return CredentialStore(Config())


@pytest.fixture(autouse=True)
def fresh_keyring_global(monkeypatch):
    """keyring caches its backend (and the file path it read from the env) process-wide: reset it."""
    import keyring.core
    monkeypatch.setattr(keyring.core, "_keyring_backend", None)


@pytest.fixture(autouse=True)
def no_canary_in_logs(caplog):
    """Whatever a test does, no log line may carry the canary key."""
    caplog.set_level(logging.DEBUG)
    yield
    assert CANARY not in caplog.text


def assert_clean(exc: BaseException):
    for text in (str(exc), repr(exc), getattr(exc, "message", ""), getattr(exc, "hint", "") or ""):
        assert CANARY not in text
        assert CANARY[-12:] not in text


# ---- the isolation the whole suite relies on ---------------------------------------------------

def test_conftest_keyring_is_a_plaintext_file_under_tmp_path(isolated_env, creds):
    creds.store("openai", CANARY)
    expected = isolated_env / "keyring.cfg"          # KEYRING_PROPERTY_FILE_PATH sets file_path
    assert expected.is_file()
    import base64
    assert base64.b64encode(CANARY.encode()).decode() in expected.read_text()   # base64 "plaintext": test-only
    ok, desc = creds.backend()
    assert ok and "PlaintextKeyring" in desc and str(expected) in desc
    import keyring
    assert keyring.get_password(SERVICE, "openai") == CANARY   # the plain keyring API agrees


# ---- api_key: keyring and environment ----------------------------------------------------------

def test_keyring_round_trip(creds):
    assert creds.lookup(spec("openai")) is None
    creds.store("openai", f"  {CANARY}\n")
    auth = creds.lookup(spec("openai"))
    assert (auth.secret, auth.method, auth.source) == (CANARY, "api_key", "keyring")
    assert creds.resolve(spec("openai")).secret == CANARY
    assert creds.delete("openai") is True
    assert creds.lookup(spec("openai")) is None
    assert creds.delete("openai") is False


def test_env_fallback_names_the_variable(creds, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    auth = creds.resolve(spec("openai"))
    assert (auth.secret, auth.source, auth.method) == (CANARY, "env:OPENAI_API_KEY", "api_key")
    monkeypatch.setenv("GEMINI_API_KEY", "gm-" + CANARY)
    assert creds.lookup(spec("gemini")).source == "env:GEMINI_API_KEY"
    monkeypatch.setenv("GOOGLE_API_KEY", "gg-" + CANARY)
    assert creds.lookup(spec("gemini")).source == "env:GOOGLE_API_KEY"   # first listed wins
    monkeypatch.setenv("GROQ_API_KEY", "   ")
    assert creds.lookup(spec("groq")) is None                          # blank is not a key


def test_configured_env_var_for_a_custom_endpoint(creds, monkeypatch):
    cfg = Config(providers={"mygw": {"base_url": "http://127.0.0.1:9/v1", "env": "MY_GW_TOKEN"}})
    monkeypatch.setenv("MY_GW_TOKEN", CANARY)
    assert CredentialStore(cfg).resolve(spec("mygw", cfg)).source == "env:MY_GW_TOKEN"


def test_keyring_wins_over_env(creds, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env-0000")
    creds.store("anthropic", CANARY)
    auth = creds.resolve(spec("anthropic"))
    assert (auth.secret, auth.source) == (CANARY, "keyring")
    creds.delete("anthropic")
    assert creds.resolve(spec("anthropic")).source == "env:ANTHROPIC_API_KEY"


def test_masking_everywhere(creds):
    creds.store("openai", CANARY)
    auth = creds.resolve(spec("openai"))
    for text in (repr(auth), str(auth), auth.masked, repr(creds), f"{auth}"):
        assert CANARY not in text
    assert auth.masked == "****" + CANARY[-4:]


def test_missing_key_error_names_provider_env_and_login(creds):
    with pytest.raises(LLMError) as info:
        creds.resolve(spec("openai"))
    err = info.value
    assert err.code == "MISSING_CREDENTIALS"
    assert "openai" in err.message and "OPENAI_API_KEY" in err.hint and "%llm login openai" in err.hint
    with pytest.raises(LLMError) as info:
        creds.resolve(spec("gemini"))
    assert "GOOGLE_API_KEY or GEMINI_API_KEY" in str(info.value)


def test_providers_without_a_key(creds, monkeypatch):
    auth = creds.resolve(spec("local"))
    assert auth.method == "none" and auth.secret is None
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "no.such.Backend")   # the keyring is not even consulted
    assert creds.resolve(spec("local")).method == "none"
    # a llama-server started with --api-key: configure auth = "api_key" and the key is used
    cfg = Config(providers={"local": {"auth": "api_key", "env": "LLAMA_API_KEY"}})
    monkeypatch.setenv("LLAMA_API_KEY", CANARY)
    assert CredentialStore(cfg).resolve(spec("local", cfg)).source == "env:LLAMA_API_KEY"
    cfg = Config(providers={"vllm": {"base_url": "http://127.0.0.1:8000/v1", "auth": "none"}})
    assert CredentialStore(cfg).resolve(spec("vllm", cfg)).method == "none"


def test_store_rejects_bad_input(creds):
    for args, kwargs in [(("openai", ""), {}), (("openai", CANARY), {"method": "magic"}),
                         (("", CANARY), {}), (("openai", CANARY), {"base_url": "http://x"}),
                         (("openai", "gcloud auth"), {"method": "command", "ttl": -1}),
                         (("gw", CANARY), {"method": "gateway", "expiry": "next tuesday"})]:
        with pytest.raises(LLMError) as info:
            creds.store(*args, **kwargs)
        assert info.value.code == "BAD_ARGUMENT"
        assert_clean(info.value)


# ---- no usable keyring -------------------------------------------------------------------------

def test_fail_backend_gives_the_way_out_and_writes_nothing(isolated_env, creds, monkeypatch):
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    before = sorted(p for p in isolated_env.rglob("*"))
    with pytest.raises(LLMError) as info:
        creds.store("openai", CANARY)
    err = info.value
    assert err.code == "CONFIG_ERROR"
    text = str(err)
    assert "no OS keyring backend" in text
    assert "OPENAI_API_KEY" in text and "keyrings.alt" in text and "PYTHON_KEYRING_BACKEND" in text
    assert_clean(err)
    assert sorted(p for p in isolated_env.rglob("*")) == before
    ok, desc = creds.backend()
    assert not ok and "no OS keyring backend" in desc and "keyrings.alt" in desc
    # lookups still work from the environment, and a missing key is still just "missing"
    assert creds.lookup(spec("openai")) is None
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    assert creds.resolve(spec("openai")).source == "env:OPENAI_API_KEY"
    assert creds.delete("openai") is False


def test_unloadable_backend_name(creds, monkeypatch):
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "no.such.Backend")
    ok, desc = creds.backend()
    assert not ok and "no.such.Backend" in desc
    with pytest.raises(LLMError) as info:
        creds.store("groq", CANARY)
    assert info.value.code == "CONFIG_ERROR" and "GROQ_API_KEY" in str(info.value)


@pytest.fixture
def detected(monkeypatch, isolated_env):
    """Make keyring 'detect' a given backend: no PYTHON_KEYRING_BACKEND, no keyringrc.cfg."""
    import keyring.core
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(isolated_env / "xdg-config"))

    def use(backend):
        monkeypatch.setattr(keyring.core, "_keyring_backend", backend)
    return use


def test_auto_detected_plaintext_is_never_written_silently(detected, creds, isolated_env):
    from keyrings.alt.file import PlaintextKeyring
    detected(PlaintextKeyring())
    with pytest.raises(LLMError) as info:
        creds.store("openai", CANARY)
    assert info.value.code == "CONFIG_ERROR" and "PYTHON_KEYRING_BACKEND" in str(info.value)
    assert not (isolated_env / "xdg-data").exists()
    assert creds.backend()[0] is False


def test_detected_null_or_fail_backend(detected, creds):
    from keyring.backends import fail, null
    for backend in (fail.Keyring(), null.Keyring()):
        detected(backend)
        assert creds.lookup(spec("openai")) is None
        with pytest.raises(LLMError) as info:
            creds.store("openai", CANARY)
        assert "no OS keyring backend" in str(info.value)


def _fake_cryptfile(monkeypatch):
    """A stand-in for keyrings.cryptfile whose reads would 'prompt' (fail the test) unless allowed."""
    from keyring.backend import KeyringBackend

    class CryptFileKeyring(KeyringBackend):
        priority = 2.5
        data: dict = {}
        allow = False

        def get_password(self, service, username):
            assert self.allow, "cryptfile was consulted without being asked for: it would prompt on stdin"
            return self.data.get((service, username))

        def set_password(self, service, username, password):
            assert self.allow, "cryptfile was written without being asked for"
            self.data[(service, username)] = password

        def delete_password(self, service, username):
            self.data.pop((service, username))

    mod = types.ModuleType("keyrings.cryptfile.cryptfile")
    CryptFileKeyring.__module__ = mod.__name__
    mod.CryptFileKeyring = CryptFileKeyring
    monkeypatch.setitem(sys.modules, "keyrings.cryptfile", types.ModuleType("keyrings.cryptfile"))
    monkeypatch.setitem(sys.modules, "keyrings.cryptfile.cryptfile", mod)
    return CryptFileKeyring


def test_auto_detected_cryptfile_is_refused(detected, creds, monkeypatch):
    cls = _fake_cryptfile(monkeypatch)
    detected(cls())
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    assert creds.resolve(spec("openai")).source == "env:OPENAI_API_KEY"   # not consulted, no hang
    with pytest.raises(LLMError) as info:
        creds.store("openai", CANARY)
    assert "master password" in str(info.value) and "PYTHON_KEYRING_BACKEND" in str(info.value)
    ok, desc = creds.backend()
    assert not ok and "cryptfile" in desc


def test_explicitly_requested_cryptfile_is_used(creds, monkeypatch):
    cls = _fake_cryptfile(monkeypatch)
    cls.allow = True
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.cryptfile.cryptfile.CryptFileKeyring")
    creds.store("openai", CANARY)
    assert creds.resolve(spec("openai")).source == "keyring"
    assert creds.backend()[0] is True


def test_broken_keyring_read_falls_back_to_env_with_one_warning(detected, creds, monkeypatch, caplog):
    from keyring.backend import KeyringBackend
    from keyring.errors import KeyringLocked

    class Locked(KeyringBackend):
        priority = 5

        def get_password(self, service, username):
            raise KeyringLocked("collection is locked")

        def set_password(self, service, username, password):
            raise KeyringLocked("collection is locked")

        def delete_password(self, service, username):
            raise KeyringLocked("collection is locked")

    detected(Locked())
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    for _ in range(3):
        assert creds.resolve(spec("openai")).source == "env:OPENAI_API_KEY"
    assert sum("could not read the keyring" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(LLMError) as info:
        creds.store("openai", CANARY)
    assert info.value.code == "CONFIG_ERROR" and "KeyringLocked" in str(info.value)
    assert_clean(info.value)


# ---- gateway ------------------------------------------------------------------------------------

GW = Config(providers={"mygw": {"kind": "openai-compatible", "base_url": "http://127.0.0.1:9/v1",
                                 "auth": "gateway", "project": "proj-from-config"}})


def test_gateway_round_trip():
    creds = CredentialStore(GW)
    creds.store("mygw", CANARY, method="gateway", base_url="http://127.0.0.1:7/v1", organization="org-1",
                expiry=time.time() + 3600)
    auth = creds.resolve(spec("mygw", GW))
    assert (auth.method, auth.source, auth.secret) == ("gateway", "keyring", CANARY)
    assert (auth.base_url, auth.organization, auth.project) == ("http://127.0.0.1:7/v1", "org-1", "proj-from-config")
    assert auth.expiry > time.time()
    assert CANARY not in repr(auth)


def test_gateway_iso_expiry_and_no_expiry():
    creds = CredentialStore(GW)
    creds.store("mygw", CANARY, method="gateway", expiry="2999-01-01T00:00:00Z")
    assert creds.resolve(spec("mygw", GW)).expiry > time.time()
    creds.store("mygw", CANARY, method="gateway")
    auth = creds.resolve(spec("mygw", GW))
    assert auth.expiry is None and auth.base_url == "http://127.0.0.1:9/v1"


def test_gateway_expired_token():
    creds = CredentialStore(GW)
    creds.store("mygw", CANARY, method="gateway", expiry=time.time() - 5)
    assert creds.lookup(spec("mygw", GW)).expiry < time.time()   # lookup still shows it (for status)
    with pytest.raises(LLMError) as info:
        creds.resolve(spec("mygw", GW))
    err = info.value
    assert err.code == "INVALID_CREDENTIALS" and "token expired" in err.message
    assert "%llm login mygw --method gateway" in err.hint
    assert_clean(err)


def test_gateway_missing_hint():
    with pytest.raises(LLMError) as info:
        CredentialStore(GW).resolve(spec("mygw", GW))
    assert "--method gateway" in info.value.hint and "MYGW_API_KEY" in info.value.hint


# ---- command ------------------------------------------------------------------------------------

@pytest.fixture
def token_script(tmp_path):
    """A tiny token CLI: prints `tok-N-<canary>` and counts its runs; exits with $EXIT_CODE if set."""
    script = tmp_path / "token cli.py"     # a space, to check quoting
    script.write_text(textwrap.dedent(f"""
        import os, sys
        counter = {str(tmp_path / 'runs')!r}
        n = int(open(counter).read()) + 1 if os.path.exists(counter) else 1
        open(counter, 'w').write(str(n))
        if os.environ.get('TOKEN_SLEEP'):
            import time; time.sleep(float(os.environ['TOKEN_SLEEP']))
        print('some chatter on stdout')
        print(f'tok-{{n}}-{CANARY}')
        code = int(os.environ.get('EXIT_CODE', '0'))
        if code:
            print(f'error: token tok-{{n}}-{CANARY} rejected', file=sys.stderr)
            print('second line of stderr', file=sys.stderr)
        sys.exit(code)
    """))
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"

    def runs() -> int:
        p = tmp_path / "runs"
        return int(p.read_text()) if p.exists() else 0
    return command, runs


def cmd_config(command: str, **extra) -> Config:
    return Config(providers={"corp": {"kind": "openai-compatible", "base_url": "http://127.0.0.1:9/v1",
                                      "auth": "command", "command": command, **extra}})


def test_config_command_is_cached_and_refreshed(token_script):
    command, runs = token_script
    cfg = cmd_config(command)
    creds = CredentialStore(cfg)
    s = spec("corp", cfg)
    auth = creds.resolve(s)
    assert (auth.method, auth.source, auth.secret) == ("command", "command", f"tok-1-{CANARY}")
    assert auth.expiry == pytest.approx(time.time() + cred_mod.DEFAULT_COMMAND_TTL, abs=5)
    assert creds.resolve(s).secret == f"tok-1-{CANARY}" and runs() == 1      # cached
    assert creds.refresh(s).secret == f"tok-2-{CANARY}" and runs() == 2      # re-run once
    assert creds.resolve(s).secret == f"tok-2-{CANARY}" and runs() == 2
    assert CANARY not in repr(auth)


def test_command_ttl_and_status_view(token_script):
    command, runs = token_script
    cfg = cmd_config(command, ttl=0)
    creds = CredentialStore(cfg)
    s = spec("corp", cfg)
    peek = creds.lookup(s, run_command=False)
    assert (peek.method, peek.source, peek.secret) == ("command", "command", None) and runs() == 0
    creds.resolve(s)
    creds.resolve(s)
    assert runs() == 2                                                        # ttl 0: never reused


def test_command_stored_in_keyring(token_script, monkeypatch):
    command, runs = token_script
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-should-lose-0000")
    creds = CredentialStore(Config())
    creds.store("openai", command, method="command", ttl=600)
    auth = creds.resolve(spec("openai"))
    assert (auth.source, auth.secret) == ("command", f"tok-1-{CANARY}")
    assert auth.expiry == pytest.approx(time.time() + 600, abs=5)
    import keyring
    stored = keyring.get_password(SERVICE, "openai")
    assert "tok-" not in stored and command in stored        # the token is kept in memory only
    creds.store("openai", command, method="command")          # a new login forgets the cached token
    assert creds.resolve(spec("openai")).secret == f"tok-2-{CANARY}"


def test_failing_command_reports_exit_code_and_stderr_but_no_token(token_script, monkeypatch):
    command, _ = token_script
    monkeypatch.setenv("EXIT_CODE", "3")
    cfg = cmd_config(command)
    with pytest.raises(LLMError) as info:
        CredentialStore(cfg).resolve(spec("corp", cfg))
    err = info.value
    assert err.code == "INVALID_CREDENTIALS"
    assert "exit code 3" in err.message and "error: token" in err.message and "rejected" in err.message
    assert "second line" not in err.message
    assert "[providers.corp] command" in err.hint
    assert_clean(err)
    assert "tok-1" not in str(err)


def test_command_not_found_and_timeout(token_script, monkeypatch):
    cfg = cmd_config("/nonexistent/token-cli --print")
    with pytest.raises(LLMError) as info:
        CredentialStore(cfg).resolve(spec("corp", cfg))
    assert info.value.code == "INVALID_CREDENTIALS" and "not found" in info.value.message
    command, _ = token_script
    monkeypatch.setattr(cred_mod, "COMMAND_TIMEOUT", 0.3)
    monkeypatch.setenv("TOKEN_SLEEP", "60")                   # far from the bound below: a loaded machine is slow
    cfg = cmd_config(command)
    started = time.monotonic()
    with pytest.raises(LLMError) as info:
        CredentialStore(cfg).resolve(spec("corp", cfg))
    assert "did not finish" in info.value.message and time.monotonic() - started < 15
    cfg = cmd_config("sleep 60; echo late")                  # through a shell: its child is killed too
    started = time.monotonic()
    with pytest.raises(LLMError) as info:
        CredentialStore(cfg).resolve(spec("corp", cfg))
    assert "did not finish" in info.value.message and time.monotonic() - started < 15


def test_command_that_prints_nothing(tmp_path):
    cfg = cmd_config(f"{shlex.quote(sys.executable)} -c pass")
    with pytest.raises(LLMError) as info:
        CredentialStore(cfg).resolve(spec("corp", cfg))
    assert "printed no token" in info.value.message


def test_command_with_shell_syntax(tmp_path):
    cfg = cmd_config(f"echo tok-$((40 + 2))-{CANARY} | cat")
    assert CredentialStore(cfg).resolve(spec("corp", cfg)).secret == f"tok-42-{CANARY}"


def test_command_auth_without_command_is_missing():
    cfg = Config(providers={"corp": {"base_url": "http://127.0.0.1:9/v1", "auth": "command"}})
    with pytest.raises(LLMError) as info:
        CredentialStore(cfg).resolve(spec("corp", cfg))
    assert info.value.code == "MISSING_CREDENTIALS" and "[providers.corp]" in info.value.hint


# ---- import cost ---------------------------------------------------------------------------------

def test_modules_import_neither_keyring_nor_genai_prices():
    code = ("import sys, jupyter_llm.credentials, jupyter_llm.store, jupyter_llm.pricing;"
            "bad = [m for m in ('keyring', 'genai_prices', 'pydantic') if m in sys.modules];"
            "assert not bad, bad")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env, timeout=60)
