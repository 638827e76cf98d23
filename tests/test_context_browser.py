"""The labextension keeps the kernel's context in step with the notebook: deleting a cell drops its exchange."""
from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.browser

EXCHANGES = ("import jupyter_llm, json; "
             "print(json.dumps([[e.cell_id, e.prompt] for e in jupyter_llm.session().chat.exchanges]))")


def _exchanges(nb) -> list[list[str]]:
    out = nb.run_text(EXCHANGES).strip().splitlines()
    return json.loads(out[-1])


def _wait_for(nb, predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        got = _exchanges(nb)
        if predicate(got) or time.monotonic() > deadline:
            return got
        nb.page.wait_for_timeout(300)


def test_deleting_a_cell_drops_its_exchange(open_notebook, lab, llama_server):
    lab.write_config(f'default = "local:{llama_server.port}"\n')
    nb = open_notebook("context-delete.ipynb", [])
    assert "Error" not in nb.run_text("%load_ext jupyter_llm")
    for prompt in ("first question", "second question", "third question"):
        text = nb.run_text(f"%%llm --max-tokens 4 -t 0 -f text\n{prompt}", timeout=120)
        assert "Error" not in text, text
    got = _exchanges(nb)
    assert [p for _, p in got] == ["first question", "second question", "third question"]
    cells = nb.eval("const c = panel.content.model.cells; return Array.from({length: c.length}, "
                    "(_, i) => [c.get(i).id, c.get(i).sharedModel.getSource()]);")
    asked = [(i, cid) for i, (cid, src) in enumerate(cells) if src.startswith("%%llm")]
    # the kernel saw JupyterLab's own cell ids (execute_request metadata.cellId)
    assert [cid for cid, _ in got] == [cid for _, cid in asked]
    second = asked[1][0]

    # re-running the second cell replaces its exchange in place
    nb.eval(f"panel.content.activeCellIndex = {second}; panel.content.deselectAll(); "
            "await app.commands.execute('notebook:run-cell');")
    nb.wait_ready()
    got = _exchanges(nb)
    assert [p for _, p in got] == ["first question", "second question", "third question"]

    # delete the cell that asked the second question: its exchange goes, the others stay in order
    nb.eval(f"panel.content.model.sharedModel.deleteCell({second});")
    got = _wait_for(nb, lambda g: len(g) == 2)
    assert [p for _, p in got] == ["first question", "third question"]
    assert [cid for cid, _ in got] == [asked[0][1], asked[2][1]]
    report = nb.run_text("print(jupyter_llm.session().context())")
    assert "first question" in report and "second question" not in report
