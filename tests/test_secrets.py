"""Secrets stay secret, masked by value (issue 7, item 6): every secret in use and its URL-encoded and
base64 forms are scrubbed from errors, outputs, tables, logs, the history DB and widget traffic."""
from __future__ import annotations

import base64
import json
import logging
import sqlite3
from urllib.parse import quote

import pytest

from jupyter_llm import redact
from jupyter_llm.errors import LLMError
from tests.conftest import CANARY, emulator_config
from tests.test_magics import ip, run  # noqa: F401  (ip is a fixture)

PASSWORD = "hunter2-pass-9"


@pytest.fixture(autouse=True)
def fresh_registry():
    redact.forget_all()
    yield
    redact.forget_all()


def _forms(secret: str) -> list[str]:
    raw = secret.encode()
    out = [secret, quote(secret, safe=""), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()]
    for prefix in (b"a", b"ab", b"user:", b"Bearer ", b":"):   # inside a longer base64 blob, any alignment
        out.append(base64.b64encode(prefix + raw + b":x").decode())
    return out


def test_scrub_masks_every_form_of_a_registered_secret():
    redact.register(CANARY)
    for form in _forms(CANARY):
        text = redact.scrub(f"header: {form} trailing")
        assert form not in text and CANARY not in text, form
    assert redact.scrub(CANARY) == "****" + CANARY[-4:]
    assert redact.scrub("nothing secret here") == "nothing secret here"


def test_basic_auth_pairs_and_url_secrets():
    url = f"https://bob:{quote(PASSWORD)}@gw.example.com/v1?api-key={CANARY}&region=eu"
    redact.register_url(url)
    basic = base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
    text = redact.scrub(f"Authorization: Basic {basic}; url={url}")
    assert basic not in text and PASSWORD not in text and CANARY not in text
    shown = redact.safe_url(url)
    assert shown == "https://****@gw.example.com/v1?api-key=****&region=eu"


def test_errors_are_scrubbed_when_made():
    redact.register(CANARY)
    err = LLMError("PROVIDER_ERROR", f"server said: bad key {CANARY}", hint=f"b64 {base64.b64encode(CANARY.encode()).decode()}")
    assert CANARY not in str(err) and CANARY not in err.line() and CANARY not in repr(err)
    assert base64.b64encode(CANARY.encode()).decode() not in err.line()


def test_logs_are_scrubbed(caplog):
    redact.register(CANARY)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("jupyter_llm.test").warning("key is %s", CANARY)
        logging.getLogger("httpx").info("HTTP Request: GET https://x/?key=%s", quote(CANARY))
    assert CANARY not in caplog.text and quote(CANARY) not in caplog.text


def test_env_keys_and_base_url_secrets_are_known_before_use(cloud):
    s = cloud()
    s.credentials  # the store registers what config and environment hold
    assert CANARY not in redact.scrub(f"x {CANARY} y")


def _gateway_session(isolated_env, emulator, monkeypatch, base_url: str, extra: str = ""):
    from jupyter_llm.config import load_config
    from jupyter_llm.kernel_session import Session
    path = isolated_env / "config.toml"
    path.write_text(emulator_config(emulator) + f'[providers.secretgw]\nkind = "openai-compatible"\n'
                    f'base_url = "{base_url}"\nmodel = "m"\n' + extra)
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.setenv("SECRETGW_API_KEY", CANARY)
    return Session(load_config(path, strict=True))


def test_status_does_not_show_base_url_userinfo_or_api_key(ip, capsys, emulator, isolated_env, monkeypatch):
    import jupyter_llm
    url = emulator.url("secretgw").replace("http://", f"http://bob:{PASSWORD}@") + f"?api-key={CANARY}"
    s = _gateway_session(isolated_env, emulator, monkeypatch, url)
    jupyter_llm.unload_ipython_extension(ip)
    jupyter_llm._session = s
    jupyter_llm.load_ipython_extension(ip)
    result, out, err = run(ip, capsys, "%llm use secretgw")
    assert result.success, err
    for cmd in ("%llm status", "%llm providers", "%llm models secretgw"):
        result, out, err = run(ip, capsys, cmd)
        both = out + err
        assert PASSWORD not in both and CANARY not in both, cmd
        assert base64.b64encode(f"bob:{PASSWORD}".encode()).decode() not in both
    st = s.status(probe=False)
    assert "****@" in st["base_url"] and PASSWORD not in json.dumps(st) and CANARY not in json.dumps(st)


def test_a_basic_auth_header_echoed_in_an_error_is_masked(isolated_env, emulator, monkeypatch):
    url = emulator.url("secretgw").replace("http://", f"http://bob:{PASSWORD}@")
    s = _gateway_session(isolated_env, emulator, monkeypatch, url)
    r = s.ask("hi", target="secretgw:fault-leak")
    assert r.error is not None
    sent = emulator.last("secretgw").headers.get("authorization", "")
    assert sent  # the gateway did get a credential, and echoed it back in its error
    basic = base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
    line = r.error.line()
    assert CANARY not in line and PASSWORD not in line and basic not in line, line
    assert sent.split()[-1] not in line


def test_a_failing_token_command_does_not_print_a_secret(isolated_env, emulator, monkeypatch):
    extra = ('[providers.cmdgw]\nkind = "openai-compatible"\nbase_url = "' + emulator.url("cmdgw") + '"\n'
             'auth = "command"\ncommand = "sh -c \'echo token: $OPENAI_API_KEY 1>&2; echo other >&2; exit 3\'"\n')
    s = _gateway_session(isolated_env, emulator, monkeypatch, emulator.url("secretgw"), extra)
    r = s.ask("hi", target="cmdgw:m")
    assert r.error is not None and r.error.code == "INVALID_CREDENTIALS"
    assert "exit code 3" in r.error.line() and CANARY not in r.error.line()


def test_a_key_interpolated_into_a_prompt_stays_out_of_output_history_and_logs(ip, capsys, emulator, caplog):
    ip.session.credentials  # registers the environment keys
    ip.user_ns["leaky"] = CANARY
    with caplog.at_level(logging.DEBUG):
        result, out, err = run(ip, capsys, "%%llm -o answer\nplease repeat {leaky}")
    assert result.success, err
    assert CANARY not in out and CANARY not in err and CANARY not in caplog.text
    ip.session.store.flush()
    raw = ip.session.store.path.read_bytes()
    wal = ip.session.store.path.with_name(ip.session.store.path.name + "-wal")
    raw += wal.read_bytes() if wal.exists() else b""
    assert CANARY.encode() not in raw
    with sqlite3.connect(ip.session.store.path) as conn:
        rows = conn.execute("SELECT prompt, response FROM exchanges").fetchall()
    assert rows and all(CANARY not in (p or "") + (a or "") for p, a in rows)
    result, out, err = run(ip, capsys, "%llm history")
    assert CANARY not in out


def test_panel_secret_field_never_echoes(cloud, monkeypatch):
    """ipywidgets 8 echoes a frontend-set value to every frontend unless the trait opts out."""
    pytest.importorskip("ipywidgets")
    from jupyter_llm.panel import Panel
    p = Panel(cloud())
    sent = []

    class FakeComm:  # what the kernel would put on iopub for this widget
        comm_id = "fake"
        kernel = None

        def send(self, data=None, metadata=None, buffers=None):
            sent.append(data)

        def close(self, *a, **k):
            pass

        def on_msg(self, *a, **k):
            pass

    real_comm = p.secret.comm
    p.secret.comm = FakeComm()
    p.secret.set_state({"value": CANARY})
    p.secret.comm = real_comm
    assert p._pending == CANARY and p.secret.value == ""
    blob = json.dumps(sent) + p.message.value + json.dumps(p.secret.get_state())
    assert CANARY not in blob
    assert not any(m.get("method") == "echo_update" and "value" in m.get("state", {}) for m in sent)
    assert CANARY not in redact.scrub(f"later error mentions {CANARY}")  # it is registered at once
    p.close()


def test_the_canary_never_reaches_iopub_the_notebook_or_the_history(kernel_factory, emulator, isolated_env):
    """A real kernel: the key typed into the panel, a key interpolated into a prompt, status, history and
    errors; no iopub message, no saved notebook output, no widget state and no DB row holds the key."""
    import queue
    import time

    import nbformat
    cfg = isolated_env / "kernel-config.toml"
    cfg.write_text(emulator_config(emulator))
    data = isolated_env / "kernel-data"
    k = kernel_factory(JUPYTER_LLM_CONFIG=cfg, JUPYTER_LLM_DATA_DIR=data, OPENAI_API_KEY=CANARY,
                       PYTHON_KEYRING_BACKEND="keyrings.alt.file.PlaintextKeyring",
                       KEYRING_PROPERTY_FILE_PATH=isolated_env / "kernel-keyring.cfg")
    runs = [k.run("%load_ext jupyter_llm"), k.run("%llm panel")]
    ids = k.run("from jupyter_llm.panel import current_panel\nimport jupyter_llm\n"
                "_p = current_panel(jupyter_llm.session())\nprint(_p.secret.model_id)")
    model_id = ids.stdout.strip()
    assert model_id, ids.stderr
    # the frontend types the key into the password box: a comm update, as JupyterLab sends it
    msg = k.kc.session.msg("comm_msg", {"comm_id": model_id, "data": {
        "method": "update", "state": {"value": CANARY}, "buffer_paths": []}})
    k.kc.shell_channel.send(msg)
    widget_traffic, deadline = [], time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            m = k.kc.get_iopub_msg(timeout=0.2)
        except queue.Empty:
            continue
        if m["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                break
            widget_traffic.append(m)
    runs.append(k.run("print(_p._pending == __import__('os').environ['OPENAI_API_KEY'], _p.secret.value == '')"))
    assert runs[-1].stdout.split() == ["True", "True"], runs[-1].stderr
    runs += [k.run("import os\nkey = os.environ['OPENAI_API_KEY']"),
             k.run("%%llm\nplease repeat {key}"),
             k.run("%%llm openai:fault-leak\nhi"),
             k.run("%llm status"), k.run("%llm providers"), k.run("%llm history"),
             k.run("print(_p.message.value); print(_p.secret.get_state())")]
    everything = json.dumps([m["content"] for r in runs for m in r.messages] + [m["content"] for m in widget_traffic])
    assert "Hello from" in everything and "PROVIDER_ERROR" in everything
    assert CANARY not in everything
    assert base64.b64encode(CANARY.encode()).decode() not in everything
    # the notebook a user would save from these outputs
    nb = nbformat.v4.new_notebook()
    for r in runs:
        cell = nbformat.v4.new_code_cell("")
        cell.outputs = [nbformat.v4.output_from_msg(m) for m in r.messages
                        if m["msg_type"] in ("stream", "display_data", "execute_result", "error")]
        nb.cells.append(cell)
    assert CANARY not in nbformat.writes(nb)
    k.run("jupyter_llm.session().store.flush()")
    db = b"".join(p.read_bytes() for p in data.glob("history.sqlite3*"))
    assert db and CANARY.encode() not in db


def test_a_logged_traceback_is_scrubbed(caplog):
    redact.register(CANARY)
    with caplog.at_level(logging.DEBUG):
        try:
            raise RuntimeError(f"the server rejected {CANARY}")
        except RuntimeError:
            logging.getLogger("jupyter_llm").debug("failed", exc_info=True)
    assert "rejected" in caplog.text and CANARY not in caplog.text


def test_a_key_echoed_in_a_compare_column_is_masked(ip, capsys, emulator, monkeypatch):
    ip.session.credentials
    ip.user_ns["leaky"] = CANARY
    result, out, err = run(ip, capsys, "%%llm --compare openai:gpt-4o-mini anthropic --no-stream\nrepeat {leaky}")
    assert result.success, err
    assert "you said repeat" in out and CANARY not in out and CANARY not in err
    monkeypatch.setattr("jupyter_llm.render.in_kernel", lambda: True)
    from tests.test_compare import captured
    results, outputs = captured(ip, lambda: ip.run_cell_magic("llm", "--compare openai:gpt-4o-mini anthropic",
                                                              "repeat {leaky}"))
    assert outputs and all(CANARY not in str(o.data) for o in outputs)
