"""The tutorials as a reader runs them: top to bottom in a fresh kernel with no config, each bringing up its own
llama.cpp servers. The checks a test needs run afterwards in the same kernel, so the notebooks carry none."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.llama]
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

CHECKS = {
    "quickstart.ipynb": """
import json, jupyter_llm
s = jupyter_llm.session()
h = s.history(10)
print(json.dumps({"active": str(s.active), "exchanges": len(s.conversation) // 2,
                  "summary": isinstance(summary, str) and len(summary.split()) > 0,
                  "answered": [x["target"] for x in reversed(h)], "statuses": sorted({x["status"] for x in h}),
                  "servers": len(jupyter_llm.serve.servers()), "known": s.config.known.ports()}))
""",
    "compare.ipynb": """
import json, jupyter_llm
s = jupyter_llm.session()
print(json.dumps({"conversation": len(s.conversation), "statuses": list(_llm_compare.status),
                  "texts": [len(t) > 0 for t in _llm_compare.text], "servers": len(jupyter_llm.serve.servers())}))
""",
    "data.ipynb": """
import json, jupyter_llm
s = jupyter_llm.session()
print(json.dumps({"answers": [list(answers.columns), answers.index.tolist(), sorted(set(answers.status))],
                  "labels": [list(labels.columns[:2]), sorted(set(labels.status)), bool(labels.stars.between(1, 5).all())],
                  "one": [type(one).__name__, one.sentiment in ("positive", "negative", "neutral")],
                  "grid": [list(grid.columns.get_level_values(0).unique()),
                           {k: [v["ok_rate"], v["schema_valid_rate"], v["cached"]] for k, v in grid.attrs["summary"].items()}],
                  "again": [next(iter(again.attrs["summary"].values()))["cached"],
                            bool((again.sentiment == labels.sentiment).all())],
                  "conversation": len(s.conversation), "servers": len(jupyter_llm.serve.servers())}))
""",
    "context.ipynb": """
import json, jupyter_llm
s = jupyter_llm.session()
print(json.dumps({"exchanges": len(s.chat), "plan": [list(plan.target), list(plan.counted), list(plan.fits)],
                  "last": [r.ok, r.usage.input_tokens + 8 <= 2048, r.context or ""],
                  "servers": len(jupyter_llm.serve.servers())}))
""",
}


def run_notebook(name: str, tmp_path):
    import nbclient
    import nbformat
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "outputs are committed"
    assert not any("assert " in c.source or "NBVAL" in c.source for c in nb.cells), "test scaffolding is visible"
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            client.execute_cell(cell, i)
        check = nbformat.v4.new_code_cell(CHECKS[name])
        nb.cells.append(check)  # only in this in-memory copy
        client.execute_cell(check, len(nb.cells) - 1)
    text = "".join(o.get("text", "") for o in check.outputs if o.output_type == "stream")
    return nb, json.loads(text)


def outputs(cell) -> str:
    parts = []
    for o in cell.get("outputs", []):
        parts.append(o.get("text", "") if o.output_type == "stream" else
                     o.get("evalue", "") if o.output_type == "error" else
                     o.get("data", {}).get("text/plain", "") + o.get("data", {}).get("text/markdown", ""))
    return "".join(parts)


def test_quickstart_runs_as_it_is(tmp_path):
    nb, state = run_notebook("quickstart.ipynb", tmp_path)
    by_source = {c.source.splitlines()[0] if c.source else "": c for c in nb.cells if c.cell_type == "code"}
    serves = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("%llm serve ")]
    assert len(serves) == 2 and all("serving tiny-llama.gguf" in outputs(c) for c in serves)
    answer = by_source["%%llm --max-tokens 24 -t 0"]
    assert any("text/markdown" in o.get("data", {}) for o in answer.outputs)
    assert "24 tokens" in outputs(by_source['print(f"{_llm.usage.output_tokens} tokens in {_llm.latency:.2f} s, cost ${_llm.cost}, stopped by: {_llm.finish_reason}")'])
    assert "BAD_ARGUMENT" in outputs(by_source["%%llm"]) and "sales_figures" in outputs(by_source["%%llm"])
    assert "stopped 2 servers" in outputs(by_source["%llm stop all"])
    assert state["summary"] and state["exchanges"] == 3 and state["servers"] == 0 and state["known"] == []
    assert state["statuses"] == ["ok"] and state["active"].endswith("/tiny-b")


def test_compare_runs_as_it_is(tmp_path):
    nb, state = run_notebook("compare.ipynb", tmp_path)
    assert state == {"conversation": 0, "statuses": ["ok", "ok"], "texts": [True, True], "servers": 0}


def test_data_runs_as_it_is(tmp_path):
    nb, state = run_notebook("data.ipynb", tmp_path)
    assert state["answers"] == [["answer", "status", "error", "input_tokens", "output_tokens", "cost", "latency",
                                 "answered_by"], [101, 102, 103, 104], ["ok"]]
    assert state["labels"] == [["sentiment", "stars"], ["ok"], True]   # schema-valid rows from the tiny model
    assert state["one"] == ["Review", True]
    assert state["grid"] == [["local:tiny-a", "local:tiny-b"], {"local:tiny-a": [1.0, 1.0, 4], "local:tiny-b": [1.0, 1.0, 0]}]
    assert state["again"] == [4, True] and state["servers"] == 0
    assert state["conversation"] == 2       # the single --schema cell is a chat turn; map rows never are
    dry = next(c for c in nb.cells if c.cell_type == "code" and "--dry-run" in c.source)
    assert "nothing was sent" in outputs(dry) and "openai:gpt-4o-mini" in outputs(dry)


def test_context_runs_as_it_is(tmp_path):
    nb, state = run_notebook("context.ipynb", tmp_path)
    by_source = {c.source.splitlines()[0] if c.source else "": c for c in nb.cells if c.cell_type == "code"}
    assert "2 exchanges; 2 sent; exact tokens; window 2048 ; fits: True" in outputs(by_source["import jupyter_llm"])
    assert state["plan"] == [["local:tiny-a", "local:tiny-b"], ["exact", "exact"], [True, True]]
    # sixty exchanges on a 2,048-token model: every one answered, the oldest left out, the request within the window
    assert state["last"][:2] == [True, True] and state["last"][2].startswith("context: ")
    assert "some left out: True ; fits: True" in outputs(by_source["f = s.context().fit"])
    assert "2 exchanges will be sent" in outputs(by_source["print(s.context().fit.kept, 'exchanges will be sent')"])
    assert state["exchanges"] == 61      # 62, then `%llm forget 1`
    refused = next(c for c in nb.cells if c.cell_type == "code" and "{long_text}" in c.source)
    assert "CONTEXT_TOO_LONG" in outputs(refused) and "nothing was sent" in outputs(refused)
    assert state["servers"] == 0
