"""Control and audit: local-only mode, disabled providers, the readable audit, aliases and config at runtime.

Cloud endpoints here are real-looking remote URLs (api.deepseek.com, llm.example.com): `no_egress` records
every DNS lookup and connection to a non-loopback address, so "nothing was sent" is checked at the socket,
not inferred from an error message. Endpoints on 127.0.0.1 (the emulator) are local whatever their
provider's name.
"""
from __future__ import annotations

import json
import socket

import pytest

import jupyter_llm
from jupyter_llm.errors import CODES, LLMError
from jupyter_llm.policy import is_local, is_loopback_host
from tests.conftest import CANARY, run_cell as run

FAR = '[providers.farcloud]\nkind = "openai-compatible"\nbase_url = "https://llm.example.com/v1"\n'


@pytest.fixture
def no_egress(monkeypatch):
    """Record (and refuse) any DNS lookup or connection to a host that is not this machine."""
    seen: list[str] = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *a, **k):
        if not is_loopback_host(str(host)):
            seen.append(f"dns:{host}")
            raise socket.gaierror(f"egress refused in test: {host}")
        return real_getaddrinfo(host, *a, **k)

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else str(address)
        if self.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback_host(host):
            seen.append(f"connect:{host}")
            raise OSError(f"egress refused in test: {host}")
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return seen


@pytest.fixture
def ip(cloud, monkeypatch, magic_shell):
    monkeypatch.setenv("FARCLOUD_API_KEY", CANARY)
    monkeypatch.setenv("DEEPSEEK_API_KEY", CANARY)
    return magic_shell(cloud(FAR))


def one_line(result, err: str, code: str) -> str:
    assert not result.success
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"UsageError: {code}: "), err
    assert "Traceback" not in err and CANARY not in err
    return lines[0]


# ---- policy ----------------------------------------------------------------------------------

def test_blocked_is_a_code():
    assert "BLOCKED" in CODES
    assert LLMError("BLOCKED", "x").line() == "BLOCKED: x"


@pytest.mark.parametrize("host,local", [
    ("127.0.0.1", True), ("127.3.2.1", True), ("localhost", True), ("LOCALHOST.", True), ("::1", True),
    ("[::1]", True), ("0.0.0.0", True), ("api.openai.localhost", True), ("::ffff:127.0.0.1", True),
    ("10.0.0.5", False), ("192.168.1.2", False), ("api.openai.com", False), ("127.0.0.1.nip.io", False),
    ("localhost.example.com", False), ("", False), (None, False)])
def test_loopback_is_decided_by_address(host, local):
    assert is_loopback_host(host) is local


def test_local_is_decided_by_endpoint_not_name(cloud):
    s = cloud(FAR + '[providers.lan]\nbase_url = "http://192.168.0.7:8000/v1"\n'
                    '[providers.mine]\nbase_url = "http://localhost:9/v1"\n')
    assert is_local("openai", s.config)          # pointed at the emulator on 127.0.0.1
    assert is_local("local", s.config) and is_local("ollama", s.config) and is_local("mine", s.config)
    assert not is_local("farcloud", s.config) and not is_local("deepseek", s.config) and not is_local("lan", s.config)
    assert not is_local("openai", s.config, base_url="https://gw.example.com/v1")  # a gateway credential's URL


# ---- local-only mode ---------------------------------------------------------------------------

def test_offline_blocks_cloud_and_sends_nothing(ip, capsys, emulator, no_egress):
    result, out, _ = run(ip, capsys, "%llm offline on")
    assert result.success and "local-only" in out
    line = one_line(*run(ip, capsys, "%%llm farcloud:m1\nhello")[::2], "BLOCKED")
    assert "farcloud:m1" in line and "llm.example.com" in line and "%llm offline off" in line
    one_line(*run(ip, capsys, "%%llm deepseek\nhello")[::2], "BLOCKED")
    assert no_egress == []                                  # not even a DNS lookup
    # an endpoint on this machine answers, whatever the provider is called
    result, out, _ = run(ip, capsys, "%%llm openai:gpt-4o-mini\nhello")
    assert result.success and ip.user_ns["_llm"].ok and emulator.calls("openai")
    result, out, _ = run(ip, capsys, "%llm status")
    assert "local-only" in out
    run(ip, capsys, "%llm offline off")
    result, _, err = run(ip, capsys, "%%llm farcloud:m1\nhello")
    assert "BLOCKED" not in err and "NETWORK_ERROR" in err and no_egress   # now it really tries


def test_config_cloud_false_and_session_override(cloud, no_egress, monkeypatch):
    monkeypatch.setenv("FARCLOUD_API_KEY", CANARY)
    from jupyter_llm.config import load_config
    from jupyter_llm.kernel_session import Session
    import os
    path = os.environ["JUPYTER_LLM_CONFIG"]
    s = cloud(FAR)
    text = open(path).read()
    open(path, "w").write("cloud = false\n" + text)
    s = Session(load_config(path, strict=True))
    assert s.mode == "local-only" and s.status(probe=False)["mode"] == "local-only"
    r = s.ask("hi", target="farcloud:x")
    assert r.error is not None and r.error.code == "BLOCKED" and "cloud = false" in r.error.line()
    s.set_offline(False)
    assert s.mode == "cloud allowed"
    assert s.ask("hi", target="farcloud:x").error.code == "NETWORK_ERROR"


def test_offline_covers_fallbacks_compare_health_and_model_lists(cloud, emulator, no_egress):
    s = cloud(FAR)
    s.set_offline(True)
    emulator.fault(500, times=10)
    s.set_fallback(["farcloud:m1"])
    r = s.ask("hi")                                   # primary (on this machine) fails, the fallback is cloud
    assert r.error.code == "BLOCKED" and "first failure: PROVIDER_ERROR" in r.error.message
    emulator.reset()
    s.set_fallback([])
    from jupyter_llm.compare import run_compare
    results = run_compare(s, "hi", ["openai:gpt-4o-mini", "farcloud:m1", "deepseek"], rich=False)
    assert results[0].ok and [r.error.code for r in results[1:]] == ["BLOCKED", "BLOCKED"]
    health = s.check("farcloud:m1")
    assert not health.ok and "BLOCKED" in health.detail
    models = s.models("deepseek")                     # the built-in catalogue: nothing sent
    assert models and all(m.source != "live" for m in models)
    rows = {r["provider"]: r for r in s.providers()}
    assert rows["farcloud"]["health"].startswith("blocked") and rows["openai"]["health"].startswith("ok")
    assert no_egress == []


def test_disabled_provider_is_hidden_and_refused(cloud, emulator, no_egress):
    s = cloud(FAR.replace('base_url = "https://llm.example.com/v1"\n',
                          'base_url = "https://llm.example.com/v1"\nenabled = false\n'))
    with pytest.raises(LLMError) as exc:
        s.use("farcloud:m1")
    assert exc.value.code == "BLOCKED" and "enabled = false" in exc.value.message
    r = s.ask("hi", target="farcloud:m1")
    assert r.error.code == "BLOCKED"
    assert not any(t.startswith("farcloud") for t in s.known_targets())
    from jupyter_llm.policy import visible_providers
    from jupyter_llm.providers import provider_ids
    assert "farcloud" not in visible_providers(provider_ids(s.config), s.config)
    assert no_egress == []


def test_disabled_local_endpoint_is_refused_too(cloud, emulator):
    from jupyter_llm.config import load_config
    from jupyter_llm.kernel_session import Session
    import os
    cloud()
    path = os.environ["JUPYTER_LLM_CONFIG"]
    open(path, "a").write("[providers.groq2]\nbase_url = \"%s\"\nenabled = false\n" % emulator.url("groq"))
    s = Session(load_config(path, strict=True))
    assert s.ask("hi", target="groq2:m").error.code == "BLOCKED"
    assert not emulator.calls()


def test_comm_state_carries_the_mode(cloud):
    from jupyter_llm.comm import Bridge
    s = cloud()
    sent = []

    class FakeComm:
        comm_id = "c1"
        def send(self, data): sent.append(data)
        def on_msg(self, cb): pass
        def on_close(self, cb): pass

    class Manager:
        def register_target(self, *a): pass
        def unregister_target(self, *a): pass

    b = Bridge(s, Manager(), create_comm=lambda **k: FakeComm())
    b.start()
    assert b.state()["mode"] == "cloud allowed"
    s.set_offline(True)
    assert sent[-1]["mode"] == "local-only"
    b.stop()


# ---- audit ------------------------------------------------------------------------------------

def test_events_show_switches_logins_budget_mode_fallbacks_never_a_secret(ip, capsys, emulator, monkeypatch):
    import getpass
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": CANARY)
    for cell in ("%llm use anthropic:claude-3-5-haiku-latest", "%llm login groq", "%llm logout groq",
                 "%llm budget 2", "%llm offline on", "%llm offline off", "%llm fallback openai:gpt-4o-mini"):
        assert run(ip, capsys, cell)[0].success, cell
    emulator.fault(500, provider="anthropic", times=10)
    result, out, err = run(ip, capsys, "%%llm\nhello there")
    assert result.success, err
    r = ip.user_ns["_llm"]
    assert r.answered_by == "openai:gpt-4o-mini" and r.fallback_reason.startswith("anthropic:claude-3-5-haiku-latest: PROVIDER_ERROR")
    result, out, err = run(ip, capsys, "%llm history --events")
    assert result.success
    assert "openai:gpt-4o-mini → anthropic:claude-3-5-haiku-latest" in out
    assert "groq (api_key, ****" + CANARY[-4:] + ")" in out
    assert "credential removed" in out and "session budget $2.00" in out
    assert "cloud allowed → local-only" in out and "local-only → cloud allowed" in out
    assert "anthropic:claude-3-5-haiku-latest → openai:gpt-4o-mini (PROVIDER_ERROR)" in out
    frame = ip.user_ns["_llm_history"]
    assert set(frame["kind"]) >= {"switch", "login", "logout", "budget", "mode", "fallback"}
    _, out, _ = run(ip, capsys, "%llm history")
    assert "fallback after PROVIDER_ERROR" in out
    _, js, _ = run(ip, capsys, "%llm history --json")
    rows = json.loads(js)
    assert rows[-1]["fallback_reason"].startswith("anthropic") and rows[-1]["answered_by"] == "openai:gpt-4o-mini"
    _, ejs, _ = run(ip, capsys, "%llm history --events --json")
    db = (ip.session.store.path).read_bytes()
    for text in (out, js, ejs, repr(frame.to_dict()), db.decode("latin-1")):
        assert CANARY not in text


def test_history_json_to_file_and_dataframe(ip, capsys, tmp_path):
    run(ip, capsys, "%%llm\nfirst")
    run(ip, capsys, "%%llm\nsecond")
    result, out, _ = run(ip, capsys, f"%llm history -n 5 --json {tmp_path / 'h.json'}")
    assert result.success and "wrote 2 exchanges" in out
    rows = json.loads((tmp_path / "h.json").read_text())
    assert [r["prompt"] for r in rows] == ["first", "second"]
    frame = ip.user_ns["_llm_history"]
    assert list(frame["prompt"]) == ["first", "second"] and str(frame["time"].dtype).startswith("datetime64")
    one_line(*run(ip, capsys, "%llm history -n 0")[::2], "BAD_ARGUMENT")


def test_audit_masks_secrets_even_in_odd_rows(cloud):
    from jupyter_llm.audit import event_rows
    s = cloud()
    s.store.record_event("login", {"provider": "x", "method": "api_key", "key": CANARY}, session_id=s.id)
    s.store.record_event("custom", {"token": CANARY, "nested": {"api_key": CANARY}}, session_id=s.id)
    rows = event_rows(s.store, 5)
    assert CANARY not in json.dumps(rows) and "****" + CANARY[-4:] in rows[0]["what"]


def test_old_history_file_gains_the_new_columns(isolated_env):
    import sqlite3
    from jupyter_llm.store import Store
    path = isolated_env / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE exchanges (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, session_id TEXT,"
                       " target TEXT, answered_by TEXT, prompt TEXT, response TEXT, input_tokens INTEGER,"
                       " output_tokens INTEGER, cost REAL, latency REAL, ttft REAL, status TEXT NOT NULL DEFAULT 'ok',"
                       " incomplete INTEGER NOT NULL DEFAULT 0, cached INTEGER NOT NULL DEFAULT 0, finish_reason TEXT);"
                       "INSERT INTO exchanges (time, target, prompt) VALUES (1, 'openai', 'old');")
    conn.close()
    st = Store(path)
    st.record_exchange(target="openai", prompt="new", fallback_reason="openai: NETWORK_ERROR: x", replayed=True)
    rows = st.history(5)
    assert [r["prompt"] for r in rows] == ["old", "new"]
    assert rows[1]["fallback_reason"].startswith("openai") and rows[1]["replayed"] is True and rows[0]["replayed"] is False


# ---- aliases and config at runtime ---------------------------------------------------------------

def test_alias_set_list_delete_saved_with_comments(ip, capsys, emulator):
    import os
    from pathlib import Path
    path = Path(os.environ["JUPYTER_LLM_CONFIG"])
    path.write_text("# my settings, keep me\n" + path.read_text() + "\n[aliases]\n# team default\nold = \"openai:gpt-4o\"\n")
    run(ip, capsys, "%llm config reload")
    result, out, _ = run(ip, capsys, "%llm alias fast groq:llama-3.1-8b-instant")
    assert result.success and "saved to" in out
    result, _, err = run(ip, capsys, "%%llm fast\nhi")
    assert result.success, err
    assert ip.user_ns["_llm"].target == "groq:llama-3.1-8b-instant" and emulator.calls("groq")
    text = path.read_text()
    assert "# my settings, keep me" in text and "# team default" in text and 'fast = "groq:llama-3.1-8b-instant"' in text
    _, out, _ = run(ip, capsys, "%llm alias")
    assert "fast" in out and "old" in out
    assert run(ip, capsys, "%llm alias --delete fast")[0].success
    assert "fast" not in path.read_text() and "# team default" in path.read_text()
    one_line(*run(ip, capsys, "%%llm fast\nhi")[::2], "BAD_ARGUMENT")
    one_line(*run(ip, capsys, "%llm alias --delete fast")[::2], "BAD_ARGUMENT")
    one_line(*run(ip, capsys, "%llm alias openai anthropic")[::2], "BAD_ARGUMENT")
    one_line(*run(ip, capsys, "%llm alias x nope:model")[::2], "BAD_ARGUMENT")
    one_line(*run(ip, capsys, "%llm alias a:b openai")[::2], "BAD_ARGUMENT")
    run(ip, capsys, "%llm alias loop1 openai")
    one_line(*run(ip, capsys, "%llm alias loop2 loop2")[::2], "BAD_ARGUMENT")
    _, out, _ = run(ip, capsys, "%llm history --events alias")
    assert "fast = groq:llama-3.1-8b-instant" in out and "fast deleted" in out


def test_alias_without_a_config_file_creates_it(ip, capsys):
    import os
    from pathlib import Path
    path = Path(os.environ["JUPYTER_LLM_CONFIG"])
    path.unlink()
    assert run(ip, capsys, "%llm alias quick openai:gpt-4o-mini")[0].success
    import tomllib
    assert tomllib.loads(path.read_text())["aliases"] == {"quick": "openai:gpt-4o-mini"}


def test_config_shows_effective_masked_and_reload(ip, capsys, emulator, monkeypatch):
    import os
    from pathlib import Path
    path = Path(os.environ["JUPYTER_LLM_CONFIG"])
    path.write_text(path.read_text() + f'[providers.cmdauth]\nbase_url = "{emulator.url("cmdauth")}"\n'
                    f'auth = "command"\ncommand = "echo {CANARY}"\n')
    assert run(ip, capsys, "%llm config reload")[0].success
    result, out, _ = run(ip, capsys, "%llm config")
    assert result.success and str(path) in out and "cloud allowed" in out and "cmdauth" in out
    assert "env:OPENAI_API_KEY" in out and "****" + CANARY[-4:] in out
    _, js, _ = run(ip, capsys, "%llm config --json")
    assert json.loads(js)["path"] == str(path)
    for text in (out, js):
        assert CANARY not in text
    # change the file: takes effect without a restart
    path.write_text(path.read_text().replace("retries = 2", "retries = 1") + "[aliases]\nquick = \"anthropic\"\n")
    result, out, _ = run(ip, capsys, "%llm config reload")
    assert result.success and "reloaded" in out
    assert ip.session.config.reliability.retries == 1 and ip.session.router.config is ip.session.config
    assert run(ip, capsys, "%%llm quick\nhi")[0].success and ip.user_ns["_llm"].target.startswith("anthropic")
    # a bad file keeps the config in force, one CONFIG_ERROR line
    good = ip.session.config
    path.write_text("default = [broken\n")
    result, out, err = run(ip, capsys, "%llm config reload")
    lines = [l for l in (out + err).splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("CONFIG_ERROR") and "kept" in lines[0]
    assert ip.session.config is good and "quick" in ip.session.config.aliases
    # cloud = false by reload
    path.write_text("cloud = false\n" + emulator_text(emulator))
    run(ip, capsys, "%llm config reload")
    assert ip.session.mode == "local-only"


def emulator_text(emulator) -> str:
    from tests.conftest import emulator_config
    return emulator_config(emulator)


def test_offline_survives_reload_and_known_servers_kept(ip, capsys):
    run(ip, capsys, "%llm offline on")
    known = ip.session.config.known
    run(ip, capsys, "%llm config reload")
    assert ip.session.mode == "local-only" and ip.session.config.known is known


# ---- validate on save, remaining quota -----------------------------------------------------------

def test_login_checks_the_key_before_storing(ip, capsys, emulator, monkeypatch):
    import getpass
    monkeypatch.delenv("GROQ_API_KEY")
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": CANARY)
    spec = ip.session._spec(ip.session.parse("groq"))
    emulator.expect_key("sk-the-real-one-0000", "groq")
    line = one_line(*run(ip, capsys, "%llm login groq")[::2], "INVALID_CREDENTIALS")
    assert "nothing was stored" in line and "--no-check" in line
    assert ip.session.credentials.lookup(spec) is None
    assert emulator.calls("groq", "models") and not emulator.calls("groq", "chat")
    result, out, err = run(ip, capsys, "%llm login groq --no-check")
    assert result.success and "not checked" in out and ip.session.credentials.lookup(spec).source == "keyring"
    run(ip, capsys, "%llm logout groq")
    emulator.expect_key(CANARY, "groq")
    result, out, err = run(ip, capsys, "%llm login groq")
    assert result.success and out.startswith("valid (") and "model list answered" in out
    assert ip.session.credentials.lookup(spec).source == "keyring"
    assert CANARY not in out + err


def test_login_check_without_a_model_list_sends_one_token(ip, capsys, emulator, monkeypatch):
    import getpass
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": CANARY)
    emulator.fault(404, on="models", provider="mygateway", times=5)
    result, out, err = run(ip, capsys, "%llm login mygateway")
    assert result.success and out.startswith("valid (") and "1-token request" in out, out + err
    chat = emulator.calls("mygateway", "chat")
    assert len(chat) == 1 and chat[0].body.get("max_tokens") == 1


def test_login_in_local_only_mode_is_stored_unchecked(ip, capsys, no_egress, monkeypatch):
    import getpass
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": CANARY)
    run(ip, capsys, "%llm offline on")
    result, out, _ = run(ip, capsys, "%llm login farcloud")
    assert result.success and out.startswith("unchecked (BLOCKED") and no_egress == []


def test_panel_save_key_checks_first(cloud, emulator, monkeypatch):
    from jupyter_llm.panel import Panel
    s = cloud()
    panel = Panel(s)
    panel.provider.value = "groq"
    emulator.expect_key("sk-the-real-one-0000", "groq")
    panel._pending = CANARY
    panel._guard(panel._do_save)()
    assert "INVALID_CREDENTIALS" in panel.message.value and CANARY not in panel.message.value
    assert panel.secret.value == ""
    emulator.expect_key(CANARY, "groq")
    panel._pending = CANARY
    panel._guard(panel._do_save)()
    assert "valid" in panel.message.value and "stored" in panel.message.value


def test_status_shows_quota_from_the_last_response(ip, capsys, emulator):
    emulator.reply_headers("openai", {"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "499",
                                      "x-ratelimit-reset-requests": "120ms", "x-ratelimit-limit-tokens": "150000",
                                      "x-ratelimit-remaining-tokens": "149980"})
    emulator.reply_headers("anthropic", {"anthropic-ratelimit-requests-limit": "50",
                                         "anthropic-ratelimit-requests-remaining": "49",
                                         "anthropic-ratelimit-tokens-remaining": "39000",
                                         "anthropic-ratelimit-requests-reset": "2026-01-01T00:00:00Z"})
    assert run(ip, capsys, "%%llm\nhi")[0].success
    _, out, _ = run(ip, capsys, "%llm status")
    assert "quota left" in out and "requests 499/500 (reset 120ms)" in out and "tokens 149980/150000" in out
    run(ip, capsys, "%llm use anthropic")
    assert run(ip, capsys, "%%llm\nhi")[0].success
    _, out, _ = run(ip, capsys, "%llm status")
    assert "requests 49/50" in out and "tokens 39000" in out


def test_panel_shows_mode_and_hides_disabled_providers(cloud):
    from jupyter_llm.panel import Panel
    s = cloud(FAR.replace('base_url = "https://llm.example.com/v1"\n', 'base_url = "https://llm.example.com/v1"\nenabled = false\n'))
    panel = Panel(s)
    panel._sync_all()
    values = [v for _, v in panel.provider.options]
    assert "farcloud" not in values and "openai" in values
    assert "local only" not in panel.status.value
    s.set_offline(True)
    panel._apply_queued()
    assert "local only" in panel.status.value


def test_offline_scans_no_foreign_host(cloud, no_egress):
    s = cloud()
    s.set_offline(True)
    with pytest.raises(LLMError) as exc:
        s.discover(ports=(8080, 8081), host="10.1.2.3")
    assert exc.value.code == "BLOCKED" and no_egress == []
    assert s.discover(ports=(1, 2), host="127.0.0.1", timeout=0.2) == []


def test_offline_covers_map_rows(cloud, emulator, no_egress):
    import pandas as pd
    from jupyter_llm.mapping import map_rows
    s = cloud(FAR)
    s.set_offline(True)
    df = pd.DataFrame({"t": ["a", "b", "c"]})
    far = map_rows(s, "Say {row.t}", df, target="farcloud:m1", progress=False)
    assert list(far["status"]) == ["BLOCKED"] * 3 and "local-only" in far["error"].iloc[0]
    here = map_rows(s, "Say {row.t}", df, target="openai:gpt-4o-mini", progress=False)
    assert list(here["status"]) == ["ok"] * 3
    assert no_egress == []
