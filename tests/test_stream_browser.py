"""A %%llm answer streams into a real JupyterLab cell as rendered Markdown, then settles complete."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

ANSWER = ("## Generators in one page\n\nA generator function **yields** values lazily:\n\n"
          "- it keeps its state between calls\n- it computes one item at a time\n- it ends with `StopIteration`\n\n"
          "```python\ndef count(n):\n    for i in range(n):\n        yield i\n```\n\nThat is all there is to it.")

RECORD = """() => {
  window.__stream = [];
  new MutationObserver(() => {
    const cells = document.querySelectorAll('.jp-Notebook .jp-Cell');
    const out = cells.length ? cells[cells.length - 1].querySelector('.jp-RenderedMarkdown') : null;
    if (out) { window.__stream.push({len: out.innerText.length, h2: !!out.querySelector('h2'), li: out.querySelectorAll('li').length}); }
  }).observe(document.body, {childList: true, subtree: true, characterData: true});
}"""


def test_answer_streams_as_markdown_in_jupyterlab(lab, open_notebook, emulator):
    lab.write_config(f'default = "emu:writer"\n[providers.emu]\nbase_url = "{emulator.url("emu")}"\nauth = "none"\n')
    emulator.script(ANSWER, tokens=60, delay=0.05)
    nb = open_notebook("stream_e2e.ipynb", cells=[])
    nb.run("%load_ext jupyter_llm")
    nb.page.evaluate(RECORD)
    nb.start("%%llm\nExplain generators.")
    nb.page.wait_for_function("() => window.__stream.some(s => s.h2 && s.li > 0 && s.li < 3)", timeout=20_000)
    nb.page.screenshot(path="/tmp/jupyter-llm-stream-partial.png")
    nb.wait_ready(60)
    out = nb.cell(-1).locator(".jp-RenderedMarkdown").last
    out.locator("pre").wait_for()
    nb.page.screenshot(path="/tmp/jupyter-llm-stream-final.png")
    assert out.locator("h2").inner_text() == "Generators in one page"
    assert out.locator("li").count() == 3 and "yield i" in out.locator("pre").inner_text()
    assert out.inner_text().rstrip().endswith("That is all there is to it.")
    seen = nb.page.evaluate("window.__stream")
    final = max(s["len"] for s in seen)
    growing = [s["len"] for s in seen if 0 < s["len"] < final * 0.9]
    assert len(set(growing)) >= 3, seen[-10:]  # several partial renders, not one jump to the end
    assert nb.cell(-1).locator(".jp-OutputArea-output").count() == 1  # one output, updated in place
