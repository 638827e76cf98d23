"""`%llm serve`, `%llm servers`, `%llm stop`: llama.cpp servers as children of the kernel. Starts `llama-server`
from PATH, else the `xllamacpp` package (`pip install jupyter-llm[local]`); waits for /health with progress;
registers the server as a target; stops it with the kernel (atexit, and the child dies with its parent)."""
from __future__ import annotations

import atexit
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import LLMError

START_TIMEOUT = 600.0   # seconds a model may take to load (big models from slow disks)
STOP_GRACE = 3.0        # seconds between SIGTERM and SIGKILL


@dataclass(eq=False)
class Served:
    """One llama.cpp server this kernel started."""
    port: int
    host: str
    model_path: Path
    model: str                 # what /v1/models reports (the alias)
    name: str | None           # `local:NAME` (from --alias)
    backend: str               # llama-server | xllamacpp
    pid: int
    ctx: int | None = None
    gpu_layers: int | None = None
    log: Path | None = None
    started: float = field(default_factory=time.time)
    startup_s: float | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)
    watchdog: int | None = field(default=None, repr=False)   # write end of the pipe the child watches

    @property
    def target(self) -> str:
        return f"local:{self.name}" if self.name else f"local:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


_served: dict[int, Served] = {}
_lock = threading.RLock()


# ---- which server program ----
def backend() -> tuple[str, str | None]:
    """("llama-server", path) when it is on PATH, else ("xllamacpp", None); BAD_ARGUMENT when neither is there."""
    binary = os.environ.get("JUPYTER_LLM_LLAMA_SERVER") or shutil.which("llama-server")
    if binary:
        return "llama-server", binary
    import importlib.util
    if importlib.util.find_spec("xllamacpp") is not None:
        return "xllamacpp", None
    raise LLMError("BAD_ARGUMENT", "no llama.cpp server program here: neither `llama-server` on PATH nor the "
                   "xllamacpp package", hint="pip install 'jupyter-llm[local]', or put llama-server on PATH")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _in_use(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def check_model(path: str | os.PathLike) -> Path:
    """The resolved path of a readable GGUF file; BAD_ARGUMENT naming what is wrong otherwise."""
    model = Path(os.path.expanduser(str(path)))
    if not model.is_file():
        raise LLMError("BAD_ARGUMENT", f"no model file at {model}", hint="give the path of a .gguf file")
    try:
        with open(model, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise LLMError("BAD_ARGUMENT", f"cannot read {model}: {exc.strerror or exc}") from None
    if magic != b"GGUF":
        raise LLMError("BAD_ARGUMENT", f"{model} is not a GGUF model file", hint="llama.cpp serves .gguf files")
    return model.resolve()


def _check_name(config, name: str | None, port: int | None) -> None:
    if name is None:
        return
    if not name or name.isdigit() or any(c in name for c in ":/ \t") or name == "pool":
        raise LLMError("BAD_ARGUMENT", f"--alias {name!r} cannot name a target",
                       hint="use letters, digits, - _ . (not only digits)")
    taken = config.local_names().get(name)
    if taken is not None and taken != port:
        raise LLMError("BAD_ARGUMENT", f"local:{name} already names port {taken}", hint="choose another --alias")


# ---- spawning from one long-lived thread (PR_SET_PDEATHSIG follows the thread that forked) ----
_spawn_q: "queue.Queue[tuple[Callable[[], Any], queue.Queue]]" = queue.Queue()
_spawner: threading.Thread | None = None


def _spawn(fn: Callable[[], Any]) -> Any:
    global _spawner
    with _lock:
        if _spawner is None or not _spawner.is_alive():
            def loop() -> None:
                while True:
                    job, reply = _spawn_q.get()
                    try:
                        reply.put((True, job()))
                    except BaseException as exc:
                        reply.put((False, exc))
            _spawner = threading.Thread(target=loop, name="llm-serve-spawner", daemon=True)
            _spawner.start()
    reply: queue.Queue = queue.Queue()
    _spawn_q.put((fn, reply))
    ok, value = reply.get()
    if not ok:
        raise value
    return value


def _launch(kind: str, binary: str | None, model: Path, host: str, port: int, alias: str, ctx: int | None,
            gpu_layers: int | None, log: Path) -> tuple[subprocess.Popen, int | None]:
    args = ["-m", str(model), "--host", host, "--port", str(port), "--alias", alias]
    if ctx is not None:
        args += ["-c", str(ctx)]
    if gpu_layers is not None:
        args += ["-ngl", str(gpu_layers)]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if os.name == "nt":  # no fd passing or sessions: own process group; the parent-pid poll guards it
        argv = [sys.executable, "-m", "jupyter_llm._llama_child", "--parent-pid", str(os.getpid())] + \
            (["--binary", binary] if binary else []) + ["--", *args]
        with open(log, "wb") as out:
            proc = _spawn(lambda: subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                                   env=env, creationflags=subprocess.CREATE_NEW_PROCESS_GROUP))
        return proc, None
    read_fd, write_fd = os.pipe()
    os.set_inheritable(read_fd, True)
    argv = [sys.executable, "-m", "jupyter_llm._llama_child", "--parent-pid", str(os.getpid()),
            "--watchdog-fd", str(read_fd)] + (["--binary", binary] if binary else []) + ["--", *args]
    try:
        with open(log, "wb") as out:
            proc = _spawn(lambda: subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                                   pass_fds=(read_fd,), start_new_session=True, env=env))
    finally:
        os.close(read_fd)
    return proc, write_fd


def _log_reason(log: Path | None) -> str:
    """Why llama.cpp gave up, from its log: the first error line (`... E tag: message`), else the last line."""
    import re
    try:
        lines = [l.strip() for l in log.read_text(errors="replace").splitlines() if l.strip()] if log else []
    except OSError:
        return ""
    for line in lines:
        m = re.match(r"^(?:[\d.:]+\s+)?E\s+(.*)$", line) or re.match(r"^.*\berror\b.*$", line, re.I)
        if m and "Traceback" not in line:
            return (m.group(1) if m.lastindex else m.group(0)).strip()[:300]
    return lines[-1][:300] if lines else ""


def _wait_healthy(s: Served, timeout: float, progress: Callable[[str], None] | None) -> None:
    from .providers.llamacpp import probe
    t0 = time.monotonic()
    shown = -1.0
    state = "starting"
    while True:
        if s.proc is not None and s.proc.poll() is not None:
            raise LLMError("PROVIDER_ERROR", f"llama.cpp exited with code {s.proc.returncode} while starting "
                           f"{s.model_path.name}: {_log_reason(s.log) or 'no output'}", hint=f"full log: {s.log}")
        info = probe(s.host, s.port, timeout=1.0, props=False)
        if info is not None and info.state == "ok":
            s.startup_s = time.monotonic() - t0
            return
        if info is not None and info.state == "loading":
            state = "loading the model"
        elapsed = time.monotonic() - t0
        if elapsed > timeout:
            raise LLMError("TIMEOUT", f"llama.cpp on port {s.port} not ready after {timeout:.0f} s",
                           hint=f"log: {s.log}")
        if progress is not None and elapsed - shown >= 0.5:
            shown = elapsed
            progress(f"starting llama.cpp ({s.backend}) on port {s.port}: {state}, {elapsed:.0f} s")
        time.sleep(0.1)


# ---- the library API ----
def start(session, model_path: str | os.PathLike, *, port: int | None = None, ctx: int | None = None,
          alias: str | None = None, gpu_layers: int | None = None, timeout: float = START_TIMEOUT,
          progress: Callable[[str], None] | None = None) -> Served:
    """Start llama.cpp serving `model_path` as a child of this process and return once /health is ok.
    It is registered with the session (`local:PORT`, and `local:ALIAS` with `alias`)."""
    config = session.config
    model = check_model(model_path)
    host = config.local_host or "127.0.0.1"
    for value, what in ((ctx, "--ctx"), (gpu_layers, "--gpu-layers")):
        if value is not None and value < 0:
            raise LLMError("BAD_ARGUMENT", f"{what} must be >= 0, got {value}")
    if port is not None and not 0 < port < 65536:
        raise LLMError("BAD_ARGUMENT", f"--port {port} is out of range 1-65535")
    _check_name(config, alias, port)
    kind, binary = backend()
    from .config import data_dir
    logs = data_dir() / "servers"
    logs.mkdir(parents=True, exist_ok=True)
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        p = port if port is not None else _free_port(host)
        if _in_use(host, p):
            raise LLMError("BAD_ARGUMENT", f"port {p} on {host} is already in use",
                           hint=f"leave out --port to take a free one; see what runs there with %llm discover --ports {p}")
        log = logs / f"llama-{p}.log"
        proc, watchdog = _launch(kind, binary, model, host, p, alias or model.stem, ctx, gpu_layers, log)
        s = Served(p, host, model, alias or model.stem, alias, kind, proc.pid, ctx, gpu_layers, log, proc=proc,
                   watchdog=watchdog)
        with _lock:
            _served[p] = s
        try:
            _wait_healthy(s, timeout, progress)
        except LLMError as exc:
            _stop(s)
            if port is None and attempt + 1 < attempts and exc.code == "PROVIDER_ERROR" and _in_use(host, p):
                continue  # someone took the free port between our probe and the server's bind
            raise
        except BaseException:  # Ctrl-C while loading: no half-started server stays behind
            _stop(s)
            raise
        config.known.remember(p, name=alias, model=s.model, source="serve")
        session.notify("servers")
        return s
    raise AssertionError("unreachable")


def _stop(s: Served) -> None:
    with _lock:
        if _served.get(s.port) is s:
            del _served[s.port]
    if s.proc is not None and s.proc.poll() is None:
        try:
            os.kill(s.pid, signal.SIGTERM)
            s.proc.wait(STOP_GRACE)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            s.proc.kill()
            s.proc.wait(5)
    if s.watchdog is not None:
        try:
            os.close(s.watchdog)
        except OSError:
            pass
        s.watchdog = None


def servers() -> list[Served]:
    """The servers this kernel started, by port (one that exited on its own stays listed until stopped)."""
    with _lock:
        return sorted(_served.values(), key=lambda s: s.port)


def find(session, what: str) -> Served:
    """A served server by `PORT`, `local:PORT` or `local:NAME`."""
    from .targets import parse_target
    text = what if what.startswith("local:") else f"local:{what}"
    target = parse_target(text, session.config)
    with _lock:
        s = _served.get(target.port) if target.port is not None else None
    if s is None:
        raise LLMError("BAD_ARGUMENT", f"{text} was not started by this kernel",
                       hint="see %llm servers; a server started elsewhere is stopped where it was started")
    return s


def stop(session, port: int) -> Served:
    """Stop the server this kernel started on `port` and forget it."""
    with _lock:
        s = _served.get(port)
    if s is None:
        raise LLMError("BAD_ARGUMENT", f"local:{port} was not started by this kernel", hint="see %llm servers")
    _stop(s)
    session.config.known.forget(port)
    session.notify("servers")
    return s


def stop_all(session=None) -> list[Served]:
    """Stop every server this kernel started (SIGTERM all, then SIGKILL what is left after the grace time)."""
    with _lock:
        todo = list(_served.values())
    for s in todo:
        if s.proc is not None and s.proc.poll() is None:
            try:
                os.kill(s.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + STOP_GRACE
    for s in todo:
        if s.proc is not None:
            try:
                s.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        _stop(s)
        if session is not None:
            session.config.known.forget(s.port)
    if session is not None and todo:
        session.notify("servers")
    return todo


atexit.register(stop_all)


def rss_bytes(pid: int) -> int | None:
    """Resident memory of `pid` (Linux /proc, else `ps`), None when unknown."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, timeout=5).stdout
        return int(out.strip()) * 1024 if out.strip() else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def slots(s: Served) -> str:
    """`idle 1/1`, `busy 2/4`, or `?` from /slots (else /props)."""
    import http.client
    import json
    conn = http.client.HTTPConnection(s.host, s.port, timeout=1.0)
    try:
        conn.request("GET", "/slots")
        resp = conn.getresponse()
        body = resp.read()
        if resp.status == 200:
            data = json.loads(body)
            if isinstance(data, list) and data:
                busy = sum(1 for x in data if isinstance(x, dict) and x.get("is_processing"))
                return f"{busy}/{len(data)} busy" if busy else f"{len(data)} idle"
    except (OSError, ValueError, http.client.HTTPException):
        return "not answering"
    finally:
        conn.close()
    from .providers.llamacpp import probe
    info = probe(s.host, s.port, timeout=1.0)
    return f"{info.slots} slots" if info is not None and info.slots else "?"
