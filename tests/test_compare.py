"""`%%llm --compare`: concurrent fan-out against the provider emulator and a real llama.cpp server."""
from __future__ import annotations

import _thread
import os
import threading
import time
from pathlib import Path

import pytest

from jupyter_llm.compare import FRAME_COLUMNS, HEADERS, CompareView, run_compare
from jupyter_llm.errors import LLMError
from jupyter_llm.kernel_session import Session


def write_config(emulator, extra: str = "") -> Path:
    """Config for the test: openai, anthropic and an OpenAI-compatible `emu` all pointing at the emulator
    (the two clouds priced as the real ones with `free = false`; `emu` on 127.0.0.1 is free)."""
    path = Path(os.environ["JUPYTER_LLM_CONFIG"])
    path.write_text(f'''default = "openai:gpt-4o-mini"
[providers.openai]
base_url = "{emulator.url("openai")}"
free = false
[providers.anthropic]
base_url = "{emulator.url("anthropic")}"
free = false
[providers.emu]
base_url = "{emulator.url("emu")}"
auth = "none"
[aliases]
fast = "emu:fast-model"
[reliability]
retries = 0
timeout = 10
{extra}''')
    return path


@pytest.fixture
def session(emulator, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-0000")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-anthropic-0000")
    write_config(emulator)
    return Session()


@pytest.fixture
def shell():
    """The test IPython shell (terminal, no kernel) whose displays can be captured."""
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython
    start_ipython()  # once per process; later calls return None
    sh = get_ipython()
    for name in ("_llm", "_llm_compare"):
        sh.user_ns.pop(name, None)
    yield sh
    for name in ("_llm", "_llm_compare", "topic"):
        sh.user_ns.pop(name, None)


def captured(shell, fn):
    """Run fn with displays captured: (result, outputs) where outputs include display updates."""
    from IPython.utils.capture import capture_output
    with capture_output() as cap:
        result = fn()
    return result, cap.outputs


def test_targets_run_concurrently_and_updates_are_bounded(session, emulator, shell):
    targets = ["openai:gpt-4o-mini+slow-1", "anthropic:claude-3-5-haiku-latest+slow-1", "emu:a+slow-1"]
    # warm up: first imports (SDKs, pandas) and client set-up take ~1-2 s; not what is timed here
    run_compare(session, "warm up", [t.replace("+slow-1", "") for t in targets], shell=shell, rich=False)
    emulator.script(tokens=10, delay=0.02)
    # Concurrency is read at the emulator, not from the wall clock (a loaded machine stretches any run): with each
    # target waiting 1 s for its first token, all three requests are open at once only if they were sent together.
    peak, stop = [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], sum(c.outcome == "pending" for c in emulator.calls()))
            time.sleep(0.005)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    try:
        results, outputs = captured(shell, lambda: run_compare(session, "hello", targets, shell=shell, rich=True))
    finally:
        wall = time.monotonic() - t0
        stop.set()
        sampler.join()
    assert [r.target for r in results] == targets
    assert all(r.ok and r.text for r in results), results
    assert peak[0] == 3, f"at most {peak[0]} requests open at once in {wall:.2f} s: the targets ran one after the other"
    assert all(r.ttft >= 0.9 for r in results)
    updates = [o for o in outputs if o.update]
    assert outputs[0].update is False and len(outputs) - len(updates) == 1  # one display, then updates
    assert len(updates) <= 10 * wall + 2, f"{len(updates)} updates in {wall:.2f} s"


def test_sdks_are_imported_in_the_calling_thread_before_workers_start(session, emulator, shell, monkeypatch):
    """Concurrent first imports of two SDKs race (openai reads a half-imported httpx): compare must not."""
    from jupyter_llm.providers import _wire
    calls = []
    original = _wire.SDKAdapter.preload

    def preload(self):
        calls.append((self.id, threading.current_thread() is threading.main_thread(), threading.active_count()))
        original(self)
    monkeypatch.setattr(_wire.SDKAdapter, "preload", preload)
    # as in a fresh kernel: an SDK counts as imported only once preload ran for it
    monkeypatch.setattr(_wire.SDKAdapter, "loaded", lambda self: self.id in {c[0] for c in calls})
    before = threading.active_count()
    captured(shell, lambda: run_compare(session, "hi", ["openai:gpt-4o-mini", "anthropic:claude-3-5-haiku-latest"], shell=shell))
    assert [c[0] for c in calls] == ["openai", "anthropic"]
    assert all(main and count <= before + 1 for _, main, count in calls)  # main thread, no column running yet


def test_a_failing_target_shows_its_error_and_the_others_complete(session, emulator, shell):
    emulator.script("All good here.", tokens=3)
    targets = ["openai:gpt-4o-mini", "openai:fault-401", "emu:fault-404", "anthropic:claude-3-5-haiku-latest"]
    results, outputs = captured(shell, lambda: run_compare(session, "hi", targets, shell=shell, rich=True))
    assert [r.error.code if r.error else "ok" for r in results] == ["ok", "INVALID_CREDENTIALS", "MODEL_NOT_FOUND", "ok"]
    assert results[0].text == results[3].text == "All good here."
    final = outputs[-1].data["text/html"]
    assert final.count("All good here.") == 2
    assert "✗ INVALID_CREDENTIALS" in final and "✗ MODEL_NOT_FOUND" in final
    assert "sk-test-openai-0000" not in final


def test_slow_target_does_not_hold_back_the_others(session, emulator, shell):
    """While one target is still waiting for its first token, the others are already shown complete."""
    emulator.script(tokens=3)
    view_states = []
    real_flush = CompareView.flush

    def spy(self, force=False):
        real_flush(self, force)
        view_states.append([c.response is not None for c in self.columns])
    CompareView.flush = spy
    try:
        results, _ = captured(shell, lambda: run_compare(session, "hi", ["openai:gpt-4o-mini+slow-3", "emu:quick"],
                                                         shell=shell, rich=True))
    finally:
        CompareView.flush = real_flush
    assert [False, True] in view_states  # the quick column was done while the slow one was not
    assert all(r.ok for r in results)


def test_metrics_table_and_dataframe(session, emulator, shell):
    emulator.script(tokens=8, delay=0.01)
    results, outputs = captured(shell, lambda: run_compare(session, "hi", ["fast", "openai:gpt-4o-mini", "openai:fault-500"],
                                                           shell=shell, rich=True))
    df = shell.user_ns["_llm_compare"]
    import pandas as pd
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == FRAME_COLUMNS
    assert list(df.target) == ["fast", "openai:gpt-4o-mini", "openai:fault-500"]
    assert list(df.resolved) == ["emu:fast-model", "openai:gpt-4o-mini", "openai:fault-500"]
    assert list(df.status) == ["ok", "ok", "PROVIDER_ERROR"]
    assert list(df.output_tokens[:2]) == [8, 8]
    assert (df.ttft_s[:2] > 0).all() and (df.total_s[:2] >= df.ttft_s[:2]).all()
    assert df.cost_usd[1] > 0  # gpt-4o-mini has a price; the emulator reports usage
    assert df.text[0] == results[0].text
    final = outputs[-1].data
    for header in HEADERS:
        assert f">{header}<" in final["text/html"]
    assert "fast (emu:fast-model)" in final["text/plain"]
    assert "PROVIDER_ERROR" in final["text/plain"]


def test_conversation_active_target_and_underscore_llm_unchanged(session, emulator, shell):
    session.ask("first question")
    before = [dict(m) for m in session.conversation]
    active = session.active
    shell.user_ns["_llm"] = sentinel = object()
    emulator.reset()
    captured(shell, lambda: run_compare(session, "compare me", ["emu:x", "anthropic"], shell=shell, rich=True))
    assert session.conversation == before and session.active == active
    assert shell.user_ns["_llm"] is sentinel
    sent = [c.body for c in emulator.calls()]
    assert len(sent) == 2
    assert all("first question" in str(body) for body in sent)  # the conversation is the context ...
    emulator.reset()
    captured(shell, lambda: run_compare(session, "fresh", ["emu:x", "emu:y"], shell=shell, new=True, rich=True))
    assert session.conversation == before
    assert all("first question" not in str(c.body) for c in emulator.calls())  # ... unless --new


def test_parameters_reach_every_target(session, emulator, shell):
    captured(shell, lambda: run_compare(session, "hi", ["emu:a", "openai:gpt-4o"], shell=shell, rich=True,
                                        system="Be brief.", temperature=0.25, max_tokens=7))
    for call in emulator.calls():
        assert call.body["temperature"] == 0.25
        assert 7 in (call.body.get("max_tokens"), call.body.get("max_completion_tokens"))
        assert "Be brief." in str(call.body["messages"])


@pytest.mark.parametrize("targets, message", [
    (["emu:a", "nosuchprovider:x"], "unknown provider"),
    (["emu:a", "local:99999"], "out of range"),
    (["openai:gpt-4o-mini", "openai:gpt-4o-mini"], "given twice"),
    (["fast", "emu:fast-model"], "both name emu:fast-model"),
    ([], "at least one"),
])
def test_bad_or_duplicate_targets_send_nothing(session, emulator, shell, targets, message):
    with pytest.raises(LLMError) as err:
        run_compare(session, "hi", targets, shell=shell, rich=False)
    assert err.value.code == "BAD_ARGUMENT" and message in err.value.message
    assert emulator.calls() == []
    assert "_llm_compare" not in shell.user_ns


def test_budget_is_checked_for_the_whole_fan_out_before_sending(session, emulator, shell):
    session.set_budget(0.0001)
    with pytest.raises(LLMError) as err:
        run_compare(session, "hi", ["openai:gpt-4o", "anthropic:claude-sonnet-4-20250514"], shell=shell,
                    max_tokens=500, rich=False)
    assert err.value.code == "BUDGET_EXCEEDED"
    assert emulator.calls() == []


def test_model_output_is_html_escaped(session, emulator, shell):
    emulator.script("<script>alert('x')</script> & <b>bold</b>")
    results, outputs = captured(shell, lambda: run_compare(session, "hi", ["emu:a", "emu:b"], shell=shell, rich=True))
    html = outputs[-1].data["text/html"]
    assert "<script>" not in html and "<b>bold" not in html
    assert "&lt;script&gt;alert(" in html and ")&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert results[0].text == "<script>alert('x')</script> & <b>bold</b>"


def test_finished_columns_render_markdown_and_the_frame_has_the_error(session, emulator, shell):
    emulator.script("## Title\n\n- **one**\n- two\n\n```python\nx = 1\n```")
    results, outputs = captured(shell, lambda: run_compare(session, "hi", ["emu:a", "openai:fault-500"], shell=shell,
                                                           rich=True))
    html = outputs[-1].data["text/html"]
    assert "<h2>Title</h2>" in html and "<strong>one</strong>" in html and "x = 1" in html
    assert "<table" not in html.split("jupyter-llm-columns")[1].split("</div></div></div>")[0]  # no table row
    assert "max-height" in html and "overflow:auto" in html
    df = shell.user_ns["_llm_compare"]
    assert df.error.isna()[0] and df.error[1].startswith("PROVIDER_ERROR: ")


def test_live_updates_stay_linear_for_long_answers(session, emulator, shell):
    from jupyter_llm.compare import WINDOW
    emulator.script(" ".join(f"word{i}" for i in range(3000)), tokens=3000, delay=0.0005)
    results, outputs = captured(shell, lambda: run_compare(session, "hi", ["emu:a", "emu:b"], shell=shell, rich=True))
    chars = sum(len(r.text) for r in results)
    live = [o.data for o in outputs[:-1]]
    # live views show streaming columns as windows, not answers. A column that is done is shown whole (by design),
    # and on a loaded machine one of the two finishes first: its text is not counted against the window.
    def streaming_part(plain: str) -> int:
        return len(plain) - sum(len(r.text) for r in results if f"── {r.target} (ok" in plain)
    sizes = [(streaming_part(d["text/plain"]), len(d["text/plain"])) for d in live]
    assert all(n < 2 * (WINDOW + 600) for n, _ in sizes), sizes
    total = sum(len(d["text/html"]) + len(d["text/plain"]) for d in (o.data for o in outputs))
    assert total / chars < 20, (total / chars, len(outputs))


def test_ctrl_c_stops_waiting_and_keeps_partial_text(session, emulator, shell):
    from IPython.core.error import UsageError
    emulator.script(tokens=500, delay=0.02)  # ~10 s per target
    fired, running = [], threading.Event()

    def interrupt_once_streaming():
        """Ctrl-C 0.8 s after emu:a's request reached the emulator (a fixed delay from the start is eaten by a
        first SDK import on a loaded machine: nothing would have streamed yet); never once the compare is over."""
        deadline = time.monotonic() + 30
        while not emulator.calls("emu") and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.8)
        if emulator.calls("emu") and running.is_set():
            fired.append(time.monotonic())
            _thread.interrupt_main()

    def compare():
        running.set()
        try:
            return run_compare(session, "hi", ["emu:a", "openai:gpt-4o-mini+slow-30"], shell=shell, rich=True)
        finally:
            running.clear()
    threading.Thread(target=interrupt_once_streaming, daemon=True).start()
    try:
        captured(shell, compare)
    except UsageError as exc:
        assert "interrupted" in str(exc)
    else:
        pytest.fail(f"not interrupted (fired {fired}): {[(c.model, c.outcome) for c in emulator.requests]}")
    stopped = time.monotonic() - fired[0]
    assert stopped < 5, stopped  # at once: not after emu:a's ~9 s still to come, nor the 30 s slow target
    df = shell.user_ns["_llm_compare"]
    assert list(df.status) == ["interrupted", "interrupted"]
    assert 0 < len(df.text[0]) < 200 * 3 and df.text[1] == ""


def test_terminal_prints_each_answer_then_the_table(session, emulator, shell, capsys):
    emulator.script("plain answer")
    results = run_compare(session, "hi", ["emu:a", "openai:fault-401"], shell=shell, rich=False)
    out = capsys.readouterr().out
    assert "── emu:a (ok" in out and "plain answer" in out
    assert "✗ INVALID_CREDENTIALS" in out
    assert out.rstrip().splitlines()[-4].split()[:2] == ["target", "TTFT"]
    assert "<Comparison of 2 responses" in repr(results)


def test_cell_magic_compare(session, emulator, shell, monkeypatch):
    from jupyter_llm.magics import LLMMagics
    monkeypatch.setattr("jupyter_llm.render.in_kernel", lambda: True)
    for kind in ("line", "cell"):  # whatever was there comes back at the end of the test
        monkeypatch.setitem(shell.magics_manager.magics[kind], "llm", None)
    shell.register_magics(LLMMagics(shell, session))
    emulator.script("side by side")
    shell.user_ns["topic"] = "colours"
    results, outputs = captured(shell, lambda: shell.run_cell_magic(
        "llm", "--compare emu:a openai:gpt-4o-mini -t 0 --max-tokens 16", "Tell me about {topic}"))
    assert [r.text for r in results] == ["side by side"] * 2
    assert "Tell me about colours" in str(emulator.calls()[0].body)
    assert list(shell.user_ns["_llm_compare"].status) == ["ok", "ok"]
    assert "_llm" not in shell.user_ns
    with pytest.raises(Exception, match="BAD_ARGUMENT"):
        shell.run_cell_magic("llm", "--compare emu:a emu:a", "x")


def test_local_llama_server_side_by_side_with_a_cloud_target(emulator, llama_server, shell, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-0000")
    write_config(emulator, f'\n[local]\nports = {{ {llama_server.port} = "{llama_server.alias}" }}\n')
    session = Session()
    emulator.script(tokens=12, delay=0.02)
    results, outputs = captured(shell, lambda: run_compare(
        session, "Say something.", [f"local:{llama_server.port}", "openai:gpt-4o-mini"], shell=shell,
        max_tokens=24, temperature=0, rich=True))
    local, cloud = results
    assert local.ok and local.text and local.usage.output_tokens == 24, local
    assert local.cost == 0.0 and local.ttft is not None
    assert cloud.ok and cloud.usage.output_tokens == 12
    df = shell.user_ns["_llm_compare"]
    assert df.target[0] == f"local:{llama_server.port}" and df.resolved[0] == f"local:{llama_server.port}/{llama_server.alias}"
    assert local.text.strip()[:20] in outputs[-1].data["text/plain"]


# ---- in a real JupyterLab ------------------------------------------------------------------------

def column_texts(page) -> list[str]:
    """Each column's answer text, in column order."""
    return page.locator(".jupyter-llm-compare .jupyter-llm-column-body").all_inner_texts()


def column_heads(page) -> list[str]:
    """Each column's head: target and state (streaming…, ok, or the error code)."""
    return page.locator(".jupyter-llm-compare .jupyter-llm-column-head").all_inner_texts()


RECORD = """() => {
  window.__compare = [];
  new MutationObserver(() => {
    const t = document.querySelector('.jupyter-llm-compare');
    if (t) { window.__compare.push(Array.from(t.querySelectorAll('.jupyter-llm-column-body')).map(b => b.innerText.length)); }
  }).observe(document.body, {childList: true, subtree: true, characterData: true});
}"""


@pytest.mark.browser
def test_compare_columns_fill_progressively_in_jupyterlab(lab, open_notebook, emulator, llama_server):
    lab.write_config(f'default = "local:{llama_server.port}"\n[local]\nscan = [1, 1]\n'
                     f'ports = {{ {llama_server.port} = "tiny" }}\n'
                     f'[providers.emu]\nbase_url = "{emulator.url("emu")}"\nauth = "none"\n')
    nb = open_notebook("compare_e2e.ipynb", cells=[])
    nb.run("%load_ext jupyter_llm")
    page = nb.page
    page.evaluate(RECORD)  # every version of the columns the page shows, as text lengths
    nb.start(f"%%llm --compare emu:chatty+tokens-60+delay-0.05 local:{llama_server.port} emu:broken+fault-500 "
                   "--max-tokens 1200 -t 0\nTell me a <long> story.")
    # the partial columns are read in the same evaluation that sees them partial: the page keeps updating, and
    # on a busy machine a read a moment later can already be a later (or the final) render
    partial = page.wait_for_function("""() => {
        const t = document.querySelector('.jupyter-llm-compare');
        if (!(t && t.innerText.includes('streaming…') && t.innerText.includes('w10'))) { return null; }
        return Array.from(t.querySelectorAll('.jupyter-llm-column-body')).map(b => b.innerText);
    }""", timeout=20_000).json_value()
    page.screenshot(path="/tmp/jupyter-llm-compare-partial.png")
    nb.wait_ready(120)
    # the final render is the one where every column has its response (none streaming or still waiting)
    page.wait_for_function("""() => { const t = document.querySelector('.jupyter-llm-compare').innerText;
        return !t.includes('streaming…') && !t.includes('waiting…'); }""", timeout=30_000)
    final = column_texts(page)
    page.screenshot(path="/tmp/jupyter-llm-compare-final.png")
    page.locator(".jupyter-llm-compare table.jupyter-llm").screenshot(path="/tmp/jupyter-llm-compare-table.png")
    assert "w10" in partial[0] and "w48" not in partial[0]  # shown while still arriving ...
    assert final[0].rstrip().endswith("w48") and final[0].startswith(partial[0].rstrip())  # ... and complete at the end
    assert len(final[1].split()) > 500  # the real llama.cpp server's answer
    assert "PROVIDER_ERROR" in column_heads(page)[2] + final[2]
    assert "Tell me a <long> story." in final[0]  # escaped model text shows as text
    seen = page.evaluate("window.__compare")
    for col in (0, 1):  # both the emulator and llama.cpp columns were shown part-filled before the end
        assert any(0 < snap[col] < len(final[col]) * 0.9 for snap in seen if len(snap) == 3), (col, seen[-5:])
    out = nb.run_text("print(_llm_compare[['target', 'output_tokens', 'status']].to_string(index=False))")
    assert "ok" in out and "PROVIDER_ERROR" in out and " 60 " in out and " 1200 " in out


# ---- in a real kernel (iopub traffic, interrupt) -------------------------------------------------

@pytest.mark.kernel
def test_real_kernel_one_display_throttled_updates_and_interrupt(kernel_factory, emulator):
    write_config(emulator)
    k = kernel_factory(OPENAI_API_KEY="sk-test-openai-0000")
    assert k.run("%load_ext jupyter_llm").status == "ok"
    emulator.script(tokens=40, delay=0.05)  # ~2 s per column, a token every 50 ms in each
    t0 = time.monotonic()
    run = k.run("%%llm --compare emu:a openai:gpt-4o-mini\nhi", timeout=60)
    wall = time.monotonic() - t0
    assert run.status == "ok", run.error
    displays, updates = run.of("display_data"), run.of("update_display_data")
    assert len(displays) == 1 and 3 <= len(updates) <= 10 * wall + 2, (len(updates), wall)  # not one per token
    assert run.iopub_bytes() < 150_000
    final = updates[-1]["content"]["data"]
    assert final["text/plain"].count("(ok)") == 2 and ">status<" in final["text/html"]
    assert not run.of("execute_result")  # the table above is the cell's view: no Out[] repeating it
    out = k.run("print(type(_).__name__, len(_)); _").texts()
    assert any("<Comparison of 2 responses" in t for t in out)  # shown when asked for later

    emulator.script(tokens=600, delay=0.05)  # ~30 s: interrupted once both columns are streaming
    fired = []

    def interrupt_once_both_stream(msg):
        # a live update shows "waiting…" for a column with no text yet: interrupt on the first one without it
        if not fired and msg["msg_type"] == "update_display_data" and \
                "waiting…" not in msg["content"]["data"].get("text/plain", ""):
            fired.append(time.monotonic())
            k.interrupt()
    run = k.run("%%llm --compare emu:a emu:b\nhi", timeout=60, on_message=interrupt_once_both_stream)
    assert fired and time.monotonic() - fired[0] < 10  # stopped at once, not after the ~30 s answers
    assert run.status == "error", (run.stderr, run.stdout, [m["msg_type"] for m in run.messages][:30])  # the cell fails (Run All stops), with one UsageError line, no traceback
    assert run.stderr.startswith("UsageError: interrupted: the ") and "Traceback" not in run.stderr, run.stderr
    out = k.run("print(list(_llm_compare.status), [0 < len(t) < 1500 for t in _llm_compare.text])").stdout
    assert out.strip() == "['interrupted', 'interrupted'] [True, True]"
    partial = run.of("update_display_data")[-1]["content"]["data"]["text/html"]
    assert partial.count("⚠ incomplete (interrupted)") == 2
