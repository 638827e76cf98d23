"""The `%llm serve`, `%llm servers`, `%llm stop` and `%llm discover` faces: parse, call serve.py / the Session,
show one table or one line."""
from __future__ import annotations

from typing import Any

from .errors import LLMError
from .tables import seconds, show_table


def _parser(prog: str):
    from .magics import _Parser
    return _Parser(prog=prog, add_help=False)


class _Progress:
    """One line that updates in place: a display in a notebook, a carriage-return line in a terminal."""

    def __init__(self) -> None:
        from .render import in_kernel
        self.handle = None
        self.kernel = in_kernel()
        self.width = 0

    def __call__(self, text: str) -> None:
        if self.kernel:
            from IPython.display import display
            if self.handle is None:
                self.handle = display({"text/plain": text}, raw=True, display_id=True)
            else:
                self.handle.update({"text/plain": text}, raw=True)
        else:
            print("\r" + text.ljust(self.width), end="", flush=True)
            self.width = len(text)

    def done(self, text: str) -> None:
        if self.kernel and self.handle is not None:
            self.handle.update({"text/plain": text}, raw=True)
        elif self.kernel:
            print(text)
        else:
            print("\r" + text.ljust(self.width), flush=True)


def cmd_serve(magics, rest: list[str]) -> None:
    """%llm serve PATH.gguf [--port N] [--ctx N] [--alias NAME] [--gpu-layers N]"""
    from . import serve
    p = _parser("%llm serve")
    p.add_argument("model")
    p.add_argument("--port", type=int)
    p.add_argument("--ctx", type=int)
    p.add_argument("--alias")
    p.add_argument("--gpu-layers", type=int)
    p.add_argument("--timeout", type=float, default=serve.START_TIMEOUT)
    args = p.parse_args(rest)
    from .config import check_number  # nan, inf, negative and absurd numbers are one BAD_ARGUMENT line
    for key, name in (("port", "port"), ("ctx", "serve.ctx"), ("gpu_layers", "serve.gpu_layers"),
                      ("timeout", "serve.timeout")):
        if getattr(args, key) is not None:
            setattr(args, key, check_number(name, getattr(args, key), label="--" + key.replace("_", "-")))
    progress = _Progress()
    try:
        s = serve.start(magics.session, args.model, port=args.port, ctx=args.ctx, alias=args.alias,
                        gpu_layers=args.gpu_layers, timeout=args.timeout, progress=progress)
    except KeyboardInterrupt:
        progress.done("interrupted: the server was stopped before it was ready")
        return None
    except LLMError:
        if progress.handle is not None:
            progress.done("llama.cpp did not start")
        raise
    targets = f"local:{s.port}" + (f" or local:{s.name}" if s.name else "")
    progress.done(f"serving {s.model_path.name} as {s.model!r} on http://{s.host}:{s.port} "
                  f"({s.backend}, pid {s.pid}, ready in {seconds(s.startup_s)}); target {targets}; "
                  f"use it with %llm use {s.target}")
    return None


def _memory(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def cmd_servers(magics, rest: list[str]) -> None:
    """%llm servers: what this kernel started."""
    from . import serve
    if rest:
        raise LLMError("BAD_ARGUMENT", "%llm servers takes no arguments")
    rows = []
    for s in serve.servers():
        if s.alive():
            state, mem, slots = "running", _memory(serve.rss_bytes(s.pid)), serve.slots(s)
        else:
            state, mem, slots = f"exited ({s.proc.returncode if s.proc else '?'})", "", ""
        rows.append((s.port, s.target, s.model, s.model_path.name, s.pid, mem, slots, state, s.backend))
    pool = magics.session.config.local_pool
    if not rows and not pool:
        print("no servers started by this kernel (start one with %llm serve MODEL.gguf; %llm discover finds others)")
        return
    if rows:
        show_table(["port", "target", "model", "file", "pid", "memory", "slots", "state", "backend"], rows)
    if pool:  # [local] pool: each server's health and slots (target local:pool)
        from .pool import Pool
        p = Pool.from_config(magics.session.config)
        p.refresh()
        show_table(["server", "state", "model", "slots", "detail"], p.health_rows(),
                   caption=f"local:pool: {len(p.healthy())} of {len(p.members)} healthy, "
                           f"{sum(m.slots for m in p.healthy())} slots")


def cmd_stop(magics, rest: list[str]) -> None:
    """%llm stop PORT|local:NAME|all"""
    from . import serve
    if len(rest) != 1:
        raise LLMError("BAD_ARGUMENT", "usage: %llm stop PORT  or  %llm stop all")
    if rest[0] == "all":
        stopped = serve.stop_all(magics.session)
        print(f"stopped {len(stopped)} server{'s' if len(stopped) != 1 else ''}"
              + (": " + ", ".join(f"local:{s.port}" for s in stopped) if stopped else ""))
        return
    s = serve.stop(magics.session, serve.find(magics.session, rest[0]).port)
    print(f"stopped local:{s.port} ({s.model}, pid {s.pid})")


def _port_range(text: str | None) -> tuple[int, int] | None:
    """FIRST-LAST in ASCII digits, each 1-65535 (validation.NUMBERS), at most 1025 ports."""
    if not text:
        return None
    import re
    from .config import check_number
    m = re.fullmatch(r"\s*([0-9]{1,5})\s*(?:-\s*([0-9]{1,5})\s*)?", text)
    if not m:
        raise LLMError("BAD_ARGUMENT", f"--ports wants FIRST-LAST (1-65535), e.g. 8080-8092, got {text!r}")
    a, b = (check_number("discover.port", int(g), label="--ports") for g in (m.group(1), m.group(2) or m.group(1)))
    if a > b:
        raise LLMError("BAD_ARGUMENT", f"--ports wants FIRST-LAST with FIRST <= LAST, got {text!r}")
    if b - a > 1024:
        raise LLMError("BAD_ARGUMENT", f"--ports {text} spans {b - a + 1} ports; scan at most 1025 at a time")
    return a, b


def discover_rows(session, ports: tuple[int, int] | None, host: str | None) -> list[tuple[Any, ...]]:
    """(port, model, context, slots, state, target) for every llama.cpp server and Ollama model found."""
    from urllib.parse import urlsplit
    from .providers import spec_for
    from .providers.ollama import tags
    servers = session.discover(ports=ports, host=host)
    local_host = session.config.local_host
    rows: list[tuple[Any, ...]] = []
    for s in servers:
        if (host or local_host) != local_host:
            target = f"not addressable as local (set [local] host = \"{host}\" in the config)"
        else:
            target = f"local:{s.name}" if s.name else f"local:{s.port}"
        rows.append((s.port, s.model or "", s.n_ctx or "", s.slots or "", s.state + (f" ({s.detail})" if s.detail else ""),
                     target))
    url = spec_for("ollama", session.config).base_url
    where = urlsplit(url)
    o_port = where.port or 80
    if (host is None or host == where.hostname) and (ports is None or ports[0] <= o_port <= ports[1]):
        rows = [r for r in rows if r[0] != o_port]  # Ollama's own rows say more than its OpenAI-compatible face
        try:
            for m in tags(url, timeout=0.5):
                rows.append((o_port, m.name, "", "", "ok (Ollama)", f"ollama:{m.name}"))
        except (OSError, ValueError):
            pass
    return rows


def cmd_discover(magics, rest: list[str]) -> None:
    """%llm discover [--ports 8080-8092] [--host 127.0.0.1]"""
    p = _parser("%llm discover")
    p.add_argument("--ports")
    p.add_argument("--host")
    args = p.parse_args(rest)
    ports = _port_range(args.ports)
    if args.host is not None:
        from .config import check_host
        args.host = check_host(args.host)
    rows = discover_rows(magics.session, ports, args.host)
    if not rows:
        lo, hi = ports or magics.session.config.local_scan
        print(f"no llama.cpp server or Ollama found on {args.host or magics.session.config.local_host} ports {lo}-{hi} "
              "(start one with %llm serve MODEL.gguf, or scan other ports with --ports FIRST-LAST)")
        return
    show_table(["port", "model", "context", "slots", "state", "target"], rows,
               caption="switch with %llm use TARGET; these servers are remembered for this session")
