"""7. Context at length: time per `%%llm` cell at exchange 10 vs exchange 1,000 (quick: 200).

A real kernel talks to a real llama.cpp server with a 2,048-token window (tiny generated GGUF) with
`max_tokens=8`; every cell has its own cell id (execute_request metadata.cellId, as JupyterLab sends).
From ~30 exchanges on, the window is full and older exchanges are left out. Per-cell time is the wall
time of the cell seen from the client: the median of cells 5-15 for exchange 10, and of the 50 cells
around (or before) exchange 100 and the last one, so that whole trimming cycles are compared (the start of
the request moves every ~9 cells, and a cell where it moves re-reads the window). Two ratios:
exchange 1,000 / exchange 10 (includes the model attending over a full window instead of a nearly
empty one: that is the model's cost, not ours) and exchange 1,000 / exchange 100 (both at a full
window: what the conversation's length costs; goal <= 1.25, i.e. flat). Also: failures (goal 0) and
the time the kernel spends fitting (measuring and trimming), median per cell.
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

GOAL_FLAT = 1.25
PROMPT = "Q{i}: and then?"


def _around(times: list[float], i: int, k: int = 5) -> float:
    lo, hi = max(0, i - 1 - k), min(len(times), i + k)
    return statistics.median(times[lo:hi])


def run(quick: bool, log) -> dict:
    import common
    ls = common.llama_server_module()
    n = 200 if quick else 1000
    server = ls.start_server(alias="bench-ctx", ctx=2048)
    kernel = None
    config = Path(os.environ["JUPYTER_LLM_CONFIG"])
    saved = config.read_text() if config.exists() else None
    try:
        config.write_text(f'default = "local:{server.port}"\n')
        kernel = common.start_kernel()
        setup = ("%load_ext jupyter_llm\n%llm set max_tokens=8 temperature=0\n"
                 "import time, jupyter_llm.context as _c\n_fit_times = []\n_orig_fit = _c.fit\n"
                 "def _timed(*a, **k):\n    t = time.perf_counter()\n    try:\n        return _orig_fit(*a, **k)\n"
                 "    finally:\n        _fit_times.append(time.perf_counter() - t)\n_c.fit = _timed\n")
        if kernel.run(setup, cell_id="setup").status != "ok":
            raise RuntimeError("setup cell failed in the kernel")
        times, failures = [], 0
        log(f"[context] {n} exchanges against a 2,048-token llama.cpp server …")
        for i in range(1, n + 1):
            t0 = time.perf_counter()
            r = kernel.run(f"%%llm -f text\n{PROMPT.format(i=i)}", cell_id=f"bench-{i}", timeout=120)
            times.append(time.perf_counter() - t0)
            failures += r.status != "ok"
            if i % 200 == 0:
                log(f"[context]   {i} cells, last {times[-1] * 1000:.0f} ms")
        out = kernel.run("import statistics, jupyter_llm; s = jupyter_llm.session(); f = s.context().fit\n"
                         "print(len(s.chat), f.kept, round(statistics.median(_fit_times[-100:]) * 1000, 2))",
                         cell_id="check").stdout.split()
        at10, at100, atn = _around(times, 10), _around(times, 100, 25), _around(times, n, 50)
        return {"exchanges": n, "failures": failures, "kept_at_end": int(out[1]), "conversation": int(out[0]),
                "fit_ms_median": float(out[2]), "cell_s_at_10": at10, "cell_s_at_100": at100, "cell_s_at_end": atn,
                "ratio_end_vs_10": atn / at10, "ratio_end_vs_100": atn / at100, "total_s": sum(times),
                "pass": failures == 0 and atn / at100 <= GOAL_FLAT}
    finally:
        if kernel is not None:
            kernel.shutdown()
        server.stop()
        if saved is not None:
            config.write_text(saved)
