#!/usr/bin/env python3
"""`make demo`: run notebooks/quickstart.ipynb top to bottom as a reader would and print what each cell showed.

The notebook brings up what it needs itself (it generates the tiny demo model if missing and starts its own
llama.cpp servers with `%llm serve` on free ports; they stop with its kernel). No key, no download, no config
written: only the history goes to .cache/demo/data unless JUPYTER_LLM_DATA_DIR says otherwise."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def print_outputs(nb) -> None:
    """The executed notebook as text: each code cell and what it showed."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        print("\n\033[1m>>> " + cell.source.replace("\n", "\n... ") + "\033[0m")
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
    ap.add_argument("notebook", nargs="?", default="quickstart.ipynb", help="a notebook in notebooks/")
    args = ap.parse_args()
    import nbclient
    import nbformat

    cache = ROOT / ".cache" / "demo"
    os.environ.setdefault("JUPYTER_LLM_DATA_DIR", str(cache / "data"))
    nb = nbformat.read(ROOT / "notebooks" / args.notebook, as_version=4)
    t0 = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / args.notebook
    nbformat.write(nb, out)
    print_outputs(nb)
    print(f"\nexecuted notebooks/{args.notebook} in {time.perf_counter() - t0:.1f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
