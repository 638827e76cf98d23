"""5. `%%llm --map` throughput: a map's wall time against the ideal rows × per-row latency / workers, on an
emulated cloud with a fixed latency per request, and the progress display's own cost per row.

The emulator runs in its own process (`python -m tests.emulator`), so its server threads do not share
this process's GIL with the client being measured. Each reply waits LATENCY before its first token.
Per-row latency is measured in the same round: single requests (Session.ask, no cache) one after the
other through the same Session, so it includes the client's own per-request cost. Ratio = ideal /
actual wall (1.0 = perfect concurrency; goal >= 0.9 at 8 workers). Every map uses fresh prompts (a
round tag in the template), so the per-row cache never answers. Progress overhead: the same map with
and without the terminal progress line, and MapProgress.add + refresh timed alone per row (terminal
line and ipywidgets bar).
"""
from __future__ import annotations

import io
import time

from common import median, summary

GOAL = 0.9
LATENCY = 0.25         # seconds the emulator waits before the first token (real clouds: 0.3-2 s per answer)
TOKENS = 8


def _map(session, rows: int, workers: int, tag: str, progress=False) -> float:
    from jupyter_llm.mapping import map_rows
    t0 = time.perf_counter()
    frame = map_rows(session, "classify {item} " + tag, [f"item {i}" for i in range(rows)],
                     workers=workers, progress=progress, max_tokens=TOKENS)
    wall = time.perf_counter() - t0
    bad = frame[frame["status"] != "ok"]
    if len(bad):
        raise RuntimeError(f"{len(bad)} rows failed: {bad['error'].iloc[0]}")
    return wall


def _single(session, n: int, tag: str) -> float:
    """Median wall of one request sent alone, n times (the per-row latency a map cannot beat)."""
    walls = []
    for i in range(n):
        t0 = time.perf_counter()
        r = session.ask(f"classify single {tag} {i}", no_history=True, cache=False, max_tokens=TOKENS)
        walls.append(time.perf_counter() - t0)
        if r.error is not None:
            raise RuntimeError(r.error.line())
    return median(walls)


def _emulator_process():
    """`python -m tests.emulator` on a free port; returns (process, base URL)."""
    import subprocess
    import sys
    from common import ROOT
    proc = subprocess.Popen([sys.executable, "-m", "tests.emulator"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    base = line.split(" on ", 1)[1].split()[0]
    return proc, base


def _control(base: str, action: str, body: dict) -> None:
    import json
    import urllib.request
    req = urllib.request.Request(f"{base}/_emulator/{action}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=5).read()


def _progress_cost(rich: bool, n: int = 5000) -> float:
    """Seconds per row of MapProgress.add + refresh (refresh throttled as in a real map)."""
    from jupyter_llm.events import Response, Usage
    from jupyter_llm.mapping import RowResult
    from jupyter_llm.progress import MapProgress
    result = RowResult("ok", response=Response(text="x", usage=Usage(10, 5), cost=0.0001))
    bar = MapProgress(n, rich=rich, stream=io.StringIO())
    if rich:
        from IPython.core.interactiveshell import InteractiveShell
        from IPython.utils.capture import capture_output
        InteractiveShell.instance()  # a display publisher, as in a notebook
        with capture_output():
            bar.start()
    else:
        bar.start()
    t0 = time.perf_counter()
    for _ in range(n):
        bar.add(result)
        bar.refresh()
    if rich:
        with capture_output():
            bar.finish("done")
    else:
        bar.finish("done")
    return (time.perf_counter() - t0) / n


def run(emulator, config_path, quick: bool = False, log=print) -> dict:
    proc, base = _emulator_process()
    try:
        return _run(base, config_path, quick, log)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _run(base: str, config_path, quick: bool, log) -> dict:
    from pathlib import Path
    from jupyter_llm.config import load_config
    from jupyter_llm.kernel_session import Session

    _control(base, "script", {"first_token_delay": LATENCY, "tokens": TOKENS})
    path = Path(config_path).with_name("bench_map.toml")
    path.write_text(f'default = "openai:gpt-4o-mini"\n[providers.openai]\nbase_url = "{base}/openai/v1"\n'
                    '[reliability]\nretries = 0\ntimeout = 30\n')
    session = Session(load_config(path, strict=True))
    _map(session, 8, 8, "warm-up")                          # SDK import, clients, connections
    rows = 48 if quick else 96
    rounds = 2 if quick else 3
    out: dict = {"goal": GOAL, "latency_s": LATENCY, "rows": rows, "rounds": rounds, "workers": {}}
    for workers in (1, 4, 8, 16):
        if workers == 1 and quick:
            continue
        n_rows = rows if workers > 1 else rows // 4
        ratios, walls, ideals = [], [], []
        for r in range(rounds):
            per_row = _single(session, 3, f"w{workers}r{r}")
            wall = _map(session, n_rows, workers, f"w{workers}r{r}")
            ideal = n_rows * per_row / workers
            ratios.append(ideal / wall)
            walls.append(wall)
            ideals.append(ideal)
            log(f"[map] {n_rows} rows, {workers} workers, round {r + 1}/{rounds}: wall {wall:.3f} s, "
                f"ideal {ideal:.3f} s (per row {per_row * 1000:.1f} ms), x{ideal / wall:.3f}")
        out["workers"][str(workers)] = {"rows": n_rows, "wall_s": summary(walls), "ideal_s": summary(ideals),
                                        "ratio": median(ratios), "rows_per_s": n_rows / median(walls)}
    out["ratio_at_8"] = out["workers"]["8"]["ratio"]
    out["pass"] = out["ratio_at_8"] >= GOAL
    # the progress display's own cost
    with_bar, without = [], []
    for r in range(rounds):
        without.append(_map(session, rows, 8, f"plain{r}", progress=False))
        buf = io.StringIO()
        import contextlib
        with contextlib.redirect_stdout(buf):
            with_bar.append(_map(session, rows, 8, f"bar{r}", progress=None))
    out["progress"] = {"map_wall_without_s": summary(without), "map_wall_with_terminal_line_s": summary(with_bar),
                       "ratio": median(with_bar) / median(without),
                       "per_row_terminal_s": _progress_cost(False), "per_row_widget_s": _progress_cost(True)}
    log(f"[map] progress: x{out['progress']['ratio']:.3f} map wall, "
        f"{out['progress']['per_row_terminal_s'] * 1e6:.1f} us/row terminal, "
        f"{out['progress']['per_row_widget_s'] * 1e6:.1f} us/row widget")
    return out
