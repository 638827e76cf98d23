#!/usr/bin/env python3
"""Start and stop a real llama.cpp server on 127.0.0.1 with the tiny test model (dev/test tooling).

    python scripts/llama_server.py start --port 8080 --alias tiny-llama   # background, waits for /health
    python scripts/llama_server.py stop --port 8080                        # (or: stop --all)
    python scripts/llama_server.py run --port 8080                         # foreground, Ctrl-C stops
    python scripts/llama_server.py status                                  # servers started from here

From Python (tests, the demo notebook):

    handle = start_server(port=None, alias="tiny-a")   # port None: a free port
    handle.port, handle.url, handle.base_url, handle.alias
    handle.stop()                                      # or: with start_server() as handle: ...

Which server runs: `$LLAMA_SERVER` or `llama-server` on PATH if it runs here, else llama.cpp's own
HTTP server embedded in the prebuilt `xllamacpp` wheel (same C++ server code and JSON), run in a
child process by this very script (`_serve-xllamacpp`). The model is generated with
scripts/make_tiny_gguf.py into .cache/models/ on first use; pid and log files go to .cache/run/.
Only ever binds 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import argparse
import atexit
import http.client
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = ROOT / ".cache"
MODELS = CACHE / "models"
RUN = CACHE / "run"
DEFAULT_MODEL = MODELS / "tiny-llama.gguf"
DEFAULT_ALIAS = "tiny-llama"
HOST = "127.0.0.1"


class ServerStartError(RuntimeError):
    """The server exited or never became healthy; the message carries the log tail."""


# ---------------------------------------------------------------- model

def ensure_model(path: str | os.PathLike | None = None, *, ctx: int = 2048, seed: int = 0) -> Path:
    """The tiny GGUF at `path` (default .cache/models/tiny-llama.gguf, or $LLAMA_MODEL), generated if missing."""
    model = Path(path or os.environ.get("LLAMA_MODEL") or DEFAULT_MODEL)
    if model.is_file() and (model != DEFAULT_MODEL or _current(model)):
        return model
    spec = importlib.util.spec_from_file_location("_jupyter_llm_make_tiny_gguf", HERE / "make_tiny_gguf.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.write_model(model, ctx=ctx, seed=seed)


def _current(model: Path) -> bool:
    """False for a tiny model generated before make_tiny_gguf wrote `add_space_prefix` (its vocabulary
    breaks llama.cpp's json_schema sampler): such a cached file is regenerated."""
    with open(model, "rb") as fh:
        return b"tokenizer.ggml.add_space_prefix" in fh.read(1 << 16)


# ---------------------------------------------------------------- backend

def find_binary() -> str | None:
    """A working `llama-server` ($LLAMA_SERVER, else PATH), or None."""
    cand = os.environ.get("LLAMA_SERVER") or shutil.which("llama-server")
    if not cand:
        return None
    try:
        subprocess.run([cand, "--version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return cand


def _server_command(backend: str, model: Path, host: str, port: int, alias: str, ctx: int,
                    parallel: int, threads: int, api_key: str | None, extra: list[str],
                    parent_pid: int | None) -> tuple[str, list[str]]:
    """(backend actually used, argv) for one server process."""
    binary = find_binary() if backend in ("auto", "binary") else None
    if backend == "binary" and not binary:
        raise ServerStartError("no working llama-server binary (set $LLAMA_SERVER or put it on PATH)")
    common = ["-m", str(model), "--host", host, "--port", str(port), "--alias", alias,
              "-c", str(ctx), "-np", str(parallel), "-t", str(threads)]
    if api_key:
        common += ["--api-key", api_key]
    if binary:
        return "binary", [binary, *common, "-tb", str(threads), *extra]
    if importlib.util.find_spec("xllamacpp") is None:
        raise ServerStartError("no llama.cpp server available: pip install xllamacpp==2026.10.11549, "
                               "or set $LLAMA_SERVER to a llama-server binary")
    argv = [sys.executable, str(Path(__file__).resolve()), "_serve-xllamacpp", *common, *extra]
    if parent_pid:
        argv += ["--parent-pid", str(parent_pid)]
    return "xllamacpp", argv


def _serve_xllamacpp(argv: list[str]) -> int:
    """Run llama.cpp's HTTP server from the xllamacpp wheel in this process until SIGTERM/SIGINT."""
    ap = argparse.ArgumentParser(prog="llama_server.py _serve-xllamacpp")
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--host", default=HOST)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("-a", "--alias")
    ap.add_argument("-c", "--ctx-size", type=int, default=0)
    ap.add_argument("-np", "--parallel", type=int, default=1)
    ap.add_argument("-t", "--threads", type=int, default=0)
    ap.add_argument("-n", "--n-predict", type=int, default=-1)
    ap.add_argument("--api-key", action="append", default=[])
    ap.add_argument("--metrics", action="store_true")
    ap.add_argument("--parent-pid", type=int, default=0, help="exit when this process goes away")
    a = ap.parse_args(argv)

    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = a.model
    p.hostnames = [a.host]
    p.port = a.port
    if a.alias:
        p.model_alias = set(a.alias.split(","))
    p.n_ctx = a.ctx_size
    p.n_parallel = a.parallel
    p.n_predict = a.n_predict
    if a.threads > 0:
        p.cpuparams.n_threads = a.threads
        p.cpuparams_batch.n_threads = a.threads
    if a.api_key:
        p.api_keys = a.api_key
    p.endpoint_metrics = a.metrics
    p.endpoint_slots = True

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = xlc.Server(p)  # loads the model, then serves HTTP on a background thread
    print(f"xllamacpp: llama.cpp server listening on {server.listening_address}", flush=True)
    if a.parent_pid:
        def watch():
            while not stop.is_set():
                if os.getppid() != a.parent_pid:
                    stop.set()
                time.sleep(0.5)
        threading.Thread(target=watch, daemon=True).start()
    stop.wait()
    sys.stdout.flush()
    os._exit(0)  # the C++ server threads need no orderly join; the OS frees everything


# ---------------------------------------------------------------- probing

def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = HOST) -> bool:
    """True when something accepts connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def http_get(host: str, port: int, path: str, timeout: float = 1.0) -> tuple[int, object]:
    """(status, parsed JSON or text) of GET http://host:port/path; raises OSError when nothing answers."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
    finally:
        conn.close()
    try:
        return resp.status, json.loads(body)
    except ValueError:
        return resp.status, body


def wait_healthy(host: str, port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None,
                 log: Path | None = None) -> float:
    """Poll GET /health until 200; return seconds waited. Fails fast if `proc` exits."""
    t0 = time.perf_counter()
    deadline = t0 + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise ServerStartError(f"llama.cpp server exited with code {proc.returncode} during start-up"
                                   + _log_tail(log))
        try:
            if http_get(host, port, "/health", timeout=1.0)[0] == 200:
                return time.perf_counter() - t0
        except OSError:
            pass
        if time.perf_counter() > deadline:
            raise ServerStartError(f"llama.cpp server on {host}:{port} not healthy after {timeout:.0f} s"
                                   + _log_tail(log))
        time.sleep(0.05)


def _log_tail(log: Path | None, n: int = 15) -> str:
    if not log or not log.exists():
        return ""
    lines = log.read_text(errors="replace").splitlines()[-n:]
    return f"; log {log}:\n" + "\n".join(lines)


# ---------------------------------------------------------------- handle

@dataclass(eq=False)
class ServerHandle:
    """A running llama.cpp server: where it is, what it serves, and how to stop it."""
    port: int
    alias: str
    host: str = HOST
    pid: int | None = None
    backend: str = "external"
    model: Path | None = None
    ctx: int | None = None
    parallel: int = 1
    log: Path | None = None
    startup_s: float | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)
    owned: bool = True
    ephemeral: bool = False  # on a port picked for us: its log is removed after a clean stop

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible API root."""
        return f"{self.url}/v1"

    @property
    def slot_ctx(self) -> int | None:
        """Context one request may use (what /props reports as n_ctx): total ctx split across slots."""
        return self.ctx // self.parallel if self.ctx else None

    @property
    def target(self) -> str:
        """The jupyter_llm target that addresses this server."""
        return f"local:{self.port}"

    def alive(self) -> bool:
        try:
            return http_get(self.host, self.port, "/health", timeout=1.0)[0] == 200
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server (SIGKILL after `timeout`), wait for it, remove its pid file. No-op if not ours."""
        if not self.owned or self.pid is None:
            return
        _terminate(self.pid, self.proc, timeout)
        pidfile = RUN / f"llama-{self.port}.pid"
        try:
            if pidfile.read_text().strip() == str(self.pid):
                pidfile.unlink()
        except OSError:
            pass
        if self.ephemeral and self.log is not None:
            self.log.unlink(missing_ok=True)
        self.pid = None
        if self in _owned:
            _owned.remove(self)

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _terminate(pid: int, proc: subprocess.Popen | None, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return
        elif not _pid_alive(pid):
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if proc is not None:
        proc.wait(timeout=5)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of someone else counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


_owned: list[ServerHandle] = []


@atexit.register
def _stop_owned() -> None:
    for handle in list(_owned):
        handle.stop(timeout=3)


def start_server(port: int | None = None, alias: str = DEFAULT_ALIAS, model: str | os.PathLike | None = None,
                 parallel: int = 1, *, ctx: int = 2048, threads: int = 1, host: str = HOST,
                 api_key: str | None = None, backend: str = "auto", extra_args: list[str] | tuple = (),
                 timeout: float = 60.0, detach: bool = False) -> ServerHandle:
    """Start a llama.cpp server and return once GET /health is 200.

    `port` None picks a free port (retried if someone grabs it first). `ctx` is the total context
    (split across `parallel` slots). Unless `detach`, the server dies with this process (atexit, and
    the xllamacpp child also watches its parent); `detach` is for the `start` CLI.
    """
    model_path = ensure_model(model)
    RUN.mkdir(parents=True, exist_ok=True)
    attempts = 3 if port is None else 1
    for attempt in range(attempts):
        p = free_port(host) if port is None else port
        if port_in_use(p, host):
            raise ServerStartError(f"port {p} on {host} is already in use "
                                   f"(if this tool started it: python scripts/llama_server.py stop --port {p})")
        used, argv = _server_command(backend, model_path, host, p, alias, ctx, parallel, threads, api_key,
                                     list(extra_args), None if detach else os.getpid())
        log = RUN / f"llama-{p}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=detach, cwd=str(ROOT))
        (RUN / f"llama-{p}.pid").write_text(str(proc.pid))
        handle = ServerHandle(port=p, alias=alias, host=host, pid=proc.pid, backend=used, model=model_path,
                              ctx=ctx, parallel=parallel, log=log, proc=proc, ephemeral=port is None)
        try:
            handle.startup_s = wait_healthy(host, p, timeout, proc, log)
        except ServerStartError:
            handle.ephemeral = False  # keep the log the error message points at
            handle.stop(timeout=3)
            if attempt + 1 < attempts:  # a free port taken before the server bound it: pick another
                continue
            raise
        if not detach:
            _owned.append(handle)
        return handle
    raise AssertionError("unreachable")


def stop_server(port: int, host: str = HOST, timeout: float = 10.0) -> bool:
    """Stop the server this tool started on `port` (by its pid file); False when there was none."""
    pidfile = RUN / f"llama-{port}.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return False
    if not _pid_alive(pid) or not _is_llama_process(pid):
        pidfile.unlink(missing_ok=True)
        return False
    _terminate(pid, None, timeout)
    pidfile.unlink(missing_ok=True)
    return True


def _is_llama_process(pid: int) -> bool:
    """Guard against a recycled pid: the process must look like a server we started."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return True  # no /proc (macOS): trust the pid file
    return "llama" in cmd


def running() -> list[tuple[int, int]]:
    """(port, pid) of every server with a live pid file under .cache/run/."""
    out = []
    for pidfile in sorted(RUN.glob("llama-*.pid")):
        try:
            port = int(pidfile.stem.split("-", 1)[1])
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        if _pid_alive(pid) and _is_llama_process(pid):
            out.append((port, pid))
        else:
            pidfile.unlink(missing_ok=True)  # stale: the server died without us
    return out


# ---------------------------------------------------------------- CLI

def _add_server_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--port", type=int, default=8080, help="0 = a free port (default 8080)")
    ap.add_argument("--alias", default=DEFAULT_ALIAS, help="model name reported by /v1/models")
    ap.add_argument("--model", help="GGUF path (default: the generated tiny model in .cache/models/)")
    ap.add_argument("-c", "--ctx", type=int, default=2048, help="total context, split across slots")
    ap.add_argument("-np", "--parallel", type=int, default=1, help="server slots")
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("--host", default=HOST)
    ap.add_argument("--api-key", help="require this key (llama-server --api-key)")
    ap.add_argument("--backend", choices=("auto", "binary", "xllamacpp"), default=os.environ.get("LLAMA_BACKEND", "auto"))
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for /health")
    ap.add_argument("extra", nargs="*", help="extra server arguments after --")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_serve-xllamacpp"]:
        return _serve_xllamacpp(argv[1:])
    ap = argparse.ArgumentParser(prog="llama_server.py", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    _add_server_args(sub.add_parser("start", help="start in the background and wait until healthy"))
    _add_server_args(sub.add_parser("run", help="run in the foreground until Ctrl-C"))
    stop = sub.add_parser("stop", help="stop a server started with `start`")
    stop.add_argument("--port", type=int, default=8080)
    stop.add_argument("--all", action="store_true", help="stop every server started from here")
    sub.add_parser("status", help="list servers started from here")
    model = sub.add_parser("model", help="generate the tiny model (if missing) and print its path")
    model.add_argument("--out", help="path (default .cache/models/tiny-llama.gguf)")
    a = ap.parse_args(argv)

    if a.cmd == "model":
        t0 = time.perf_counter()
        path = ensure_model(a.out)
        print(f"{path} ({path.stat().st_size / 1e6:.2f} MB, {time.perf_counter() - t0:.2f} s)")
        return 0
    if a.cmd == "status":
        rows = running()
        for port, pid in rows:
            print(f"port {port} pid {pid} {'healthy' if ServerHandle(port, '', pid=pid).alive() else 'not answering'}")
        if not rows:
            print("no servers started from here are running")
        return 0
    if a.cmd == "stop":
        ports = [p for p, _ in running()] if a.all else [a.port]
        stopped = [p for p in ports if stop_server(p)]
        for p in ports:
            print(f"stopped server on port {p}" if p in stopped else f"no server of ours on port {p}")
        return 0 if stopped or a.all else 1

    try:
        handle = start_server(a.port or None, a.alias, a.model, a.parallel, ctx=a.ctx, threads=a.threads,
                              host=a.host, api_key=a.api_key, backend=a.backend, extra_args=a.extra,
                              timeout=a.timeout, detach=(a.cmd == "start"))
    except ServerStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"llama.cpp server ({handle.backend}) pid {handle.pid} on {handle.url} model={handle.alias} "
          f"healthy after {handle.startup_s * 1000:.0f} ms; log {handle.log}", flush=True)
    if a.cmd == "start":
        print(f"use it as target {handle.target}; stop it with: python scripts/llama_server.py stop --port {handle.port}")
        return 0
    def interrupt(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)   # also when started in the background (SIGINT ignored)
    signal.signal(signal.SIGTERM, interrupt)
    try:  # run: foreground
        while handle.proc.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
