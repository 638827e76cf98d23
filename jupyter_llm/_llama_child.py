"""The process `%llm serve` starts: it ties its own life to the kernel's, then becomes the llama.cpp server
(exec of `llama-server`, or llama.cpp's HTTP server from the `xllamacpp` package run in this process).

    python -m jupyter_llm._llama_child --parent-pid PID --watchdog-fd FD [--binary PATH] -- SERVER ARGS

Tied to the kernel three ways, so a killed kernel (restart, crash, SIGKILL) never leaves a server behind:
Linux PR_SET_PDEATHSIG (SIGKILL when the parent goes, kept across exec), a pipe whose write end only the
kernel holds (EOF when the kernel is gone, any OS), and a poll of the parent pid.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except Exception:  # no prctl: the pipe and the pid poll still hold
            pass
    if parent and os.getppid() != parent:  # the kernel died before prctl took effect
        os._exit(3)


def _watch(parent: int, fd: int | None) -> None:
    """Exit at once when the kernel is gone: EOF on the watchdog pipe, or our parent pid changes."""
    if fd is not None:
        def pipe() -> None:
            try:
                while os.read(fd, 1):
                    pass
            except OSError:
                pass
            os._exit(0)
        threading.Thread(target=pipe, daemon=True, name="llm-watchdog").start()

    def poll() -> None:
        while True:
            if parent and os.getppid() != parent:
                os._exit(0)
            time.sleep(0.5)
    threading.Thread(target=poll, daemon=True, name="llm-parent-poll").start()


def _xllamacpp(args: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="llama-server (xllamacpp)")
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("-a", "--alias")
    ap.add_argument("-c", "--ctx-size", type=int)
    ap.add_argument("-ngl", "--n-gpu-layers", type=int)
    a = ap.parse_args(args)
    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = a.model
    p.hostnames = [a.host]
    p.port = a.port
    if a.alias:
        p.model_alias = {a.alias}
    if a.ctx_size is not None:
        p.n_ctx = a.ctx_size
    if a.n_gpu_layers is not None:
        p.n_gpu_layers = a.n_gpu_layers
    p.endpoint_slots = True
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = xlc.Server(p)  # loads the model, then serves HTTP on its own threads
    except Exception as exc:  # llama.cpp logged why just above
        print(f"llama.cpp server did not start: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
    print(f"llama.cpp server (xllamacpp) listening on {server.listening_address}", flush=True)
    stop.wait()
    sys.stdout.flush()
    os._exit(0)  # the C++ server threads need no orderly join


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--" in argv:
        i = argv.index("--")
        own, server_args = argv[:i], argv[i + 1:]
    else:
        own, server_args = argv, []
    ap = argparse.ArgumentParser(prog="python -m jupyter_llm._llama_child")
    ap.add_argument("--parent-pid", type=int, default=0)
    ap.add_argument("--watchdog-fd", type=int)
    ap.add_argument("--binary")
    a = ap.parse_args(own)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the kernel's Ctrl-C is not for us
    _die_with_parent(a.parent_pid)
    if a.binary:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execv(a.binary, [a.binary, *server_args])  # PDEATHSIG survives exec
    _watch(a.parent_pid, a.watchdog_fd)
    _xllamacpp(server_args)


if __name__ == "__main__":
    main()
