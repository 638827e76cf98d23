"""4. `%%llm --compare` fan-out: wall time of run_compare vs the slowest target on its own.

Three emulated clouds with different speeds (model-name triggers of tests/emulator): OpenAI at 20 ms per
token, Anthropic at 35 ms per token, Gemini with a 0.5 s first token then 10 ms per token. Each round
times every target alone (Session.ask, one after the other) and all of them together through
`jupyter_llm.compare.run_compare` (rich display captured in an IPython shell, as in a notebook), in
an order that rotates every round. Ratio = compare wall / max(single walls) of the same round.
Goal: <= 1.1. Full mode adds two real llama.cpp servers (CPU-bound: informative on a 2-core box) and the
same comparison as `%%llm` cells in a real kernel.
"""
from __future__ import annotations

import json
import time

from common import median, summary

GOAL = 1.1
TOKENS = 40
PROMPT = "Explain a Python generator in one paragraph."
TARGETS = [f"openai:gpt-4o-mini+delay-0.02+tokens-{TOKENS}",
           f"anthropic:claude-3-5-haiku-latest+delay-0.035+tokens-{TOKENS}",
           f"gemini:gemini-2.0-flash+slow-0.5+delay-0.01+tokens-{TOKENS}"]


def _single(session, target: str, **params) -> float:
    t0 = time.perf_counter()
    r = session.ask(PROMPT, target=target, no_history=True, cache=False, fallback=False, **params)
    wall = time.perf_counter() - t0
    if r.error is not None:
        raise RuntimeError(f"{target}: {r.error.line()}")
    return wall


def _compare(session, shell, targets: list[str], **params) -> tuple[float, list]:
    from IPython.utils.capture import capture_output
    from jupyter_llm.compare import run_compare
    with capture_output() as cap:
        t0 = time.perf_counter()
        results = run_compare(session, PROMPT, targets, shell=shell, rich=True, **params)
        wall = time.perf_counter() - t0
    bad = [f"{r.target}: {r.error.line()}" for r in results if r.error is not None]
    if bad:
        raise RuntimeError("compare failed: " + "; ".join(bad))
    return wall, cap.outputs


def _rounds(session, shell, targets: list[str], rounds: int, log, label: str, **params) -> dict:
    jobs = [("compare", None)] + [(t, t) for t in targets]
    singles = {t: [] for t in targets}
    compares, ratios, updates = [], [], []
    for i in range(rounds):
        order = jobs[i % len(jobs):] + jobs[:i % len(jobs)]
        walls = {}
        for name, target in order:
            if target is None:
                wall, outputs = _compare(session, shell, targets, **params)
                compares.append(wall)
                updates.append(sum(1 for o in outputs if o.update))
                walls["compare"] = wall
            else:
                walls[target] = _single(session, target, **params)
                singles[target].append(walls[target])
        ratios.append(walls["compare"] / max(walls[t] for t in targets))
        log(f"[compare] {label} round {i + 1}/{rounds}: compare {walls['compare']:.3f} s, slowest alone "
            f"{max(walls[t] for t in targets):.3f} s, x{ratios[-1]:.3f}")
    slowest = max(targets, key=lambda t: median(singles[t]))
    return {"targets": targets, "rounds": rounds,
            "single_wall_s": {t: summary(v) for t, v in singles.items()}, "slowest": slowest,
            "compare_wall_s": summary(compares), "ratio_per_round": summary(ratios),
            "ratio": median(ratios), "ratio_of_medians": median(compares) / median(singles[slowest]),
            "sum_of_singles_s": sum(median(v) for v in singles.values()),
            "display_updates_per_compare": summary(updates),
            "raw": {"single": singles, "compare": compares}}


def run(emulator, config_path, quick: bool = False, log=print, servers=None, kernel=None) -> dict:
    from IPython.core.interactiveshell import InteractiveShell
    from jupyter_llm.config import load_config
    from jupyter_llm.kernel_session import Session

    emulator.reset()
    session = Session(load_config(config_path, strict=True))
    shell = InteractiveShell.instance()
    # warm-up: SDK imports (google-genai takes ~1 s), clients, connections, pandas for _llm_compare.
    # The SDKs are imported one after the other first: a cold compare imports them in its worker
    # threads at once, and the openai SDK then sometimes reads a half-imported `httpx` (see README).
    for t in TARGETS:
        session.ask("warm", target=t.split("+")[0], no_history=True, cache=False)
    _compare(session, shell, [t.split("+")[0] for t in TARGETS])
    rounds = 3 if quick else 7
    log(f"[compare] {rounds} rounds: 3 emulated clouds alone and together …")
    out = {"goal": GOAL, "emulated": _rounds(session, shell, TARGETS, rounds, log, "emulator")}
    out["ratio"] = out["emulated"]["ratio"]
    out["pass"] = out["ratio"] <= GOAL
    if servers:
        targets = [f"local:{s.port}" for s in servers]
        for t in targets:
            _single(session, t, max_tokens=256, temperature=0)
        out["local_pair"] = _rounds(session, shell, targets, 3 if quick else 5, log, "2 llama.cpp servers",
                                    max_tokens=256, temperature=0)
        out["local_pair"]["note"] = ("CPU-bound: two llama.cpp servers (1 thread each) and the client share "
                                     "this machine's cores, so this ratio measures the machine as much as the package")
    if kernel is not None:
        out["kernel"] = run_in_kernel(kernel, 2 if quick else 3, log)
    return out


_KERNEL_CODE = r'''
import json, time
_ip = get_ipython()
_T, _P = %(targets)r, %(prompt)r
def _one(t):
    t0 = time.perf_counter()
    _ip.run_cell_magic("llm", f"{t} --no-history --no-cache", _P)
    return time.perf_counter() - t0
def _all():
    t0 = time.perf_counter()
    _ip.run_cell_magic("llm", "--compare " + " ".join(_T), _P)
    return time.perf_counter() - t0
_all()
_out = {"compare": [], "single": {t: [] for t in _T}, "ratio": []}
for _i in range(%(rounds)d):
    c = _all()
    s = {t: _one(t) for t in _T}
    _out["compare"].append(c)
    for t in _T:
        _out["single"][t].append(s[t])
    _out["ratio"].append(c / max(s.values()))
print("@@bench@@" + json.dumps(_out))
'''


def run_in_kernel(kernel, rounds: int, log=print) -> dict:
    """The same comparison as `%%llm --compare` and `%%llm T` cells in a real kernel (rendering included)."""
    log(f"[compare] in a real kernel: {rounds} rounds of %%llm --compare vs %%llm per target …")
    run = kernel.run(_KERNEL_CODE % {"targets": TARGETS, "prompt": PROMPT, "rounds": rounds}, timeout=300)
    if run.status != "ok":
        return {"error": (run.error or {}).get("evalue", run.status)}
    line = [ln for ln in run.stdout.splitlines() if ln.startswith("@@bench@@")][-1]
    data = json.loads(line[len("@@bench@@"):])
    out = {"rounds": rounds, "compare_wall_s": summary(data["compare"]),
           "single_wall_s": {t: summary(v) for t, v in data["single"].items()},
           "ratio_per_round": summary(data["ratio"]), "ratio": median(data["ratio"])}
    log(f"[compare] kernel: x{out['ratio']:.3f}")
    return out
