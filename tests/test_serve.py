"""`%llm serve`, `%llm servers`, `%llm stop` with real llama.cpp (xllamacpp) children of real kernels: they answer,
they are listed, and they never outlive the kernel (shutdown, graceful restart, killed kernel)."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.llama import llama_server_module

pytestmark = [pytest.mark.kernel, pytest.mark.llama]


@pytest.fixture(scope="module")
def model() -> Path:
    return llama_server_module().ensure_model()


def gone(pid: int, timeout: float = 20.0) -> bool:
    """True once `pid` no longer runs (a zombie waiting for its reaper counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.1)
    return False


def serve_in(kernel, model, *args: str) -> tuple[int, int]:
    run = kernel.run(f"%llm serve {model} " + " ".join(args), timeout=120)
    assert run.status == "ok", (run.stderr, run.error)
    shown = "\n".join(run.texts())
    m = re.search(r"on http://127\.0\.0\.1:(\d+) \(xllamacpp|llama-server, pid (\d+)", shown)
    port = int(re.search(r"127\.0\.0\.1:(\d+)", shown).group(1))
    pid = int(re.search(r"pid (\d+)", shown).group(1))
    assert m, shown
    return port, pid


def test_served_model_streams_is_listed_and_stops(kernel_factory, model):
    k = kernel_factory()
    assert k.run("%load_ext jupyter_llm").status == "ok"
    port, pid = serve_in(k, model, "--alias", "kid", "--ctx", "1024")
    assert not gone(pid, 0.2)
    run = k.run("%%llm local:kid --max-tokens 8 -t 0\nSay hi", timeout=60)
    assert run.status == "ok", run.error
    assert len(run.of("update_display_data")) >= 2  # it streamed
    out = k.run("print(_llm.ok, _llm.finish_reason, _llm.cost, _llm.usage.output_tokens)")
    assert out.stdout.split() == ["True", "length", "0.0", "8"]
    table = "\n".join(k.run("%llm servers").texts())
    row = next(l for l in table.splitlines() if l.startswith(str(port)))
    assert "local:kid" in row and "kid" in row and str(pid) in row and "running" in row
    assert re.search(r"\d+ MB", row) and "1 idle" in row
    # the served server is a target everywhere: bare local, models, the picker
    assert f"local:{port}" in "\n".join(k.run("%llm models local").texts())
    picker = k.run("import jupyter_llm; print(jupyter_llm.session().known_targets())").stdout
    assert "'local:kid'" in picker
    # a kernel interrupt is not for the server: it lives in its own session
    sleeping = k.kc.execute("import time; time.sleep(30)")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # an interrupt before the cell runs is ignored (the kernel is idle)
        msg = k.kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") == sleeping and msg["msg_type"] == "execute_input":
            break
    time.sleep(0.3)
    k.interrupt()
    k.kc.get_shell_msg(timeout=30)
    assert not gone(pid, 1.0)
    stop = k.run("%llm stop local:kid")
    assert f"stopped local:{port}" in stop.stdout
    assert gone(pid)
    assert "no servers started by this kernel" in k.run("%llm servers").stdout


@pytest.mark.parametrize("now", [True, False], ids=["killed-kernel", "graceful-restart"])
def test_kernel_restart_stops_served_models(kernel_factory, model, now):
    k = kernel_factory()
    k.run("%load_ext jupyter_llm")
    _, pid1 = serve_in(k, model)
    _, pid2 = serve_in(k, model, "--alias", "second")
    k.km.restart_kernel(now=now)  # now=True: SIGKILL, no atexit: only the child's own guard can act
    k.kc.wait_for_ready(timeout=60)
    assert gone(pid1) and gone(pid2)
    assert k.run("print('fresh')").stdout == "fresh\n"


FAKE_LLAMA_SERVER = """#!{python}
# A stand-in `llama-server` on PATH: strict llama-server flags, llama.cpp's server from xllamacpp, and none
# of jupyter-llm's watchdogs, so only what survives exec (PR_SET_PDEATHSIG) ties it to the kernel.
import argparse, os, signal, threading, xllamacpp as xlc
ap = argparse.ArgumentParser(prog="llama-server")
ap.add_argument("-m", "--model", required=True)
ap.add_argument("--host", required=True)
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--alias", required=True)
ap.add_argument("-c", "--ctx-size", type=int)
ap.add_argument("-ngl", "--n-gpu-layers", type=int)
a = ap.parse_args()
import time; time.sleep(float(os.environ.get("FAKE_LLAMA_DELAY", "0")))  # a big model takes a while to load
p = xlc.CommonParams()
p.model.path, p.hostnames, p.port, p.model_alias = a.model, [a.host], a.port, {{a.alias}}
if a.ctx_size:
    p.n_ctx = a.ctx_size
if a.n_gpu_layers is not None:
    p.n_gpu_layers = a.n_gpu_layers
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
server = xlc.Server(p)
open(os.environ["FAKE_LLAMA_LOG"], "a").write(" ".join(os.sys.argv[1:]) + "\\n")
stop.wait()
os._exit(0)
"""


def test_llama_server_on_path_is_preferred_and_dies_with_a_killed_kernel(kernel_factory, model, tmp_path):
    import sys
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "llama-server"
    fake.write_text(FAKE_LLAMA_SERVER.format(python=sys.executable))
    fake.chmod(0o755)
    log = tmp_path / "argv.log"
    k = kernel_factory(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_LLAMA_LOG=str(log),
                       FAKE_LLAMA_DELAY="2")
    k.run("%load_ext jupyter_llm")
    run = k.run(f"%llm serve {model} --alias bin --ctx 1024 --gpu-layers 0", timeout=120)
    # progress while it loads, in one display updated in place, ending with where it serves
    first = run.of("display_data")
    assert len(first) == 1 and "starting llama.cpp (llama-server) on port" in first[0]["content"]["data"]["text/plain"]
    updates = [m["content"]["data"]["text/plain"] for m in run.of("update_display_data")]
    assert len(updates) >= 2 and any(re.search(r", [12] s$", u) for u in updates), updates
    shown = updates[-1]
    assert "(llama-server, pid" in shown, (shown, run.stderr)
    pid = int(re.search(r"pid (\d+)", shown).group(1))
    port = int(re.search(r"127\.0\.0\.1:(\d+)", shown).group(1))
    assert log.read_text().split() == ["-m", str(model), "--host", "127.0.0.1", "--port", str(port),
                                       "--alias", "bin", "-c", "1024", "-ngl", "0"]
    assert open(f"/proc/{pid}/cmdline").read().split("\0")[1] == str(fake)  # exec'd: the server is our child
    assert k.run("%%llm local:bin --max-tokens 4\nhi").status == "ok"
    k.km.restart_kernel(now=True)
    assert gone(pid)


def test_shutdown_stops_served_models(kernel_factory, model):
    k = kernel_factory()
    k.run("%load_ext jupyter_llm")
    _, pid = serve_in(k, model)
    k.shutdown()
    assert gone(pid)


def test_bad_serve_input_is_one_coded_line(kernel_factory, model, tmp_path):
    k = kernel_factory()
    k.run("%load_ext jupyter_llm")
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("hello")
    import socket
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    cases = {
        f"%llm serve {tmp_path}/missing.gguf": "no model file at",
        f"%llm serve {not_gguf}": "is not a GGUF model file",
        f"%llm serve {model} --port {busy.getsockname()[1]}": "already in use",
        f"%llm serve {model} --alias 8080": "cannot name a target",
        f"%llm serve {model} --ctx -4": "--ctx must be between 0",
        f"%llm serve {model} --timeout nan": "--timeout must be a finite number",
        f"%llm serve {model} --port 99999": "--port must be between 1 and 65535",
        "%llm serve": "the following arguments are required",
        "%llm stop 1": "was not started by this kernel",
        "%llm stop": "usage: %llm stop PORT",
    }
    try:
        for source, words in cases.items():
            run = k.run(source)
            assert run.status == "error", (source, run.stdout, run.stderr, run.texts())
            lines = [l for l in run.stderr.splitlines() if l.strip()]
            assert len(lines) == 1 and "Traceback" not in run.stderr, (source, run.stderr)
            assert lines[0].startswith("UsageError: BAD_ARGUMENT: ") and words in lines[0], (source, lines)
    finally:
        busy.close()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 64)  # the magic, then nonsense
    run = k.run(f"%llm serve {broken}", timeout=60)
    lines = [l for l in run.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("UsageError: PROVIDER_ERROR: llama.cpp exited with code 1"), lines
    assert "broken.gguf" in lines[0] and "Traceback" not in lines[0] and "full log:" in lines[0]
    assert "no servers started" in k.run("%llm servers").stdout


def test_python_api_and_registry(model):
    """serve.start from Python: the session knows the server by port and alias; stop forgets it."""
    from jupyter_llm import serve
    from jupyter_llm.kernel_session import Session
    s = Session()
    seen = []
    s.observe(seen.append)
    lines = []
    served = serve.start(s, model, alias="api", ctx=512, progress=lines.append)
    try:
        assert s.parse("local:api").port == served.port
        assert served.port in s.config.known.ports() and "servers" in seen
        assert s.check("local:api").ok
        assert s.check("local").ok  # bare local finds the served server
        assert f"local:{served.port}" in [m.id for m in s.models("local")]
        r = s.ask("hello", target="local:api", max_tokens=4, temperature=0)
        assert r.ok and r.cost == 0.0 and r.answered_by.startswith(f"local:{served.port}")
    finally:
        serve.stop(s, served.port)
    assert served.port not in s.config.known.ports()
    with pytest.raises(Exception) as exc:
        s.parse("local:api")
    assert "unknown local server" in str(exc.value)


def test_no_server_program_names_the_extra(monkeypatch, model):
    import importlib.util
    from jupyter_llm import serve
    from jupyter_llm.errors import LLMError
    from jupyter_llm.kernel_session import Session
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("JUPYTER_LLM_LLAMA_SERVER", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "xllamacpp" else real(name, *a))
    with pytest.raises(LLMError) as exc:
        serve.start(Session(), model)
    assert exc.value.code == "BAD_ARGUMENT" and "jupyter-llm[local]" in exc.value.hint
    assert serve.servers() == []
