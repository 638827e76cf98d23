#!/usr/bin/env python3
"""`make demo`: two real llama.cpp servers with the tiny generated model, the quickstart executed
against them, its outputs printed, the servers stopped. No key, no download."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import llama_server as ls  # noqa: E402


def demo_config(path: Path, ports: list[int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'default = "tiny-a"\n[local]\nports = {{ {ports[0]} = "tiny-a", {ports[1]} = "tiny-b" }}\n'
        f'[aliases]\n"tiny-a" = "local:{ports[0]}"\n"tiny-b" = "local:{ports[1]}"\n')
    return path


def print_outputs(nb) -> None:
    """The executed notebook as text: each code cell and what it showed."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        src = "\n".join(l for l in cell.source.splitlines() if True)
        print("\n\033[1m>>> " + src.replace("\n", "\n... ") + "\033[0m")
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                print(out.text, end="")
            elif out.output_type == "error":
                print(f"{out.ename}: {out.evalue}")
            else:
                data = out.get("data", {})
                text = data.get("text/plain") or data.get("text/markdown") or ""
                if text:
                    print(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8080, help="first server's port; the second uses the next one")
    ap.add_argument("--keep", action="store_true", help="leave the servers running (stop: make stop)")
    args = ap.parse_args()
    import nbclient
    import nbformat

    cache = ROOT / ".cache" / "demo"
    t0 = time.perf_counter()
    servers = []
    for port, alias in ((args.port, "tiny-a"), (args.port + 1, "tiny-b")):
        if ls.port_in_use(port):
            print(f"port {port} is busy; stop what runs there (make stop PORT={port}) or pass --port", file=sys.stderr)
            for s in servers:
                s.stop()
            return 1
        servers.append(ls.start_server(port=port, alias=alias))
        print(f"llama.cpp server {alias} on http://127.0.0.1:{port}")
    print(f"servers ready in {time.perf_counter() - t0:.1f} s")
    os.environ["JUPYTER_LLM_CONFIG"] = str(demo_config(cache / "config.toml", [args.port, args.port + 1]))
    os.environ.setdefault("JUPYTER_LLM_DATA_DIR", str(cache / "data"))
    try:
        nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
        t1 = time.perf_counter()
        nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                                resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
        out = cache / "quickstart.ipynb"
        nbformat.write(nb, out)
        print_outputs(nb)
        print(f"\nexecuted notebooks/quickstart.ipynb in {time.perf_counter() - t1:.1f} s -> {out}")
    finally:
        if not args.keep:
            for s in servers:
                s.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
