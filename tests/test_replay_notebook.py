"""A notebook with its recording beside it re-runs with every server stopped and gives identical outputs,
checked by nbval itself; the recording names the GGUF (file, size, hash) from llama.cpp's /props."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.llama import _start, llama_server_module

pytestmark = [pytest.mark.kernel, pytest.mark.llama]
ROOT = Path(__file__).resolve().parents[1]


def cells(port: int, first: str) -> list[str]:
    return ["%load_ext jupyter_llm",
            first,
            f"%%llm local:{port} --no-stream -f text --max-tokens 12 -t 0\nName three colours.",
            f"%%llm local:{port} --no-stream -f text --max-tokens 8 -t 0\nAnd one more?",
            "print(_llm.text, _llm.usage.output_tokens, _llm.replayed)"]


def execute(sources: list[str], cwd: Path):
    import nbclient
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def answer(cell) -> str:
    return "".join(o.get("data", {}).get("text/plain", "") + o.get("text", "") for o in cell.outputs)


def _untimed(text: str) -> str:
    """An answer's output without the footer's timings and the replay marker."""
    import re
    return re.sub(r" · [\d.,]+ s| · [\d.,]+ tok/s| · replayed", "", text)


def test_notebook_replays_offline_under_nbval(tmp_path):
    ls = llama_server_module()
    server = _start(ls, alias="tiny-replay", ctx=512, parallel=1, threads=1)
    try:
        port = server.port
        recorded = execute(cells(port, "%llm record demo.jsonl"), tmp_path)
    finally:
        server.stop()
    live = [answer(c) for c in recorded.cells[2:4]]
    assert all(live) and "False" in answer(recorded.cells[4])
    entries = [json.loads(l) for l in (tmp_path / "demo.jsonl").read_text().splitlines()]
    assert len(entries) == 2
    model = entries[0]["model"]
    assert model["provider"] == "local" and model["port"] == port
    assert model["gguf"].endswith(".gguf") and model["gguf_size"] > 0 and len(model["gguf_sha256_ends"]) == 64
    with pytest.raises(OSError):  # every server is stopped
        socket.create_connection(("127.0.0.1", port), timeout=1).close()

    import nbformat
    replayed = execute(cells(port, "%llm replay demo.jsonl --strict"), tmp_path)
    again = [answer(c) for c in replayed.cells[2:4]]
    assert all(a.rstrip().endswith(" · replayed") for a in again)  # the footer says so, with no timings ...
    assert [_untimed(a) for a in again] == [_untimed(a) for a in live]  # ... and the answers are the recorded ones
    assert "True" in answer(replayed.cells[4])
    path = tmp_path / "replay.ipynb"
    nbformat.write(replayed, path)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbval", str(path), "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "5 passed" in proc.stdout
    # nbval really compares these outputs: a saved answer that differs fails the run
    for out in replayed.cells[2].outputs:
        if "data" in out and "text/plain" in out["data"]:
            out["data"]["text/plain"] = "a different answer"
    nbformat.write(replayed, path)
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbval", str(path), "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0 and "1 failed" in proc.stdout
