"""A map in a real kernel: one progress widget updated at most 4 times a second, a static summary line that
a saved notebook keeps, Ctrl-C (the kernel's interrupt) keeping finished rows, and a re-run that sends only
the missing ones (counted at the emulator)."""
from __future__ import annotations

import time

import pytest

from tests.test_compare import write_config
from tests.test_mapping import wait_quiet


@pytest.mark.kernel
def test_map_in_a_kernel_progress_interrupt_and_resume(kernel_factory, emulator):
    write_config(emulator)
    k = kernel_factory(OPENAI_API_KEY="sk-test-openai-0000")
    assert k.run("%load_ext jupyter_llm\nitems = [f'row {i}' for i in range(40)]").status == "ok"
    emulator.script(first_token_delay=0.1)
    t0 = time.monotonic()
    run = k.run("%%llm --map items --workers 4 -o out\nEcho {item}", timeout=120)
    wall = time.monotonic() - t0
    assert run.status == "ok", run.error
    widgets = [m for m in run.of("display_data") if "application/vnd.jupyter.widget-view+json" in m["content"]["data"]]
    assert len(widgets) == 1                                   # one progress display
    updates = [m for m in run.of("comm_msg") if m["content"]["data"].get("method") == "update"]
    assert 2 <= len(updates) <= 3 * (4 * wall + 2), (len(updates), wall)  # bar, label, style: ≤ 4 times a second
    plain = run.texts()
    assert any(t.startswith("40 rows in ") and "40 ok" in t for t in plain), plain
    assert any("answered_by" in t for t in plain)             # the frame's head
    out = k.run("print(len(out), (out.status == 'ok').all(), _llm_map is out)").stdout
    assert out.strip() == "40 True True"

    emulator.reset()
    emulator.script(first_token_delay=0.25)                   # 80 rows / 4 workers: ~5 s, interrupted early
    assert k.run("more = [f'item {i}' for i in range(80)]").status == "ok"
    fired = []

    def interrupt_once_rows_done(msg):
        # the first progress update with finished rows (a fixed delay can pass before any row is done under load)
        state = msg["content"].get("data", {}).get("state", {}) if msg["msg_type"] == "comm_msg" else {}
        if not fired and isinstance(state.get("value"), int) and state["value"] > 0:
            fired.append(time.monotonic())
            k.interrupt()
    run = k.run("%%llm --map more --workers 4\nEcho {item}", timeout=60, on_message=interrupt_once_rows_done)
    assert fired and time.monotonic() - fired[0] < 10
    assert run.status == "error"
    assert run.stderr.startswith("UsageError: interrupted: 80 rows in") and "Traceback" not in run.stderr, run.stderr
    counts = k.run("print((_llm_map.status == 'ok').sum(), (_llm_map.status == 'cancelled').sum())").stdout.split()
    ok, cancelled = int(counts[0]), int(counts[1])
    assert ok > 0 and cancelled > 0 and ok + cancelled == 80
    wait_quiet(emulator)  # rows in flight at the interrupt land before the count below starts
    emulator.reset()
    run = k.run("%%llm --map more --workers 4\nEcho {item}", timeout=120)
    assert run.status == "ok", run.error
    assert len(emulator.calls("openai")) == cancelled         # only the missing rows are sent
    assert k.run("print((_llm_map.status == 'ok').all())").stdout.strip() == "True"
