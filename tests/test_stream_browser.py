"""Answers in a real JupyterLab (Debian chromium): they stream as rendered Markdown, end in the same DOM as a
one-shot render, say what they are (footer, truncation line), and compare stays readable at 900 px in light
and dark themes. Screenshots go to .cache/artifacts/ (JUPYTER_LLM_ARTIFACTS overrides)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.lab import expect as lab_expect

pytestmark = pytest.mark.browser

ARTIFACTS = Path(os.environ.get("JUPYTER_LLM_ARTIFACTS", Path(__file__).resolve().parents[1] / ".cache" / "artifacts"))

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

# The answer outputs of a cell (not the footer), as the DOM shows them, for one-shot comparisons (JupyterLab
# adds rel="noopener" to heading anchors on some renders and not others: that attribute is ignored).
ANSWER_DOM = r"""(cell) => Array.from(cell.querySelectorAll('.jp-OutputArea-output'))
  .filter(o => !o.querySelector('.jupyter-llm-footer'))
  .map(o => o.innerHTML).join('').replace(/ rel="noopener"/g, '')
  .replace(/<span class="numbering-entry"><\/span>/g, '')"""  # JupyterLab's table of contents numbers headings later, on its own

# WCAG contrast of an element's text against the first opaque background behind it.
CONTRAST = """(el) => {
  const parse = (c) => {  // rgb()/rgba(), or color(srgb r g b / a) as color-mix() computes to
    let m = c.match(/rgba?\\(([^)]+)\\)/), k = 1;
    if (!m) { m = c.match(/color\\(srgb ([^)]+)\\)/); k = 255; }
    if (!m) { return null; }
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
    return [p[0] * k, p[1] * k, p[2] * k, p.length > 3 ? p[3] : 1]; };
  let bg = null;
  for (let n = el; n; n = n.parentElement) {
    const c = parse(getComputedStyle(n).backgroundColor); if (c && c[3] > 0.5) { bg = c; break; }
  }
  bg = bg || [255, 255, 255, 1];
  let fg = parse(getComputedStyle(el).color);
  const a = fg[3] * parseFloat(getComputedStyle(el).opacity || '1');
  fg = [0, 1, 2].map(i => fg[i] * a + bg[i] * (1 - a));
  const lum = (c) => { const v = c.slice(0, 3).map(x => { x /= 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); });
    return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
  const [l1, l2] = [lum(fg), lum(bg)].sort((x, y) => y - x);
  return (l1 + 0.05) / (l2 + 0.05);
}"""


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name))


def _config(lab, emulator) -> None:
    lab.write_config(f'default = "emu:writer"\n[providers.emu]\nbase_url = "{emulator.url("emu")}"\nauth = "none"\n')


def _theme(nb, name: str) -> None:
    """Switch theme and wait until its CSS applies (the layout colour is dark or light) and the splash is gone."""
    nb.command("apputils:change-theme", {"theme": name})
    dark = "false" if name == "JupyterLab Light" else "true"
    nb.page.wait_for_function(f"""() => {{
        if (document.querySelector('#jupyterlab-splash')) {{ return false; }}
        const probe = document.createElement('div');
        probe.style.background = 'var(--jp-layout-color0)';
        document.body.appendChild(probe);
        const c = getComputedStyle(probe).backgroundColor.match(/\\d+/g).map(Number);
        probe.remove();
        const darkBg = c[0] + c[1] + c[2] < 200;
        return darkBg === {dark};
    }}""", timeout=30_000)
    nb.page.wait_for_timeout(300)


def test_answer_streams_as_markdown_in_jupyterlab(lab, open_notebook, emulator):
    _config(lab, emulator)
    emulator.script(ANSWER, tokens=60, delay=0.05)
    nb = open_notebook("stream_e2e.ipynb", cells=[])
    nb.run("%load_ext jupyter_llm")
    nb.page.evaluate(RECORD)
    nb.start("%%llm\nExplain generators.")
    nb.page.wait_for_function("() => window.__stream.some(s => s.h2 && s.li > 0 && s.li < 3)", timeout=20_000)
    _shot(nb.page, "stream-partial.png")
    nb.wait_ready(60)
    # The kernel is idle once the last update is sent; JupyterLab renders Markdown asynchronously, so on a busy
    # machine the DOM catches up a little later: wait for the final render rather than read it at once.
    expect = lab_expect()
    out = nb.cell(-1).locator(".jp-RenderedMarkdown").last
    expect(out).to_contain_text("That is all there is to it.", timeout=20_000)
    expect(out.locator("pre")).to_contain_text("yield i")
    _shot(nb.page, "stream-final.png")
    assert out.locator("h2").inner_text() == "Generators in one page"
    assert out.locator("li").count() == 3
    assert out.inner_text().rstrip().endswith("That is all there is to it.")
    seen = nb.page.evaluate("window.__stream")
    final = max(s["len"] for s in seen)
    growing = [s["len"] for s in seen if 0 < s["len"] < final * 0.9]
    assert len(set(growing)) >= 3, seen[-10:]  # several partial renders, not one jump to the end
    # a short answer is one output, updated in place, and the footer under it
    expect(nb.cell(-1).locator(".jupyter-llm-footer")).to_contain_text("emu:writer · ")
    expect(nb.cell(-1).locator(".jp-OutputArea-output")).to_have_count(2)
    assert nb.cell(-1).locator(".jupyter-llm-footer").inner_text().startswith("emu:writer · ")


def _long_markdown() -> str:
    parts = []
    for i in range(14):
        parts.append(f"### Part {i}\n\nParagraph {i} " + " ".join(f"word{j}" for j in range(60)) + ".")
        if i % 3 == 0:
            parts.append("\n".join(f"- item {i}.{k} with *emphasis* and `code`" for k in range(4)))
        if i % 4 == 1:
            parts.append("```python\n" + "\n".join(f"x_{k} = {k} * {i}" for k in range(8)) + "\n```")
        if i % 5 == 2:
            parts.append("| a | b |\n|---|---|\n" + "\n".join(f"| {k} | {k * i} |" for k in range(4)))
    return "\n\n".join(parts)


@pytest.mark.parametrize("fmt", ["markdown", "code"])
def test_streamed_answer_ends_in_the_one_shot_dom(lab, open_notebook, emulator, fmt):
    _config(lab, emulator)
    text = _long_markdown() if fmt == "markdown" else (
        "Here it is:\n\n```python\n" + "\n".join(f"def f{i}(x):\n    return x * {i}\n" for i in range(80)) + "```\n")
    nb = open_notebook(f"oneshot_{fmt}.ipynb", cells=[])
    nb.run("%load_ext jupyter_llm\n%llm set footer=off")
    emulator.script(text, tokens=len(text) // 5, delay=0.004)
    nb.run(f"%%llm -f {fmt} --no-history\nWrite it.", timeout=120)
    streamed_cell = nb.cell(-1)
    n_outputs = streamed_cell.locator(".jp-OutputArea-output").count()
    emulator.script(text, tokens=len(text) // 5)
    nb.run(f"%%llm -f {fmt} --no-history --no-stream\nWrite it.", timeout=120)
    _shot(nb.page, f"oneshot-{fmt}.png")

    def dom(index: int) -> str:
        cell = nb.cell(index)
        cell.scroll_into_view_if_needed()
        handle = cell.element_handle()
        nb.page.wait_for_function(f"(cell) => ({ANSWER_DOM})(cell).length > 1000", arg=handle, timeout=20_000)
        return nb.page.evaluate(ANSWER_DOM, handle)

    streamed, one_shot = dom(-2), dom(-1)
    for _ in range(40):  # Markdown renders asynchronously: give a render still in flight time to land
        if streamed == one_shot:
            break
        nb.page.wait_for_timeout(250)
        streamed, one_shot = dom(-2), dom(-1)
    assert len(one_shot) > 1000 and streamed == one_shot
    if fmt == "markdown":
        assert n_outputs > 1  # it did stream in blocks (and they stayed: nothing was sent twice)


def test_footer_truncation_line_and_dark_theme_contrast(lab, open_notebook, emulator):
    _config(lab, emulator)
    nb = open_notebook("footer_e2e.ipynb", cells=[])
    nb.run("%load_ext jupyter_llm")
    emulator.script("one two three four five six seven eight nine ten eleven twelve")
    nb.run("%%llm --max-tokens 5\nCount to twelve.")
    foot = nb.cell(-1).locator(".jupyter-llm-footer")
    foot.wait_for()
    lines = foot.inner_text().splitlines()
    assert lines[0] == "⚠ stopped at max_tokens (5): %llm continue carries on"
    assert lines[1].startswith("emu:writer · 5 tokens · ") and "tok/s" in lines[1]
    assert lines[1].endswith("$0")  # an endpoint on this machine is free
    emulator.script("thirteen")
    nb.run("%llm continue")
    assert nb.run_text("print(_llm.text.split()[-2:])").strip() == "['five', 'thirteen']"
    _shot(nb.page, "footer-light.png")
    for theme in ("JupyterLab Light", "JupyterLab Dark"):
        _theme(nb, theme)
        warn = nb.cell(-3).locator(".jupyter-llm-footer div").first
        footer_line = nb.cell(-3).locator(".jupyter-llm-footer div").nth(1)
        assert nb.page.evaluate(CONTRAST, warn.element_handle()) >= 4.5, theme
        assert nb.page.evaluate(CONTRAST, footer_line.element_handle()) >= 4.5, theme
    _shot(nb.page, "footer-dark.png")
    _theme(nb, "JupyterLab Light")
    nb.run("%llm set footer=off")
    emulator.script("short answer")
    nb.run("%%llm\nSay something short.")
    # the answer has rendered (asynchronously), so a footer rendered with it would be there by now
    lab_expect()(nb.cell(-1).locator(".jp-OutputArea-output").first).to_have_text("short answer", timeout=20_000)
    assert nb.cell(-1).locator(".jupyter-llm-footer").count() == 0


def test_compare_at_900px_light_and_dark(lab, open_notebook, emulator):
    _config(lab, emulator)
    nb = open_notebook("compare_900.ipynb", cells=[])
    page = nb.page
    page.set_viewport_size({"width": 900, "height": 900})
    nb.command("filebrowser:activate")  # the file browser open beside the notebook, as users have it
    nb.run("%load_ext jupyter_llm")
    long = "\n\n".join(f"**Point {i}.** " + " ".join(f"word{j}" for j in range(50)) for i in range(25))
    emulator.script(long, tokens=400, delay=0.002)
    nb.run("%%llm --compare emu:a emu:b emu:broken+fault-500\nExplain.", timeout=120)
    cell = nb.cell(-1)
    view = cell.locator(".jupyter-llm-compare")
    view.wait_for()
    page.wait_for_function("() => document.querySelectorAll('.jupyter-llm-column-body strong').length >= 50")
    _shot(page, "compare-900-light.png")
    bodies = cell.locator(".jupyter-llm-column-body")
    assert bodies.count() == 3
    first = bodies.first.element_handle()
    geo = page.evaluate("""(b) => ({sh: b.scrollHeight, ch: b.clientHeight, w: b.clientWidth,
        strong: b.querySelectorAll('strong').length,
        over: (() => { const o = b.closest('.jp-OutputArea-output'); return o.scrollWidth - o.clientWidth; })()})""", first)
    assert geo["sh"] > geo["ch"] > 100  # a long answer scrolls inside its column
    assert geo["w"] >= 200 and geo["over"] <= 1  # readable width, nothing sticks out at 900 px
    assert geo["strong"] == 25  # the finished column is rendered Markdown
    # hovering the answers changes nothing (no table row highlight)
    before = page.evaluate("(b) => getComputedStyle(b.parentElement).backgroundColor", first)
    bodies.first.hover()
    assert page.evaluate("(b) => getComputedStyle(b.parentElement).backgroundColor", first) == before
    assert cell.locator(".jp-OutputArea-output").count() == 1  # no Out[] repeating the table
    err = bodies.nth(2).locator("div", has_text="PROVIDER_ERROR").last
    for theme in ("JupyterLab Light", "JupyterLab Dark"):
        _theme(nb, theme)
        assert nb.page.evaluate(CONTRAST, err.element_handle()) >= 4.5, theme
    _shot(page, "compare-900-dark.png")
    _theme(nb, "JupyterLab Light")
    out = nb.run_text("print(_llm_compare.error.tolist()[2][:15])")
    assert out.strip() == "PROVIDER_ERROR:"
