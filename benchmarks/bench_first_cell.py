"""5. The first cloud cell of a fresh kernel: `%%llm openai:...` against the bare openai SDK, over the emulator.

Each round starts fresh kernels (the first cell pays every import: that is what a user meets after
"Restart & Run All"). Arms, interleaved, the order alternating every round:
  (a) bare SDK: `import openai`, a client with the fake key, `chat.completions.create(stream=True)` iterated;
  (b) `%load_ext jupyter_llm` (untimed, its own cell), then the timed cell `%%llm openai:gpt-4o-mini --no-cache`,
      with the compact price table already in the data dir (every kernel after the first use of the model);
  (c) as (b) with the price table removed first: the first kernel after installing or upgrading genai-prices,
      which imports genai-prices once to fill the table;
  (d) as (b) with `keyring` and its backend loaded in an untimed cell first: how much of the difference is the
      keyring-first credential lookup (SPEC 7), which the bare SDK, reading OPENAI_API_KEY, does not do;
  (e) only with `--arms ...,sdk_print`: as (a), printing each piece of the answer as it comes, as a user's own
      cell would (the goal is measured against the silent (a)).
The emulator endpoint is priced like the real cloud (`free = false`), so the footer's cost is computed as
for api.openai.com. Kernels run with a bytecode cache, as an installed package does (`--no-bytecode`: as
this dev box, PYTHONDONTWRITEBYTECODE=1, compiling the package on every start). The emulator answers 40
tokens after a first-token delay (`--ttft`, default 0.3 s: a cloud model's usual wait). The cell is timed
inside the kernel by pre/post_run_cell hooks (an untimed first cell installs them): wall time and the
process's CPU time (all threads), so ZMQ and the client's own load stay out. Goal: (b) - (a) <= +15 ms.

`--keyring detected` (the default) leaves PYTHON_KEYRING_BACKEND unset, so keyring picks its backend as on
a user's machine (here keyrings.alt's file, which it may read but never writes unasked); `--keyring named`
sets it, which skips keyring's detection. The keyring-first lookup reads through the helper process of
`keyring_prefetch` in (b) and (c); in (d) keyring is already loaded, so the kernel reads in-process.

On a shared VM one kernel's first cell varies by +-150 ms from the next (the same SDK cell: 530 to 790 ms
CPU), far more than the goal, so `--pairs N` adds N pairs of fresh interpreters, each an IPython shell with
no kernel (no ZMQ, no kernel start), alternating (a) and (b): the cell's wall time, its process CPU (all
threads, not the helper process) and how long it waited for the helper (`--gc`: both arms again with the
cyclic garbage collector off). `--instructions` counts each arm's cell under valgrind's callgrind (every thread
of the process; nearly deterministic where time here is not), and again with the work `inflight.py` defers until
the reply has begun switched off: what the cell itself costs before and after the wait for the first token.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import common

SDK_CELL = """import openai
_c = openai.OpenAI(base_url={url!r}, api_key={key!r}, max_retries=0)
for _chunk in _c.chat.completions.create(model="gpt-4o-mini", stream=True, stream_options={{"include_usage": True}},
                                         messages=[{{"role": "user", "content": "Tell me about lighthouses."}}]):
    pass
"""
SDK_PRINT_CELL = """import openai
_c = openai.OpenAI(base_url={url!r}, api_key={key!r}, max_retries=0)
for _chunk in _c.chat.completions.create(model="gpt-4o-mini", stream=True, stream_options={{"include_usage": True}},
                                         messages=[{{"role": "user", "content": "Tell me about lighthouses."}}]):
    if _chunk.choices and _chunk.choices[0].delta.content:
        print(_chunk.choices[0].delta.content, end="", flush=True)
"""
LLM_CELL = "%%llm openai:gpt-4o-mini --no-cache --no-history\nTell me about lighthouses."
KEYRING = "import keyring as _kr; _kr.get_keyring()"
PRICED = "free = false\n"   # the loopback emulator priced from the catalogue, as the real endpoint is
HOOKS = """import time as _t
_times = {}
def _pre(info=None):
    _times['w0'], _times['c0'] = _t.perf_counter(), _t.process_time()
def _post(result=None):
    if 'w0' in _times: _times.setdefault('cells', []).append((_t.perf_counter() - _times['w0'], _t.process_time() - _times['c0']))
get_ipython().events.register('pre_run_cell', _pre)
get_ipython().events.register('post_run_cell', _post)
"""


def _fresh(env) -> "common.Kernel":
    return common.start_kernel(env)


def _kernel_env(bytecode: bool) -> dict[str, str]:
    env = {"OPENAI_API_KEY": common.FAKE_KEY}
    if bytecode:   # an installed package: compiled once, cached (under .cache/bench, not the work tree)
        env.update({"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(common.PYCACHE)})
    else:
        env.update({"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": ""})
    return env


def _time_cell(kernel, code: str) -> tuple[float, float]:
    """(wall, cpu) seconds of `code` measured inside the kernel by the hooks."""
    run = kernel.run(code, timeout=120)
    if run.status != "ok":
        raise RuntimeError(f"cell failed: {run.reply}")
    out = kernel.run("print(repr(_times['cells'][-1]))").stdout.strip()  # this cell's own entry comes after
    wall, cpu = eval(out)  # noqa: S307 (our own repr of two floats)
    return wall, cpu


ARMS = ("sdk", "llm", "llm_cold_prices", "llm_keyring_loaded", "sdk_print")


def run(emulator, rounds: int = 7, ttft: float = 0.3, bytecode: bool = True, log=print, arms=ARMS) -> dict:
    from jupyter_llm import price_table
    url = emulator.url("openai")
    table = price_table.path()
    samples: dict[str, list[float]] = {a: [] for a in arms}
    cpu: dict[str, list[float]] = {a: [] for a in samples}
    arms = list(samples)
    env = _kernel_env(bytecode)
    for i in range(-1, rounds):   # round -1 is untimed: it fills the bytecode cache and the price table
        order = arms if i % 2 == 0 else arms[::-1]
        for arm in order:
            emulator.reset()
            emulator.script(tokens=40, first_token_delay=ttft)
            if arm == "llm_cold_prices":
                table.unlink(missing_ok=True)
            k = _fresh(env)
            try:
                k.run(HOOKS)
                if arm.startswith("sdk"):
                    t, c = _time_cell(k, (SDK_CELL if arm == "sdk" else SDK_PRINT_CELL).format(url=url, key=common.FAKE_KEY))
                else:
                    if k.run("%load_ext jupyter_llm").status != "ok":
                        raise RuntimeError("%load_ext failed")
                    if arm == "llm_keyring_loaded" and k.run(KEYRING).status != "ok":
                        raise RuntimeError("could not load keyring")
                    t, c = _time_cell(k, LLM_CELL)
                    if _llm_cost(k) is None:
                        raise RuntimeError("the answer was not priced")
            finally:
                k.shutdown()
            if arm.startswith("llm") and arm != "llm_cold_prices" and not table.exists():
                raise RuntimeError(f"no price table at {table} after a priced answer")
            if i < 0:
                continue
            samples[arm].append(t)
            cpu[arm].append(c)
            log(f"[first-cell] round {i + 1}/{rounds} {arm:16s} wall {t * 1000:7.1f} ms  cpu {c * 1000:7.1f} ms")
    med = {a: common.median(v) for a, v in samples.items()}
    med_cpu = {a: common.median(v) for a, v in cpu.items()}
    nan = float("nan")
    over = {a: (med[a] - med["sdk"]) * 1000 if a in med else nan for a in ARMS}
    over_cpu = {a: (med_cpu[a] - med_cpu["sdk"]) * 1000 if a in med_cpu else nan for a in ARMS}
    # the same rounds paired: each round's (b) - (a), fresh kernels started back to back
    paired = [(b - a) * 1000 for a, b in zip(samples["sdk"], samples["llm"])]
    return {"ttft_s": ttft, "rounds": rounds, "bytecode": bytecode, "arms": arms, "median_s": med, "median_cpu_s": med_cpu,
            "overhead_ms": over["llm"], "overhead_paired_ms": common.summary(paired),
            "overhead_cold_prices_ms": over["llm_cold_prices"],
            "cpu_overhead_ms": over_cpu["llm"],
            "cpu_overhead_cold_prices_ms": over_cpu["llm_cold_prices"],
            "overhead_keyring_loaded_ms": over["llm_keyring_loaded"],
            "cpu_overhead_keyring_loaded_ms": over_cpu["llm_keyring_loaded"],
            "samples_s": samples, "cpu_s": cpu, "loadavg": os.getloadavg(),
            "goal": "first %%llm cloud cell <= +15 ms over the bare SDK (medians)",
            "pass": over["llm"] <= 15}


INPROC = r"""
import gc, json, os, sys, time
from IPython.testing.globalipapp import start_ipython
arm, url, key = sys.argv[1], sys.argv[2], sys.argv[3]
ip = start_ipython()
if arm.startswith("llm"):
    ip.run_line_magic("load_ext", "jupyter_llm")
if arm.endswith("gc_off"):
    gc.disable()
if os.environ.get("JUPYTER_LLM_BENCH_VALGRIND"):   # ~50x slower: the helper's read must not count as old
    import jupyter_llm.keyring_prefetch
    jupyter_llm.keyring_prefetch.MAX_AGE = 1e9
if arm == "llm_no_deferred":   # what the cell does without the work deferred until the reply has begun
    import jupyter_llm.inflight
    jupyter_llm.inflight.after_send = lambda *a, **k: None
if arm in ("llm_keyring", "llm_preloaded"):   # what the cell would import, loaded first
    import keyring
    keyring.get_keyring()
if arm == "llm_preloaded":
    import importlib
    for name in PRELOAD:
        importlib.import_module("jupyter_llm." + name)
sdk = SDK.format(url=url, key=key)
if os.environ.get("JUPYTER_LLM_BENCH_NO_CELL"):   # the same process without the cell: a baseline to subtract
    print("RESULT " + json.dumps({"cpu": 0.0, "ok": True}))
    raise SystemExit(0)
c0, w0 = time.process_time(), time.perf_counter()
if arm.startswith("sdk"):
    ip.run_cell(sdk)
else:
    ip.run_cell_magic("llm", "openai:gpt-4o-mini --no-cache --no-history", "Tell me about lighthouses.")
cpu, wall = time.process_time() - c0, time.perf_counter() - w0
read = getattr(getattr(sys.modules.get("jupyter_llm"), "_session", None), "credentials", None)
read = getattr(read, "_prefetched", None)   # the keyring helper's read, when one was used
waited = None if read is None else read.waited
ok = "openai" in sys.modules and (arm.startswith("sdk") or ip.user_ns["_llm"].ok and ip.user_ns["_llm"].cost is not None)
print("RESULT " + json.dumps({"cpu": cpu, "wall": wall, "helper_wait": waited, "ok": bool(ok)}))
"""


PRELOAD = ("answer", "store", "providers.openai_compat", "stream_display", "credentials", "writequeue", "tokencount",
           "router", "media", "sensitive", "pricing", "price_table", "exchange", "prompt", "mapcell", "quota",
           "policy", "render", "footer", "blocks")


def _inproc_env(bytecode: bool) -> dict[str, str]:
    """The environment of an in-process arm: a kernel's, with this checkout's package first on the path."""
    env = dict(os.environ, **_kernel_env(bytecode))
    env["PYTHONPATH"] = str(common.ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _inproc_code() -> str:
    return INPROC.replace("SDK.format", repr(SDK_CELL) + ".format").replace("PRELOAD", repr(PRELOAD))


def run_instructions(emulator, bytecode: bool = True, log=print) -> dict:
    """Instructions each arm's cell executes, counted by valgrind's callgrind (deterministic, unlike time on a
    shared VM): each arm runs twice, with and without the cell, and the difference is the cell's count."""
    import shutil
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor
    if shutil.which("valgrind") is None:
        raise RuntimeError("--instructions needs valgrind (apt install valgrind)")
    env = dict(_inproc_env(bytecode), PYTHONHASHSEED="0", JUPYTER_LLM_BENCH_VALGRIND="1")
    code = _inproc_code()
    arms = ["sdk", "llm", "llm_no_deferred", "llm_keyring", "llm_preloaded"]
    for arm in ("sdk", "llm"):   # bytecode and the price table in place first, outside valgrind
        emulator.script(tokens=40)
        subprocess.run([sys.executable, "-c", code, arm, emulator.url("openai"), common.FAKE_KEY], env=env,
                       capture_output=True, timeout=120, cwd=str(common.ROOT))
    for _ in range(2 * len(arms)):
        emulator.script(tokens=40)

    def count(job):
        """Instructions of one run, every thread of the process (the keyring helper process is not traced)."""
        import tempfile
        arm, cell = job
        run_env = dict(env) if cell else dict(env, JUPYTER_LLM_BENCH_NO_CELL="1")
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.%p", sys.executable,
                                  "-c", code, arm, emulator.url("openai"), common.FAKE_KEY], env=run_env,
                                 capture_output=True, text=True, timeout=1800, cwd=str(common.ROOT))
        found = re.search(r"Collected : (\d+)", out.stderr)
        if found is None or '"ok": true' not in out.stdout:
            raise RuntimeError(f"{arm} under callgrind failed: {out.stderr[-1500:]}")
        log(f"[first-cell instructions] {arm:15s} {'cell' if cell else 'no cell'}: {int(found.group(1)):,}")
        return int(found.group(1))
    jobs = [(a, c) for a in arms for c in (True, False)]
    with ThreadPoolExecutor(2) as pool:
        counts = dict(zip(jobs, pool.map(count, jobs)))
    cell = {a: counts[(a, True)] - counts[(a, False)] for a in arms}
    return {"cell_instructions": cell, "overhead_instructions": {a: cell[a] - cell["sdk"] for a in arms[1:]},
            "overhead_share": {a: (cell[a] - cell["sdk"]) / cell["sdk"] for a in arms[1:]},
            "deferred_instructions": cell["llm"] - cell["llm_no_deferred"]}


def run_pairs(emulator, pairs: int, ttft: float = 0.3, bytecode: bool = True, gc_arms: bool = False,
              log=print) -> dict:
    """`pairs` x (sdk, llm[, sdk_gc_off, llm_gc_off]) in fresh interpreters without a kernel: the cell's wall
    time and its process CPU (a helper process's CPU, on another core, is not in the latter), and how long
    the cell waited for the keyring helper."""
    import subprocess
    import sys
    env = _inproc_env(bytecode)
    code = _inproc_code()
    arms = ["sdk", "llm"] + (["sdk_gc_off", "llm_gc_off"] if gc_arms else [])
    cpu: dict[str, list[float]] = {a: [] for a in arms}
    wall: dict[str, list[float]] = {a: [] for a in arms}
    waits: list[float] = []
    for i in range(-1, pairs):
        for arm in (arms if i % 2 == 0 else arms[::-1]):
            emulator.reset()
            emulator.script(tokens=40, first_token_delay=ttft)
            out = subprocess.run([sys.executable, "-c", code, arm, emulator.url("openai"), common.FAKE_KEY], env=env,
                                 capture_output=True, text=True, timeout=120, cwd=str(common.ROOT))
            line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if out.returncode != 0 or line is None or not json.loads(line[7:])["ok"]:
                raise RuntimeError(f"{arm} failed: {out.stderr[-2000:]}")
            if i >= 0:
                got = json.loads(line[7:])
                cpu[arm].append(got["cpu"])
                wall[arm].append(got["wall"])
                if got.get("helper_wait") is not None:
                    waits.append(got["helper_wait"] * 1000)
                log(f"[first-cell pairs] {i + 1}/{pairs} {arm:11s} wall {wall[arm][-1] * 1000:7.1f} ms "
                    f"cpu {cpu[arm][-1] * 1000:7.1f} ms")

    def diffs(samples: dict[str, list[float]]) -> dict[str, list[float]]:
        out = {"gc_on": [(b - a) * 1000 for a, b in zip(samples["sdk"], samples["llm"])]}
        if gc_arms:
            out["gc_off"] = [(b - a) * 1000 for a, b in zip(samples["sdk_gc_off"], samples["llm_gc_off"])]
        return out
    dc, dw = diffs(cpu), diffs(wall)
    return {"pairs": pairs, "keyring": env.get("PYTHON_KEYRING_BACKEND") or "detected", "cpu_s": cpu, "wall_s": wall,
            "median_cpu_s": {a: common.median(v) for a, v in cpu.items()},
            "median_wall_s": {a: common.median(v) for a, v in wall.items()},
            "overhead_cpu_ms": {k: common.median(v) for k, v in dc.items()},
            "overhead_cpu_ms_quartiles": {k: common.summary(v) for k, v in dc.items()},
            "overhead_wall_ms": {k: common.median(v) for k, v in dw.items()},
            "overhead_wall_ms_quartiles": {k: common.summary(v) for k, v in dw.items()},
            "helper_wait_ms": common.summary(waits), "helper_used": len(waits)}


def _llm_cost(kernel) -> float | None:
    out = kernel.run("print(repr(_llm.cost))").stdout.strip()
    return None if out in ("", "None") else float(out)


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--arms", default=",".join(ARMS[:4]), help="kernel arms to run, comma-separated; sdk and llm are "
                    f"always needed (default: the first four of {', '.join(ARMS)})")
    ap.add_argument("--ttft", type=float, default=0.3)
    ap.add_argument("--no-bytecode", action="store_true", help="compile the package on every start (as this dev box)")
    ap.add_argument("--pairs", type=int, default=0, help="also N in-process pairs (no kernel): a tighter CPU figure")
    ap.add_argument("--instructions", action="store_true",
                    help="also count each arm's instructions under valgrind's callgrind (deterministic; ~5 min)")
    ap.add_argument("--gc", action="store_true", help="pairs: also both arms with the garbage collector off")
    ap.add_argument("--keyring", choices=("detected", "named"), default="detected",
                    help="detected: no PYTHON_KEYRING_BACKEND, keyring picks its backend as on a user's machine "
                         "(the default); named: PYTHON_KEYRING_BACKEND names keyrings.alt's file backend")
    args = ap.parse_args(argv)
    if not {"sdk", "llm"} <= set(args.arms.split(",")) or not set(args.arms.split(",")) <= set(ARMS):
        ap.error(f"--arms: sdk and llm, plus any of {', '.join(ARMS[2:])}")
    base = common.isolate()
    if args.keyring == "detected":
        os.environ.pop("PYTHON_KEYRING_BACKEND", None)
    emulator = None
    try:
        emulator = common.start_emulator()
        config = common.emulator_config_text(emulator).replace(
            f'[providers.openai]\nbase_url = "{emulator.url("openai")}"\n',
            f'[providers.openai]\nbase_url = "{emulator.url("openai")}"\n{PRICED}')
        Path(os.environ["JUPYTER_LLM_CONFIG"]).write_text(config)
        res: dict = {"loadavg": os.getloadavg()}
        common.OUT_DIR.mkdir(parents=True, exist_ok=True)
        if args.rounds > 0:
            res = run(emulator, args.rounds, args.ttft, bytecode=not args.no_bytecode, arms=tuple(args.arms.split(",")))
            (common.OUT_DIR / "first_cell.json").write_text(json.dumps(res, indent=1))
            labels = {"sdk": "bare SDK", "llm": "%%llm", "llm_cold_prices": "%%llm, cold price table",
                      "llm_keyring_loaded": "keyring loaded", "sdk_print": "bare SDK printing the answer"}
            for what, med in (("wall", res["median_s"]), ("cpu ", res["median_cpu_s"])):
                print(f"{what}: " + " | ".join(
                    f"{labels[a]} {med[a] * 1000:.1f} ms" + ("" if a == "sdk" else f" ({(med[a] - med['sdk']) * 1000:+.1f} ms)")
                    for a in res["arms"]))
            q = res["overhead_paired_ms"]
            print(f"each round's %%llm - bare SDK: median {q['median']:+.1f} ms (quartiles {q['p25']:+.1f} to {q['p75']:+.1f})")
        if args.pairs:
            res["pairs"] = pr = run_pairs(emulator, args.pairs, args.ttft, bytecode=not args.no_bytecode, gc_arms=args.gc)
            (common.OUT_DIR / "first_cell.json").write_text(json.dumps(res, indent=1))
            for what in ("wall", "cpu"):
                q = pr[f"overhead_{what}_ms_quartiles"]
                gc = (f"; with the garbage collector off {q['gc_off']['median']:+.1f} ms "
                      f"({q['gc_off']['p25']:.1f} to {q['gc_off']['p75']:.1f})" if "gc_off" in q else "")
                print(f"in-process pairs ({args.pairs}, keyring {pr['keyring']}), cell {what}: bare SDK "
                      f"{pr[f'median_{what}_s']['sdk'] * 1000:.1f} ms | %%llm {pr[f'median_{what}_s']['llm'] * 1000:.1f} ms"
                      f" | median of the pairs' differences {q['gc_on']['median']:+.1f} ms (quartiles "
                      f"{q['gc_on']['p25']:.1f} to {q['gc_on']['p75']:.1f}){gc}")
            w = pr["helper_wait_ms"]
            print(f"keyring helper used in {pr['helper_used']} of {args.pairs} %%llm cells; the cell waited for it "
                  f"{w['median'] or 0:.1f} ms (median), {w['max'] or 0:.1f} ms at most")
        if args.instructions:
            res["instructions"] = ins = run_instructions(emulator, bytecode=not args.no_bytecode)
            (common.OUT_DIR / "first_cell.json").write_text(json.dumps(res, indent=1))
            c, o, share = ins["cell_instructions"], ins["overhead_instructions"], ins["overhead_share"]
            print(f"instructions in the cell (callgrind, every thread): bare SDK {c['sdk'] / 1e6:,.1f} M | %%llm "
                  f"{c['llm'] / 1e6:,.1f} M ({o['llm'] / 1e6:+,.1f} M, {share['llm'] * 100:+.1f} %), of which "
                  f"{ins['deferred_instructions'] / 1e6:,.1f} M deferred until the reply has begun (keyring's load, "
                  f"the history database, one full garbage collection) | without the deferred work {o['llm_no_deferred'] / 1e6:+,.1f} M "
                  f"({share['llm_no_deferred'] * 100:+.1f} %) | keyring loaded first {o['llm_keyring'] / 1e6:+,.1f} M | "
                  f"keyring and the answer path loaded first {o['llm_preloaded'] / 1e6:+,.1f} M")
        print(f"load average {res['loadavg']}")
        if "pass" in res:
            print("goal:", res["goal"], "->", "ok" if res["pass"] else "MISSED (kernel medians)")
        return 0
    finally:
        if emulator is not None:
            emulator.stop()
        common.cleanup(base)


if __name__ == "__main__":
    import sys
    sys.exit(main())
