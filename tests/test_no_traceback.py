"""No traceback reaches the user, ever (issue 7, item 4): each known case is one coded line, in an
IPython shell and in a real kernel's iopub."""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time

import pytest

from tests.test_magics import assert_one_line_error, ip, run  # noqa: F401  (ip is a fixture)


def test_host_with_a_space_in_discover(ip, capsys):
    result, out, err = run(ip, capsys, '%llm discover --host "127.0.0 .1" --ports 8080-8081')
    assert_one_line_error(result, err, "BAD_ARGUMENT")
    assert "--host" in err


@pytest.mark.parametrize("host", ["http://127.0.0.1", "127.0.0.1:8080", "a/b", "-x", "a..b", "exa mple"])
def test_malformed_hosts_are_refused_by_the_session_api_too(cloud, host):
    from jupyter_llm.errors import LLMError
    s = cloud()
    with pytest.raises(LLMError) as info:
        s.discover(ports=(8080, 8080), host=host)
    assert info.value.code == "BAD_ARGUMENT"


def test_lone_surrogate_in_a_variable_names_the_variable(ip, capsys, emulator):
    ip.user_ns["bad_text"] = "ok \udcff here"
    result, out, err = run(ip, capsys, "%%llm\nsummarise {bad_text}")
    assert_one_line_error(result, err, "BAD_ARGUMENT")
    assert "{bad_text}" in err and "surrogate" in err
    assert emulator.calls() == []


def test_lone_surrogate_in_the_system_option(ip, capsys, emulator):
    result, out, err = run(ip, capsys, "%%llm --system '\udc80'\nhi")
    assert_one_line_error(result, err, "BAD_ARGUMENT")
    assert emulator.calls() == []


def test_a_variable_whose_format_raises(ip, capsys, emulator):
    class Grumpy:
        def __format__(self, spec):
            raise RuntimeError("no")

        @property
        def attr(self):
            raise OSError("gone")

    ip.user_ns["g"] = Grumpy()
    for body in ("{g}", "{g.attr}"):
        result, out, err = run(ip, capsys, f"%%llm\n{body}")
        assert_one_line_error(result, err, "BAD_ARGUMENT")
    assert emulator.calls() == []


def test_history_with_a_huge_n(ip, capsys):
    result, out, err = run(ip, capsys, "%llm history -n 99999999999999999999")
    assert_one_line_error(result, err, "BAD_ARGUMENT")


@pytest.mark.parametrize("poison", [
    "not json", "[1, 2]", '{"text": 5}', '{"text": "x", "usage": "lots"}',
    '{"text": "x", "usage": {"input_tokens": "1"}}', '{"text": "x", "usage": {"output_tokens": -1}}',
    '{"text": "x", "finish_reason": 3}', '{"text": "x", "answered_by": ["a"]}', "[" * 100000,
    b"\xff\xfe binary",
])
def test_poisoned_cache_row_is_a_miss(cloud, emulator, poison):
    s = cloud()
    s.set(cache="on")
    first = s.ask("cache me", new=True, no_history=True)
    assert first.ok and not first.cached
    s.store.flush()
    with sqlite3.connect(s.store.path) as conn:
        assert conn.execute("UPDATE cache SET response = ?", [poison]).rowcount == 1
    again = s.ask("cache me", new=True, no_history=True)
    assert again.ok and not again.cached and again.text == first.text
    assert len(emulator.calls("openai")) == 2  # the poisoned row was a miss: the request was sent
    s.store.flush()
    third = s.ask("cache me", new=True, no_history=True)
    assert third.cached  # and the good answer replaced the poisoned row


def test_interrupt_while_the_key_prompt_waits(ip, capsys, monkeypatch):
    import getpass

    def interrupted(prompt=""):
        raise KeyboardInterrupt

    monkeypatch.setattr(getpass, "getpass", interrupted)
    result, out, err = run(ip, capsys, "%llm login openai")
    assert_one_line_error(result, err, "BAD_ARGUMENT")
    assert "cancelled" in err and "nothing was stored" in err
    monkeypatch.setattr("builtins.input", interrupted)
    result, out, err = run(ip, capsys, "%llm login openai --method gateway")
    assert_one_line_error(result, err, "BAD_ARGUMENT")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_config_path_does_not_block_loading(tmp_path):
    from jupyter_llm.config import load_config
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("cfg", load_config(fifo)), daemon=True)
    t.start()
    t.join(10)
    assert "cfg" in box, "reading a FIFO config blocked"
    err = box["cfg"].error
    assert err is not None and err.code == "CONFIG_ERROR" and str(fifo) in err.message and "FIFO" in err.message


def test_a_directory_config_path_is_a_config_error(tmp_path):
    from jupyter_llm.config import load_config
    (tmp_path / "cfgdir").mkdir()
    cfg = load_config(tmp_path / "cfgdir")
    assert cfg.error is not None and cfg.error.code == "CONFIG_ERROR" and "directory" in cfg.error.message


def test_an_unexpected_bug_is_still_one_line(ip, capsys, monkeypatch):
    """The last guard: an exception nobody planned for is one coded line naming it, no traceback."""
    monkeypatch.setattr(type(ip.session), "status", lambda self, **k: 1 / 0)
    result, out, err = run(ip, capsys, "%llm status")
    assert_one_line_error(result, err, "PROVIDER_ERROR")
    assert "ZeroDivisionError" in err and "internal error" in err


def test_interrupt_outside_a_stream_is_one_line(ip, capsys, monkeypatch):
    def boom(self, *a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(type(ip.session), "models", boom)
    capsys.readouterr()
    result = ip.run_cell("%llm models openai")
    err = capsys.readouterr().err
    assert not result.success and "Traceback" not in err and "UsageError: interrupted" in err


# ---- a real kernel: the known cases show one coded line and no traceback on iopub ----------------

KERNEL_CASES = [
    ('%llm discover --host "127.0.0 .1"', "BAD_ARGUMENT"),
    ("bad = 'x\\udcff'\n", None),
    ("%%llm\nhello {bad}", "BAD_ARGUMENT"),
    ("%llm history -n 99999999999999999999", "BAD_ARGUMENT"),
    ("%llm set timeout=nan", "BAD_ARGUMENT"),
    ("%llm budget inf", "BAD_ARGUMENT"),
    ("%%llm -t nan\nhi", "BAD_ARGUMENT"),
]


def test_known_cases_in_a_real_kernel_are_one_coded_line(kernel_factory, tmp_path):
    os.mkfifo(tmp_path / "fifo.toml")
    env = {"JUPYTER_LLM_CONFIG": str(tmp_path / "fifo.toml"), "JUPYTER_LLM_DATA_DIR": str(tmp_path / "data"),
           "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
           "KEYRING_PROPERTY_FILE_PATH": str(tmp_path / "keyring.cfg")}
    k = kernel_factory(**env)
    started = time.monotonic()
    load = k.run("%load_ext jupyter_llm", timeout=60)
    assert time.monotonic() - started < 30
    assert load.status == "ok" and "CONFIG_ERROR" in load.stderr and "FIFO" in load.stderr
    for code, expected in KERNEL_CASES:
        cell = k.run(code, timeout=60)
        assert cell.of("error") == [], (code, cell.of("error"))
        if expected is None:
            assert cell.status == "ok", (cell.reply, cell.stderr)
            continue
        assert cell.status == "error", (code, cell.reply)   # the cell counts as failed
        lines = [ln for ln in cell.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"UsageError: {expected}: "), (code, cell.stderr)
        assert "Traceback" not in json.dumps([m["content"] for m in cell.messages])


def test_interrupting_the_key_prompt_in_a_real_kernel(kernel_factory, tmp_path):
    """The kernel's interrupt button while `%llm login` waits for the hidden prompt: one coded line."""
    k = kernel_factory(JUPYTER_LLM_CONFIG=tmp_path / "none.toml", JUPYTER_LLM_DATA_DIR=tmp_path / "data",
                       PYTHON_KEYRING_BACKEND="keyrings.alt.file.PlaintextKeyring",
                       KEYRING_PROPERTY_FILE_PATH=tmp_path / "keyring.cfg")
    assert k.run("%load_ext jupyter_llm").status == "ok"
    asked = []

    def interrupt_instead(request):
        asked.append(request)
        k.interrupt()
        time.sleep(1.0)
        return ""

    cell = k.run("%llm login openai", stdin=interrupt_instead, timeout=60)
    assert asked and asked[0].get("password") is True
    assert cell.of("error") == [], cell.of("error")
    lines = [ln for ln in cell.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("UsageError: BAD_ARGUMENT: login cancelled"), cell.stderr
    after = k.run("import keyring; print(keyring.get_password('jupyter-llm', 'openai'))")
    assert after.stdout.strip() == "None"


def test_garbled_history_rows_are_shown_not_crashed_on(ip, capsys):
    ip.session.ask("a real one")
    store = ip.session.store
    store.flush()
    with sqlite3.connect(store.path) as conn:
        conn.execute("INSERT INTO exchanges (time, target, prompt, input_tokens, cost, latency, status) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)", [1e20, None, b"\xff\xfe", "many", "free", "slow", ""])
        conn.execute("INSERT INTO exchanges (time, target, prompt, cost) VALUES (?, ?, ?, ?)",
                     ["yesterday", 5, 7, float("inf")])
    result, out, err = run(ip, capsys, "%llm history -n 5")
    assert result.success, err
    assert "a real one" in out and "Traceback" not in err


def test_a_json_answer_nested_too_deeply_is_one_coded_line(ip, capsys, emulator):
    emulator.script("[" * 100000 + "]" * 100000)
    result, out, err = run(ip, capsys, "%%llm -f json\ngive json")
    assert_one_line_error(result, err, "PROVIDER_ERROR")
    assert "internal error" not in err and "not valid JSON" in err
