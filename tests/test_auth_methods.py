"""Gateway and command auth end to end: the real SDK sends what the stored credential says."""
from __future__ import annotations

import sys
import time

from tests.conftest import CANARY

def test_gateway_sends_token_org_and_base_url(cloud, emulator):
    s = cloud(extra=f'[providers.corp]\nkind = "openai-compatible"\nbase_url = "{emulator.url("unused")}"\n'
                    'auth = "gateway"\nmodel = "gpt-4o"\n', keys=False)
    s.login("corp", CANARY, method="gateway", base_url=emulator.url("corpgw"), organization="org-42",
            expiry=time.time() + 3600)
    r = s.ask("hi", target="corp")
    assert r.ok, r.error
    rec = emulator.last("corpgw")
    assert rec.headers["authorization"] == f"Bearer {CANARY}" and rec.headers.get("openai-organization") == "org-42"
    assert emulator.calls("unused") == []
    s.use("corp")
    st = s.status()
    assert st["auth"] == "gateway" and st["source"] == "keyring" and st["base_url"] == emulator.url("corpgw")
    assert CANARY not in repr(st)

def test_expired_gateway_token_is_invalid_credentials(cloud, emulator):
    s = cloud(extra='[providers.corp]\nkind = "openai-compatible"\nbase_url = "http://127.0.0.1:9/v1"\nauth = "gateway"\n',
              keys=False)
    s.login("corp", CANARY, method="gateway", expiry=time.time() - 10)
    r = s.ask("hi", target="corp:gpt-4o")
    assert r.error.code == "INVALID_CREDENTIALS" and "expired" in r.error.message and CANARY not in r.error.line()
    assert emulator.calls() == []

def test_command_token_is_cached_and_rerun_once_after_401(cloud, emulator, tmp_path):
    counter = tmp_path / "n"
    script = tmp_path / "token.py"
    script.write_text("import pathlib, sys\np = pathlib.Path(sys.argv[1])\nn = int(p.read_text()) + 1 if p.exists() else 1\n"
                      "p.write_text(str(n))\nprint(f'tok-{n}')\n")
    s = cloud(extra=f'[providers.cmdp]\nkind = "openai-compatible"\nbase_url = "{emulator.url("cmdp")}"\n'
                    f'auth = "command"\ncommand = "{sys.executable} {script} {counter}"\nmodel = "gpt-4o"\n', keys=False)
    emulator.expect_key("tok-1", "cmdp")
    assert s.ask("one", target="cmdp").ok and s.ask("two", target="cmdp").ok
    assert counter.read_text() == "1"  # cached between requests
    emulator.expect_key("tok-2", "cmdp")  # the token rotates server-side: next call gets a 401
    r = s.ask("three", target="cmdp")
    assert r.ok and counter.read_text() == "2"
    assert [c.headers["authorization"] for c in emulator.calls("cmdp")][-2:] == ["Bearer tok-1", "Bearer tok-2"]
    emulator.expect_key("never", "cmdp")
    r = s.ask("four", target="cmdp")
    assert r.error.code == "INVALID_CREDENTIALS" and counter.read_text() == "3"  # re-run once, not forever
