"""The keyring read in a helper process (keyring_prefetch) and the work deferred until a request goes out
(inflight): the same credentials as an in-process read, keyring-first kept, every failure read in-process,
no helper left behind, and the key in no output."""
from __future__ import annotations

import io
import json
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from jupyter_llm import inflight, keyring_backend, keyring_prefetch
from jupyter_llm.config import Config
from jupyter_llm.credentials import CredentialStore
from jupyter_llm.providers import spec_for
from tests.conftest import CANARY, emulator_config, run_fresh_script

OTHER = "sk-env-key-that-must-lose-0042"


def _store(creds: CredentialStore) -> None:
    creds.store("openai", CANARY)
    creds.store("anthropic", "gw-token-1234", method="gateway", base_url="https://gw.example/v1", project="p1")
    creds.store("gemini", "printf tok-5678", method="command", ttl=60)


def _fresh_store(**kw) -> CredentialStore:
    return CredentialStore(Config(), **kw)


def test_the_helper_reads_what_an_in_process_read_would():
    creds = _fresh_store()
    _store(creds)
    ids = ["openai", "anthropic", "gemini", "groq"]
    read = keyring_prefetch.Read(ids)
    backend = keyring_backend.select()
    for pid in ids:
        value, errors, problem = read.take(pid)
        assert value == keyring_backend.read(backend, pid, lambda kr, exc: None)
        assert errors == [] and problem is None
    assert read._proc.wait(timeout=10) == 0   # collected and reaped, not left as a zombie
    # Through a store: every stored form resolves to the same Auth as an in-process read.
    for pid in ("openai", "anthropic", "gemini"):
        spec = spec_for(pid, Config())
        helped = _fresh_store()
        helped._prefetched = keyring_prefetch.Read([pid])
        via_helper, in_process = helped.lookup(spec), _fresh_store().lookup(spec)
        assert helped._prefetched.waited >= 0
        for field in ("secret", "method", "source", "base_url", "project"):
            assert getattr(via_helper, field) == getattr(in_process, field), (pid, field)
        # a command's token expires ttl seconds after it ran: the two runs were moments apart
        assert via_helper.expiry == pytest.approx(in_process.expiry, abs=30) if in_process.expiry else True


def test_a_read_serves_one_cell_and_later_reads_are_live(monkeypatch):
    creds = _fresh_store()
    creds.store("openai", CANARY)
    spec = spec_for("openai", Config())
    creds._prefetched = keyring_prefetch.Read(["openai"])
    assert creds.lookup(spec).secret == CANARY
    assert creds.lookup(spec).secret == CANARY   # a compare or map may look the key up twice in one cell
    read = creds._prefetched
    creds.store("openai", "sk-rotated-key-9999")   # a login after the helper read: its value is dropped
    assert creds._prefetched is None
    assert creds.lookup(spec).secret == "sk-rotated-key-9999"
    # a rotation from outside (another process) is seen once the read is older than the cell it served
    rotate = ("import keyring; keyring.set_password('jupyter-llm', 'openai', 'sk-outside-key-7777')")
    creds._prefetched = keyring_prefetch.Read(["openai"])
    assert creds.lookup(spec).secret == "sk-rotated-key-9999"
    import subprocess
    subprocess.run([sys.executable, "-c", rotate], check=True)
    monkeypatch.setattr(keyring_prefetch, "MAX_AGE", 0.0)
    assert creds.lookup(spec).secret == "sk-outside-key-7777"
    with pytest.raises(keyring_prefetch.Unavailable):
        read.take("openai")


def test_keyring_first_still_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OTHER)
    creds = _fresh_store()
    creds.store("openai", CANARY)
    creds._prefetched = keyring_prefetch.Read(["openai"])
    auth = creds.resolve(spec_for("openai", Config()))
    assert auth.secret == CANARY and auth.source == "keyring"


@pytest.mark.parametrize("body", [
    "import sys\ndef helper_main():\n    sys.exit(3)\n",                              # exits badly
    "import sys\ndef helper_main():\n    sys.stdout.write('not json')\n",            # prints nonsense
    "import sys\ndef helper_main():\n    sys.stdout.write('{\"values\": 5}')\n",      # the wrong shape
    "raise ImportError('broken install')\n",                                         # cannot even load
])
def test_any_trouble_with_the_helper_means_an_in_process_read(body, tmp_path, monkeypatch):
    helper = tmp_path / "helper.py"
    helper.write_text(body)
    monkeypatch.setattr(keyring_prefetch, "_BACKEND_FILE", str(helper))
    creds = _fresh_store()
    creds.store("openai", CANARY)
    creds._prefetched = keyring_prefetch.Read(["openai"])
    with pytest.raises(keyring_prefetch.Unavailable):
        creds._prefetched.take("openai")
    creds._prefetched = keyring_prefetch.Read(["openai"])
    assert creds.lookup(spec_for("openai", Config())).secret == CANARY


def test_a_helper_that_cannot_start_means_an_in_process_read(monkeypatch):
    monkeypatch.setattr(keyring_prefetch, "worthwhile", lambda: True)
    monkeypatch.setattr(keyring_prefetch.sys, "executable", "/nonexistent/python")
    creds = _fresh_store()
    creds.store("openai", CANARY)
    spec = spec_for("openai", Config())
    creds.prefetch([spec])
    assert creds._prefetched is None
    assert creds.lookup(spec).secret == CANARY


def test_an_old_read_is_not_used(monkeypatch):
    creds = _fresh_store()
    creds.store("openai", CANARY)
    read = keyring_prefetch.Read(["openai"])
    read._done.wait(20)
    monkeypatch.setattr(keyring_prefetch, "MAX_AGE", 0.0)
    assert not read.covers(["openai"])
    with pytest.raises(keyring_prefetch.Unavailable):
        read.take("openai")


def test_an_interrupt_while_waiting_stops_the_helper(tmp_path, monkeypatch):
    import os
    import signal
    helper = tmp_path / "slow.py"
    helper.write_text("import time\ndef lower_priority():\n    pass\ndef helper_main():\n    time.sleep(60)\n")
    monkeypatch.setattr(keyring_prefetch, "_BACKEND_FILE", str(helper))
    read = keyring_prefetch.Read(["openai"])
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))   # a real signal, as a kernel gets
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            read.take("openai")
    finally:
        timer.cancel()
    assert read._proc.wait(timeout=10) != 0   # killed, and reaped by the collecting thread


def test_a_prompting_backend_is_left_to_the_kernel(monkeypatch, capsys):
    """The helper never reads a backend that would ask for a master password (even one named explicitly):
    the kernel does that read itself, as before."""
    consulted = []

    class CryptFileKeyring:
        def get_password(self, service, username):
            consulted.append(username)
            return "x"
    CryptFileKeyring.__module__ = "keyrings.cryptfile.cryptfile"
    backend = keyring_backend.Backend(readers=[CryptFileKeyring()], writer=None, description="cryptfile")
    monkeypatch.setattr(keyring_backend, "select", lambda: backend)
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"ids": ["openai"], "path": sys.path})))
    keyring_backend.helper_main()
    out = json.loads(capsys.readouterr().out)
    assert out["inprocess"] is True and out["values"] == {} and consulted == []


@pytest.mark.skipif(not hasattr(__import__("os"), "nice"), reason="no process priorities here")
def test_the_helper_yields_the_cpu_and_the_caller_keeps_its_priority(tmp_path, monkeypatch, capsys):
    """The helper process runs below the kernel's priority; helper_main itself (called here in-process)
    never changes its caller's."""
    import os
    real = (Path(keyring_prefetch.__file__).parent / "keyring_backend.py").read_text()
    helper = tmp_path / "report.py"
    helper.write_text(real + "\ndef helper_main():\n    import json, os, sys\n"
                      "    sys.stdout.write(json.dumps({'values': {}, 'nice': os.nice(0)}))\n")
    monkeypatch.setattr(keyring_prefetch, "_BACKEND_FILE", str(helper))
    before = os.nice(0)
    read = keyring_prefetch.Read(["openai"])
    assert read._done.wait(30)
    assert read._result["nice"] == min(before + 10, 19)
    monkeypatch.setattr(keyring_backend, "select", lambda: keyring_backend.Backend(readers=[]))
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"ids": ["openai"], "path": sys.path})))
    keyring_backend.helper_main()
    capsys.readouterr()
    assert os.nice(0) == before


def test_the_helper_reports_failing_readers_by_type_only(monkeypatch, capsys):
    class Locked:
        def get_password(self, service, username):
            raise RuntimeError(f"locked; the key is {CANARY}")
    Locked.__module__, Locked.__qualname__ = "some.backend", "Locked"
    monkeypatch.setattr(keyring_backend, "select", lambda: keyring_backend.Backend(readers=[Locked()]))
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"ids": ["openai"], "path": sys.path})))
    keyring_backend.helper_main()
    text = capsys.readouterr().out
    assert json.loads(text)["errors"] == [["some.backend.Locked", "RuntimeError"]] and CANARY not in text


def test_used_only_where_it_helps(monkeypatch):
    monkeypatch.setattr(keyring_prefetch, "_cpus", lambda: 4)
    monkeypatch.delitem(sys.modules, "keyring", raising=False)
    assert keyring_prefetch.worthwhile()
    monkeypatch.setattr(keyring_prefetch, "_cpus", lambda: 1)   # one core: nothing would run beside the SDK
    assert not keyring_prefetch.worthwhile()
    monkeypatch.setattr(keyring_prefetch, "_cpus", lambda: 4)
    python = sys.executable
    monkeypatch.setattr(sys, "executable", "/opt/SomeApp/bin/someapp")   # embedded: never start that binary
    assert not keyring_prefetch.worthwhile()
    monkeypatch.setattr(sys, "executable", python)
    monkeypatch.setitem(sys.modules, "keyring", types.ModuleType("keyring"))   # loaded: in-process is cheap
    assert not keyring_prefetch.worthwhile()
    # only providers that take a key, and not when the read would not help
    monkeypatch.delitem(sys.modules, "keyring")
    started = []
    monkeypatch.setattr(keyring_prefetch, "Read", lambda ids: started.append(list(ids)) or types.SimpleNamespace(
        covers=lambda ids: True, discard=lambda: None))
    creds = _fresh_store()
    creds.prefetch([spec_for("local", Config())])
    assert started == []
    creds.prefetch([spec_for("openai", Config()), spec_for("local", Config()), spec_for("anthropic", Config())])
    assert started == [["openai", "anthropic"]]


def test_deferred_work_waits_for_a_request_then_runs():
    ran = threading.Event()
    inflight.after_send(ran.set)
    assert not ran.wait(0.3)
    inflight.waiting()
    assert ran.wait(5)


def test_deferred_work_runs_anyway_and_never_raises(monkeypatch, caplog):
    import logging
    monkeypatch.setattr(inflight, "MAX_WAIT", 0.1)
    ran = threading.Event()

    def boom():
        ran.set()
        raise RuntimeError(f"would leak {CANARY}")
    with caplog.at_level(logging.DEBUG, logger="jupyter_llm.inflight"):
        inflight.after_send(boom)
        assert ran.wait(5)
        time.sleep(0.2)
    assert CANARY not in caplog.text and "Traceback" not in caplog.text


def test_work_that_needs_a_reply_is_skipped_without_one(monkeypatch):
    monkeypatch.setattr(inflight, "MAX_WAIT", 0.1)
    ran, skipped = threading.Event(), threading.Event()
    inflight.after_send(ran.set, otherwise=skipped.set)
    assert skipped.wait(5) and not ran.is_set()
    assert not inflight._waiting   # a request that never got a reply leaves nothing behind
    inflight.waiting()
    assert not ran.wait(0.2)


FIRST_CELL = r'''
import json, os, sys, time
from IPython.testing.globalipapp import start_ipython
ip = start_ipython()
ip.run_line_magic("load_ext", "jupyter_llm")
assert "keyring" not in sys.modules and "openai" not in sys.modules
ip.run_cell_magic("llm", sys.argv[1], "hello")
import jupyter_llm
read = jupyter_llm.session().credentials._prefetched
deadline = time.monotonic() + 20
while "keyring" not in sys.modules and time.monotonic() < deadline:   # the warm-up after the request went out
    time.sleep(0.05)
warmed = "keyring" in sys.modules
deadline = time.monotonic() + 20
while getattr(sys.modules.get("keyring.core"), "_keyring_backend", None) is None and time.monotonic() < deadline:
    time.sleep(0.05)
backend = type(getattr(sys.modules.get("keyring.core"), "_keyring_backend", None)).__name__
redetected = "keyring.backends.SecretService" in sys.modules   # detection imports every backend module
ip.run_cell_magic("llm", sys.argv[1], "again")
try:
    left = os.waitpid(-1, os.WNOHANG)   # (0, 0): a child still runs; (pid, status): one was never reaped
except ChildProcessError:
    left = None                          # no child process at all
print("RESULT " + json.dumps({"ids": None if read is None else list(read.ids), "warmed": warmed,
      "backend": backend, "redetected": redetected,
      "same_read": jupyter_llm.session().credentials._prefetched is read,
      "children": left}))
'''


@pytest.mark.parametrize("cell", ["openai:gpt-4o-mini", "--compare openai:gpt-4o-mini anthropic:claude-haiku-5-5"])
def test_a_fresh_kernels_first_cloud_cell_reads_the_keyring_through_the_helper(cell, emulator, isolated_env,
                                                                                 monkeypatch):
    """A fresh interpreter whose keyring backend is detected (as on a user's machine): the first cloud cell
    (and a compare's every column) gets the keyring's key, not the environment's, read by one helper while
    the SDK imports; keyring is loaded in the background for the next cell; no process is left behind."""
    creds = _fresh_store()
    creds.store("openai", CANARY)
    creds.store("anthropic", CANARY + "-anthropic")
    cfg = isolated_env / "first-config.toml"
    cfg.write_text(emulator_config(emulator))
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND")   # detected: keyrings.alt's file, read (never written) here
    env = dict(__import__("os").environ, JUPYTER_LLM_CONFIG=str(cfg), OPENAI_API_KEY=OTHER, ANTHROPIC_API_KEY=OTHER)
    got, printed = run_fresh_script(FIRST_CELL, cell, env=env)
    providers = ["openai"] + (["anthropic"] if "compare" in cell else [])
    assert got["ids"] == providers   # one helper read every target's entry
    assert got["warmed"] and got["same_read"] and got["children"] is None
    # the kernel loaded just the backend the helper's detection picked, without detecting again
    assert got["backend"] == "PlaintextKeyring" and got["redetected"] is False
    for provider in providers:
        calls = emulator.calls(provider)
        assert len(calls) == 2
        for call in calls:
            sent = call.headers.get("authorization") or call.headers.get("x-api-key") or ""
            assert sent.endswith(CANARY if provider == "openai" else CANARY + "-anthropic"), provider
    assert CANARY not in printed
